#!/usr/bin/env bash
# The paired studies behind docs/experiments.md: fmnist32, 4000 steps (the default run), 4 seeds, fp32,
# primary endpoint the training-time FID (10000 samples, fixed latents, shipped-classifier features)
# averaged over steps 3000, 3500 and 4000. 32 runs; one run on both cores of a 2-core machine trains in
# about 1 hour (Intel Xeon with AMX) to 2 hours (AMD EPYC Zen 3), measured 2026-12-07 (docs/experiments.md):
# 30-60 hours in all, so it is built to be stopped and started anywhere:
# - every command resumes where it stopped (finished runs are skipped, unfinished ones resume);
# - after each finished run the study rewrites its results, and this script copies the small files of
#   every finished run into docs/studies/NAME and commits them (scripts/sync_study.py), so a new
#   machine starts from them (they are copied back into the study folder first);
# - SIGTERM pauses it (the runs checkpoint); run it again to continue. It runs at the lowest priority.
# Usage: [JOBS=N] bash scripts/run_studies.sh [STUDIES_DIR] (default /work/studies; JOBS default 1)
# JOBS=1 (one run on both cores) finishes its run in about half the time of JOBS=2 (two runs, one core
# each, about 14% more throughput: docs/experiments.md, "--jobs: measured"), so it finishes within a
# sitting (an unfinished run's checkpoints stay on this machine only). The thread count changes an fp32
# run's rounding, so keep JOBS the same for every arm of a seed: seeds 1 to 3 use 1 (seed 0 used 2).
# The code that runs is the checkout this script is in (its src/ first on PYTHONPATH), so a study can
# run for days from a checkout of its own (git worktree) while the main one changes; the results are
# committed into SAGAN_RESULTS_REPO (default: this checkout).
set -euo pipefail
# Linux schedules each session (autogroup) fairly whatever its nice value: lower this one's, so the
# studies take only what other work leaves (started with setsid, this script is a session of its own).
echo 19 > "/proc/$$/autogroup" 2>/dev/null || true
here="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
results="${SAGAN_RESULTS_REPO:-$here}"
cd "$results"
out="${1:-/work/studies}"
mkdir -p "$out"
source "$here/scripts/study_settings.sh"
common=("${STUDY_ARGS[@]}" --jobs "${JOBS:-1}" --no-progress)

run() {  # NAME STUDY ARGS...: resume from docs/studies/NAME when this machine has no such folder yet
  local name=$1 kind=$2
  shift 2
  study_folder_from_docs "docs/studies/$name" "$out/$name"
  nice -n 19 sagan study "$kind" "${common[@]}" "$@" --out "$out/$name" &
  local pid=$!
  trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 143' TERM INT
  while kill -0 $pid 2>/dev/null; do
    sleep 120 & wait $! || true  # a SIGTERM ends the wait at once (a foreground sleep would delay the trap)
    # Each run is a session of its own, and Linux schedules sessions (autogroups) fairly whatever
    # their nice value: lower the runs' autogroups too, so they take only what other work leaves.
    for p in $(pgrep -f -- "sagan train .*$out/$name/runs" || true); do echo 19 > "/proc/$p/autogroup" 2>/dev/null || true; done
    python "$here/scripts/sync_study.py" "$out/$name" "docs/studies/$name" --commit || true  # the index may be busy
  done
  wait $pid
  python "$here/scripts/sync_study.py" "$out/$name" "docs/studies/$name" --commit
}

run attention-fmnist32-paired attention --arms "$ATTENTION_ARMS"
run stabilisation-fmnist32-paired stabilisation
