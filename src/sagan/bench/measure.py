"""The measurements behind ``sagan bench``: attention layer, training step, sampling, precision.

``run_benchmarks`` runs the selected sections and returns one JSON-ready dict (the schema that
``sagan.bench.render`` turns into ``docs/benchmarks.md``); every function takes plain arguments.
Nothing here is asserted by tests (timings depend on the machine and its load); tests only check
that each benchmark runs and reports sane fields.

Method (also written into the JSON and the rendered page):

* time: ``time.perf_counter`` around whole calls, after one warm-up call, median of ``--reps``;
* peak extra memory (CPU): the process's resident-set high-water mark (VmHWM) is reset through
  ``/proc/self/clear_refs`` before the first (cold) call, and the reported figure is VmHWM after
  the call minus the resident set before it. Large tensors are mmap-ed by the allocator and
  returned to the kernel when freed (for the attention section only, the bench pins glibc's mmap and trim thresholds so that
  holds for every allocation of 64 KiB or more), so this is the peak of everything the call kept alive at
  once (activations, the attention map, gradients), not an estimate. On CUDA it is
  ``torch.cuda.max_memory_allocated`` minus the allocation before the call;
* a configuration that cannot fit is not run: its peak is predicted from the same
  implementation's measured peak at the next smaller size, scaled by the N^2 of the map for the
  explicit and naive paths (the quadratic term dominates there; by N for the fused one), and it is reported as "does not fit" when the prediction
  exceeds the memory available. Running it for real could push a shared machine into the OOM
  killer;
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one training step (forward and
  backward of both models, matmuls/convs/attention); achieved GFLOP/s = FLOPs / step time,
  next to the fp32 matmul GFLOP/s measured in the same run.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sagan.bench import DEFAULT_OFF, DEFAULT_SIZES, PRESETS, SECTIONS  # noqa: F401 (part of this module's interface)
from sagan.bench.synthetic import synthetic_trainer
from sagan.config import load_config
from sagan.data.datasets import load_data
from sagan.data.stream import BatchStream
from sagan.distributed import resolve_device
from sagan.machine import cpu_fields, describe, native_bf16
from sagan.models import count_parameters
from sagan.nn.attention import SelfAttention2d, double_backward_mode

METHOD = __doc__.split("Method", 1)[1].strip()  # written into the JSON
# Per-preset batch for the training-step benchmark on CPU (the presets' own batches, except
# where a step would take minutes on a small CPU; stated in the output).
CPU_TRAIN_BATCH = {"fmnist32": 64, "cifar32": 32, "imagefolder64": 16, "imagenet128": 4}


# --------------------------------------------------------------------------- measurement helpers

def pin_malloc_thresholds() -> bool:
    """glibc: serve every allocation >= 64 KiB by mmap and give freed memory back at once.

    By default glibc raises its mmap threshold after frees (up to 32 MiB) and keeps freed heap
    memory, so a later call could reuse resident memory without raising the high-water mark.
    Fixing both thresholds makes VmHWM follow live tensor memory. Returns whether it applied.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(libc.mallopt(m_trim_threshold, 128 * 1024))
    except (OSError, AttributeError):
        return False


def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak_extra(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak memory ``fn`` needs on top of what is already allocated (bytes); None if unknown."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if not _reset_peak():
        fn()
        return None
    before = _rss_bytes("VmRSS")
    fn()
    peak = _rss_bytes("VmHWM")
    return None if before is None or peak is None else max(0, peak - before)


def time_call(fn: Callable[[], Any], reps: int, device: torch.device, warmup: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``reps`` calls after ``warmup`` calls."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alternating_times(fns: dict[str, Callable[[], Any]], reps: int, device: torch.device,
                      warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each of ``fns``, timed in turn (A B A B ...: each repetition calls every
    one once), so a machine whose load changes during the measurement slows every one alike and their
    ratio stays fair."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def available_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """The machine of a benchmark: :func:`sagan.machine.describe`, with the platform, every CPU flag,
    the memory and the load when it started."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": str(torch.__version__),
                            "platform": platform.platform(), **describe(device)}
    info["cpu_flags"] = cpu_fields().get("flags", "").split()
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------- matmul and precision

def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 5, dtype=torch.float32) -> dict[str, Any]:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_call(lambda: a @ b, reps, device)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": t, "gflops": 2 * n ** 3 / t / 1e9}


