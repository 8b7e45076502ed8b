"""Does a change alter what training produces? A short fmnist32 run, bit for bit, against another revision.

    python scripts/golden_run.py [--against REV] [--steps 30] [--keep DIR] [--set KEY=VALUE ...]

Trains the same short run (fmnist32 at g_ch = d_ch = 16, batch 16, ``--steps`` steps, a checkpoint, a
sample grid and FID-free logs every 10 steps, fp32, deterministic) twice on this machine: with the code of
this checkout and with the code of ``REV`` (default HEAD; checked out into a temporary git worktree and
put first on PYTHONPATH), each in a fresh process; ``--set`` adds config overrides to both (e.g. a
study arm's layers: ``--set model.g_attn=[] --set model.g_resblock=[16]``). Then it compares, and prints one line per artefact:

* every tensor and value of the last checkpoint (G, D, the EMA generator, optimiser states, RNG states,
  counters), bytes; not the record of which code wrote it;
* the sample grid PNGs, bytes;
* metrics.csv, every column except the timing ones (``images_per_s`` and the like).

Exit code 0 when all are identical. Both runs happen on the same machine in one call, because float
results (the convolution kernels) differ between CPUs: digests stored on one machine would not hold on
another. The restructuring of issue 25 ("same outputs, bit for bit") is checked this way.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("images_per_s", "seconds", "eval/seconds", "step_seconds")
PROVENANCE = ("code_version",)  # which code wrote the checkpoint (git commit, dirty flag): not an output


def train(src: Path, out: Path, steps: int, sets: list[str]) -> Path:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", SAGAN_CACHE=str(out / "cache"))
    args = ["train", "--preset", "fmnist32", "--steps", str(steps), "--out", str(out), "--name", "golden",
            "--no-progress", "--set", "model.g_ch=16", "--set", "model.d_ch=16", "--set", "train.batch_size=16",
            "--set", "train.log_every=5", "--set", "train.sample_every=10", "--set", f"train.ckpt_every={steps}",
            "--set", "train.fid_every=0", "--set", "train.deterministic=true", "--set", "train.precision=fp32",
            "--set", "train.ema_bn_batches=2", "--set", "train.ema_bn_batch_size=16"]
    args += [a for kv in sets for a in ("--set", kv)]
    code = "import sys; from sagan.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training with {src} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return out / "golden"


def tensors(obj, prefix: str = "") -> dict[str, bytes]:
    """Every tensor in a nested checkpoint, by path, as bytes (with dtype and shape)."""
    out: dict[str, bytes] = {}
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        out[prefix] = f"{t.dtype}{tuple(obj.shape)}".encode() + t.view(torch.uint8).numpy().tobytes()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(tensors(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensors(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float, str, bool)) or obj is None:
        out[prefix] = repr(obj).encode()
    return out


def metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def compare(a: Path, b: Path) -> list[tuple[str, bool, str]]:
    rows = []
    ckpt_a = sorted((a / "checkpoints").glob("ckpt_*.pt"))[-1]
    ckpt_b = b / "checkpoints" / ckpt_a.name
    ta = tensors(torch.load(ckpt_a, map_location="cpu", weights_only=True))
    tb = tensors(torch.load(ckpt_b, map_location="cpu", weights_only=True)) if ckpt_b.is_file() else {}
    differ = sorted(k for k in set(ta) | set(tb) if ta.get(k) != tb.get(k) and not k.startswith(PROVENANCE))
    rows.append((f"checkpoint {ckpt_a.name} ({len(ta)} entries)", not differ, ", ".join(differ[:5])))
    for png in sorted((a / "samples").glob("*.png")):
        other = b / "samples" / png.name
        same = other.is_file() and hashlib.sha256(png.read_bytes()).digest() == hashlib.sha256(other.read_bytes()).digest()
        rows.append((f"samples/{png.name}", same, ""))
    ma, mb = metrics(a / "metrics.csv"), metrics(b / "metrics.csv")
    rows.append((f"metrics.csv ({len(ma)} rows, timing columns left out)", ma == mb,
                 "" if ma == mb else f"first differing row {next(i for i, (x, y) in enumerate(zip(ma, mb)) if x != y) if len(ma) == len(mb) else 'count'}"))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", default="HEAD", help="git revision to compare this checkout with (default HEAD)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--keep", type=Path, help="keep the two runs in this folder")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for both runs (repeatable)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), args.against], check=True)
        try:
            base = train(tree / "src", work / "against", args.steps, args.sets)
            here = train(ROOT / "src", work / "here", args.steps, args.sets)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        rows = compare(here, base)
    for what, same, detail in rows:
        print(f"{'same   ' if same else 'DIFFERS'} {what}" + (f": {detail}" if detail else ""))
    identical = all(same for _, same, _ in rows)
    print(f"this checkout vs {args.against}, {args.steps} steps{''.join(' --set ' + kv for kv in args.sets)}: " + ("identical" if identical else "different"))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
