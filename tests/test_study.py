"""``sagan study``: arms resolve to the right configs and commands on several presets; a tiny study
runs end to end through the CLI, survives a SIGTERM in its second run (finished runs skipped, the
interrupted one resumed) and writes its results; ``collect`` names missing and damaged runs."""
from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_STANDING_ARGS

from sagan.cli import main
from sagan.errors import UsageError
from sagan.study.arms import StudySpec, read_spec
from sagan.study.results import RunResult, summarise


def _spec(kind: str, preset: str, **kw) -> StudySpec:
    return StudySpec(kind=kind, out="studies/x", preset=preset, **kw)


@pytest.mark.parametrize("preset", ["fmnist32", "cifar32", "imagenet128"])
def test_stabilisation_arms_resolve_to_the_papers_settings(preset):
    spec = _spec("stabilisation", preset, steps=100)
    assert [a.name for a in spec.arms()] == ["sn-d", "sn-gd", "sn-gd-ttur", "sn-gd-lr4e-4"]
    want = {"sn-d": (False, True, 1e-4, 1e-4), "sn-gd": (True, True, 1e-4, 1e-4), "sn-gd-ttur": (True, True, 1e-4, 4e-4),
            "sn-gd-lr4e-4": (True, True, 4e-4, 4e-4)}
    assert [(c.arm, c.reference) for c in spec.comparisons()] == [
        ("sn-gd", "sn-d"), ("sn-gd-ttur", "sn-gd"), ("sn-gd-ttur", "sn-gd-lr4e-4")]
    for arm in spec.arms():
        for seed in (0, 1):
            cfg = spec.config_of(arm, seed)
            m, o, t = cfg.model, cfg.optim, cfg.train
            assert (m.g_sn, m.d_sn, o.lr_g, o.lr_d) == want[arm.name]
            assert (t.n_dis, t.seed, t.steps, t.fid_every, t.fid_samples, cfg.preset) == (1, seed, 100, 12, 10_000, preset)
            assert spec.endpoint_steps == [72, 84, 96]  # the last three evaluations
            # The printed command is what a user runs, and it resolves to the same config.
            cmd = spec.train_command(arm, seed)
            assert cmd[:4] == ["sagan", "train", "--preset", preset]
            assert cmd[-5:] == ["--out", str(Path("studies/x/runs")), "--name", f"{arm.name}-s{seed}", "--no-progress"]
            from sagan.cli import build_parser
            from sagan.commands.train import _train_config
            parsed, _ = _train_config(build_parser().parse_args(cmd[1:]))
            assert parsed.to_dict() == dict(cfg.to_dict(), name=f"{arm.name}-s{seed}")  # --name is the run's name


@pytest.mark.parametrize("preset,arms,d_sizes", [
    ("fmnist32", ["none", "attn8", "attn16", "attn32", "res8", "res16", "res32"], {8: [8], 16: [16], 32: []}),
    ("cifar32", ["none", "attn8", "attn16", "attn32", "res8", "res16", "res32"], {8: [8], 16: [16], 32: []}),
    ("imagenet128", ["none", "attn8", "attn16", "attn32", "attn64", "res8", "res16", "res32", "res64"],
     {8: [8], 16: [16], 32: [32], 64: [64]}),
])
def test_attention_arms_place_attention_or_an_equal_block_at_each_size(preset, arms, d_sizes):
    spec = _spec("attention", preset)
    assert [a.name for a in spec.arms()] == arms
    for arm in spec.arms():
        m = spec.config_of(arm, 0).model
        if arm.name == "none":
            assert (m.g_attn, m.d_attn, m.g_resblock, m.d_resblock) == ([], [], [], [])
            continue
        size = int(arm.name.lstrip("atnres"))
        placed = (m.g_attn, m.d_attn) if arm.name.startswith("attn") else (m.g_resblock, m.d_resblock)
        other = (m.g_resblock, m.d_resblock) if arm.name.startswith("attn") else (m.g_attn, m.d_attn)
        assert placed == ([size], d_sizes[size]) and other == ([], [])
        assert spec.config_of(arm, 0).train.steps == spec.base_config().train.steps  # the preset's, by default