def precision_bench(device: torch.device, reps: int = 3, step_preset: str | None = None, step_batch: int = 64,
                    native: bool = True, overrides: list[str] | None = None) -> dict[str, Any]:
    """bf16 vs fp32 for a matmul and a 3x3 conv (forward, plain tensors, no autocast), and, with
    ``step_preset`` on a device with native bf16, that preset's training step under ``train.precision``
    fp32 and bf16 (with the config ``overrides`` of ``--set``); each pair timed alternately
    (``alternating_times``)."""
    out: dict[str, Any] = {}
    n = 1024
    mats = {dt: (torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt))
            for dt in (torch.float32, torch.bfloat16)}
    t = alternating_times({str(dt)[6:]: (lambda a=a, b=b: a @ b) for dt, (a, b) in mats.items()}, reps, device)
    for name, sec in t.items():
        out[f"matmul{n}_{name}"] = {"n": n, "dtype": name, "seconds": sec, "gflops": 2 * n ** 3 / sec / 1e9}
    x = torch.randn(16, 64, 32, 32, device=device)
    w = torch.randn(64, 64, 3, 3, device=device)
    conv_flops = 2 * 16 * 64 * 64 * 9 * 32 * 32
    convs = {str(dt)[6:]: (lambda xd=x.to(dt), wd=w.to(dt): F.conv2d(xd, wd, padding=1))
             for dt in (torch.float32, torch.bfloat16)}
    for name, sec in alternating_times(convs, reps, device).items():
        out[f"conv3x3_{name}"] = {"shape": "x 16x64x32x32, w 64x64x3x3", "seconds": sec,
                                  "gflops": conv_flops / sec / 1e9}
    out["matmul_bf16_slowdown"] = out[f"matmul{n}_float32"]["gflops"] / out[f"matmul{n}_bfloat16"]["gflops"]
    out["conv_bf16_slowdown"] = out["conv3x3_float32"]["gflops"] / out["conv3x3_bfloat16"]["gflops"]
    if step_preset is not None:
        if not native:
            out["train_step"] = {"preset": step_preset, "not_measured": "no native bf16 on this device: the bf16 step "
                                 "would be emulated (see conv_bf16_slowdown)"}
            return out
        with tempfile.TemporaryDirectory() as tmp:
            trainers = {p: synthetic_trainer(step_preset, step_batch, device, Path(tmp) / p,
                                              [*(overrides or []), f"train.precision={p}"])
                        for p in ("fp32", "bf16")}
            t = alternating_times({p: tr.train_step for p, tr in trainers.items()}, reps, device)
            for tr in trainers.values():
                if tr.logger is not None:
                    tr.logger.close()
        out["train_step"] = {"preset": step_preset, "batch": step_batch,
                             **{f"{p}_images_per_s": step_batch / sec for p, sec in t.items()},
                             "bf16_speedup": t["fp32"] / t["bf16"]}
    return out


# --------------------------------------------------------------------------- attention

