#!/usr/bin/env python
"""Is ``sagan study --jobs 2`` faster than ``--jobs 1`` on this machine? Paired, alternating trials.

Trial "jobs1": one ``sagan train`` of the study's base model with all cores; trial "jobs2": two at
once, cores split between them (what ``--jobs 2`` does: OMP_NUM_THREADS = cores / 2). Each trial
trains ``--steps`` steps per run (no tracked FID, no evaluation); the figure is the total training
throughput in generator steps per second, from the runs' wall time (start-up included) and from their
logged images/s after the first log row (steady state). Prints the numbers and writes JSON:

    python scripts/bench_study_jobs.py --steps 60 --repeats 2 --out benchmarks/study_jobs.json
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _train(out: Path, name: str, steps: int, threads: int, sets: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "sagan", "train", "--steps", str(steps), "--set", "train.fid_every=0",
           "--set", "train.sample_every=100000", "--set", "train.ckpt_every=100000", "--set", "train.log_every=10",
           *[x for s in sets for x in ("--set", s)], "--out", str(out), "--name", name, "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _steady_steps_per_s(run: Path, batch: int) -> float:
    rows = list(csv.DictReader(open(run / "metrics.csv", newline="")))[1:]
    return sum(float(r["images_per_s"]) for r in rows) / len(rows) / batch


def trial(jobs: int, steps: int, cores: int, sets: list[str], batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        procs = [_train(Path(tmp), f"r{i}", steps, max(1, cores // jobs), sets) for i in range(jobs)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"sagan train failed: {err[-2000:]}")
        wall = time.perf_counter() - t0
        steady = sum(_steady_steps_per_s(Path(tmp) / f"r{i}", batch) for i in range(jobs))
    return {"jobs": jobs, "threads_per_job": max(1, cores // jobs), "wall_s": round(wall, 1),
            "steps_per_s_wall": round(jobs * steps / wall, 3), "steps_per_s_steady": round(steady, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    from sagan.config import load_config
    batch = load_config(None, None, args.sets).train.batch_size
    cores = os.cpu_count() or 1
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
    trials = []
    for r in range(args.repeats):
        for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):  # alternate the order between repeats
            t = trial(jobs, args.steps, cores, args.sets, batch)
            trials.append(t)
            print(json.dumps(t), flush=True)
    summary = {str(j): {k: round(sum(t[k] for t in trials if t["jobs"] == j) / args.repeats, 3)
                        for k in ("steps_per_s_wall", "steps_per_s_steady")} for j in (1, 2)}
    record = {"cpu": cpu, "cores": cores, "steps": args.steps, "sets": args.sets, "trials": trials, "mean": summary,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
