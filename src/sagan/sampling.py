"""Load trained models back from a run directory, a checkpoint file, an exported folder or a shipped name,
and sample from them: :func:`generate` (by count or by seed, classes by name, an output switch),
:func:`seed_latents`, :func:`to_pil`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from sagan.config import Config, config_from_dict
from sagan.errors import CheckpointError, UsageError
from sagan.models import Discriminator, Generator, build_models
from sagan.models.classes import resolve_classes
from sagan.models.export import (
    CONFIG_NAME,
    PRETRAINED_DIR,
    export_info,
    pretrained_names,
    resolve_export,
)
from sagan.models.standing import (
    draw_latents,
    ensure_standing,
    statistics_for_truncation,
    truncated_normal,
)
from sagan.runs.checkpoints import load_checkpoint, resolve_checkpoint
from sagan.runs.folder import RunDir
from sagan.schema import MAX_SAMPLE_SEED

CHECKPOINT_CHOICES = ("latest", "best")


@dataclass
class LoadedRun:
    """A generator (and, from a training checkpoint, its discriminator) with where it came from."""
    cfg: Config
    G: Generator  # the EMA generator unless asked otherwise
    D: Discriminator | None  # None for an exported model (generator only)
    step: int
    checkpoint: Path  # the checkpoint file, or the exported folder
    run_dir: Path | None
    num_classes: int
    channels: int
    class_names: list[str] = field(default_factory=list)
    dataset: str = ""
    kind: str = "checkpoint"  # "checkpoint" | "export" | "pretrained"
    which: str = "latest"  # "latest" | "best" | "file" (a checkpoint named directly) | "export"
    ema: bool = True
    tracked_fid: dict | None = None  # {"fid", "step", "features", ...} when the weights are best.pt's / exported with it
    bn: dict = field(default_factory=dict)  # how G's batch-norm statistics were made ({"mode": "standing", ...})

    @property
    def output_base(self) -> Path:
        """Where a command writes by default: the run directory, the checkpoint's or export's
        folder, or for a shipped model (read-only package data) ``./pretrained-NAME``."""
        if self.kind == "pretrained":
            return Path.cwd() / f"pretrained-{self.checkpoint.name}"
        if self.kind == "export":
            return self.checkpoint
        return self.run_dir or self.checkpoint.parent

    def describe(self) -> str:
        """One line for what is printed: which weights, which step, EMA or not."""
        what = {"pretrained": f"shipped model {self.checkpoint.name}", "export": f"exported model {self.checkpoint}"
                }.get(self.kind, str(self.checkpoint))
        fid = ""
        if self.tracked_fid and "fid" in self.tracked_fid:
            fid = f", tracked FID {self.tracked_fid['fid']:.3f} ({self.tracked_fid.get('features', '?')} features)"
        which = f"{self.which} checkpoint, " if self.kind == "checkpoint" and self.which != "file" else ""
        bn = "" if self.bn.get("mode") != "standing" or not self.ema else ", standing BN statistics"
        bn += " (recomputed at load)" if self.bn.get("recomputed_at_load") else ""
        if self.ema and self.bn.get("mode") == "copy":
            bn = ", BN statistics copied from the raw G"
        return f"{what} ({which}step {self.step}, {'EMA' if self.ema else 'raw'} generator{bn}{fid})"

    def provenance(self) -> dict:
        """The same as a JSON record, stored next to what a command writes."""
        return {"source": str(self.checkpoint), "kind": self.kind, "checkpoint": self.which, "step": self.step,
                "generator": "ema" if self.ema else "raw", "bn_statistics": self.bn, "tracked_fid": self.tracked_fid}


def load_run(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
             checkpoint: str = "latest") -> LoadedRun:
    """G (EMA weights by default) and, where there is one, D, in eval mode, from any model source:

    - a run directory: its newest checkpoint (``checkpoint="latest"``), ``best.pt``
      (``checkpoint="best"``) or a checkpoint file named by ``checkpoint``;
    - a checkpoint file;
    - a folder written by ``sagan export`` (generator only; ``ema`` is whatever was exported);
    - the name of a shipped model (``sagan.models.export.pretrained_names()``, e.g. ``fmnist32``).
    """
    p = Path(path)
    if p.is_dir() and (p / CONFIG_NAME).is_file() or (not p.exists() and str(path) in pretrained_names()):
        if checkpoint != "latest":
            raise CheckpointError(f"--checkpoint {checkpoint}: {path} is an exported model, which holds one set of "
                                  "weights; --checkpoint applies to run directories")
        return _load_export(path, device)
    if not p.exists():
        names = ", ".join(pretrained_names())
        raise CheckpointError(f"{path}: no such run directory, checkpoint file or exported model"
                              + (f" (shipped models: {names})" if names else ""))
    ckpt, which = _pick_checkpoint(p, checkpoint)
    state = load_checkpoint(ckpt, map_location="cpu")
    cfg = config_from_dict(state["config"])
    meta = state["data"]
    names = list(meta.get("class_names", []))
    g, d = build_models(cfg.model, meta["num_classes"], meta["channels"],
                        class_names=names if len(names) == meta["num_classes"] else None)
    try:
        g.load_state_dict(state["G_ema" if ema else "G"])
        d.load_state_dict(state["D"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt} does not match the architecture its config describes: {e}") from None
    run_dir = ckpt.parent.parent if RunDir(ckpt.parent.parent).checkpoints == ckpt.parent else None
    g.to(device).eval()
    d.to(device).eval()
    best = state.get("best") if isinstance(state.get("best"), dict) else None
    if best is not None:
        which = "best"
        if not isinstance(state.get("G_ema_bn"), dict):  # scored before standing statistics existed
            best = {**best, "bn_statistics": "copied from the raw G"}
    bn = {"mode": "running (raw G's own)"}
    if ema:
        bn = ensure_standing(g, state.get("G_ema_bn"), cfg.train.ema_bn)
    return LoadedRun(cfg, g, d, int(state["step"]), ckpt, run_dir, meta["num_classes"], meta["channels"],
                     names, meta.get("name", ""), kind="checkpoint", which=which, ema=ema, tracked_fid=best, bn=bn)


def _pick_checkpoint(p: Path, checkpoint: str) -> tuple[Path, str]:
    """The checkpoint file for a run directory or checkpoint ``p`` and ``--checkpoint`` latest|best|PATH."""
    if p.is_file():
        if checkpoint != "latest":
            raise CheckpointError(f"--checkpoint {checkpoint}: {p} is already a checkpoint file; give the run "
                                  "directory to choose among its checkpoints")
        return p, "file"
    if checkpoint == "best":
        best = RunDir(p).best
        if not best.is_file():
            raise CheckpointError(f"--checkpoint best: {p} has no {best.relative_to(p)} (it is written when "
                                  "FID tracking is on, train.fid_every > 0); use --checkpoint latest")
        return best, "best"
    if checkpoint == "latest":
        from sagan.models.export import WEIGHTS_NAME
        if p.is_dir() and (p / WEIGHTS_NAME).is_file() and not RunDir(p).checkpoints.is_dir():
            raise CheckpointError(f"{p} is an exported model without its {CONFIG_NAME} (it has {WEIGHTS_NAME}, "
                                  f"which cannot be read without the architecture {CONFIG_NAME} gives): copy "
                                  f"{CONFIG_NAME} back from where the export came from, or export again with "
                                  "'sagan export RUN_DIR --out DIR'")
        return resolve_checkpoint(p), "latest"
    chosen = Path(checkpoint)
    if not chosen.is_file() and (RunDir(p).checkpoints / checkpoint).is_file():
        chosen = RunDir(p).checkpoints / checkpoint
    if not chosen.is_file():
        raise CheckpointError(f"--checkpoint {checkpoint}: not 'latest', 'best' or an existing checkpoint file")
    return chosen, "file"


def _load_export(path: str | Path, device: str | torch.device) -> LoadedRun:
    folder = resolve_export(path)
    assert folder is not None
    g = Generator.from_pretrained(folder, map_location=str(device))
    info = export_info(g)
    cfg = config_from_dict(info["config"]) if isinstance(info.get("config"), dict) else _config_of(g)
    kind = "pretrained" if folder.resolve().parent == PRETRAINED_DIR.resolve() else "export"
    ema = bool(info.get("ema", True))
    bn = ensure_standing(g, info.get("bn_statistics"), cfg.train.ema_bn) if ema else {"mode": "running (raw G's own)"}
    return LoadedRun(cfg, g, None, int(info.get("step", 0)), folder, None, g.num_classes, g.img_channels,
                     list(g.class_names), str(info.get("dataset", "")), kind=kind, which="export",
                     ema=ema, tracked_fid=info.get("tracked_fid"), bn=bn)


def _config_of(g: Generator) -> Config:
    """A config whose model section describes ``g`` (for a folder saved with plain ``save_pretrained``)."""
    cfg = Config()
    m = cfg.model
    m.resolution, m.g_ch, m.z_dim, m.g_attn = g.resolution, g.ch, g.z_dim, list(g._hub_mixin_config.get("attn", []))
    m.conditional = g.num_classes > 0
    for key in ("attn_variant", "attn_bias", "init", "attn_reduction"):
        setattr(m, key, g._hub_mixin_config.get(key, getattr(m, key)))
    m.g_resblock = list(g._hub_mixin_config.get("resblock", []))
    m.g_sn = bool(g._hub_mixin_config.get("use_sn", m.g_sn))
    return cfg


def shard_range(n: int, batch_size: int, rank: int = 0, world: int = 1) -> tuple[int, int]:
    """The samples ``[start, stop)`` that process ``rank`` of ``world`` generates: whole batches,
    contiguous, in rank order, so the shards concatenated in rank order are the 1-process set."""
    batches = -(-n // batch_size)
    per = -(-batches // world)
    return min(n, rank * per * batch_size), min(n, (rank + 1) * per * batch_size)


OUTPUTS = ("tensor", "uint8", "pil")


def image_classes(num_classes: int, classes: list[int] | None, n: int | None = None,
                  seeds: list[int] | None = None) -> torch.Tensor | None:
    """The class of every image, from ``pool`` = ``classes`` (default: every class, in order): by
    seed, seed ``s`` has class ``pool[s % len(pool)]``, so a seed names one image whatever else is
    sampled (``--seeds 0-99`` of a 10-class model: seed 42 is class 2, ten images per class); by
    count (``n``), image ``i`` has class ``pool[i % len(pool)]``. None for an unconditional model."""
    if num_classes == 0:
        return None
    pool = classes if classes else list(range(num_classes))
    keys = [int(s) for s in seeds] if seeds is not None else range(int(n or 0))
    return torch.tensor([pool[k % len(pool)] for k in keys], dtype=torch.long)


@torch.no_grad()
def generate(g: Generator, n: int | None = None, classes=None, seed: int = 0, batch_size: int = 256,
             device: str | torch.device = "cpu", progress: bool = False, shard: tuple[int, int] = (0, 1),
             truncation: float | None = None, *, seeds=None, output: str = "tensor"):
    """Images from ``g`` and their labels (None for an unconditional model): ``(images, labels)``.

    Which images, as ``sagan sample`` picks them (docs/sampling.md):

    - ``n`` images whose latents come from one generator seeded with ``seed``, run in batches of
      ``batch_size``; image ``i`` has class ``classes[i % len(classes)]``;
    - or ``seeds=[...]`` (any iterable of ints >= 0): one image per seed, its latent from that seed
      alone (:func:`seed_latents`), run on its own (batch 1), of class ``classes[s % len(classes)]``
      for seed ``s``: the same seed gives the same image in any list, as ``sagan sample --seeds``.

    ``classes``: names or indices as the CLI's ``--classes`` takes them (``["Dress", 7]``,
    ``"dress,sneaker"``, ``"ankle_boot"``, ``"all"``); default every class. ``truncation`` psi
    draws the latents from the normal truncated to [-psi, psi] and runs ``g`` with batch-norm
    statistics measured under that psi (``statistics_for_truncation``; ``g``'s own statistics are
    back afterwards). ``output``: ``"tensor"`` (float (N, C, H, W) in [-1, 1], on the CPU),
    ``"uint8"`` (the same layout, 0-255) or ``"pil"`` (a list of PIL images, :func:`to_pil`).
    With ``shard=(rank, world)`` only that process's part (:func:`shard_range`) is generated, from
    the latents the whole set would use, with its labels.
    """
    if output not in OUTPUTS:
        raise UsageError(f"output={output!r}: choose one of {', '.join(map(repr, OUTPUTS))}")
    if seeds is not None:
        seeds = [_seed_of(s) for s in seeds]
        if n is not None and n != len(seeds):
            raise UsageError(f"n={n} with {len(seeds)} seeds: give seeds (one image each) or n, not both")
        n, batch_size = len(seeds), 1
    elif n is None:
        raise UsageError("give n (the number of images) or seeds (one image per seed)")
    pool = resolve_classes(classes, g.num_classes, list(getattr(g, "class_names", [])), "classes")
    labels = image_classes(g.num_classes, pool, n, seeds)
    lo, hi = shard_range(n, batch_size, *shard)
    with statistics_for_truncation(g, truncation):
        images = _generate(g, n, labels, seed, seeds, batch_size, device, progress, (lo, hi), truncation)
    labels = labels[lo:hi] if labels is not None else None
    if output == "uint8":
        return _to_uint8(images), labels
    return (to_pil(images) if output == "pil" else images), labels


def _seed_of(s) -> int:
    if isinstance(s, bool) or not isinstance(s, int) and not hasattr(s, "__index__"):
        raise UsageError(f"seeds: {s!r} is not a whole number")
    s = int(s)
    if not 0 <= s <= MAX_SAMPLE_SEED:
        raise UsageError(f"seeds: {s} must be between 0 and {MAX_SAMPLE_SEED} (2**63 - 1)")
    return s


def _generate(g: Generator, n: int, labels: torch.Tensor | None, seed: int, seeds: list[int] | None,
              batch_size: int, device: str | torch.device, progress: bool, part: tuple[int, int],
              truncation: float | None) -> torch.Tensor:
    """See :func:`generate`: images ``part`` = ``[lo, hi)`` of ``n``. In ``-n`` mode every batch's
    noise is drawn, in order, and only the part's batches are run through ``g``."""
    lo, hi = part
    if seeds is not None:
        z = seed_latents(seeds[lo:hi], g.z_dim, truncation)
    else:
        gen = torch.Generator().manual_seed(seed)
        kept = []
        for start in range(0, n, batch_size):
            zb = draw_latents(min(batch_size, n - start), g.z_dim, gen, truncation)  # every batch's, in order
            if lo <= start < hi:
                kept.append(zb)
        z = torch.cat(kept) if kept else torch.empty(0, g.z_dim)
    return run_generator(g, z, labels[lo:hi] if labels is not None else None, batch_size, device, progress)


