"""Load trained models back from a run directory or a checkpoint file."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from sagan.config import Config, config_from_dict
from sagan.models import Discriminator, Generator, build_models
from sagan.errors import CheckpointError
from sagan.train.checkpoint import load_checkpoint, resolve_checkpoint
from sagan.train.rundir import RunDir


@dataclass
class LoadedRun:
    cfg: Config
    G: Generator  # the EMA generator unless asked otherwise
    D: Discriminator
    step: int
    checkpoint: Path
    run_dir: Path | None
    num_classes: int
    channels: int
    class_names: list[str] = field(default_factory=list)
    dataset: str = ""


def load_run(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> LoadedRun:
    """Build G (EMA weights by default) and D from a run directory or checkpoint, in eval mode."""
    ckpt = resolve_checkpoint(path)
    state = load_checkpoint(ckpt, map_location="cpu")
    cfg = config_from_dict(state["config"])
    meta = state["data"]
    g, d = build_models(cfg.model, meta["num_classes"], meta["channels"])
    try:
        g.load_state_dict(state["G_ema" if ema else "G"])
        d.load_state_dict(state["D"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt} does not match the architecture its config describes: {e}") from None
    run_dir = ckpt.parent.parent if RunDir(ckpt.parent.parent).checkpoints == ckpt.parent else None
    g.to(device).eval()
    d.to(device).eval()
    return LoadedRun(cfg, g, d, int(state["step"]), ckpt, run_dir, meta["num_classes"], meta["channels"],
                     list(meta.get("class_names", [])), meta.get("name", ""))


def shard_range(n: int, batch_size: int, rank: int = 0, world: int = 1) -> tuple[int, int]:
    """The samples ``[start, stop)`` that process ``rank`` of ``world`` generates: whole batches,
    contiguous, in rank order, so the shards concatenated in rank order are the 1-process set."""
    batches = -(-n // batch_size)
    per = -(-batches // world)
    return min(n, rank * per * batch_size), min(n, (rank + 1) * per * batch_size)


@torch.no_grad()
def generate(g: Generator, n: int, classes: list[int] | None = None, seed: int = 0, batch_size: int = 256,
             device: str | torch.device = "cpu", progress: bool = False,
             shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` images in [-1, 1] (float, CPU) and their labels (cycling through ``classes``, or all).

    With ``shard=(rank, world)`` only that process's part (:func:`shard_range`) is generated,
    from the same latents the whole set would use: every batch's noise is drawn, in order, and
    only this shard's batches are run through ``g``. Returns that part and its labels.
    """
    from tqdm import tqdm
    gen = torch.Generator().manual_seed(seed)
    labels = None
    if g.num_classes > 0:
        pool = torch.tensor(classes if classes else list(range(g.num_classes)))
        labels = pool[torch.arange(n) % len(pool)]
    lo, hi = shard_range(n, batch_size, *shard)
    out = []
    bar = tqdm(total=hi - lo, disable=not progress, desc="sample", unit="img")
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        z = torch.randn(b, g.z_dim, generator=gen)
        if not lo <= start < hi:
            continue
        y = labels[start:start + b].to(device) if labels is not None else None
        out.append(g(z.to(device), y).float().cpu())
        bar.update(b)
    bar.close()
    if not out:  # more processes than batches: an empty part, shaped like a real one
        shape = g(torch.zeros(1, g.z_dim, device=device),
                  labels[:1].to(device) if labels is not None else None).shape[1:]
        out.append(torch.empty(0, *shape))
    return torch.cat(out), (labels[lo:hi] if labels is not None else None)
