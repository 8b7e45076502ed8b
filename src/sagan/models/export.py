"""A generator on its own: a folder with ``model.safetensors`` and ``config.json``, no training code.

The format is huggingface_hub's ``PyTorchModelHubMixin`` one: ``config.json`` holds the
``Generator`` constructor's arguments (architecture, class count and names, resolution,
channels), plus a ``"sagan"`` record of where the weights came from (training step, EMA or not,
the checkpoint, the tracked FID, the full training config). ``Generator.from_pretrained(DIR)``
reads it; ``push_to_hub`` publishes it when online. Weights are safetensors: data, never code.

Shipped models (``PRETRAINED``) live in this package's ``pretrained/`` folder and load by name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from sagan.errors import CheckpointError
from sagan.extras import requires
from sagan.fileio import atomic_directory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "generator.onnx"
ONNX_INFO_NAME = "generator.json"
INFO_KEY = "sagan"  # the provenance record inside config.json
EXPORT_FORMAT = 1
MAX_WIDTH = 4096  # ch and z_dim of an export's config.json (as model.g_ch and model.z_dim of a training config)
MAX_CLASSES = 100_000
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def pretrained_names() -> list[str]:
    """Names of the generators shipped with the package (e.g. ``fmnist32``)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if is_export_dir(p))


def is_export_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def resolve_export(name_or_path: str | os.PathLike) -> Path | None:
    """The local folder for an exported model or a shipped name; None when it is neither
    (then it may be a Hugging Face Hub id). A folder that exists but is not an export is an error."""
    p = Path(name_or_path)
    if p.is_dir():
        if not (p / CONFIG_NAME).is_file() or not (p / WEIGHTS_NAME).is_file():
            missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (p / n).is_file()]
            raise CheckpointError(f"{p} is not an exported sagan model (no {' or '.join(missing)}); "
                                  "make one with 'sagan export RUN_DIR --out DIR'")
        return p
    if str(name_or_path) in pretrained_names():
        return PRETRAINED_DIR / str(name_or_path)
    return None


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        empty = path.is_file() and path.stat().st_size == 0
        raise CheckpointError(f"{path} cannot be read as JSON: " + ("the file is empty (0 bytes)" if empty else
                                                                    f"{type(e).__name__}: {e}")) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not an exported sagan model config (not a JSON object)")
    info = config.get(INFO_KEY, {})
    version = info.get("format", 1) if isinstance(info, dict) else 1
    if not isinstance(version, int) or version > EXPORT_FORMAT:
        raise CheckpointError(f"{path} has export format {version!r}, newer than this code's {EXPORT_FORMAT}; "
                              "upgrade sagan-torch to load it")
    check_generator_args(config, path)
    check_record(info, path)
    return config


