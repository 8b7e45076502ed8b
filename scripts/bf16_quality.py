"""Collect the runs of scripts/bf16_quality.sh into DEST/results.json, DEST/results.md and DEST/curves.png.

Per run (named PRECISION-sSEED): the primary endpoint, fixed before the runs (docs/speed.md, "Does bf16
cost quality?"): the training-time FID in the shipped classifier's features on 10000 fixed-latent samples,
averaged over steps 3000, 3500 and 4000; the final `sagan evaluate` FID (10000 samples against the training
images) and class accuracy (secondary); the machine that trained it (version.json).

The reading, fixed with the endpoint: d_s = bf16(s) - fp32(s) per seed; the seed spread is |fp32(0) -
fp32(1)|. bf16 is "worse beyond the seed spread" when every d_s > 0 and mean(d) > the spread; then
``train.precision=auto`` must not pick bf16. Two seeds make this a screen for a large loss, not a test of
equivalence: below 4 pairs no interval is printed (``sagan.study.stats``).

Runs that DEST/results.json holds already and RUNS_DIR does not (trained on another machine: the bf16
runs need native bf16, the fp32 ones may finish elsewhere) are kept.

Usage: python scripts/bf16_quality.py RUNS_DIR DEST
       python scripts/bf16_quality.py --has DEST NAME   (exit 0 when DEST holds the run NAME, e.g. bf16-s0)
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from sagan.runs.folder import run_machines
from sagan.study.stats import compare
from sagan.viz.report.charts import read_metrics_csv

ENDPOINT_STEPS = (3000, 3500, 4000)
PRECISIONS = ("fp32", "bf16")


def read_run(run: Path) -> dict | None:
    """One finished run's values, or None while it has no evaluation JSON."""
    m = re.fullmatch(r"(fp32|bf16)-s(\d+)", run.name)
    evals = sorted((run / "eval").glob("step_*-fmnist-train.json"))
    if m is None or not evals:
        return None
    record = json.loads(evals[-1].read_text(encoding="utf-8"))
    cols = read_metrics_csv(run / "metrics.csv")
    steps, fid = cols["step"], cols["eval/fid_fmnist"]
    curve = [[int(s), float(f)] for s, f in zip(steps, fid) if not math.isnan(f)]
    at = dict(curve)
    missing = [s for s in ENDPOINT_STEPS if s not in at]
    ips = cols.get("images_per_s", np.array([]))
    ips = ips[~np.isnan(ips)]
    return {"precision": m.group(1), "seed": int(m.group(2)), "curve": curve,
            "endpoint_fid": None if missing else float(np.mean([at[s] for s in ENDPOINT_STEPS])),
            "fid_fmnist": record["metrics"]["fid_fmnist"], "class_accuracy": record["metrics"].get("class_accuracy"),
            "images_per_s_median": float(np.median(ips)) if len(ips) else None, "machines": run_machines(run)}


def reading(by: dict[str, dict[int, dict]]) -> dict:
    """The paired comparison of the endpoint and the rule's reading (None until both seeds of both exist)."""
    values = {p: {s: r["endpoint_fid"] for s, r in by.get(p, {}).items() if r["endpoint_fid"] is not None}
              for p in PRECISIONS}
    out = {"endpoint": compare(values["bf16"], values["fp32"]),
           "final_fid": compare({s: r["fid_fmnist"] for s, r in by.get("bf16", {}).items()},
                                {s: r["fid_fmnist"] for s, r in by.get("fp32", {}).items()})}
    fp32 = values["fp32"]
    if len(fp32) >= 2 and out["endpoint"]["n"] >= 2:
        spread = max(fp32.values()) - min(fp32.values())
        worse = all(d > 0 for d in out["endpoint"]["diffs"]) and out["endpoint"]["diff"] > spread
        out.update(seed_spread=spread, bf16_worse_beyond_spread=worse)
    return out


