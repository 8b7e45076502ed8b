"""Typed configuration, presets and strict overrides.

A run's configuration is a tree of dataclasses. It is built from a preset, then optionally a
YAML file, then ``--set section.key=value`` overrides; unknown keys and invalid values raise
``ConfigError`` naming the key and what is allowed, before any data is loaded or compute spent.
The fully resolved tree is written to ``config.yaml`` in every run directory.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sagan.data.augment import OPS as AUGMENT_OPS
from sagan.data.augment import check_policy
from sagan.data.datasets import DATASETS, detect_folder_dataset
from sagan.errors import ConfigError
from sagan.losses import LOSSES
from sagan.models.arch import D_ARCH, EXTRA_PLACEMENTS, G_ARCH, RESOLUTIONS, d_attention_sizes, g_attention_sizes
from sagan.models.standing import BN_MODES, STANDING_BATCH_SIZE, STANDING_BATCHES
from sagan.nn.attention import REDUCTIONS, VARIANTS
from sagan.nn.spectral import DEFAULT_INIT, INIT_SCHEMES

ON_DIVERGENCE = ("rollback", "stop")
MAX_SEED = 2**31 - 1  # numpy's global seed must stay below 2**32 even with the rank added
PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # auto: measured at start (sagan.train.precision)
FID_FEATURES = ("auto", "fmnist", "inception")


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass
class ModelConfig:
    resolution: int = 32
    g_ch: int = 16
    d_ch: int = 16
    z_dim: int = 128
    g_attn: list[int] = field(default_factory=lambda: [16])
    d_attn: list[int] = field(default_factory=lambda: [16])
    attn_variant: str = "paper"
    attn_bias: bool = False  # biases on the attention 1x1 convs (the paper has none; older versions had them)
    attn_reduction: int = 8  # query/key width C/attn_reduction (1, 2, 4 or 8; the paper's C/8)
    # Residual bottleneck blocks sized like the attention layer (nn.blocks.ResidualBottleneck), at these
    # feature-map sizes: the attention study's control arm (docs/experiments.md).
    g_resblock: list[int] = field(default_factory=list)
    d_resblock: list[int] = field(default_factory=list)
    # Where D's attention / bottleneck layer at a size goes when several blocks output that size (the blocks
    # after D's last downsampling): after the first of them, or after each ("every", versions before 0.2).
    d_extra_layers: str = "first"
    conditional: bool = True
    g_sn: bool = True
    d_sn: bool = True
    init: str = DEFAULT_INIT  # weight init of G and D: ortho, xavier (the authors'), normal (N(0, 0.02))


def migrate_model_section(model: Any) -> Any:
    """A stored ``model`` section (a run's config.yaml, a checkpoint's config) with the keys added
    since it was written filled in with what it meant then; a copy, the input is left alone.

    * ``attn_bias``: before the key existed the paper variant's attention convs had biases and the
      biggan variant's had none, so its absence means ``attn_variant == "paper"``.
    * ``init``: before the key existed every weight was initialised orthogonally.
    * ``d_extra_layers``: before the key existed D placed a layer after every block of its size.

    Anything that is not a mapping is returned unchanged for the strict checks to report.
    """
    if not isinstance(model, dict):
        return model
    out = dict(model)
    if "attn_bias" not in out:
        out["attn_bias"] = out.get("attn_variant", "paper") == "paper"
    out.setdefault("init", "ortho")
    out.setdefault("d_extra_layers", "every")
    return out


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"
    root: str | None = None
    channels: int | None = None  # 1 or 3; None: what the dataset has (1 for Fashion-MNIST)
    download: bool = True
    num_workers: int = 0
    hflip: bool = False  # flip real images left-right with probability 1/2 (every step; resumes exactly)
    # DiffAugment policy for D's inputs, real and generated (data/augment.py): any of color, translation,
    # cutout, in order; [] = off; auto = what the small-data A/Bs support for the data, today off
    # everywhere (data/augment.py AUTO_MAX_IMAGES; resolved when the data is read; docs/experiments.md).
    diffaugment: list[str] | str = "auto"


@dataclass
class OptimConfig:
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    eps: float = 1e-8


@dataclass
class LossConfig:
    name: str = "hinge"
    gp_weight: float = 0.0  # WGAN-GP penalty weight (0 = off)


@dataclass
class TrainConfig:
    steps: int = 4000
    batch_size: int = 64  # global batch (summed over processes in distributed runs)
    n_dis: int = 1
    seed: int = 0
    ema_decay: float = 0.999
    ema_start: int = 0
    ema_warmup: bool = True  # decay ramps up as min(ema_decay, (1+n)/(10+n)) after ema_start
    # The EMA generator's batch-norm statistics (docs/models.md): "standing" recomputes them from its own
    # samples (ema_bn_batches x ema_bn_batch_size latents) before it is sampled, scored or saved; "copy"
    # takes the raw G's, as versions before 0.2 did.
    ema_bn: str = "standing"
    ema_bn_batches: int = STANDING_BATCHES
    ema_bn_batch_size: int = STANDING_BATCH_SIZE
    log_every: int = 20
    sample_every: int = 250
    ckpt_every: int = 500
    keep_ckpts: int = 3
    sample_classes: int = 10  # rows of the sample grid for conditional models
    device: str = "auto"
    # fp32, bf16, fp16 (CUDA only), or auto: fp32 or bf16 by a measured probe (sagan.train.precision; it keeps
    # fp32 until the bf16 quality check has been run). The run's config.yaml stores what auto resolved to.
    precision: str = "fp32"
    deterministic: bool = False
    sync_bn: bool = False  # distributed: G's batch norms use global-batch statistics
    channels_last: bool = False  # NHWC memory format for G and D (faster convs on recent GPUs)
    compile: bool = False  # torch.compile G and D (needs a C++ compiler on CPU)
    # Divergence guard (see docs/robustness.md): what to do when a loss or weight becomes non-finite.
    on_divergence: str = "rollback"  # rollback to the last good checkpoint, or stop
    rollback_lr_factor: float = 0.5  # multiply both learning rates by this on each rollback (1 = keep)
    max_rollbacks: int = 3  # stop after this many rollbacks in one run
    collapse_window: int = 1000  # steps of the collapse detector's window (0 = off)
    collapse_d_loss: float = 0.05  # |D loss| below this for a whole window counts as "D near 0"
    # FID tracked during training (docs/evaluation.md); the best checkpoint by it is kept as checkpoints/best.pt.
    fid_every: int = 0  # steps between evaluations (0 = off; fmnist32 uses 1000, cifar32 and imagefolder64 5000)
    fid_samples: int = 2000  # generated images per evaluation (reference: all training images)
    fid_features: str = "auto"  # auto (fmnist for Fashion-MNIST, else inception if its weights are local), fmnist, inception
    # Fine-tuning (docs/finetuning.md): the model the weights start from (sagan train --init-from; the
    # checkpoint file, exported folder or shipped name it resolved to), and FreezeD.
    init_from: str | None = None
    freeze_d_blocks: int = 0  # the first K discriminator blocks (input side) are not updated (0 = off)


@dataclass
class Config:
    preset: str = "fmnist32"
    name: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- presets

def _fmnist32() -> Config:
    """Class-conditional SAGAN on Fashion-MNIST 32x32, sized for a 2-core CPU demo."""
    return Config(preset="fmnist32", train=TrainConfig(fid_every=1000, channels_last=True))


def _cifar32() -> Config:
    return Config(
        preset="cifar32",
        model=ModelConfig(resolution=32, g_ch=64, d_ch=64, g_attn=[16], d_attn=[16]),
        data=DataConfig(dataset="cifar10"),
        train=TrainConfig(steps=100_000, batch_size=64, ema_decay=0.9999, ema_start=1000,
                          log_every=50, sample_every=1000, ckpt_every=2000, fid_every=5000),
    )


def _imagefolder64() -> Config:
    return Config(
        preset="imagefolder64",
        model=ModelConfig(resolution=64, g_ch=32, d_ch=32, g_attn=[32], d_attn=[32]),
        data=DataConfig(dataset="image_folder", download=False, num_workers=2),
        train=TrainConfig(steps=100_000, batch_size=64, ema_decay=0.9999, ema_start=1000,
                          log_every=50, sample_every=1000, ckpt_every=2000, fid_every=5000),
    )


def _imagenet128() -> Config:
    """The paper's ImageNet 128x128 model: ch=64, attention at 64 in G and D, batch 256."""
    return Config(
        preset="imagenet128",
        model=ModelConfig(resolution=128, g_ch=64, d_ch=64, g_attn=[64], d_attn=[64]),
        data=DataConfig(dataset="image_folder", download=False, num_workers=8),
        train=TrainConfig(steps=1_000_000, batch_size=256, ema_decay=0.9999, ema_start=20_000,
                          log_every=100, sample_every=5000, ckpt_every=5000),
    )