@pytest.mark.parametrize("preset", ["fmnist32", "imagenet128"])
def test_reduction_arms(preset):
    spec = _spec("reduction", preset, seeds=3)
    assert [a.name for a in spec.arms()] == ["r8", "r4", "r2", "r1"]
    assert [spec.config_of(a, 0).model.attn_reduction for a in spec.arms()] == [8, 4, 2, 1]
    assert len(spec.runs()) == 12 and spec.runs()[:4] == [(a, 0) for a in spec.arms()]  # seed-major
    with pytest.raises(UsageError, match="has none"):
        _spec("reduction", preset, sets=["model.g_attn=[]", "model.d_attn=[]"]).arms()


def test_arms_subset_and_bad_settings_fail_in_one_line():
    spec = _spec("attention", "fmnist32", arms_only=["attn16", "none"])
    assert [a.name for a in spec.arms()] == ["attn16", "none"]
    for kw, msg in (({"arms_only": ["attn64"]}, "arms are none, attn8"), ({"seeds": 0}, "--seeds 0"),
                    ({"steps": 0}, "--steps 0"), ({"sets": ["model.g_ch=-1"]}, "model.g_ch")):
        with pytest.raises(Exception, match=msg):
            _spec("attention", "fmnist32", **kw).check()


def test_list_prints_runnable_commands_and_a_folder_keeps_its_study(tmp_path, capsys):
    out = tmp_path / "st"
    args = ["study", "stabilisation", "--steps", "50", "--seeds", "3", "--list", "--out", str(out)]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and all(shlex.split(ln)[:2] == ["sagan", "train"] for ln in lines)
    assert "--name sn-d-s2" in lines[8] and "--name sn-gd-s0" in lines[1] and "train.steps=50" in lines[0] and "train.fid_samples=10000" in lines[0]
    assert read_spec(out).steps == 50  # study.json is there for 'sagan study collect'
    assert main(args) == 0  # same settings: fine
    capsys.readouterr()
    assert main(["study", "stabilisation", "--steps", "60", "--list", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a different study" in err and "steps: 60 here, 50 in the folder" in err
    # More seeds or more arms (same baseline) extend the study; fewer seeds or another baseline do not.
    assert main(["study", "stabilisation", "--steps", "50", "--seeds", "4", "--list", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "extending the study" in cap.err and "seeds 3 -> 4" in cap.err and len(cap.out.splitlines()) == 16
    assert read_spec(out).seeds == 4
    assert main(["study", "stabilisation", "--steps", "50", "--seeds", "2", "--list", "--out", str(out)]) == 2
    assert "seeds: 2 here, 4 in the folder" in capsys.readouterr().err
    sub = tmp_path / "sub"
    base = ["study", "attention", "--steps", "50", "--list", "--out", str(sub)]
    assert main(base + ["--arms", "none,attn32"]) == 0
    assert main(base + ["--arms", "attn32,none"]) == 2  # another baseline
    assert "arms_only" in capsys.readouterr().err
    assert main(base + ["--arms", "none,attn32,res32"]) == 0
    assert "arms + res32" in capsys.readouterr().err and read_spec(sub).arms_only == ["none", "attn32", "res32"]
    assert main(base) == 0 and read_spec(sub).arms_only is None  # all arms
    assert main(base + ["--arms", "none,attn32"]) == 2  # dropping arms is not extending
    assert read_spec(sub).arms_only is None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    assert main(["study", "attention", "--list", "--out", str(tmp_path / "other")]) == 2
    assert "not a study folder" in capsys.readouterr().err
    assert (tmp_path / "other" / "x.txt").read_text() == "mine"


def test_d_margin_and_smoothing_against_plain_loops():
    from sagan.study.results import d_margin
    from sagan.viz.study import _smooth
    real = [[float(s), 0.1 * s] for s in range(10, 101, 10)]
    fake = [[float(s), -0.05 * s] for s in range(10, 101, 10) if s != 100]  # a step with no D(fake)
    # 100 steps: the last 10% is steps > 90, where only step 100 has D(real), and it has no D(fake).
    assert d_margin({"real": real, "fake": fake}, 100) is None
    assert d_margin({"real": real}, 100) is None and d_margin({}, 100) is None
    got = d_margin({"real": real, "fake": fake}, 50)  # steps > 45: 50..90
    want = sum(0.1 * s + 0.05 * s for s in (50, 60, 70, 80, 90)) / 5
    assert got == pytest.approx(want, rel=1e-12)
    series = [[float(i), float(v)] for i, v in enumerate([3, 1, 4, 1, 5, 9, 2])]
    for window in (1, 3, 7, 10):
        slow = [[s, sum(v for _, v in series[max(0, i - window + 1): i + 1]) / len(series[max(0, i - window + 1): i + 1])]
                for i, (s, _) in enumerate(series)]
        got = _smooth(series, window)
        assert [s for s, _ in got] == [s for s, _ in slow]
        assert [v for _, v in got] == pytest.approx([v for _, v in slow], rel=1e-12)


def test_summary_is_per_arm_over_finished_runs():
    runs = [RunResult("a", s, f"d{s}", "finished", metrics={"fid": v}) for s, v in enumerate((20.0, 22.0))]
    runs += [RunResult("b", s, f"e{s}", "finished", metrics={"fid": v}) for s, v in enumerate((10.0, 12.0))]
    runs.append(RunResult("b", 2, "e2", "unfinished", metrics={"fid": 0.0}))  # left out
    table = summarise(runs, ["a", "b"])["fid"]
    assert table["a"]["mean"] == 21.0 and table["a"]["seeds"] == [0, 1]
    assert table["b"]["n"] == 2 and table["b"]["values"] == [10.0, 12.0] and table["b"]["std"] == pytest.approx(2 ** 0.5)


def test_a_format_1_study_folder_is_refused_in_one_line(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"format": 1, "kind": "attention", "out": "x"}))
    with pytest.raises(UsageError, match="before paired arms"):
        read_spec(tmp_path)


def test_endpoint_evals_must_fit_the_evaluations():
    with pytest.raises(UsageError, match="--endpoint-evals 9: the runs evaluate FID 8 times"):
        _spec("attention", "fmnist32", steps=4000, endpoint_evals=9).check()
    assert _spec("attention", "fmnist32", steps=4000).endpoint_steps == [3000, 3500, 4000]
    assert _spec("attention", "fmnist32", steps=4100, fid_every=500, endpoint_evals=2).endpoint_steps == [3500, 4000]


# --------------------------------------------------------------------------- a tiny study, end to end

# Injected into every child of the study (sitecustomize.py on PYTHONPATH): the run named in
# $SAGAN_TEST_HOLD_RUN waits after step $SAGAN_TEST_HOLD_STEP until it receives a stop signal, and
# says so in a marker file first; the test then signals the study, which passes the signal on.
HOLD_HOOK = r'''
import os, signal as _signal, time
_run, _at, _mark = (os.environ.get(k) for k in ("SAGAN_TEST_HOLD_RUN", "SAGAN_TEST_HOLD_STEP", "SAGAN_TEST_HOLD_MARK"))
if _run and _at and _mark:
    from sagan.train.trainer import Trainer
    _got, _real_signal, _real_step = [], _signal.signal, Trainer.train_step

    def _signal_wrapper(sig, handler):
        if callable(handler):
            def wrapped(signum, frame, _h=handler):
                _got.append(signum)
                return _h(signum, frame)
            return _real_signal(sig, wrapped)
        return _real_signal(sig, handler)
    _signal.signal = _signal_wrapper

    def _held_step(self):
        if self.run_dir.name == _run and self.step == int(_at) and not os.path.exists(_mark):
            open(_mark, "w").close()
            deadline = time.monotonic() + 120
            while not _got and time.monotonic() < deadline:
                time.sleep(0.05)
        return _real_step(self)
    Trainer.train_step = _held_step
'''


def _study_args(tiny_folder: Path, out: Path) -> list[str]:
    return ["study", "stabilisation", "--arms", "sn-d,sn-gd-ttur", "--seeds", "2", "--steps", "6",
            "--fid-every", "3", "--fid-samples", "40", "--endpoint-evals", "2", "--eval-samples", "40",
            "--features", "fmnist",
            "--set", "data.dataset=image_folder", "--set", f"data.root={tiny_folder}",
            "--set", "model.g_ch=8", "--set", "model.d_ch=8", "--set", "train.batch_size=8",
            "--set", "train.log_every=1", "--set", "train.sample_every=3", "--set", "train.ckpt_every=2",
            "--set", "train.fid_features=fmnist",
            *TINY_STANDING_ARGS,
            "--out", str(out), "--no-progress"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_folder):
    """A 2-arm x 2-seed study, SIGTERMed in its second run and re-run to the end. Returns the folder,
    the first invocation's exit code and output, and the second's output."""
    work = tmp_path_factory.mktemp("study")
    out = work / "st"
    hook = work / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_HOOK)
    mark = work / "held"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p),
               SAGAN_TEST_HOLD_RUN="sn-gd-ttur-s0", SAGAN_TEST_HOLD_STEP="3", SAGAN_TEST_HOLD_MARK=str(mark))
    cmd = [sys.executable, "-m", "sagan", *_study_args(tiny_folder, out)]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while not mark.exists():
        if first.poll() is not None or time.monotonic() > deadline:
            first.kill()
            pytest.fail(f"the study did not reach step 3 of its second run: {first.communicate()[0][-3000:]}")
        time.sleep(0.1)
    s0_metrics = out / "runs" / "sn-d-s0" / "metrics.csv"
    s0_stat = s0_metrics.stat().st_mtime_ns
    first.send_signal(signal.SIGTERM)
    out1, _ = first.communicate(timeout=300)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    return {"out": out, "rc1": first.returncode, "out1": out1, "out2": second.stdout,
            "s0_unchanged": s0_metrics.stat().st_mtime_ns == s0_stat}


