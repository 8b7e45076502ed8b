"""Process-group helpers for torchrun / DistributedDataParallel.

``sagan train`` launched by torchrun (WORLD_SIZE > 1 in the environment) initialises the process
group itself: nccl with CUDA, gloo on CPU. G and D are wrapped in separate DDP wrappers, so the
alternating D and G updates each synchronise only their own gradients.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist
from torch import nn


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


def init_from_env(device_pref: str = "auto") -> DistInfo:
    """Initialise the default process group from torchrun's environment variables."""
    if not launched_by_torchrun():
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda") or device_pref.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local_rank, device)


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    if info.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids, broadcast_buffers=True)


def barrier(info: DistInfo) -> None:
    if info.world > 1 and tdist.is_initialized():
        tdist.barrier()


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def broadcast_path(path, info: DistInfo):
    """Rank 0's value of ``path`` on every rank."""
    if info.world <= 1:
        return path
    obj = [str(path) if path is not None else None]
    tdist.broadcast_object_list(obj, src=0)
    from pathlib import Path
    return Path(obj[0])
