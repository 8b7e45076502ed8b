"""sagan.allocator: glibc malloc keeps a CPU step's freed memory for reuse (no fresh pages per step), the
user's own malloc settings win, and a CPU Trainer applies it only with ``train.keep_cpu_memory``.

The thresholds last for the rest of a process, so the real ones are set in subprocesses here; in the
test process ``set_malloc_thresholds`` only records its calls (conftest ``malloc_calls``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sagan import allocator

# A loop shaped like a training step's activations: tensors of a few sizes allocated, written, freed.
# Prints the minor page faults per cycle after a warm-up, with the thresholds as argv[1] asks.
FAULTS_CHILD = """
import json, resource, sys
import torch
torch.set_num_threads(1)
from sagan import allocator
mode = sys.argv[1]
applied = {"keep": lambda: allocator.keep_freed_memory(), "pinned": allocator.pin_malloc_thresholds}[mode]()
x = [torch.rand(n) for n in (1 << 19, 1 << 21, 17 << 18)]  # 2, 8 and 17 MiB of fp32

def cycle():
    out = [torch.relu(t) for t in x]  # fresh outputs, written
    out += [o * 2 for o in out]
    return float(sum(o[-1] for o in out))

for _ in range(10):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"applied": applied, "faults_per_cycle": faults,
                  "pages_per_cycle": 2 * sum(t.numel() * 4 for t in x) / 4096}))
"""


def _faults(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", FAULTS_CHILD, mode], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    import platform
    return platform.libc_ver()[0] == "glibc"


def test_kept_memory_is_reused_without_page_faults():
    """With every block mmap-ed and returned (pinned), each cycle touches fresh pages: about one fault
    per 4 KiB page written (fewer where the kernel maps huge pages). With freed memory kept, the
    cycles after warm-up reuse it: under 2% of those faults."""
    if not _glibc():
        pytest.skip("glibc malloc only (this C library is not glibc)")
    keep, pinned = _faults("keep"), _faults("pinned")
    assert keep["applied"].startswith("malloc: freed memory kept"), keep
    assert pinned["applied"] is True
    assert pinned["faults_per_cycle"] > 0.05 * pinned["pages_per_cycle"], pinned  # the cost it removes is real
    assert keep["faults_per_cycle"] < 0.02 * pinned["faults_per_cycle"], (keep, pinned)


@pytest.mark.parametrize("var, value", [("MALLOC_MMAP_THRESHOLD_", "65536"), ("MALLOC_TRIM_THRESHOLD_", "0"),
                                        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])
def test_the_users_malloc_settings_win(monkeypatch, malloc_calls, var, value):
    monkeypatch.setenv(var, value)
    assert allocator.keep_freed_memory() == f"malloc: left as {var} sets it"
    assert malloc_calls == []


def test_keep_sets_both_thresholds_high(monkeypatch, malloc_calls):
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(var, raising=False)
    assert allocator.keep_freed_memory() == "malloc: freed memory kept for reuse (train.keep_cpu_memory)"
    assert malloc_calls == [(allocator.KEEP_BYTES, allocator.KEEP_BYTES)]


def test_keep_falls_back_to_the_largest_mmap_threshold_older_glibc_accepts(monkeypatch):
    calls = []

    def older_glibc(mmap_bytes, trim_bytes):
        calls.append((mmap_bytes, trim_bytes))
        return mmap_bytes <= allocator.GLIBC_MMAP_MAX
    monkeypatch.setattr(allocator, "set_malloc_thresholds", older_glibc)
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(var, raising=False)
    assert allocator.keep_freed_memory().startswith("malloc: freed memory kept")
    assert calls == [(allocator.KEEP_BYTES, allocator.KEEP_BYTES), (allocator.GLIBC_MMAP_MAX, allocator.KEEP_BYTES)]


@pytest.mark.parametrize("keep", [True, False])
def test_a_cpu_trainer_keeps_memory_only_when_asked(tmp_path: Path, monkeypatch, malloc_calls, keep):
    from sagan.config import load_config
    from sagan.data.datasets import ImageData
    from sagan.train.resolve import resolve_for_data
    from sagan.train.trainer import Trainer
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config("fmnist32", None, ["model.g_ch=8", "model.d_ch=8", "train.batch_size=8", "train.device=cpu",
                                         f"train.keep_cpu_memory={str(keep).lower()}"])
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    data = ImageData("tiny", "random", 4, 1, 32, [f"c{i}" for i in range(4)], images, torch.arange(16) % 4)
    tr = Trainer(resolve_for_data(cfg, data, torch.device("cpu"))[0], tmp_path / "run", data, progress=False)
    try:
        assert (tr.malloc is not None) is keep
        assert malloc_calls == ([(allocator.KEEP_BYTES, allocator.KEEP_BYTES)] if keep else [])
    finally:
        if tr.logger is not None:
            tr.logger.close()
