"""Process-group helpers for torchrun / DistributedDataParallel.

``sagan train`` launched by torchrun (WORLD_SIZE > 1 in the environment) initialises the process
group itself: nccl with CUDA, gloo on CPU. G and D are wrapped in separate DDP wrappers, so the
alternating D and G updates each synchronise only their own gradients.

What keeps the replicas identical (checked by tests/test_distributed.py, not assumed):

* parameters: same initial weights on every rank (same seed), DDP all-reduces the gradients,
  every rank takes the same optimiser step;
* buffers: the D step runs the *unwrapped* G (no DDP forward, so no DDP buffer broadcast) and the
  G step the unwrapped D, and with plain BatchNorm each rank's BN running statistics come from
  its own shard of the batch. Instead of DDP's per-forward ``broadcast_buffers`` the trainer
  calls :func:`sync_buffers` once at the end of every step: BN running mean/var are averaged
  over ranks and every other buffer (spectral-norm u/v, ``num_batches_tracked``) is broadcast
  from rank 0. The EMA generator copies buffers from G after that, so it is identical too;
* SyncBatchNorm (``train.sync_bn``): ``sagan.nn.norm.convert_sync_batchnorm`` swaps G's batch
  norms for ``SyncBatchNorm2d``, which normalises with the statistics of the *global* batch.

The run-folder side of elastic restarts (which folder a restarted worker group continues) is
``sagan.runs.elastic``.
"""
from __future__ import annotations

import inspect
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import nn

from sagan.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def under_torchrun() -> bool:
    """Started by torchrun's agent (any number of processes, one included)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "TORCHELASTIC_RESTART_COUNT" in os.environ


def elastic_restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 on the first attempt)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def elastic_run_id() -> str | None:
    """torchrun's rendezvous id when it identifies this job (stable across restarts), else None.

    ``torchrun --standalone`` draws a random id per launch; ``--rdzv-id`` sets one; without
    either it is the placeholder ``"none"``, which names nothing.
    """
    rid = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return rid if rid and rid.lower() != "none" else None


def init_from_env(device_pref: str = "auto") -> DistInfo:
    """Initialise the default process group from torchrun's environment variables."""
    if not launched_by_torchrun():
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device_pref).type == "cuda"  # the one device check: CUDA asked for and present
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not tdist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if "TORCHELASTIC_RESTART_COUNT" in os.environ:
            # Keys of this attempt under their own prefix: after an elastic restart the gloo
            # full-mesh set-up was seen reading the killed group's addresses from the store
            # ("connection refused" or a hang), so each attempt gets a fresh namespace.
            store, _, _ = next(tdist.rendezvous("env://"))
            store = tdist.PrefixStore(f"sagan/attempt_{elastic_restart_count()}", store)
            tdist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
        else:
            tdist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank, device)


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """The device to run on: a torchrun process's own (``info.device``), else ``name`` ("auto": CUDA when available)."""
    if info is not None and info.world > 1:
        return info.device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; use cpu")
    return dev


def fork_rng(device: torch.device | str):
    """``torch.random.fork_rng`` for work on ``device``: the CPU generator and, on CUDA, that
    device's own generator are restored when the block ends."""
    dev = torch.device(device)
    return torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else [])


def rank0_info(info: DistInfo, logger: logging.Logger):
    """``logger.info`` on rank 0, a function that says nothing on the other ranks."""
    return logger.info if info.is_main else (lambda *a, **k: None)


def backend_name() -> str:
    return str(tdist.get_backend()) if tdist.is_available() and tdist.is_initialized() else "none"


def quiet_non_main(info: DistInfo) -> None:
    """Ranks other than 0 print nothing but errors: warnings are shown once, by rank 0."""
    if not info.is_main:
        warnings.simplefilter("ignore")


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP wrapper (identity for one process). Buffers are synchronised by :func:`sync_buffers`."""
    if info.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [info.device.index] if info.device.type == "cuda" else None
    # Buffers are broadcast once at construction, then kept equal by sync_buffers (not per forward).
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return DDP(model, device_ids=ids, forward_sync_buffers=False)
    return DDP(model, device_ids=ids, broadcast_buffers=False)


def _is_bn_stat(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and name in ("running_mean", "running_var")


@torch.no_grad()
def sync_buffers(info: DistInfo, *models: nn.Module) -> None:
    """Make every buffer of ``models`` identical on all ranks (two coalesced collectives).

    BN running statistics are averaged (each rank saw a different shard of the batch; the mean
    of the shards' running means is the running mean of the global batch); all other buffers
    are copied from rank 0.
    """
    if info.world <= 1 or not tdist.is_initialized():
        return
    averaged, broadcast = [], []
    for model in models:
        for mod in model.modules():
            for name, buf in mod.named_buffers(recurse=False):
                if buf is None:
                    continue
                (averaged if _is_bn_stat(name, mod) and buf.is_floating_point() else broadcast).append(buf)
    if averaged:
        _coalesced(averaged, lambda flat: (tdist.all_reduce(flat), flat.div_(info.world)))
    if broadcast:
        _coalesced(broadcast, lambda flat: tdist.broadcast(flat, src=0))


def _coalesced(tensors: list[torch.Tensor], op) -> None:
    """Run ``op`` on one flat tensor per dtype and copy the results back."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        op(flat)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def max_abs_buffer_difference(info: DistInfo, *models: nn.Module) -> float:
    """Largest |rank r - rank 0| over all parameters and buffers (0.0 when replicas agree)."""
    if info.world <= 1 or not tdist.is_initialized():
        return 0.0
    worst = torch.zeros(())
    for model in models:
        for t in list(model.parameters()) + list(model.buffers()):
            ref = t.detach().clone()
            tdist.broadcast(ref, src=0)
            worst = torch.maximum(worst, (t.detach().double() - ref.double()).abs().max().cpu().float())
    tdist.all_reduce(worst, op=tdist.ReduceOp.MAX)
    return float(worst)


# --------------------------------------------------------------------------- misc

def barrier(info: DistInfo) -> None:
    if info.world > 1 and tdist.is_initialized():
        tdist.barrier()


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's value of a picklable ``obj`` on every rank."""
    if info.world <= 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    if info.world <= 1:
        return [obj]
    out = [None] * info.world
    tdist.all_gather_object(out, obj)
    return out


def broadcast_path(path, info: DistInfo):
    """Rank 0's value of ``path`` on every rank."""
    if info.world <= 1:
        return path
    value = broadcast_object(str(path) if path is not None else None, info)
    return Path(value) if value is not None else None
