"""Which machine a process runs on: the processor by name, family and model, its bf16 support, the
threads, the GPU. Float results of the convolution kernels and every speed depend on it, so a run's
``version.json`` records it at the start and at every resume, and benchmarks and the precision probe
key on it.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("model name", "cpu family", "model", "flags",
    ...); only "model name" (from :func:`platform.processor`) where there is no /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model name": platform.processor()}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = (s.strip() for s in line.split(":", 1))
            out.setdefault(key, value)
        elif not line.strip() and out:
            break  # the first processor is enough
    return out


def bf16_flags(fields: dict[str, str] | None = None) -> list[str]:
    """The CPU flags that mean native bf16 (AVX512-BF16, AMX)."""
    flags = (fields if fields is not None else cpu_fields()).get("flags", "").split()
    return sorted(f for f in flags if f == "avx512_bf16" or f.startswith("amx"))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (a CPU with AVX512-BF16 or AMX; a GPU that supports it)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(bf16_flags())


def processor(device: torch.device, fields: dict[str, str] | None = None) -> str:
    """One line naming what computes on ``device``: the GPU's name, or the CPU's with its family and
    model (two CPUs with one marketing name, e.g. "AMD EPYC", differ there)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    f = fields if fields is not None else cpu_fields()
    return f"{f.get('model name', '?')} (family {f.get('cpu family', '?')}, model {f.get('model', '?')})"


def describe(device: torch.device) -> dict[str, Any]:
    """The record of the machine for a run's ``version.json``: the processor line, the CPU's name,
    family, model, logical cores and bf16 flags, the threads torch uses, and the GPU when ``device``
    is one."""
    f = cpu_fields()
    info: dict[str, Any] = {"processor": processor(device, f), "cpu": f.get("model name", "?"),
                            "cpu_family": f.get("cpu family"), "cpu_model": f.get("model"),
                            "cpu_count": os.cpu_count(), "cpu_bf16_flags": bf16_flags(f),
                            "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