def collected(dest: Path) -> list[dict]:
    """The runs DEST/results.json holds already (none when it is absent)."""
    path = dest / "results.json"
    if not path.is_file():
        return []
    runs = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) and {"precision", "seed"} <= set(r) for r in runs):
        raise SystemExit(f"{path}: not the results this script writes (a list of runs with precision and seed); "
                         "move it away")
    return runs


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--has":  # exit 0 when DEST already holds the run NAME
        return 0 if any(f"{r['precision']}-s{r['seed']}" == argv[3] for r in collected(Path(argv[2]))) else 1
    runs_dir, dest = Path(argv[1]), Path(argv[2])
    found = [r for r in (read_run(p) for p in sorted(runs_dir.iterdir()) if p.is_dir()) if r]
    # Runs collected before and not in RUNS_DIR (trained on another machine) stay; a run here replaces its
    # earlier record.
    have = {(r["precision"], r["seed"]) for r in found}
    runs = [r for r in collected(dest) if (r["precision"], r["seed"]) not in have] + found
    by: dict[str, dict[int, dict]] = {}
    for r in runs:
        by.setdefault(r["precision"], {})[r["seed"]] = r
    result = reading(by)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "results.json").write_text(json.dumps({"runs": runs, "reading": result}, indent=1) + "\n",
                                       encoding="utf-8")
    lines = ["# bf16 against fp32 on the default fmnist32 run", "",
             "Primary endpoint (fixed before the runs): training-time FID in the shipped classifier's features, "
             "10000 fixed-latent samples, mean of steps 3000, 3500 and 4000. Final: `sagan evaluate -n 10000 "
             "--features fmnist --metrics fid` of the EMA generator. Lower is better. Paired by seed: the same "
             "start, data and noise; only `train.precision` differs.", "",
             "| run | endpoint FID | final FID | class accuracy | images/s (median, 1 thread, two runs sharing 2 cores) "
             "| machine |", "|---|---:|---:|---:|---:|---|"]
    for r in sorted(runs, key=lambda r: (r["seed"], r["precision"])):
        ep = f"{r['endpoint_fid']:.3f}" if r["endpoint_fid"] is not None else "-"
        acc = f"{r['class_accuracy']:.3f}" if r["class_accuracy"] is not None else "-"
        ips = f"{r['images_per_s_median']:.1f}" if r["images_per_s_median"] else "-"
        lines.append(f"| {r['precision']}-s{r['seed']} | {ep} | {r['fid_fmnist']:.3f} | {acc} | {ips} | "
                     f"{', '.join(r['machines'])} |")
    for key, title in (("endpoint", "endpoint FID"), ("final_fid", "final FID")):
        c = result[key]
        if c["n"]:
            lines += ["", f"{title}, bf16 - fp32 per seed: {', '.join(f'{d:+.3f}' for d in c['diffs'])}; mean "
                      f"{c['diff']:+.3f} (n = {c['n']} < 4: no interval; exact sign-flip p {c['p']:.2f})."]
    if "seed_spread" in result:
        lines += ["", f"Seed spread of fp32's endpoint |fp32(0) - fp32(1)|: {result['seed_spread']:.3f}. bf16 worse "
                  f"beyond the seed spread (every difference > 0 and the mean > the spread): "
                  f"**{'yes' if result['bf16_worse_beyond_spread'] else 'no'}**."]
    lines += ["", "![training-time FID](curves.png)"]
    (dest / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(runs, dest / "curves.png")
    print(f"{dest}: {len(runs)} finished runs")
    return 0


def plot(runs: list[dict], path: Path) -> None:
    """Training-time FID against step: colour by seed, solid fp32, dashed bf16."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for r in sorted(runs, key=lambda r: (r["seed"], r["precision"])):
        xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
        ax.plot(xs, ys, color=f"C{r['seed']}", ls="-" if r["precision"] == "fp32" else "--", marker=".",
                label=f"{r['precision']}, seed {r['seed']}")
    ax.axvspan(min(ENDPOINT_STEPS) - 100, max(ENDPOINT_STEPS) + 100, color="grey", alpha=0.15,
               label="endpoint: mean of these evaluations")
    ax.set_xlabel("step (batch 64)")
    ax.set_ylabel("training-time FID (10000 samples)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
