"""glibc malloc's two thresholds, which decide what happens to a large tensor's memory when it is freed.

On Linux, PyTorch's CPU tensors get their memory from the C library's ``malloc``. By default glibc
serves a large block by ``mmap`` and hands it back to the kernel when it is freed; the next tensor of
that size then touches fresh pages, and the kernel zeroes every 4 KiB page on first write. A CPU
training step frees and reallocates its activations every step, so it pays that again and again: on
the fmnist32 step 28000-40000 minor page faults per step (110-160 MiB of pages zeroed), most of them
charged to whichever op first writes a new output (ReLU's ``clamp_min`` in the profile; docs/speed.md).

* :func:`keep_freed_memory` (training on CPU, ``train.keep_cpu_memory``): serve blocks from the heap and
  keep freed memory for reuse. The peak is the same; the process keeps it between steps instead of
  giving it back.
* :func:`pin_malloc_thresholds` (the memory benchmark): the opposite, every block of 64 KiB or more
  by ``mmap`` and returned at once, so the resident-set high-water mark follows live tensors.

Both are process-wide and last until changed. Elsewhere than glibc they do nothing and say so.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks below this come from the heap; freed memory below this at its top is kept
GLIBC_MMAP_MAX = 32 << 20  # what older glibc accepts at most for M_MMAP_THRESHOLD on 64-bit


def set_malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """Set glibc's mmap and trim thresholds; whether both were accepted (False without glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_bytes))
    except (OSError, AttributeError):
        return False


def user_malloc_settings() -> str | None:
    """The environment variable through which the user already tuned glibc malloc, if any."""
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if var in os.environ:
            return var
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def keep_freed_memory() -> str:
    """Keep freed memory for reuse (see the module); returns what was done, for the start-up log."""
    var = user_malloc_settings()
    if var is not None:
        return f"malloc: left as {var} sets it"
    if set_malloc_thresholds(KEEP_BYTES, KEEP_BYTES) or set_malloc_thresholds(GLIBC_MMAP_MAX, KEEP_BYTES):
        return "malloc: freed memory kept for reuse (train.keep_cpu_memory)"
    return "malloc: not glibc, left as it is"


def pin_malloc_thresholds() -> bool:
    """Serve every allocation >= 64 KiB by mmap and give freed memory back at once (see the module);
    whether it applied."""
    return set_malloc_thresholds(64 * 1024, 128 * 1024)