def check_export(folder: str | os.PathLike, defaults: dict[str, Any]) -> dict[str, Any]:
    """An export folder's ``config.json`` (types, ranges, provenance record) and its agreement with
    the shapes in ``model.safetensors``' header, checked before anything is built or read into
    memory; a one-line CheckpointError naming the key otherwise. ``defaults``: the ``Generator``
    constructor's (``Generator.constructor_defaults()``), for the keys the config leaves out.
    Returns the config."""
    config = read_config(Path(folder))
    check_weights_header(config, defaults, Path(folder) / WEIGHTS_NAME, Path(folder) / CONFIG_NAME)
    return config


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_generator_args(args: dict[str, Any], where: str | os.PathLike) -> None:
    """The ``Generator`` constructor arguments in ``args`` (a config.json, or from_pretrained's keyword
    arguments): each of the right type and within range (``ch`` and ``z_dim`` up to MAX_WIDTH, as a
    training config allows), so a tampered or damaged config is one line, never a traceback or
    gigabytes allocated. Absent keys take the constructor's defaults."""
    from sagan.models.arch import G_ARCH, g_attention_sizes, misplaced
    from sagan.nn.attention import REDUCTIONS, VARIANTS
    from sagan.nn.spectral import INIT_SCHEMES

    def refuse(key: str, want: str) -> CheckpointError:
        return CheckpointError(f"{where}: {key} is {args[key]!r}; {want}")

    def whole(key: str, lo: int, hi: int) -> None:
        if key in args and not (_is_int(args[key]) and lo <= args[key] <= hi):
            raise refuse(key, f"must be a whole number from {lo} to {hi}")

    if "resolution" in args and not (_is_int(args["resolution"]) and args["resolution"] in G_ARCH):
        raise refuse("resolution", f"must be one of {sorted(G_ARCH)}")
    whole("ch", 1, MAX_WIDTH)
    whole("z_dim", 1, MAX_WIDTH)
    whole("num_classes", 0, MAX_CLASSES)
    if "img_channels" in args and not (_is_int(args["img_channels"]) and args["img_channels"] in (1, 3)):
        raise refuse("img_channels", "must be 1 or 3")
    if "attn_reduction" in args and not (_is_int(args["attn_reduction"]) and args["attn_reduction"] in REDUCTIONS):
        raise refuse("attn_reduction", f"must be one of {list(REDUCTIONS)}")
    for key in ("use_sn", "attn_bias"):
        if key in args and not isinstance(args[key], bool):
            raise refuse(key, "must be true or false")
    for key, choices in (("attn_variant", VARIANTS), ("init", INIT_SCHEMES)):
        if key in args and args[key] not in choices:
            raise refuse(key, f"must be one of {list(choices)}")
    resolution = args.get("resolution", 128)
    for key in ("attn", "resblock"):
        if key not in args:
            continue
        sizes = args[key]
        if (not isinstance(sizes, (list, tuple)) or not all(_is_int(s) for s in sizes)
                or misplaced(G_ARCH, resolution, sizes) or len(set(sizes)) != len(sizes)):
            raise refuse(key, f"must list distinct feature-map sizes from {g_attention_sizes(resolution)} "
                              f"(resolution {resolution})")
    names = args.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                              or len(names) != args.get("num_classes", 1000)):
        raise refuse("class_names", f"must be null or a list of {args.get('num_classes', 1000)} names "
                                    "(one per class, num_classes)")


def check_record(info: Any, where: str | os.PathLike) -> None:
    """The provenance record (``config.json``'s ``"sagan"``): the fields commands read have their types."""
    if not isinstance(info, dict):
        raise CheckpointError(f"{where}: {INFO_KEY!r} is {info!r}; must be an object (the export's record)")
    step, ema, tracked = info.get("step", 0), info.get("ema", True), info.get("tracked_fid")
    if not (_is_int(step) and step >= 0):
        raise CheckpointError(f"{where}: {INFO_KEY}.step is {step!r}; must be a whole number >= 0")
    if not isinstance(ema, bool):
        raise CheckpointError(f"{where}: {INFO_KEY}.ema is {ema!r}; must be true or false")
    if tracked is not None and not (isinstance(tracked, dict) and (
            "fid" not in tracked or isinstance(tracked["fid"], (int, float)) and not isinstance(tracked["fid"], bool))):
        raise CheckpointError(f"{where}: {INFO_KEY}.tracked_fid is {tracked!r}; must be null or an object whose "
                              "fid is a number")
    for key, kind in (("config", dict), ("dataset", str)):
        if key in info and info[key] is not None and not isinstance(info[key], kind):
            raise CheckpointError(f"{where}: {INFO_KEY}.{key} is {info[key]!r}; must be "
                                  f"{'an object' if kind is dict else 'a string'}")


