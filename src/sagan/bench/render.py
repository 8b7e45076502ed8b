"""Render the JSON written by ``sagan bench`` as docs/benchmarks.md.

    python benchmarks/render.py benchmarks/results.json docs/benchmarks.md

(``benchmarks/render.py`` calls ``main`` here; ``sagan bench --markdown FILE`` calls ``render``.)
Every number on the page comes from the JSON; the page says which machine produced it and
whether the CPU was shared while it ran.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sagan.fileio import atomic_write_text

log = logging.getLogger(__name__)


def _mib(b: float | None) -> str:
    if b is None:
        return "n/a"
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def _speed(slowdown: float) -> str:
    if abs(slowdown - 1) < 0.05:
        return f"about the same ({1 / slowdown:.2f}x)"
    return f"{1 / slowdown:.2f}x faster" if slowdown < 1 else f"{slowdown:.2f}x slower"


def _attention_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("attention") or []
    if not rows:
        return []
    r0 = rows[0]
    out = ["## 1. Attention layer, forward + backward", "",
           f"Batch {r0['batch']}, {r0['channels']} channels, fp32, `SelfAttention2d` with spectral norm "
           "(training mode). *fused*: our default path (`scaled_dot_product_attention`, no map stored); "
           "*explicit*: our bmm + softmax path (used for attention maps and double backward); *naive*: "
           "the seed notes' layer (value at C channels, `bmm(v, attn^T)`).", ""]
    backends = res.get("sdpa_backend")
    if backends:
        out += [f"SDPA kernel PyTorch picks here: paper variant `{backends['paper']}`; biggan variant "
                f"`{backends['biggan_unpadded']}` with its raw head dims (q/k C/8, v C/2), "
                f"`{backends['biggan_as_run']}` as run (q/k zero-padded to v's head dim, exact).", ""]
    out += ["| variant | size | path | time / call | peak extra memory | vs explicit: speed-up | vs explicit: memory |",
            "|---|---|---|---|---|---|---|"]
    by_key = {(r["variant"], r["size"], r["impl"]): r for r in rows}
    for r in rows:
        ref = by_key.get((r["variant"], r["size"], "explicit"))
        if r["status"] != "ok":
            out.append(f"| {r['variant']} | {r['size']}x{r['size']} | {r['impl']} | does not fit | "
                       f"needs ~{_mib(r['predicted_peak_bytes'])} (predicted), {_mib(r['available_bytes'])} available | | |")
            continue
        speed = mem = ""
        if ref is not None and ref is not r:
            if ref["status"] == "ok":
                speed = f"{ref['seconds'] / r['seconds']:.2f}x"
                if r.get("peak_extra_bytes") and ref.get("peak_extra_bytes"):
                    ratio = r["peak_extra_bytes"] / ref["peak_extra_bytes"]
                    mem = f"1/{1 / ratio:.0f}" if ratio < 0.5 else f"{ratio:.2f}x"
            else:
                speed, mem = "explicit does not fit", ""
        out.append(f"| {r['variant']} | {r['size']}x{r['size']} | {r['impl']} | {r['seconds'] * 1e3:.1f} ms | "
                   f"{_mib(r.get('peak_extra_bytes'))} | {speed} | {mem} |")
    out.append("")
    return out


def _train_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("train") or []
    if not rows:
        return []
    mm = res["matmul_fp32"]
    out = ["## 2. Training step per preset (and 3. EMA sampling)", "",
           f"One step = one D step (real + fake batch) + one G step + EMA update, fp32, synthetic images. "
           f"fp32 matmul ({mm['n']}x{mm['n']} @ {mm['n']}x{mm['n']}) in the same run: "
           f"**{mm['gflops']:.1f} GFLOP/s**. GFLOP/step is the nominal count of "
           "`torch.utils.flop_counter` (2 x multiply-adds of every conv, matmul and attention product); "
           "oneDNN's convolution kernels can reach a higher nominal rate than one large fp32 matmul, so "
           "\"% of matmul\" above 100% means the step runs as fast as the machine's GEMM, not that FLOPs "
           "were miscounted.", "",
           "| preset | batch (preset's) | G / D params | s / step | images / s | GFLOP / step | GFLOP/s | % of matmul | EMA sampling images / s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        opts = ", ".join(o for o in r.get("overrides", []) if not o.startswith("model."))
        name = f"{r['preset']} ({opts})" if opts else r["preset"]
        out.append(f"| {name} | {r['batch']} ({r['preset_batch']}) | {r['params_G'] / 1e6:.2f}M / "
                   f"{r['params_D'] / 1e6:.2f}M | {r['seconds_per_step']:.3f} | {r['images_per_s']:.1f} | "
                   f"{r['flops_per_step'] / 1e9:.1f} | {r['gflops_per_s']:.1f} | "
                   f"{r['gflops_per_s'] / r.get('matmul_gflops_same_run', mm['gflops']) * 100:.0f}%"
                   f"{' (vs ' + format(r['matmul_gflops_same_run'], '.1f') + ' measured with it)' if 'matmul_gflops_same_run' in r else ''}"
                   f" | {r['sampling']['images_per_s']:.1f} |")
    out.append("")
    return out


def _data_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("data") or []
    if not rows:
        return []
    out = ["## Data path vs training step", "",
           "Images/s of loading alone (decode, resize, batch; `sagan bench --data PATH`), per loader worker count, "
           "next to one training step of the same preset and batch on synthetic images.", "",
           "| preset | dataset | batch | loader: images / s (first batch) | training step images / s | limit |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        loaders = "; ".join(f"{x['num_workers']} workers: {x['images_per_s']:.0f} ({x['first_batch_s']:.1f} s)"
                            for x in r["loaders"])
        out.append(f"| {r['preset']} | {r['source']} | {r['batch']} | {loaders} | "
                   f"{r['train_step_images_per_s']:.1f} | {r['limit']} |")
    out.append("")
    return out


def _precision_section(res: dict[str, Any]) -> list[str]:
    p = res.get("precision")
    if not p:
        return []
    out = ["## bf16 vs fp32 on this CPU", "",
           "| op | fp32 GFLOP/s | bf16 GFLOP/s | bf16 speed vs fp32 |", "|---|---|---|---|"]
    mm = [k for k in p if k.startswith("matmul") and k.endswith("float32")][0]
    mb = mm.replace("float32", "bfloat16")
    out.append(f"| matmul {p[mm]['n']}^3 | {p[mm]['gflops']:.1f} | {p[mb]['gflops']:.1f} | {_speed(p['matmul_bf16_slowdown'])} |")
    out.append(f"| conv3x3 ({p['conv3x3_float32']['shape']}) | {p['conv3x3_float32']['gflops']:.1f} | "
               f"{p['conv3x3_bfloat16']['gflops']:.1f} | {_speed(p['conv_bf16_slowdown'])} |")
    out.append("")
    step = p.get("train_step") or {}
    if "bf16_speedup" in step:
        out += [f"Training step, {step['preset']} at batch {step['batch']} (timed alternately with fp32): fp32 "
                f"{step['fp32_images_per_s']:.1f} img/s, bf16 {step['bf16_images_per_s']:.1f} img/s, bf16 "
                f"{step['bf16_speedup']:.2f}x.", ""]
    elif step:
        out += [f"Training step in bf16: not measured ({step['not_measured']}).", ""]
    return out


def _profile_section(res: dict[str, Any]) -> list[str]:
    rows = res.get("profile") or []
    if not rows:
        return []
    out = ["## Where the training step's time goes", "",
           "`sagan bench --only profile`: torch.profiler over the step; each op's self time, grouped by kind "
           "(sagan.bench.profile). Shares of the profiled wall time; the profiler adds overhead, so read the shares.", ""]
    for r in rows:
        out += [f"### {r['preset']}, batch {r['batch']}, {r['precision']} ({r['ms_per_step']:.0f} ms per profiled step, "
                f"{r['threads']} threads)", "", "| kind of op | ms / step | share |", "|---|---:|---:|"]
        out += [f"| {c['name']} | {c['ms_per_step']:.1f} | {c['share']:.1%} |" for c in r["categories"]]
        out += ["", "| top op | kind | ms / step | share |", "|---|---|---:|---:|"]
        out += [f"| `{o['name']}` | {o['category']} | {o['ms_per_step']:.1f} | {o['share']:.1%} |" for o in r["top_ops"]]
        out.append("")
    return out


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# Benchmarks", "",
             "Generated by `benchmarks/render.py` from the JSON that `sagan bench` wrote; do not edit by hand.", "",
             "## Machine", "",
             f"- {m.get('cpu', '?')}, {m.get('cpu_count', '?')} logical CPUs, torch threads {m.get('threads')}, "
             f"{m.get('mem_total_gib', '?')} GiB RAM; CPU family {m.get('cpu_family', '?')}, model {m.get('cpu_model', '?')}; bf16-related CPU flags: {', '.join(m.get('cpu_bf16_flags', [])) or 'none'}",
             f"- device `{m['device']}`" + (f" ({m['gpu']})" if m.get("gpu") else " (no GPU was available: CUDA paths untested here)"),
             f"- torch {m['torch']}, Python {m['python']}, {m.get('platform', '')}",
             f"- run {res.get('started')} to {res.get('finished')}; load average at start "
             f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', []))}, at end "
             f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_at_end', []))}"]
    if res.get("notes"):
        lines.append(f"- **Note:** {res['notes']}")
    lines += ["", "## Method", "", res.get("method", ""), ""]
    lines += (_precision_section(res) + _profile_section(res) + _attention_section(res) + _train_section(res)
              + _data_section(res))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    """``python benchmarks/render.py RESULTS.json OUT.md``; messages go through logging (to stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(argv) != 2:
        log.error("usage: python benchmarks/render.py RESULTS.json OUT.md")
        return 2
    res = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    atomic_write_text(argv[1], render(res))
    log.info(f"wrote {argv[1]}")
    return 0