@torch.no_grad()
def run_generator(g: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 256,
                  device: str | torch.device = "cpu", progress: bool = False, desc: str = "sample",
                  unit: str = "img") -> torch.Tensor:
    """``g`` on the latents ``z`` (N, z_dim) and labels ``y`` (N,) or None, ``batch_size`` rows at a time:
    the images (N, C, H, W), float, on the CPU. The one place that runs a generator in batches (with
    a progress bar when ``progress``); with N = 0 an empty tensor shaped like one image batch."""
    from tqdm import tqdm
    out = []
    with tqdm(total=len(z), disable=not progress, desc=desc, unit=unit) as bar:
        for start in range(0, len(z), batch_size):
            yb = y[start:start + batch_size].to(device) if y is not None else None
            out.append(g(z[start:start + batch_size].to(device), yb).float().cpu())
            bar.update(len(out[-1]))
    if not out:  # more processes than batches: an empty part, shaped like a real one
        y0 = torch.zeros(1, dtype=torch.long, device=device) if getattr(g, "num_classes", 0) else None
        shape = g(torch.zeros(1, g.z_dim, device=device), y0).shape[1:]
        out.append(torch.empty(0, *shape))
    return torch.cat(out)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    from sagan.data.datasets import to_uint8
    return to_uint8(images)