def check_weights_header(args: dict[str, Any], defaults: dict[str, Any], file: Path,
                         where: str | os.PathLike | None = None) -> None:
    """The shapes ``args`` (checked by :func:`check_generator_args`; ``defaults``, the ``Generator``
    constructor's, for the keys it leaves out) give the first and last layers, the class embeddings
    and the number of blocks, against ``file``'s safetensors header (read without loading a tensor):
    a config that would build another, or a much larger, model than the weights is refused before
    anything is allocated."""
    from safetensors import SafetensorError, safe_open

    from sagan.models.arch import BOTTOM_WIDTH, G_ARCH

    where = where or file.parent / CONFIG_NAME
    a = {**defaults, **{k: v for k, v in args.items() if k in defaults}}
    if not file.is_file():
        raise CheckpointError(f"{file} does not exist")
    try:
        with safe_open(str(file), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file (safetensors holds tensors only; "
                              f"a pickle or a torch.save file under that name is refused): {e}") from None
    specs = G_ARCH[a["resolution"]]
    first, last = specs[0].in_mult * a["ch"], specs[-1].out_mult * a["ch"]

    def weight(module: str) -> str:
        return f"{module}.parametrizations.weight.original" if a["use_sn"] else f"{module}.weight"

    expected = {weight("linear"): (first * BOTTOM_WIDTH ** 2, a["z_dim"]),
                weight("out_conv"): (a["img_channels"], last, 3, 3),
                weight(f"blocks.{len(specs) - 1}.0.conv2"): (last, last, 3, 3)}
    if a["num_classes"] > 0:
        expected["blocks.0.0.bn1.gain.weight"] = (a["num_classes"], first)
    elif "blocks.0.0.bn1.gain.weight" in shapes:
        expected["blocks.0.0.bn1.gain.weight"] = None  # class embeddings in the file, none in the config
    for key, want in expected.items():
        have = shapes.get(key)
        if have != want:
            said = ", ".join(f"{k} {a[k]}" for k in ("resolution", "ch", "z_dim", "num_classes", "img_channels",
                                                     "use_sn"))
            raise CheckpointError(f"{where} does not describe {file.name} ({said}): {key} would be "
                                  f"{want if want is not None else 'absent'}, the file has "
                                  f"{have if have is not None else 'no such tensor'}; the config was edited or "
                                  "belongs to other weights")
    blocks = {int(k.split(".")[1]) for k in shapes if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if blocks and max(blocks) != len(specs) - 1:
        raise CheckpointError(f"{where} does not describe {file.name}: resolution {a['resolution']} has "
                              f"{len(specs)} blocks, the file {max(blocks) + 1}; the config was edited or belongs "
                              "to other weights")


def load_weights(model: torch.nn.Module, file: str | os.PathLike, map_location: str | torch.device = "cpu") -> None:
    """Load a safetensors file into ``model``, every key and shape matching (one-line errors otherwise)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file} does not exist")
    try:
        state = load_file(str(file), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file (safetensors holds tensors only; "
                              f"a pickle or a torch.save file under that name is refused): {e}") from None
    broken = [k for k in sorted(state) if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if broken:
        raise CheckpointError(f"{file} holds NaN or infinite values in {len(broken)} of {len(state)} tensors "
                              f"({', '.join(broken[:2])}{', ...' if len(broken) > 2 else ''}): the weights are "
                              "damaged and would give blank images; export them again from a good checkpoint")
    own = model.state_dict()
    problems = [f"missing {k}" for k in sorted(set(own) - set(state))[:3]]
    problems += [f"unexpected {k}" for k in sorted(set(state) - set(own))[:3]]
    problems += [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
                 for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape][:3]
    if problems:
        raise CheckpointError(f"{file} does not match the architecture in its {CONFIG_NAME}: " + "; ".join(problems))
    model.load_state_dict(state)


def export_info(model: torch.nn.Module) -> dict[str, Any]:
    """The provenance record of a model loaded with ``from_pretrained`` (empty otherwise)."""
    config = getattr(model, "_hub_mixin_config", None)
    info = config.get(INFO_KEY) if isinstance(config, dict) else None
    return dict(info) if isinstance(info, dict) else {}


def save_export(model: torch.nn.Module, out: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``model`` (a ``Generator``) with ``info`` as its provenance record into the new folder ``out``.

    Written through ``sagan.fileio.atomic_directory``: an interrupted export never leaves a
    half-written model under the name, and an existing folder is never replaced.
    """
    out = Path(out)
    config = dict(model._hub_mixin_config)  # type: ignore[attr-defined]  # the constructor arguments
    config[INFO_KEY] = dict(info, format=EXPORT_FORMAT)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, config=config)  # type: ignore[attr-defined]  # with model_card(config)
    return out


def model_card(config: dict[str, Any]) -> str:
    """The folder's README.md: what the model is, where it came from, how to use it (Hub front matter first)."""
    info = config.get(INFO_KEY, {})
    names = config.get("class_names") or []
    classes = (f"{config.get('num_classes')} classes ({', '.join(names)})" if config.get("num_classes")
               else "unconditional")
    tracked = info.get("tracked_fid") or {}
    copied = (", measured with BN statistics copied from the raw G, before standing statistics"
              if tracked.get("bn_statistics") else "")
    fid = (f"- training-time FID {tracked['fid']:.2f} at step {tracked.get('step')} on {tracked.get('num_samples')} "
           f"samples, {tracked.get('features')} features (not comparable with Inception FIDs{copied})\n") if "fid" in tracked else ""
    bn = info.get("bn_statistics") or {}
    bn_line = ("- batch-norm statistics: standing statistics of these weights (recomputed from "
               f"{bn.get('batches', '?')} x {bn.get('batch_size', '?')} of its own samples)\n"
               if bn.get("mode") == "standing" else "")
    command = " ".join((info.get("trained_by") or {}).get("command") or []) or "unknown"
    cls = "torch.tensor([0, 1, 2, 3])" if config.get("num_classes") else "None"
    writer = (f"`sagan export` of sagan-torch {info['sagan_version']}" if info.get("sagan_version") else
              "sagan-torch's `save_pretrained`")
    record = (f"- dataset: {info.get('dataset') or 'unknown'}; weights: {'EMA' if info.get('ema', True) else 'raw'} "
              f"generator at step {info.get('step')} ({info.get('checkpoint_kind', '?')} checkpoint)" if info else
              "- no training record: saved from Python without one (`sagan export` writes it)")
    return f"""---
{card_metadata(config)}---

# SAGAN generator ({config.get('resolution')}x{config.get('resolution')}, {classes.split(' (')[0]})

A Self-Attention GAN generator (Zhang et al., https://arxiv.org/abs/1805.08318) written by
{writer}: {config.get('img_channels')}-channel
{config.get('resolution')}x{config.get('resolution')} images, {classes}, attention at
{config.get('attn') or 'no'} (feature-map sizes).

{record}
{fid}{bn_line}- trained with: `{command}` (the full config and code version are in `config.json` under `"sagan"`)

```python
import torch
from sagan import Generator

G = Generator.from_pretrained("PATH_OR_NAME")   # this folder, a shipped name, or a Hub id
with torch.no_grad():
    images = G(torch.randn(4, G.z_dim), {cls})   # (4, C, H, W) in [-1, 1]
```

```bash
sagan sample PATH_OR_NAME -n 64        # or --pretrained NAME for a model shipped with sagan-torch
```
"""


# The Hub's ids of the built-in data sets, and the licence a model trained on them gets when its record names none.
HUB_DATASETS = {"fashion_mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST", "mit"),
                "cifar10": ("uoft-cs/cifar10", "CIFAR-10", "unknown")}
