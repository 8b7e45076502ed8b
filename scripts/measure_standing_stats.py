"""Measure what the EMA generator's batch-norm statistics do to its samples (docs/models.md,
docs/sampling.md): the shipped fmnist32 model as shipped (statistics copied from the raw G during
training) against the same weights with standing statistics, for several numbers of batches and
statistics seeds; then the truncation table (psi vs FID, IS, class accuracy, precision, recall,
mean pixel), as shipped and with the statistics measured under each psi. Also separates the two
things loading an old export now remakes: the spectral-norm vectors and the BN statistics.

Scored with the shipped Fashion-MNIST classifier's features against 10000 training images.
Writes JSON (and prints a markdown table). Usage:

    python scripts/measure_standing_stats.py --out docs/studies/standing-stats [--samples 10000]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from sagan.config import DataConfig
from sagan.data.datasets import to_uint8
from sagan.metrics.evaluation import compute_metrics
from sagan.metrics.reference import reference_for
from sagan.models import Generator
from sagan.models.export import CONFIG_NAME, INFO_KEY, resolve_export
from sagan.models.standing import STANDING_BATCH_SIZE, STANDING_BATCHES, draw_latents, standing_statistics
from sagan.nn.spectral import sync_spectral_norm


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return " ".join(f"{k.strip()}={fields[k].strip()}" for k in ("Model name", "CPU family", "Model") if k in fields)
    except OSError:
        return platform.processor()


@torch.no_grad()
def samples(g: Generator, n: int, seed: int, truncation: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % g.num_classes
    out = []
    for s in range(0, n, 500):
        z = draw_latents(min(500, n - s), g.z_dim, gen, truncation)
        out.append(g(z, labels[s:s + len(z)]))
    return to_uint8(torch.cat(out)), labels


def score(g: Generator, reference, n: int, truncation: float | None = None) -> dict:
    images, labels = samples(g, n, 1234, truncation)
    m = compute_metrics(images, reference, ["is", "fid", "pr"], "fmnist", fake_labels=labels, progress=False)
    keep = ("fid", "is_mean", "precision", "recall", "class_accuracy")
    out = {k: round(float(m[k]), 4) for k in keep}
    out["mean_pixel"] = round(float(images.float().mean()), 2)
    return out


def load_as_stored(name: str, tmp: Path) -> Generator:
    """The export's weights and buffers exactly as stored: a copy whose record says its statistics
    are not to be remade (``from_pretrained`` remakes those of exports written before 0.2)."""
    src = resolve_export(name)
    folder = tmp / "as-stored"
    shutil.copytree(src, folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config[INFO_KEY]["bn_statistics"] = {"mode": "copy"}
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    return Generator.from_pretrained(folder).eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/studies/standing-stats")
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--sweep-samples", type=int, default=5000, help="samples per row of the sweep and psi tables")
    ap.add_argument("--model", default="fmnist32", help="a shipped name or an export folder (written before 0.2)")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in OUT/results.json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        g = load_as_stored(args.model, Path(tmp))
    stored = {k: v.clone() for k, v in g.state_dict().items()}  # BN statistics and u/v as shipped
    reference = reference_for(DataConfig(dataset="fashion_mnist"), 32, 1, "train", 10000, progress=False)
    result: dict = {"model": args.model, "samples": args.samples, "sweep_samples": args.sweep_samples,
                    "features": "fmnist (shipped classifier)",
                    "reference": "Fashion-MNIST train, a seeded subset of 10000 images", "cpu": cpu_name(),
                    "torch": torch.__version__, "rows": [], "sweep": [], "truncation": []}
    path = out / "results.json"
    done: dict = json.loads(path.read_text()) if args.resume and path.is_file() else {}
    for key in ("rows", "sweep", "truncation"):
        result[key] = list(done.get(key, []))

    def save() -> None:
        path.write_text(json.dumps(result, indent=2) + "\n")

    def setup(sync_sn: bool, batches: int | None, seed: int = 0, psi: float | None = None) -> float:
        g.load_state_dict(stored)
        t = time.perf_counter()
        if sync_sn:
            sync_spectral_norm(g)
        if batches:
            standing_statistics(g, batches=batches, batch_size=STANDING_BATCH_SIZE, seed=seed, truncation=psi)
        return round(time.perf_counter() - t, 2)

    t0 = time.perf_counter()
    for label, sync_sn, batches in (("as shipped (BN statistics and u/v copied from the raw G)", False, None),
                                    ("u/v of its own weights, BN statistics as shipped", True, None),
                                    ("standing BN statistics, u/v as shipped", False, STANDING_BATCHES),
                                    ("both (what loading it does now)", True, STANDING_BATCHES)):
        if any(r["generator"] == label for r in result["rows"]):
            continue
        cost = setup(sync_sn, batches)
        row = {"generator": label, "seconds_to_prepare": cost, **score(g, reference, args.samples)}
        print(row, flush=True)
        result["rows"].append(row)
        save()
    for batches in (1, 4, 16, 64):
        for seed in (0, 1):
            if any(r["batches"] == batches and r["seed"] == seed for r in result["sweep"]):
                continue
            cost = setup(True, batches, seed)
            row = {"batches": batches, "batch_size": STANDING_BATCH_SIZE, "seed": seed, "seconds": cost,
                   **score(g, reference, args.sweep_samples)}
            print(row, flush=True)
            result["sweep"].append(row)
            save()
    for psi in (None, 2.0, 1.0, 0.7, 0.5, 0.25, 0.0):
        for mode in ("as shipped", "standing under psi"):
            if psi is None and mode == "standing under psi":
                continue
            if any(r["psi"] == psi and r["statistics"] == mode for r in result["truncation"]):
                continue
            setup(mode != "as shipped", STANDING_BATCHES if mode != "as shipped" else None, 0, psi)
            row = {"psi": psi, "statistics": mode, **score(g, reference, args.sweep_samples, psi)}
            print(row, flush=True)
            result["truncation"].append(row)
            save()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