class NaiveAttention(nn.Module):
    """The seed notes' layer: value at C channels, bmm + softmax, full (B, N, N) map."""

    def __init__(self, c: int):
        super().__init__()
        self.query_conv = nn.Conv2d(c, c // 8, 1)
        self.key_conv = nn.Conv2d(c, c // 8, 1)
        self.value_conv = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.full((), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, w, h = x.shape
        q = self.query_conv(x).view(b, -1, w * h).permute(0, 2, 1)
        k = self.key_conv(x).view(b, -1, w * h)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)
        v = self.value_conv(x).view(b, -1, w * h)
        out = torch.bmm(v, attn.permute(0, 2, 1)).view(b, c, w, h)
        return self.gamma * out + x


def _attention_impl(name: str, channels: int, variant: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "naive":
        return NaiveAttention(channels).to(device)
    layer = SelfAttention2d(channels, variant).to(device)
    with torch.no_grad():
        layer.gamma.fill_(0.5)
    if name == "fused":
        return layer

    def explicit(x: torch.Tensor) -> torch.Tensor:
        with double_backward_mode():  # forces the explicit bmm + softmax path
            return layer(x)
    return explicit


def sdpa_backend(q_dim: int, v_dim: int, device: torch.device) -> str:
    """Which SDPA kernel runs for these head dims (fp32), as PyTorch selects it."""
    q = torch.randn(1, 1, 64, q_dim, device=device)
    v = torch.randn(1, 1, 64, v_dim, device=device)
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel(backend), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "kernel not used because ..." is the answer, not news
                F.scaled_dot_product_attention(q, q, v, scale=1.0)
            return backend.name.lower()
        except RuntimeError:
            continue
    return "math"


def attention_bench(device: torch.device, sizes=DEFAULT_SIZES, batch: int = 8, channels: int = 64,
                    variants=("paper", "biggan"), reps: int = 3, log=print) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    avail = available_memory(device)
    for variant in variants:
        measured: dict[str, tuple[int, int]] = {}  # impl -> (N, peak bytes) at the largest size run
        for size in sizes:
            n = size * size
            for impl in ("fused", "explicit", "naive"):
                if impl == "naive" and variant != "paper":
                    continue
                row: dict[str, Any] = {"variant": variant, "impl": impl, "size": size, "batch": batch,
                                       "channels": channels}
                if impl in measured and avail is not None:
                    n0, peak0 = measured[impl]
                    predicted = peak0 * (n / n0) ** (1 if impl == "fused" else 2)  # fused: no N^2 map
                    if predicted > 0.8 * avail:
                        row.update(status="does not fit", predicted_peak_bytes=int(predicted),
                                   available_bytes=avail)
                        rows.append(row)
                        log(f"  attention {variant:6s} {impl:8s} {size:4d}x{size:<4d} does not fit: needs "
                            f"~{predicted / 2**30:.1f} GiB (measured at {int(math.sqrt(n0))}x{int(math.sqrt(n0))}, "
                            f"scaled by N^2), {avail / 2**30:.1f} GiB available")
                        continue
                torch.manual_seed(0)
                call = _forward_backward(_attention_impl(impl, channels, variant, device),
                                         torch.randn(batch, channels, size, size, device=device, requires_grad=True))
                peak = measure_peak_extra(call, device)
                t = time_call(call, reps, device, warmup=0)
                row.update(status="ok", seconds=t, peak_extra_bytes=peak)
                if peak is not None:
                    measured[impl] = (n, peak)
                rows.append(row)
                log(f"  attention {variant:6s} {impl:8s} {size:4d}x{size:<4d} {t * 1e3:9.1f} ms  "
                    f"peak +{(peak or 0) / 2**20:8.1f} MiB")
                del call  # frees the layer and its input before the next size
    return rows


def _forward_backward(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    """One forward and backward pass of ``layer`` on ``x`` (its gradient cleared first), as a call to time."""
    def call() -> None:
        x.grad = None
        layer(x).sum().backward()
    return call


# --------------------------------------------------------------------------- training step and sampling

def train_step_bench(preset_name: str, batch: int, device: torch.device, reps: int = 3,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    """One full training step (D step + G step + EMA) of ``preset_name`` at ``batch``."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = synthetic_trainer(preset_name, batch, device, Path(tmp), overrides)
        cfg = trainer.cfg
        trainer.train_step()  # warm-up
        with FlopCounterMode(display=False) as counter:
            trainer.train_step()
        flops = counter.get_total_flops()
        t = time_call(trainer.train_step, reps, device, warmup=0)
        n_params = (count_parameters(trainer.gan.G), count_parameters(trainer.gan.D))
        sample = sampling_bench(trainer.gan.ema.shadow, batch, device, reps)
        if trainer.logger is not None:
            trainer.logger.close()
    return {"preset": preset_name, "batch": batch, "preset_batch": load_config(preset_name).train.batch_size,
            "resolution": cfg.model.resolution, "g_ch": cfg.model.g_ch, "d_ch": cfg.model.d_ch,
            "params_G": n_params[0], "params_D": n_params[1],
            "seconds_per_step": t, "images_per_s": batch / t, "flops_per_step": flops,
            "gflops_per_s": flops / t / 1e9, "sampling": sample,
            "overrides": overrides or []}


def data_path_bench(preset_name: str, root: str, batch: int, overrides: list[str] | None = None,
                    batches: int = 20, workers: tuple[int, ...] = (0, 2)) -> dict[str, Any]:
    """Images/s of the data path alone (decode, resize, batch: what a training step waits for) on the
    dataset at ``root`` with ``preset_name``'s data settings, for each loader worker count, next to
    one training step of the same model and batch on synthetic data, so a user sees which one limits
    training. The loaders' start-up (first batch) is timed apart from the steady batches."""
    cfg = load_config(preset_name, None, [f"data.root={root}", *(overrides or [])])
    if cfg.data.dataset not in ("image_folder",) and not root:
        raise ValueError("the data section needs a dataset folder")
    data = load_data(cfg.data, cfg.model.resolution, cfg.model.conditional)
    rows = []
    for w in workers:
        stream = BatchStream(data, min(batch, len(data)), seed=0, num_workers=w)
        t0 = time.perf_counter()
        next(stream)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(batches):
            next(stream)
        steady = time.perf_counter() - t0
        stream.close()
        rows.append({"num_workers": w, "first_batch_s": round(first, 3),
                     "images_per_s": batches * min(batch, len(data)) / steady})
    return {"preset": preset_name, "source": data.source, "images": len(data), "batch": batch,
            "resolution": cfg.model.resolution, "loaders": rows, "overrides": overrides or []}


@torch.no_grad()
def sampling_bench(g: nn.Module, batch: int, device: torch.device, reps: int = 3) -> dict[str, Any]:
    """EMA generator in eval mode: images per second at ``batch``."""
    g.eval()
    z = torch.randn(batch, g.z_dim, device=device)
    y = torch.randint(0, g.num_classes, (batch,), device=device) if g.num_classes > 0 else None
    t = time_call(lambda: g(z, y), reps, device)
    return {"batch": batch, "seconds_per_batch": t, "images_per_s": batch / t}


# --------------------------------------------------------------------------- the attention section

def attention_section(device: torch.device, sizes: Iterable[int] = DEFAULT_SIZES, batch: int = 8,
                      channels: int = 64, reps: int = 3, log=print) -> dict[str, Any]:
    """The attention layer's rows and the SDPA kernels PyTorch picks, with malloc pinned on CPU.

    Pinned malloc thresholds make every large tensor an mmap that is returned on free, so the
    resident-set high-water mark measures the attention layer's peak exactly. They also make
    allocation-heavy code slower and stay for the rest of the process: run it last, or in a
    fresh process (``attention_in_fresh_process``).
    """
    out: dict[str, Any] = {"malloc_thresholds_pinned": pin_malloc_thresholds() if device.type == "cpu" else False}
    sizes = tuple(sizes)
    log(f"attention layer fwd+bwd, batch {batch}, {channels} channels:")
    out["attention"] = attention_bench(device, sizes, batch, channels, reps=reps, log=log)
    out["sdpa_backend"] = {"paper": sdpa_backend(channels // 8, channels // 8, device),
                           "biggan_unpadded": sdpa_backend(channels // 8, channels // 2, device),
                           "biggan_as_run": sdpa_backend(channels // 2, channels // 2, device)}
    return out


_ATTENTION_CHILD = ("import sys; from sagan.bench.measure import attention_child_main; "
                    "sys.exit(attention_child_main(sys.argv[1:]))")


def attention_child_main(argv: list[str]) -> int:
    """Entry point of the child process: ``argv`` = [settings as JSON, output JSON path]."""
    settings, out = json.loads(argv[0]), Path(argv[1])
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    result = attention_section(resolve_device(settings["device"]), settings["sizes"], settings["batch"],
                               settings["channels"], settings["reps"])
    out.write_text(json.dumps(result), encoding="utf-8")
    return 0


def attention_in_fresh_process(device: str, sizes: Iterable[int], batch: int, channels: int, reps: int,
                               threads: int | None = None) -> dict[str, Any]:
    """``attention_section`` with these settings in a child process (its output goes to ours)."""
    settings = {"device": str(device), "sizes": list(sizes), "batch": batch, "channels": channels, "reps": reps,
                "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "attention.json"
        subprocess.run([sys.executable, "-c", _ATTENTION_CHILD, json.dumps(settings), str(out)], check=True)
        return json.loads(out.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- everything

def run_benchmarks(device: str = "auto", only: Iterable[str] | None = None, sizes: Iterable[int] = DEFAULT_SIZES,
                   attn_batch: int = 8, attn_channels: int = 64, presets: Iterable[str] = PRESETS,
                   train_batch: int | None = None, overrides: Iterable[str] = (), reps: int = 3,
                   threads: int | None = None, note: str = "", log=print, data_root: str | None = None) -> dict[str, Any]:
    """Run the sections in ``only`` (default all of SECTIONS) and return the results.

    ``train_batch``: one batch for every preset (default: CPU_TRAIN_BATCH on CPU, the preset's
    own batch elsewhere). ``overrides``: config overrides for the training-step benchmark.
    ``threads``: torch threads, for this process and the attention child process.
    """
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    only = set(only) if only else (set(SECTIONS) - set(DEFAULT_OFF)) | ({"data"} if data_root is not None else set())
    sizes = tuple(sizes)
    result: dict[str, Any] = {"machine": machine_info(dev), "notes": note or "",
                              "malloc_thresholds_pinned": False,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "method": METHOD}
    if "matmul" in only or "train" in only:
        result["matmul_fp32"] = matmul_gflops(dev, reps=reps + 2)
        log(f"fp32 matmul 2048^3: {result['matmul_fp32']['gflops']:.1f} GFLOP/s")
    if "precision" in only:
        step_preset = next(iter(presets), None)
        result["precision"] = precision_bench(dev, reps, step_preset, train_batch or CPU_TRAIN_BATCH.get(step_preset, 64)
                                              if dev.type == "cpu" else train_batch or 64,
                                              native_bf16(dev), list(overrides))
        p = result["precision"]
        log(f"bf16 vs fp32 (time ratio, fp32 = 1; timed alternately): matmul {p['matmul_bf16_slowdown']:.2f}, "
            f"conv3x3 {p['conv_bf16_slowdown']:.2f} (< 1: bf16 faster)")
        step = p.get("train_step", {})
        if "bf16_speedup" in step:
            log(f"training step {step['preset']} batch {step['batch']}: fp32 {step['fp32_images_per_s']:.1f} img/s, "
                f"bf16 {step['bf16_images_per_s']:.1f} img/s: bf16 {step['bf16_speedup']:.2f}x")
        elif step:
            log(f"training step {step['preset']} in bf16: not measured ({step['not_measured']})")
    if "profile" in only:
        from sagan.bench.profile import step_profile

        result["profile"] = []
        for name in presets:
            batch = train_batch or (CPU_TRAIN_BATCH[name] if dev.type == "cpu" else load_config(name).train.batch_size)
            precisions = ["fp32", "bf16"] if native_bf16(dev) else ["fp32"]
            for precision in precisions:
                row = step_profile(name, batch, dev, precision, overrides=list(overrides))
                result["profile"].append(row)
                shares = ", ".join(f"{c['name']} {c['share']:.0%}" for c in row["categories"][:6])
                log(f"profile {name} batch {batch} {precision}: {row['ms_per_step']:.0f} ms/step profiled; {shares}")
    if "train" in only:
        result["train"] = []
        for name in presets:
            batch = train_batch or (CPU_TRAIN_BATCH[name] if dev.type == "cpu" else None)
            if batch is None:
                batch = load_config(name).train.batch_size
            row = train_step_bench(name, batch, dev, reps, overrides=list(overrides))
            result["train"].append(row)
            log(f"train step {name:14s} batch {batch:4d}: {row['images_per_s']:8.1f} img/s, "
                f"{row['flops_per_step'] / 1e9:8.1f} GFLOP/step, {row['gflops_per_s']:7.1f} GFLOP/s "
                f"({row['gflops_per_s'] / result['matmul_fp32']['gflops'] * 100:.0f}% of matmul); "
                f"EMA sampling {row['sampling']['images_per_s']:.1f} img/s")
    if "data" in only:
        result["data"] = []
        for name in presets:
            batch = train_batch or (CPU_TRAIN_BATCH[name] if dev.type == "cpu" else load_config(name).train.batch_size)
            row = data_path_bench(name, str(data_root), batch, overrides=list(overrides))
            step = next((r for r in result.get("train", []) if r["preset"] == name), None)
            if step is None:
                step = train_step_bench(name, batch, dev, reps, overrides=list(overrides))
            row["train_step_images_per_s"] = step["images_per_s"]
            best = max(r["images_per_s"] for r in row["loaders"])
            row["limit"] = "data path" if best < step["images_per_s"] else "training step"
            result["data"].append(row)
            loaders = ", ".join(f"{r['num_workers']} workers {r['images_per_s']:.0f} img/s "
                                f"(first batch {r['first_batch_s']:.1f} s)" for r in row["loaders"])
            log(f"data path {name} on {row['source']}: {loaders}; training step {step['images_per_s']:.1f} img/s "
                f"at batch {batch}: the {row['limit']} limits training")
    if "attention" in only and dev.type == "cpu" and len(only) > 1:
        # Memory is measured from the resident-set high-water mark, which is exact only in a
        # process whose heap has not grown yet: run the attention section in a fresh one.
        result.update(attention_in_fresh_process(str(dev), sizes, attn_batch, attn_channels, reps, threads))
    elif "attention" in only:
        # The training-step timings above ran with malloc unpinned (see attention_section).
        result.update(attention_section(dev, sizes, attn_batch, attn_channels, reps, log=log))
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    try:
        result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    except OSError:
        pass
    return result
