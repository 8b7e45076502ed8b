"""The random streams of a training run: captured into a checkpoint and restored from one (exact
resume and rollback), seeded per process, and kept still while sampling or evaluation runs.

A run draws from torch's global CPU (and CUDA) generator, Python's ``random``, numpy's global
generator and the step's own noise generator (``SAGANStep.noise``); all of them are saved as tensors
and plain values, never pickled objects.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch


def seed_globals(seed: int) -> None:
    """Seed torch's, Python's and numpy's global generators with ``seed``."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def capture_rng(noise: torch.Generator) -> dict[str, Any]:
    """Every stream's state, for a checkpoint's ``rng`` entry."""
    rng = {"torch": torch.get_rng_state(), "noise": noise.get_state(),
           "python": _py_random_state(), "numpy": _np_random_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any], noise: torch.Generator) -> None:
    """Set every stream to the state :func:`capture_rng` recorded (CUDA's only when both have CUDA)."""
    torch.set_rng_state(rng["torch"])
    noise.set_state(rng["noise"])
    _set_py_random_state(rng["python"])
    _set_np_random_state(rng["numpy"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


@contextlib.contextmanager
def rng_isolated(device: torch.device | str = "cpu"):
    """Run a block (sampling, evaluation) without moving any global RNG stream used by training.

    Saves and restores torch's CPU (and CUDA) generator, Python's ``random`` and numpy's global
    state, so exact resume holds however often the block runs.
    """
    dev = torch.device(device)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _py_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_py_random_state(s: list) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))


def _np_random_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_np_random_state(s: dict) -> None:
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))
