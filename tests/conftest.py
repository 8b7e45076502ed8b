"""Shared fixtures: a tiny image folder and a tiny trained run (made once per test session)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

TINY_TRAIN_ARGS = [
    "--preset", "fmnist32",
    "--set", "data.dataset=image_folder",
    "--set", "model.g_ch=8", "--set", "model.d_ch=8",
    "--set", "train.batch_size=8", "--set", "train.log_every=2",
    "--set", "train.sample_every=2", "--set", "train.ckpt_every=2",
    "--set", "train.keep_ckpts=2",
    "--no-progress",
]


def make_image_folder(root: Path, classes: int = 2, per_class: int = 8, size: int = 40, seed: int = 0) -> Path:
    """Class folders of small RGB PNGs: class k is a bright square at a class-specific place."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        d = root / f"class_{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            o = 4 + 12 * k % (size - 16)
            img[o:o + 12, o:o + 12] = 220
            Image.fromarray(img).save(d / f"img_{i:03d}.png")
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread for tests that train in process on a shared 2-core machine (faster
    overall than two oversubscribed threads); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_folder) -> Path:
    """A finished 4-step conditional run on the tiny folder (read-only for tests: copy to modify)."""
    from sagan.cli import main
    out = tmp_path_factory.mktemp("runs")
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "4",
               "--out", str(out), "--name", "tiny"])
    assert rc == 0
    return out / "tiny"
