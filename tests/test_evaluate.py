"""The ``sagan evaluate`` command and FID tracking during training."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from sagan.cli import main
from sagan.metrics.extractors import INCEPTION_ENV, INCEPTION_FILE


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_evaluate_tiny_run_with_fmnist_features(tiny_run, tmp_path, cache, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    args = ["evaluate", str(run), "--features", "fmnist", "-n", "40", "--no-progress", "--batch-size", "16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in ("IS", "FID", "KID", "precision", "recall"):
        assert name in out
    files = list((run / "eval").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["num_generated"] == 40 and rec["num_real"] == 16  # the tiny folder holds 2 x 8 images
    assert rec["kid_subset_size"] == 16
    assert rec["extractor"]["name"] == "fmnist" and rec["generator"] == "ema"
    assert rec["reference"]["split"] == "train" and rec["reference"]["dataset"] == "image_folder"
    assert rec["step"] == 4 and rec["checkpoint"].endswith("ckpt_00000004.pt")
    m = rec["metrics"]
    assert set(m) >= {"is_mean", "fid", "kid_mean", "precision", "recall"}
    assert "class_accuracy" not in m  # the tiny run's classes are not Fashion-MNIST's
    assert all(isinstance(v, float) and v == v for v in m.values())
    # the reference statistics were cached; a second evaluation reuses them
    cached = sorted(p.name for p in (cache / "stats").iterdir())
    assert any("-features-128" in n for n in cached) and any("stat-fid" in n for n in cached)
    assert main(args + ["--metrics", "fid", "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert set(again["metrics"]) == {"fid"} and sorted(p.name for p in (cache / "stats").iterdir()) == cached


def test_evaluate_without_inception_weights_fails_before_sampling(tiny_run, tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "missing" / INCEPTION_FILE))

    def must_not_sample(*a, **k):
        raise AssertionError("sampling started before the Inception weights were found")
    monkeypatch.setattr("sagan.train.runs.generate", must_not_sample)
    # an image-folder run defaults to Inception features
    assert main(["evaluate", str(tiny_run), "-n", "100", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert INCEPTION_FILE in err and "does not exist" in err and "Traceback" not in err


def test_evaluate_user_errors(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--metrics", "fid,lpips"]) == 2
    assert "choose from is, fid, kid, pr" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "--features", "fmnist", "--split", "test", "-n", "10"]) == 2
    assert "no test split" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "-n", "1"]) == 2
    assert "--num-samples 1" in capsys.readouterr().err


def test_training_fid_logs_and_keeps_best_checkpoint(tmp_path, cache):
    """Train a few steps on a Fashion-MNIST subset with FID every 2 steps."""
    from sagan.config import load_config
    from sagan.data import load_data
    from sagan.metrics.tracking import TrainingFID
    from sagan.train.run import Trainer
    from sagan.train.runs import load_run

    cfg = load_config("fmnist32", overrides=["model.g_ch=8", "model.d_ch=8", "train.batch_size=8", "train.steps=4",
                                             "train.fid_every=2", "train.fid_samples=64", "train.log_every=2",
                                             "train.sample_every=4", "train.ckpt_every=4"])
    assert load_config("fmnist32").train.fid_every == 1000  # the preset's default
    data = load_data(cfg.data, 32, True)
    data.images, data.labels = data.images[:300], data.labels[:300]
    fid = TrainingFID.from_config(cfg, data, torch.device("cpu"))  # what `sagan train` hands the Trainer
    trainer = Trainer(cfg, tmp_path / "run", data, progress=False, fid=fid)
    assert trainer.fid is not None and trainer.fid.features == "fmnist"
    trainer.fit()
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/fid")]
    assert [float(r["step"]) for r in rows] == [2.0, 4.0]
    for r in rows:
        assert float(r["eval/fid"]) > 0 and 1 <= float(r["eval/is"]) <= 10 and 0 <= float(r["eval/class_acc"]) <= 1
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    state = torch.load(best, map_location="cpu", weights_only=True)
    fids = {int(float(r["step"])): float(r["eval/fid"]) for r in rows}
    assert state["best"]["step"] == min(fids, key=fids.get)
    assert state["best"]["fid"] == pytest.approx(min(fids.values()))
    assert float(rows[-1]["eval/best_fid"]) == pytest.approx(min(fids.values()))
    loaded = load_run(best)
    assert loaded.step == state["best"]["step"] and loaded.run_dir == tmp_path / "run"
    # sagan evaluate on this Fashion-MNIST run: fmnist features by default, class accuracy reported
    assert main(["evaluate", str(best), "-n", "50", "--metrics", "is", "--no-progress"]) == 0
    rec = json.loads((tmp_path / "run" / "eval" / f"step_{loaded.step:08d}-fmnist-train.json").read_text())
    assert rec["extractor"]["name"] == "fmnist" and rec["reference"] is None and rec["num_real"] is None
    assert 0 <= rec["metrics"]["class_accuracy"] <= 1 and rec["checkpoint"].endswith("best.pt")
    # evaluating does not move the training RNG streams: the same run without FID ends identical
    cfg.train.fid_every = 0
    plain = Trainer(cfg, tmp_path / "plain", data, progress=False)
    assert plain.fid is None
    plain.fit()
    for k, v in trainer.G.state_dict().items():
        assert torch.equal(v, plain.G.state_dict()[k]), k


def test_training_fid_off_when_it_would_never_run_or_inception_is_not_local(tiny_folder, tmp_path, monkeypatch):
    from sagan.config import load_config
    from sagan.data import load_data
    from sagan.metrics.tracking import TrainingFID

    monkeypatch.setenv(INCEPTION_ENV, "")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = load_config("fmnist32", overrides=["data.dataset=image_folder", f"data.root={tiny_folder}",
                                             "train.steps=10", "train.fid_every=5"])
    data = load_data(cfg.data, 32, True)
    notes = []
    assert TrainingFID.from_config(cfg, data, torch.device("cpu"), say=notes.append) is None
    assert "training-time FID is off" in notes[0] and INCEPTION_FILE in notes[0]
    cfg.train.fid_features = "inception"
    with pytest.raises(Exception, match=INCEPTION_FILE):
        TrainingFID.from_config(cfg, data, torch.device("cpu"))
    cfg.train.fid_every = 0
    assert TrainingFID.from_config(cfg, data, torch.device("cpu")) is None


def test_evaluate_under_torchrun_shards_sampling_and_matches_one_process(tiny_run, tmp_path, cache, one_thread):
    """`torchrun --nproc_per_node=2 -m sagan evaluate`: each process samples and extracts its share
    (600 samples in batches of 256: 512 and 88), rank 0 gathers the features and alone writes the
    result, and the metrics equal a 1-process evaluation's.

    Tolerances: both runs use one thread and batches of the same shapes, so the generator and the
    classifier run the same kernels on the same inputs and the gathered features are the same
    numbers in the same order. Precision and recall (counts over n) must then be equal; IS/FID/KID, computed from those features, agree to float64 rounding."""
    import os
    import subprocess
    import sys
    run = shutil.copytree(tiny_run, tmp_path / "run")
    args = [str(run), "--features", "fmnist", "-n", "600", "--metrics", "is,fid,kid,pr", "--no-progress"]
    assert main(["evaluate", *args, "--out", str(tmp_path / "one.json")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", SAGAN_CACHE=str(cache))
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "sagan", "evaluate", *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.count("evaluating ") == 1 and "in 2 processes" in proc.stdout  # rank 0 speaks
    files = list((run / "eval").glob("*.json"))
    assert len(files) == 1, files  # written once, by rank 0
    two, one = json.loads(files[0].read_text()), json.loads((tmp_path / "one.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["num_generated"] == one["num_generated"] == 600
    discrete = {"precision", "recall", "class_accuracy"}
    assert {"precision", "recall"} <= set(one["metrics"])
    for k, v in one["metrics"].items():
        if k in discrete:
            assert two["metrics"][k] == v, k
        else:
            assert two["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