@pytest.mark.heavy  # the tiny study (4 runs, killed and resumed): about 2.5 minutes
def test_tiny_study_survives_a_sigterm_and_resumes(tiny_study):
    out = tiny_study["out"]
    assert tiny_study["rc1"] == 128 + signal.SIGTERM, tiny_study["out1"]
    assert "re-run the same command to continue" in tiny_study["out1"]
    # The finished run was skipped: trained once, evaluated once, its files untouched.
    log0 = (out / "logs" / "sn-d-s0.log").read_text()
    assert log0.count("$ sagan train ") == 1
    assert log0.count("$ sagan evaluate ") == 1 and tiny_study["s0_unchanged"]
    assert "1 of 4 runs are trained and evaluated already: skipped" in tiny_study["out2"]
    # The interrupted run resumed from the checkpoint it wrote on the signal, and was not restarted.
    log1 = (out / "logs" / "sn-gd-ttur-s0.log").read_text()
    assert "stopped by SIGTERM at step 4" in log1
    assert f"$ sagan train --resume {out / 'runs' / 'sn-gd-ttur-s0'} --no-progress" in log1
    assert "resuming" in log1 and "from step 4" in log1
    segments = json.loads((out / "logs" / "sn-gd-ttur-s0.json").read_text())["segments"]
    assert [s["what"] for s in segments] == ["train", "resume", "evaluate"]
    assert [s["exit_code"] for s in segments] == [128 + signal.SIGTERM, 0, 0]