CARD_TAGS = ["gan", "sagan", "image-generation", "model_hub_mixin", "pytorch_model_hub_mixin"]


def card_metadata(config: dict[str, Any]) -> str:
    """The model card's YAML front matter (huggingface_hub's ``ModelCardData``): library name, licence
    (``info["license"]``, else the data set's: MIT for Fashion-MNIST, "unknown" otherwise), data set,
    tags, and the tracked FID as an evaluation result naming its feature extractor."""
    import yaml
    from huggingface_hub import EvalResult, ModelCardData

    info = config.get(INFO_KEY) or {}
    dataset = str(info.get("dataset") or "")
    hub_id, title, licence = HUB_DATASETS.get(dataset, (None, dataset or "unknown", "unknown"))
    tracked = info.get("tracked_fid") or {}
    conditional = bool(config.get("num_classes"))
    results = None
    if "fid" in tracked:
        features = str(tracked.get("features") or "unknown")
        results = [EvalResult(
            task_type="unconditional-image-generation",
            task_name="class-conditional image generation" if conditional else "unconditional image generation",
            dataset_type=hub_id or dataset or "unknown", dataset_name=title, dataset_split="train",
            metric_type="fid", metric_value=round(float(tracked["fid"]), 4), metric_config=features,
            metric_name=f"FID ({features} features, {tracked.get('num_samples')} samples, training-time)",
            metric_args={"features": features, "num_samples": tracked.get("num_samples"), "step": tracked.get("step")})]
    data = ModelCardData(
        library_name="sagan-torch", license=str(info.get("license") or licence),
        datasets=[hub_id] if hub_id else None, metrics=["fid"] if results else None,
        tags=CARD_TAGS + ["class-conditional" if conditional else "unconditional"],
        model_name=f"sagan-{dataset or 'generator'}{config.get('resolution', '')}", eval_results=results)
    fields = {k: v for k, v in data.to_dict().items() if k != "library_name"}
    return yaml.safe_dump({"library_name": "sagan-torch", **fields}, sort_keys=False, allow_unicode=True)