PRESETS = {
    "fmnist32": _fmnist32,
    "cifar32": _cifar32,
    "imagefolder64": _imagefolder64,
    "imagenet128": _imagenet128,
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is not known; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


# --------------------------------------------------------------------------- overrides

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return the (possibly converted) value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item)} (e.g. [16, 32] or []), got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")  # pragma: no cover


def _fields(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    """Set ``section.key`` (or a top-level key) strictly: unknown keys and bad types raise."""
    parts = dotted.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        fields = _fields(obj)
        where = ".".join(parts[:i]) or "the top level"
        if part not in fields:
            raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r}; "
                              f"keys at {where}: {', '.join(sorted(fields))}")
        tp = fields[part]
        is_section = dataclasses.is_dataclass(tp)
        if i < len(parts) - 1:
            if not is_section:
                raise ConfigError(f"config key {'.'.join(parts[:i + 1])!r} is a value, not a section")
            obj = getattr(obj, part)
        else:
            if is_section:
                if not isinstance(value, dict):
                    raise ConfigError(f"{dotted}: is a section; give a mapping or set {dotted}.KEY")
                for k, v in value.items():
                    set_value(cfg, f"{dotted}.{k}", v)
            else:
                setattr(obj, part, _coerce(dotted, value, tp))


def apply_mapping(cfg: Config, mapping: dict[str, Any], prefix: str = "") -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(f"config file must hold a mapping of sections, got {type(mapping).__name__}")
    for k, v in mapping.items():
        if not isinstance(k, str):
            raise ConfigError(f"config keys must be strings, got {k!r}")
        set_value(cfg, prefix + k, v)


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr_d=2e-4'`` -> ``('optim.lr_d', 0.0002)``; values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. optim.lr_d=2e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except Exception:  # noqa: BLE001 - YAMLError, or ValueError for dates like 2020-13-01
        value = raw
    # YAML 1.1 reads "2e-4" (no dot) as a string; accept the usual float spellings.
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        value = float(value)
    return key, value


