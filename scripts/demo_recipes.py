"""Collect the demo-recipe runs of scripts/demo_recipes.sh into DEST/results.json and DEST/results.md.

Per run: candidate, seed, steps, the final score (FID in the shipped classifier's features, 10000
samples against the training images, and class accuracy, from `sagan evaluate`'s JSON) and the
training-time FID curve (2000 samples) from metrics.csv. Per candidate: the values of every seed and
the paired difference to `base900` per seed. With fewer than 4 seeds no interval is printed (n < 4).
DEST/shipped.json, when present, is the same score of the shipped fmnist32 model (the target).
DEST/curves.png: every run's training-time FID against the images it has seen (the demo's budget is
in images), its final 10000-sample score and the target.

Usage: python scripts/demo_recipes.py RUNS_DIR DEST
"""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import yaml

BASE = "base900"


def read_run(run: Path) -> dict | None:
    evals = sorted((run / "eval").glob("step_*-fmnist-train.json"))
    if not evals:
        return None
    record = json.loads(evals[-1].read_text(encoding="utf-8"))
    m = re.fullmatch(r"(.+)-s(\d+)", run.name)
    if m is None:
        return None
    curve, ips = [], []
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("eval/fid_fmnist"):
                curve.append([int(float(row["step"])), float(row["eval/fid_fmnist"])])
            if row.get("images_per_s"):
                ips.append(float(row["images_per_s"]))
    step = int(re.search(r"step_(\d+)", evals[-1].name).group(1))
    batch = int(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["train"]["batch_size"])
    return {"candidate": m.group(1), "seed": int(m.group(2)), "step": step, "batch_size": batch,
            "fid_fmnist": record["metrics"]["fid_fmnist"], "class_accuracy": record["metrics"].get("class_accuracy"),
            "curve": curve, "images_per_s_median_shared": sorted(ips)[len(ips) // 2] if ips else None}


def main(argv: list[str]) -> int:
    runs_dir, dest = Path(argv[1]), Path(argv[2])
    runs = [r for r in (read_run(p) for p in sorted(runs_dir.iterdir()) if p.is_dir()) if r]
    dest.mkdir(parents=True, exist_ok=True)
    shipped = json.loads((dest / "shipped.json").read_text(encoding="utf-8")) if (dest / "shipped.json").is_file() else None
    (dest / "results.json").write_text(json.dumps({"runs": runs, "shipped": shipped}, indent=1) + "\n", encoding="utf-8")
    by: dict[str, dict[int, dict]] = {}
    for r in runs:
        by.setdefault(r["candidate"], {})[r["seed"]] = r
    lines = ["# Demo recipes: FID at the end of about 20 minutes of a quiet 2-core Zen 3", "",
             "FID in the shipped classifier's features, 10000 samples of the EMA generator against the "
             "training images (`sagan evaluate -n 10000 --features fmnist --metrics fid`); lower is better.", ""]
    if shipped:
        lines += [f"Target, the shipped fmnist32 model (4000 steps, the same evaluation): FID "
                  f"{shipped['fid_fmnist']:.2f}, class accuracy {shipped['class_accuracy']:.3f}.", ""]
    lines += ["| candidate | steps | FID per seed | mean | paired FID - base900 per seed | class accuracy per seed |",
              "|---|---:|---:|---:|---:|---:|"]
    for cand, seeds in by.items():
        fids = [seeds[s]["fid_fmnist"] for s in sorted(seeds)]
        diffs = [seeds[s]["fid_fmnist"] - by[BASE][s]["fid_fmnist"] for s in sorted(seeds)
                 if cand != BASE and s in by.get(BASE, {})]
        accs = [seeds[s]["class_accuracy"] for s in sorted(seeds)]
        lines.append(f"| {cand} | {seeds[min(seeds)]['step']} | {', '.join(f'{v:.2f}' for v in fids)} | "
                     f"{sum(fids) / len(fids):.2f} | {', '.join(f'{d:+.2f}' for d in diffs) or '-'} | "
                     f"{', '.join(f'{a:.3f}' for a in accs)} |")
    lines += ["", f"n = {max((len(s) for s in by.values()), default=0)} seeds per candidate: n < 4, so no interval; "
              "values only."]
    lines += ["", "![training-time FID against images seen](curves.png)"]
    (dest / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_curves(runs, shipped, dest / "curves.png")
    print(f"{dest}: {len(runs)} finished runs")
    return 0


def plot_curves(runs: list[dict], shipped: dict | None, path: Path) -> None:
    """Training-time FID (2000 samples, solid) against images seen, one colour per candidate, one line
    per seed; the final 10000-sample score as a marker; the target as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for r in sorted(runs, key=lambda r: (r["candidate"], r["seed"])):
        c = colours.setdefault(r["candidate"], f"C{len(colours)}")
        style = ("-", "--", ":", "-.")[list(colours).index(r["candidate"]) % 4]  # overlapping curves stay visible
        xs = [s * r["batch_size"] / 1000 for s, _ in r["curve"]]
        ax.plot(xs, [f for _, f in r["curve"]], color=c, marker=".", lw=1.2, ls=style,
                label=f"{r['candidate']} (training-time, 2000 samples)" if r["seed"] == min(
                    q["seed"] for q in runs if q["candidate"] == r["candidate"]) else None)
        ax.plot([r["step"] * r["batch_size"] / 1000], [r["fid_fmnist"]], color=c, marker="*", ms=11, ls="none")
    if shipped:
        ax.axhline(shipped["fid_fmnist"], color="k", ls="--", lw=1,
                   label=f"target: shipped model, {shipped['fid_fmnist']:.2f} (10000 samples)")
    ax.plot([], [], color="grey", marker="*", ms=11, ls="none", label="final score (10000 samples)")
    ax.set_xlabel("thousand images through the training step (each run ends at its 20-minute budget)")
    ax.set_ylabel("FID, shipped classifier's features")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