class _ClassIndexChecked(torch.nn.Module):
    """``model(z, y)`` for the ONNX graph, with every class index outside ``0..num_classes - 1`` turned
    into ``num_classes``, which no embedding row has: onnxruntime then refuses the batch (its Gather
    checks bounds), as PyTorch refuses such an index, where the graph would otherwise read row
    ``num_classes + y`` for a negative ``y`` (ONNX Gather counts negative indices from the end)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = self.model.num_classes
        return self.model(z, torch.where((y < 0) | (y >= n), torch.full_like(y, n), y))


def save_onnx(model: torch.nn.Module, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Write ``model`` (a ``Generator`` in eval mode) as ONNX: inputs ``z`` (batch, z_dim) float32 and,
    for a class-conditional model, ``y`` (batch,) int64; output ``image`` (batch, C, H, W) in [-1, 1].
    A class index outside ``0..num_classes - 1`` makes onnxruntime refuse the batch, as PyTorch does.
    The batch size is dynamic. Needs the ``onnx`` and ``onnxscript`` packages."""
    import contextlib
    import io
    import warnings

    from torch.export import Dim

    from sagan.fileio import atomic_path

    with requires("onnx", "ONNX export"):  # torch.onnx's exporter needs both; fail before tracing
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    model = model.eval()
    batch = Dim("batch", min=1, max=65536)
    z = torch.zeros(2, model.z_dim)  # type: ignore[attr-defined]
    args: tuple = (z,)
    names, shapes = ["z"], {"z": {0: batch}}
    if model.num_classes > 0:  # type: ignore[attr-defined]
        args = (z, torch.zeros(2, dtype=torch.long))
        names.append("y")
        shapes["y"] = {0: batch}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's progress chatter and axis-naming notes
        program = torch.onnx.export(_ClassIndexChecked(model) if model.num_classes > 0 else model,  # type: ignore[attr-defined]
                                    args, None, dynamo=True, input_names=names, output_names=["image"],
                                    dynamic_shapes=shapes,
                                    opset_version=opset)
    out = Path(path)
    with atomic_path(out) as tmp:
        program.save(str(tmp))
    return out


def write_onnx_export(model: torch.nn.Module, out: str | os.PathLike, info: dict[str, Any]) -> Path:
    """A new folder ``out`` with ``generator.onnx`` and ``generator.json`` (constructor arguments + ``info``)."""
    config = dict(model._hub_mixin_config)  # type: ignore[attr-defined]
    config[INFO_KEY] = dict(info, format=EXPORT_FORMAT, onnx_inputs=["z", "y"] if model.num_classes else ["z"])
    out = Path(out)
    with atomic_directory(out) as tmp:
        save_onnx(model, tmp / ONNX_NAME)
        (tmp / ONNX_INFO_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out