def to_pil(images: torch.Tensor):
    """Images as PIL images, as pytorch-pretrained-BigGAN's ``convert_to_images``: a batch
    ``(N, C, H, W)`` -> a list of N images, one ``(C, H, W)`` -> one image. Float values are read
    as [-1, 1] (what the generator gives), uint8 as 0-255; 1 channel gives mode ``L``, 3 ``RGB``."""
    from PIL import Image
    if images.dim() not in (3, 4) or images.shape[-3] not in (1, 3):
        raise UsageError(f"to_pil: expected images (N, C, H, W) or (C, H, W) with 1 or 3 channels, got shape "
                         f"{tuple(images.shape)}")
    pixels = (images if images.dtype == torch.uint8 else _to_uint8(images)).detach().cpu()
    arrays = pixels.movedim(-3, -1).numpy()
    pil = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays.reshape(-1, *arrays.shape[-3:])]
    return pil if images.dim() == 4 else pil[0]


def seed_latents(seeds: list[int], z_dim: int, truncation: float | None = None) -> torch.Tensor:
    """One latent per seed, ``(len(seeds), z_dim)``: row i depends only on ``seeds[i]`` (and the
    truncation), so any single image can be regenerated from its seed alone."""
    rows = []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s))
        rows.append(torch.randn(z_dim, generator=gen) if truncation is None
                    else truncated_normal((z_dim,), truncation, gen))
    return torch.stack(rows) if rows else torch.empty(0, z_dim)