@pytest.mark.heavy  # the tiny study (4 runs, killed and resumed): about 2.5 minutes
def test_tiny_study_results_have_every_arm_and_seed(tiny_study):
    out = tiny_study["out"]
    results = json.loads((out / "results.json").read_text())
    assert [a["name"] for a in results["arms"]] == ["sn-d", "sn-gd-ttur"] and results["baseline"] == "sn-d"
    assert sorted((r["arm"], r["seed"], r["status"]) for r in results["runs"]) == [
        ("sn-d", 0, "finished"), ("sn-d", 1, "finished"), ("sn-gd-ttur", 0, "finished"), ("sn-gd-ttur", 1, "finished")]
    for r in results["runs"]:
        assert [s for s, _ in r["curve"]] == [3.0, 6.0]  # training-time FID every 3 steps
        assert set(r["gammas"]) == {"G.attn16", "D.attn16"} and len(r["gammas"]["G.attn16"]) == 6
        assert {"fid", "kid_mean", "is_mean", "precision", "recall", "minutes"} <= set(r["metrics"])
        assert r["seconds"]["train"] > 0 and r["seconds"]["evaluate"] > 0
        # D's margin: by hand from metrics.csv, the rows of the last 10% of the 6 steps (step 6 only).
        with open(Path(r["dir"]) / "metrics.csv", newline="") as f:
            rows = [row for row in csv.DictReader(f) if row["d_real"] and float(row["step"]) > 5.4]
        assert [float(row["step"]) for row in rows] == [6.0]
        want = float(rows[0]["d_real"]) - float(rows[0]["d_fake"])
        assert r["metrics"]["d_margin"] == pytest.approx(want, rel=1e-12, abs=1e-12)
        assert len(r["d_scores"]["real"]) == len(r["d_scores"]["fake"]) == 6
        # The primary endpoint: the training-time FIDs of the last two evaluations (steps 3 and 6), averaged.
        assert r["metrics"]["endpoint_fid"] == pytest.approx((r["curve"][0][1] + r["curve"][1][1]) / 2, rel=1e-12)
    assert results["endpoint_steps"] == [3, 6] and results["primary"] == "endpoint_fid"
    fid = results["summary"]["fid"]
    assert fid["sn-d"]["n"] == 2 and fid["sn-d"]["seeds"] == [0, 1]
    (comparison,) = results["comparisons"]  # the planned one whose arms are both here
    assert (comparison["arm"], comparison["reference"]) == ("sn-gd-ttur", "sn-d")
    by = {(r["arm"], r["seed"]): r["metrics"] for r in results["runs"]}
    for metric in ("endpoint_fid", "fid"):
        row = comparison["metrics"][metric]
        diffs = [by[("sn-gd-ttur", s)][metric] - by[("sn-d", s)][metric] for s in (0, 1)]
        assert row["n"] == 2 and row["diffs"] == pytest.approx(diffs, rel=1e-12)
        assert row["ci95"] is None  # n < 4: no interval
        assert row["p"] in (0.5, 1.0)  # 2 pairs: 4 sign patterns, the observed one and its mirror always count
    primary = comparison["metrics"]["endpoint_fid"]
    assert primary["p_holm"] == primary["p"]  # one test
    assert primary["p_t"] is None and primary["p_t_holm"] is None and primary["verdict"] == "no verdict (n < 4)"
    assert "p_holm" not in comparison["metrics"]["fid"] and "verdict" not in comparison["metrics"]["fid"]
    md = (out / "results.md").read_text()
    assert "## FID (Fashion-MNIST classifier features) (lower is better; secondary, p unadjusted)" in md
    assert "## primary endpoint: training-time FID, mean of the last evaluations (Fashion-MNIST" in md
    assert "| sn-gd-ttur - sn-d |" in md and "n < 4: no interval" in md and "| t p (Holm) | verdict | exact p | exact p (Holm) |" in md
    assert "## Summary (mean ± std over seeds (n); FID, KID, IS, precision, recall on Fashion-MNIST classifier" in md
    assert "## D margin (mean D(real) - D(fake), last 10% of steps) (a symptom, not quality" in md
    for png in ("curves.png", "d_scores.png", "gamma.png", "differences.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.heavy  # the tiny study (4 runs, killed and resumed): about 2.5 minutes
def test_collect_names_missing_and_damaged_runs_and_summarises_the_rest(tiny_study, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_study["out"], copy)
    shutil.rmtree(copy / "runs" / "sn-d-s1")
    (copy / "runs" / "sn-gd-ttur-s0" / "metrics.csv").write_bytes(b"\x00\x01garbage")
    for name in ("results.json", "results.md"):
        (copy / name).unlink()
    assert main(["study", "collect", str(copy), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 runs in the results" in printed
    results = json.loads((copy / "results.json").read_text())
    status = {(r["arm"], r["seed"]): (r["status"], r["problem"]) for r in results["runs"]}
    assert status[("sn-d", 1)] == ("missing", "not started (no run directory)")
    assert status[("sn-gd-ttur", 0)][0] == "damaged" and "metrics.csv" in status[("sn-gd-ttur", 0)][1]
    assert results["summary"]["fid"]["sn-d"]["n"] == 1 and results["summary"]["fid"]["sn-gd-ttur"]["n"] == 1
    md = (copy / "results.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| sn-")}
    assert "| not started |" in rows["sn-d-s1"] and "| damaged: metrics.csv cannot be read" in rows["sn-gd-ttur-s0"]
    import torch

    from sagan.machine import processor
    assert rows["sn-d-s0"].startswith("| sn-d-s0 | finished | " + processor(torch.device("cpu")) + ", ")  # its machine
    # A folder that is not a study says so.
    assert main(["study", "collect", str(tmp_path), "--no-progress"]) == 2
    assert "is not a study folder" in capsys.readouterr().err


@pytest.mark.heavy  # the tiny study (4 runs, killed and resumed): about 2.5 minutes
def test_report_on_a_study_folder_is_one_page(tiny_study, tmp_path, capsys):
    assert main(["report", str(tiny_study["out"]), "--out", str(tmp_path / "rep"), "--no-progress"]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Study: stabilisation" in html and "sn-gd-ttur - sn-d" in html and "exact p" in html
    assert html.count("data:image/png;base64,") == 4  # curves, D's scores, gamma and the paired differences
    assert "finished" in html


@pytest.mark.heavy  # the tiny study (4 runs, killed and resumed): about 2.5 minutes
def test_sync_study_copies_the_small_files_of_finished_runs(tiny_study, tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "sync_study.py"
    module_spec = importlib.util.spec_from_file_location("sync_study", path)
    sync_study = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(sync_study)
    dest = tmp_path / "copy"
    done, copied = sync_study.sync(tiny_study["out"], dest)
    assert done == copied == ["sn-d-s0", "sn-gd-ttur-s0", "sn-d-s1", "sn-gd-ttur-s1"]
    for name in done:
        files = sorted(str(p.relative_to(dest / "runs" / name)) for p in (dest / "runs" / name).rglob("*") if p.is_file())
        assert files == ["config.yaml", "eval/" + next((tiny_study["out"] / "runs" / name / "eval").glob("*.json")).name,
                         "metrics.csv", "version.json"]  # no checkpoints
        assert (dest / "logs" / f"{name}.json").is_file()
    assert sync_study.sync(tiny_study["out"], dest) == (done, [])  # nothing new: nothing copied
    # The copy is a study folder: collect summarises it without evaluating, machines included.
    assert main(["study", "collect", str(dest), "--no-evaluate", "--no-progress"]) == 0
    results = json.loads((dest / "results.json").read_text())
    assert all(r["status"] == "finished" and r["machines"] for r in results["runs"])


@pytest.mark.parametrize("preset", ["fmnist32", "imagefolder64"])
def test_augment_arms(preset):
    spec = _spec("augment", preset, sets=["data.root=/data/small"] if preset == "imagefolder64" else [])
    assert [a.name for a in spec.arms()] == ["off", "diffaugment", "diffaugment-hflip"]
    got = [(spec.config_of(a, 0).data.diffaugment, spec.config_of(a, 0).data.hflip) for a in spec.arms()]
    assert got == [([], False), (["color", "translation", "cutout"], False), (["color", "translation", "cutout"], True)]


def test_an_empty_run_directory_left_by_a_kill_is_started_afresh(tmp_path):
    from sagan.study.runner import next_command, run_state
    spec = StudySpec(kind="stabilisation", out=str(tmp_path / "st"), steps=10)
    arm = spec.arms()[0]
    spec.run_dir(arm, 0).mkdir(parents=True)  # killed between mkdir and writing config.yaml
    assert run_state(spec, arm, 0) == ("new", 0) and not spec.run_dir(arm, 0).exists()
    spec.run_dir(arm, 1).mkdir(parents=True)
    (spec.run_dir(arm, 1) / "config.yaml").write_text("preset: fmnist32\n")  # started: resumed, never removed
    assert next_command(spec, arm, 1)[0] == "resume" and spec.run_dir(arm, 1).is_dir()


def test_study_status_reads_every_run_and_writes_nothing(tmp_path, capsys):
    import json as _json
    import os as _os

    out = tmp_path / "st"
    assert main(["study", "attention", "--arms", "none,attn8,attn16", "--seeds", "1", "--steps", "10",
                 "--out", str(out), "--list"]) == 0
    capsys.readouterr()
    runs = out / "runs"
    header = "step,loss_d,images_per_s\n"
    # none-s0: done (its evaluation at step 10 is there, as sync_study leaves it: no checkpoints)
    (runs / "none-s0" / "eval").mkdir(parents=True)
    (runs / "none-s0" / "eval" / "step_00000010-fmnist-train.json").write_text("{}")
    (runs / "none-s0" / "metrics.csv").write_text(header + "10,0.5,30.0\n")
    # attn8-s0: part-way, a checkpoint at 4, logged up to 6 at 32 images/s (batch 64: 0.5 steps/s), one machine
    (runs / "attn8-s0" / "checkpoints").mkdir(parents=True)
    (runs / "attn8-s0" / "checkpoints" / "ckpt_00000004.pt").write_bytes(b"")
    (runs / "attn8-s0" / "metrics.csv").write_text(header + "2,0.7,40.0\n4,0.6,\n6,0.6,32.0\n")
    _os.utime(runs / "attn8-s0" / "metrics.csv", (1000.0, 1000.0))
    (runs / "attn8-s0" / "version.json").write_text(_json.dumps({"machine": {"processor": "CPU X (family 1, model 2)", "threads": 2}}))
    # attn16-s0: an empty folder, as a study killed right after making it leaves it: not started, and kept
    (runs / "attn16-s0").mkdir()
    before = sorted(str(p) for p in out.rglob("*"))

    from sagan.study.status import status_lines, study_status
    spec = read_spec(out)
    rows = {r.name: r for r in study_status(spec, now=1090.0)}
    assert (rows["none-s0"].state, rows["none-s0"].checkpoint_step, rows["none-s0"].logged_step) == ("done", 10, 10)
    part = rows["attn8-s0"]
    assert (part.state, part.checkpoint_step, part.logged_step, part.images_per_s) == ("unfinished", 4, 6, 32.0)
    assert part.last_log_age_s == 90.0 and part.machines == ["CPU X (family 1, model 2), 2 threads"] and part.batch_size == 64
    assert rows["attn16-s0"].state == "new"
    lines = status_lines(spec, list(rows.values()))
    assert lines[0].endswith("1 of 3 runs done, 1 part-way, 0 trained and not evaluated, 1 not started")
    assert any(ln.startswith("attn8-s0") and "part-way" in ln and "4/10" in ln and "90 s ago" in ln
               and ln.endswith("CPU X (family 1, model 2), 2 threads") for ln in lines)
    # left: 6 steps of attn8-s0 and 10 of attn16-s0 at 0.5 steps/s (30 steps/min): 32 s = 0.0 run-hours
    assert "left: 16 steps from the newest checkpoints" in lines[-1] and "(30.0 steps/min per run)" in lines[-1]
    assert main(["study", "status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "attn16-s0" in printed and "not started" in printed
    assert sorted(str(p) for p in out.rglob("*")) == before  # nothing written, nothing removed