def load_config(preset_name: str | None = None, file: str | Path | None = None,
                overrides: list[str] | None = None, notes: list[str] | None = None) -> Config:
    """Preset, then YAML file, then overrides; validated. A resolution other than the preset's moves
    the attention sizes the user did not set with it (``place_relative_to_resolution``), and the
    line saying so is appended to ``notes``."""
    file_data: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            file_data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(path)!r} is not UTF-8 text; give a YAML file") from None
        except Exception as e:  # noqa: BLE001 - YAMLError, or ValueError for dates like 2020-13-01
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_first_line(e)}") from None
        if not isinstance(file_data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    name = preset_name or file_data.get("preset") or "fmnist32"
    if not isinstance(name, str):
        raise ConfigError(f"preset: expected a preset name, got {name!r}")
    cfg = preset(name)
    apply_mapping(cfg, {k: v for k, v in file_data.items() if k != "preset"})
    explicit = set((file_data.get("model") or {}) if isinstance(file_data.get("model"), dict) else {})
    data_explicit = set((file_data.get("data") or {}) if isinstance(file_data.get("data"), dict) else {})
    for text in overrides or []:
        key, value = parse_override(text)
        set_value(cfg, key, value)
        if key == "model" and isinstance(value, dict):
            explicit |= set(value)
        elif key.startswith("model."):
            explicit.add(key.split(".", 1)[1])
        elif key == "data" and isinstance(value, dict):
            data_explicit |= set(value)
        elif key.startswith("data."):
            data_explicit.add(key.split(".", 1)[1])
    for note in (read_folder_as_images(cfg, data_explicit),
                 place_relative_to_resolution(cfg, preset(name).model, explicit)):
        if note and notes is not None:
            notes.append(note)
    validate(cfg)
    return cfg


def read_folder_as_images(cfg: Config, explicit: set[str]) -> str | None:
    """A ``data.root`` folder of image files given with a built-in dataset the user did not choose
    (the preset's Fashion-MNIST or CIFAR-10) is read as an image folder (``data.dataset=image_folder``),
    the rest of the config unchanged: a folder is the data, never replaced by another data set. A folder
    holding the built-in data set's files, or no images, keeps the data set (whose loader refuses a
    folder without its files). ``explicit``: the ``data`` keys the command line or config file set.
    Returns the line saying what was chosen, or None when nothing changed."""
    d = cfg.data
    spec = DATASETS.get(d.dataset)
    if "dataset" in explicit or d.root is None or spec is None or not spec.in_memory:
        return None
    if detect_folder_dataset(d.root) != "image_folder":
        return None
    d.dataset = "image_folder"
    return (f"{d.root} holds image files, not {spec.title}: reading it as an image folder "
            f"(data.dataset=image_folder), the {cfg.preset} model otherwise unchanged")


RELATIVE_KEYS = (("g_attn", g_attention_sizes), ("d_attn", d_attention_sizes),
                 ("g_resblock", g_attention_sizes), ("d_resblock", d_attention_sizes))


def place_relative_to_resolution(cfg: Config, base: ModelConfig, explicit: set[str]) -> str | None:
    """When the resolution differs from the preset's, move the preset's attention (and bottleneck)
    sizes with it, keeping their ratio to the image size (the presets' 16 of 32, 32 of 64: half the
    resolution, the paper's placement), for each of those keys the user did not set. Returns a line
    saying what was placed, or None when nothing moved."""
    m = cfg.model
    if m.resolution == base.resolution or m.resolution not in RESOLUTIONS:
        return None
    moved = []
    for key, allowed in RELATIVE_KEYS:
        if key in explicit:
            continue
        sizes = [s * m.resolution // base.resolution for s in getattr(base, key)]
        sizes = [s for s in sizes if s in allowed(m.resolution)]
        if sizes != getattr(m, key):
            setattr(m, key, sizes)
            moved.append(f"model.{key}={sizes}")
    if not moved:
        return None
    return (f"model.resolution={m.resolution} (the preset's is {base.resolution}): placed {', '.join(moved)}, "
            f"at the preset's sizes relative to the image; set them to choose others")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a resolved config (from a run directory or a checkpoint), strictly; a ``model``
    section written by an older version is read as it was meant (``migrate_model_section``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a resolved config must be a mapping of sections, got {type(data).__name__}")
    if "model" in data:
        data = {**data, "model": migrate_model_section(data["model"])}
    name = data.get("preset", "fmnist32")
    if not isinstance(name, str):
        raise ConfigError(f"preset: expected a preset name, got {name!r}")
    cfg = preset(name)
    apply_mapping(cfg, {k: v for k, v in data.items() if k != "preset"})
    validate(cfg)
    return cfg


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:4])[:300] or type(e).__name__


# --------------------------------------------------------------------------- validation

def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    m, d, o, lo, t = cfg.model, cfg.data, cfg.optim, cfg.loss, cfg.train
    _check(m.resolution in RESOLUTIONS,
           f"model.resolution={m.resolution} is not supported; choose one of {list(RESOLUTIONS)}")
    g_sizes, d_sizes = g_attention_sizes(m.resolution), d_attention_sizes(m.resolution)
    for key, sizes, allowed, what in (("model.g_attn", m.g_attn, g_sizes, "attention"),
                                      ("model.d_attn", m.d_attn, d_sizes, "attention"),
                                      ("model.g_resblock", m.g_resblock, g_sizes, "residual block"),
                                      ("model.d_resblock", m.d_resblock, d_sizes, "residual block")):
        bad = [s for s in sizes if s not in allowed]
        _check(not bad, f"{key}={sizes}: the architecture at resolution {m.resolution} never produces "
                        f"a {bad[0] if bad else ''}x{bad[0] if bad else ''} feature map; choose sizes from "
                        f"{allowed} (or [] for no {what})")
        _check(len(set(sizes)) == len(sizes), f"{key}={sizes} lists a size twice")
    _check(m.attn_reduction in REDUCTIONS,
           f"model.attn_reduction={m.attn_reduction}; choose one of {list(REDUCTIONS)} (query/key width C/r)")
    r = m.attn_reduction
    for key, ch, arch, sizes in (("model.g_ch", m.g_ch, G_ARCH, m.g_attn), ("model.d_ch", m.d_ch, D_ARCH, m.d_attn)):
        _check(1 <= ch <= 4096, f"{key}={ch} must be between 1 and 4096")
        for spec in arch[m.resolution]:
            c = spec.out_mult * ch
            _check(spec.resolution not in sizes or c % r == 0,
                   f"{key}={ch}: the attention layer at {spec.resolution}x{spec.resolution} would get {c} "
                   f"channels, which is not divisible by {r} (attention projects to C/{r}); use e.g. 16, 32 or 64")
    _check(1 <= m.z_dim <= 4096, f"model.z_dim={m.z_dim} must be between 1 and 4096")
    _check(m.d_extra_layers in EXTRA_PLACEMENTS,
           f"model.d_extra_layers={m.d_extra_layers!r}; choose one of {list(EXTRA_PLACEMENTS)}")
    _check(m.attn_variant in VARIANTS, f"model.attn_variant={m.attn_variant!r}; choose one of {list(VARIANTS)}")
    _check(m.init in INIT_SCHEMES, f"model.init={m.init!r}; choose one of {list(INIT_SCHEMES)}")
    _check(d.dataset in DATASETS, f"data.dataset={d.dataset!r} is not known; choose one of {list(DATASETS)}")
    _check(d.channels in (None, 1, 3), f"data.channels={d.channels} must be 1, 3 or null (as the data has)")
    _check(not isinstance(d.diffaugment, str) or d.diffaugment == "auto",
           f"data.diffaugment={d.diffaugment!r}: give auto or a list of operations, e.g. [{d.diffaugment}] "
           f"or [color, translation, cutout] ([] turns it off)")
    bad_ops = check_policy(d.diffaugment)
    _check(not bad_ops, f"data.diffaugment={d.diffaugment}: {bad_ops[0] if bad_ops else ''!r} is unknown or repeated; "
                        f"choose auto, or from {list(AUGMENT_OPS)}, each at most once (e.g. [color, translation, cutout])")
    _check(0 <= d.num_workers <= 256, f"data.num_workers={d.num_workers} must be between 0 and 256")
    _check(d.root is None or (d.root.strip() != "" and "\0" not in d.root),
           f"data.root={d.root!r} must be a non-empty path without NUL characters")
    _check(cfg.name is None or (cfg.name.strip() not in ("", ".", "..") and not any(c in cfg.name for c in "/\\\0")),
           f"name={cfg.name!r} must be a plain directory name (no slashes, not empty, not . or ..)")
    for key, v in (("optim.lr_g", o.lr_g), ("optim.lr_d", o.lr_d)):
        _check(0 < v < 1, f"{key}={v} must be in (0, 1)")
    for key, v in (("optim.beta1", o.beta1), ("optim.beta2", o.beta2)):
        _check(0 <= v < 1, f"{key}={v} must be in [0, 1)")
    _check(0 < o.eps < 1, f"optim.eps={o.eps} must be in (0, 1)")
    _check(lo.name in LOSSES, f"loss.name={lo.name!r} is not known; choose one of {list(LOSSES)}")
    _check(lo.gp_weight >= 0, f"loss.gp_weight={lo.gp_weight} must be >= 0")
    _check(t.steps >= 1, f"train.steps={t.steps} must be >= 1")
    _check(t.steps <= 10**10, f"train.steps={t.steps} must be between 1 and 10**10")
    _check(1 <= t.batch_size <= 1_000_000, f"train.batch_size={t.batch_size} must be >= 1")
    _check(t.n_dis >= 1, f"train.n_dis={t.n_dis} must be >= 1 (D steps per G step)")
    _check(t.n_dis <= 100, f"train.n_dis={t.n_dis} must be between 1 and 100 (D steps per G step)")
    _check(0 <= t.ema_decay < 1, f"train.ema_decay={t.ema_decay} must be in [0, 1)")
    _check(t.ema_start >= 0, f"train.ema_start={t.ema_start} must be >= 0")
    _check(t.ema_bn in BN_MODES, f"train.ema_bn={t.ema_bn!r}; choose one of {list(BN_MODES)}")
    _check(1 <= t.ema_bn_batches <= 10_000, f"train.ema_bn_batches={t.ema_bn_batches} must be between 1 and 10000")
    _check(2 <= t.ema_bn_batch_size <= 65_536,
           f"train.ema_bn_batch_size={t.ema_bn_batch_size} must be between 2 and 65536")
    for key in ("log_every", "sample_every", "ckpt_every", "keep_ckpts", "sample_classes"):
        v = getattr(t, key)
        _check(v >= 1, f"train.{key}={v} must be >= 1")
    _check(0 <= t.seed <= MAX_SEED, f"train.seed={t.seed} must be between 0 and {MAX_SEED}")
    _check(t.on_divergence in ON_DIVERGENCE,
           f"train.on_divergence={t.on_divergence!r}; choose one of {list(ON_DIVERGENCE)}")
    _check(0 < t.rollback_lr_factor <= 1,
           f"train.rollback_lr_factor={t.rollback_lr_factor} must be in (0, 1] (1 keeps the learning rates)")
    _check(0 <= t.max_rollbacks <= 1000, f"train.max_rollbacks={t.max_rollbacks} must be between 0 and 1000")
    _check(t.collapse_window >= 0, f"train.collapse_window={t.collapse_window} must be >= 0 (0 turns it off)")
    _check(t.collapse_d_loss > 0, f"train.collapse_d_loss={t.collapse_d_loss} must be > 0")
    _check(t.precision in PRECISIONS, f"train.precision={t.precision!r}; choose one of {list(PRECISIONS)}")
    _check(t.fid_every >= 0, f"train.fid_every={t.fid_every} must be >= 0 (0 turns training-time FID off)")
    _check(t.fid_samples >= 2, f"train.fid_samples={t.fid_samples} must be >= 2 (a few thousand is typical)")
    _check(t.fid_features in FID_FEATURES,
           f"train.fid_features={t.fid_features!r}; choose one of {list(FID_FEATURES)}")
    _check(t.init_from is None or (t.init_from.strip() != "" and "\0" not in t.init_from),
           f"train.init_from={t.init_from!r} must be a run directory, checkpoint, exported folder or shipped model name")
    n_blocks = len(D_ARCH[m.resolution])
    _check(0 <= t.freeze_d_blocks <= n_blocks,
           f"train.freeze_d_blocks={t.freeze_d_blocks}: the discriminator has {n_blocks} blocks at resolution "
           f"{m.resolution}; choose 0 (off) to {n_blocks}")
    dev = t.device
    _check(dev in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:[0-9]{1,4}", dev) is not None,
           f"train.device={dev!r}; choose auto, cpu, cuda, cuda:N or mps")
