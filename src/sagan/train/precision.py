"""``train.precision=auto``: fp32 or bf16, chosen by measuring this model's training step on this machine.

Rules, in order (``resolve_precision``):

1. an explicit ``train.precision`` (fp32, bf16, fp16) is used as it is;
2. on a device without native bf16 (a CPU without AVX512-BF16 or AMX, where bf16 is emulated and can be
   hundreds of times slower; a GPU that does not support it) auto is fp32, and no probe runs;
3. otherwise a short probe times this config's training step (its model, its batch, synthetic images) in fp32
   and in bf16, alternately (``PROBE_STEPS`` rounds of one step each after one warm-up), and records the
   median of the rounds' ratios in the cache folder, keyed by the CPU (or GPU) model, the torch version and
   the step's shape, so it runs once. Rounds that disagree by more than ``PROBE_AGREEMENT`` (other work took
   the CPU part of the time) are used for this run only and not cached, so a busy moment is not kept;
4. bf16 is chosen only when it was at least ``MIN_SPEEDUP`` times faster *and* the bf16 quality check
   allows it (``BF16_QUALITY``: the default run trained in both precisions, 2 seeds each, scored like the
   studies; docs/speed.md). It has been run and found bf16 not worse beyond the seed spread (2026-12-07).

The start-up line says what was chosen and why, with the measured ratio. The resolved value is what the
run's config.yaml stores, so a resume trains in the same precision on any machine.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from sagan import distributed as dist_utils
from sagan.data.datasets import cache_dir
from sagan.fileio import atomic_write_text
from sagan.machine import native_bf16, processor
from sagan.models import build_models
from sagan.train.step import SAGANStep

MIN_SPEEDUP = 1.2
PROBE_STEPS = 5
# The rounds' ratios must agree within this factor (largest / smallest) for the median to be cached.
PROBE_AGREEMENT = 1.5
PROBE_FILE = "precision-probe.json"
# The verdict of the bf16 quality check (docs/speed.md, "Does bf16 cost quality?"; docs/bf16-quality/): None
# until it has been run; True when bf16 was not worse beyond the seed spread, False when it was. Run on
# 2026-12-07 on an Intel Xeon with AMX: endpoint FID bf16 - fp32 +0.133 (seed 0), -0.487 (seed 1), seed spread
# 0.255, so not worse beyond it (a screen with two pairs, not a test of equivalence).
BF16_QUALITY: bool | None = True


def probe_key(cfg: Any, device: torch.device) -> str:
    """What the measured ratio depends on: the processor, torch, and the step's shape."""
    m, t = cfg.model, cfg.train
    proc = processor(device)
    shape = (f"{m.resolution}px g{m.g_ch} d{m.d_ch} attn G{m.g_attn} D{m.d_attn} batch {t.batch_size} "
             f"threads {torch.get_num_threads()} channels_last {t.channels_last}")
    return f"{proc} | torch {torch.__version__} | {shape}"


def probe_speedup(cfg: Any, num_classes: int, channels: int, device: torch.device,
                  steps: int = PROBE_STEPS, pair: tuple[str, str] = ("fp32", "bf16")) -> list[float]:
    """Per round, seconds of a step in ``pair[0]`` / seconds of the next step in ``pair[1]`` (fp32 / bf16), for
    this config's step on synthetic images (``steps`` rounds after one warm-up); ``cfg.data.diffaugment`` resolved already
    (``resolve_policy``), as 'sagan train' and the Trainer do before they resolve the precision. Leaves torch's
    global RNG as it was."""
    batch = cfg.train.batch_size
    with dist_utils.fork_rng(device):
        torch.manual_seed(0)
        x = torch.rand(batch, channels, cfg.model.resolution, cfg.model.resolution, device=device) * 2 - 1
        y = torch.randint(0, max(1, num_classes), (batch,), device=device)
        steppers = []
        for precision in pair:
            c = _with_precision(cfg, precision)
            g, d = build_models(c.model, num_classes, channels)
            steppers.append(SAGANStep(c, g.to(device), d.to(device), device, dist_utils.DistInfo(),
                                      lambda: (x, y), num_classes))
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        times: list[list[float]] = [[], []]
        for step in steppers:  # warm-up
            step()
        for _ in range(steps):
            for i, step in enumerate(steppers):
                sync()
                t0 = time.perf_counter()
                step()
                sync()
                times[i].append(time.perf_counter() - t0)
    return [a / b for a, b in zip(times[0], times[1])]


def _with_precision(cfg: Any, precision: str) -> Any:
    import copy

    c = copy.deepcopy(cfg)
    c.train.precision = precision
    c.train.compile = False
    return c


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # absent or damaged: measured again and rewritten


def resolve_precision(cfg: Any, num_classes: int, channels: int, device: torch.device,
                      cache: Path | None = None, world: int = 1) -> tuple[str, str]:
    """(precision, why) for ``cfg.train.precision`` (see the module's rules); ``world``: processes of the run."""
    asked = cfg.train.precision
    if asked != "auto":
        return asked, f"train.precision={asked} (as set)"
    if world > 1:  # every process must train in the same precision; a per-process probe could disagree
        return "fp32", "auto: fp32 in a distributed run (no probe: set train.precision=bf16 to use it)"
    if not native_bf16(device):
        return "fp32", "auto: fp32, no native bf16 on this device (AVX512-BF16 or AMX), so no probe"
    path = (cache or cache_dir()) / PROBE_FILE
    records = _read_cache(path)
    key = probe_key(cfg, device)
    ratio = records.get(key, {}).get("bf16_speedup") if isinstance(records.get(key), dict) else None
    if not isinstance(ratio, (int, float)) or not ratio > 0:
        rounds = probe_speedup(cfg, num_classes, channels, device)
        ratio = statistics.median(rounds)
        how = "measured now"
        if max(rounds) > PROBE_AGREEMENT * min(rounds):  # other work took the CPU part of the time
            how += f"; rounds {min(rounds):.2f}-{max(rounds):.2f}x disagree, so not cached"
        else:
            records[key] = {"bf16_speedup": ratio, "rounds": rounds,
                            "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(records, indent=1) + "\n")
            except OSError:
                pass  # a read-only cache: measured again next time
    else:
        how = f"measured before, cached in {path}"
    if ratio < MIN_SPEEDUP:
        return "fp32", f"auto: fp32, bf16 was {ratio:.2f}x fp32's speed ({how}; bf16 needs {MIN_SPEEDUP}x)"
    if BF16_QUALITY is not True:
        verdict = "has not been run" if BF16_QUALITY is None else "found bf16 worse"
        return "fp32", (f"auto: fp32, bf16 was {ratio:.2f}x faster ({how}) but the bf16 quality check {verdict} "
                        "(docs/speed.md); set train.precision=bf16 to use it anyway")
    return "bf16", f"auto: bf16, {ratio:.2f}x fp32's speed ({how}), quality checked"
