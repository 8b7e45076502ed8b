"""The ``sagan evaluate`` command and FID tracking during training."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from conftest import TINY_STANDING_SETS

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
    # every feature metric is labelled with the classifier, none with Inception
    for label in ("IS (Fashion-MNIST classifier features)", "FID (Fashion-MNIST classifier features)",
                  "KID (Fashion-MNIST classifier features)", "precision (Fashion-MNIST classifier features)",
                  "recall (Fashion-MNIST classifier features)"):
        assert label in out
    assert "Inception" not in out
    files = list((run / "eval").glob("*.json"))
    assert [f.name for f in files] == ["step_00000004-fmnist-train.json"]
    rec = json.loads(files[0].read_text())
    assert rec["num_generated"] == 40 and rec["num_real"] == 16  # the tiny folder holds 2 x 8 images
    assert rec["kid_subset_size"] == 16
    assert rec["extractor"]["name"] == "fmnist"
    assert rec["reference"]["split"] == "train" and rec["reference"]["dataset"] == "image_folder"
    # the tiny run's own standing-statistics settings (conftest.TINY_STANDING_SETS), not the defaults
    assert rec["model"].pop("bn_statistics") == {"mode": "standing", "batches": 2, "batch_size": 16, "seed": 0}
    assert rec["model"] == {"source": str(run / "checkpoints" / "ckpt_00000004.pt"), "kind": "checkpoint",
                            "checkpoint": "latest", "step": 4, "generator": "ema", "tracked_fid": None}
    m = rec["metrics"]
    assert set(m) == {"is_mean_fmnist", "is_std_fmnist", "fid_fmnist", "kid_mean_fmnist", "kid_std_fmnist",
                      "precision_fmnist", "recall_fmnist", "f_score_fmnist", "ifid_fmnist"}
    assert "class_accuracy" not in m  # the tiny run's classes are not Fashion-MNIST's
    # a class-conditional run gets the intra-class FID by default: 20 samples of each class against its 8 images
    assert [(r["class"], r["num_generated"], r["num_real"]) for r in rec["per_class"]] == [("class_0", 20, 8),
                                                                                         ("class_1", 20, 8)]
    assert m["ifid_fmnist"] == pytest.approx((rec["per_class"][0]["fid_fmnist"] + rec["per_class"][1]["fid_fmnist"]) / 2)
    assert "iFID (Fashion-MNIST classifier features)" in out
    assert all(isinstance(v, float) and v == v for v in m.values())
    assert m["fid_fmnist"] > 0 and m["is_mean_fmnist"] >= 1 - 1e-6 and 0 <= m["precision_fmnist"] <= 1
    # the reference statistics were cached; a second evaluation reuses them. --out is a folder.
    cached = sorted(p.name for p in (cache / "stats").iterdir())
    assert any("-features-128" in n for n in cached) and any("stat-fid" in n for n in cached)
    assert main(args + ["--metrics", "fid", "--out", str(tmp_path / "again"), "--no-ema"]) == 0
    assert [f.name for f in (tmp_path / "again").iterdir()] == ["step_00000004-fmnist-train-raw.json"]
    again = json.loads((tmp_path / "again" / "step_00000004-fmnist-train-raw.json").read_text())
    assert set(again["metrics"]) == {"fid_fmnist"} and sorted(p.name for p in (cache / "stats").iterdir()) == cached
    assert again["model"]["generator"] == "raw"
    assert again["metrics"]["fid_fmnist"] != m["fid_fmnist"]  # the raw generator is not the EMA one


def test_evaluate_an_exported_folder(tiny_run, tmp_path, cache, capsys):
    """An exported folder carries the training config, so the reference dataset is found from it."""
    exp = tmp_path / "exp"
    assert main(["export", str(tiny_run), "--out", str(exp)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(exp), "--features", "fmnist", "-n", "20", "--metrics", "fid,pr",
                 "--no-progress", "--batch-size", "20", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"exported model {exp}" in out and "step 4" in out and "FID (Fashion-MNIST classifier features)" in out
    rec = json.loads((exp / "eval" / "step_00000004-fmnist-train.json").read_text())
    assert rec["model"]["kind"] == "export" and rec["model"]["checkpoint"] == "export"
    assert rec["model"]["source"] == str(exp) and rec["model"]["step"] == 4 and rec["model"]["generator"] == "ema"
    assert rec["reference"]["dataset"] == "image_folder" and rec["num_real"] == 16
    assert set(rec["metrics"]) == {"fid_fmnist", "precision_fmnist", "recall_fmnist", "f_score_fmnist"}
    assert rec["metrics"]["fid_fmnist"] > 0


def test_evaluate_source_errors_are_one_line(tiny_run, tmp_path, capsys):
    # the tiny run tracked no FID, so it has no best.pt
    assert main(["evaluate", str(tiny_run), "--checkpoint", "best", "-n", "10", "--features", "fmnist"]) == 2
    err = capsys.readouterr().err
    assert "best.pt" in err and "--checkpoint latest" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["evaluate", "-n", "10"]) == 2
    err = capsys.readouterr().err
    assert "SOURCE" in err and "--pretrained" in err and err.count("\n") == 1
    (tmp_path / "taken.json").write_text("{}")
    assert main(["evaluate", str(tiny_run), "--out", str(tmp_path / "taken.json"), "-n", "10"]) == 2
    err = capsys.readouterr().err
    assert "names a folder" in err and err.count("\n") == 1
    assert (tmp_path / "taken.json").read_text() == "{}"


def test_evaluate_without_inception_weights_fails_before_sampling(tiny_run, tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "missing" / INCEPTION_FILE))

    def must_not_sample(*a, **k):
        raise AssertionError("sampling started before the Inception weights were found")
    monkeypatch.setattr("sagan.sampling.generate", must_not_sample)
    # an image-folder run defaults to Inception features
    assert main(["evaluate", str(tiny_run), "-n", "100", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert INCEPTION_FILE in err and "does not exist" in err and "Traceback" not in err


def test_evaluate_user_errors(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--metrics", "fid,lpips"]) == 2
    assert "choose from is, fid, kid, pr, ifid" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "--features", "fmnist", "--split", "test", "-n", "10"]) == 2
    assert "no test split" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "-n", "1"]) == 2
    assert "--num-samples 1" in capsys.readouterr().err


def test_training_fid_logs_and_keeps_best_checkpoint(tmp_path, cache):
    """Train a few steps on a Fashion-MNIST subset with FID every 2 steps."""
    from sagan.config import load_config
    from sagan.data import load_data
    from sagan.metrics.tracking import TrainingFID
    from sagan.sampling import load_run
    from sagan.train.resolve import resolve_for_data
    from sagan.train.trainer import Trainer

    cfg = load_config("fmnist32", overrides=["model.g_ch=8", "model.d_ch=8", "train.batch_size=8", "train.steps=4",
                                             "train.fid_every=2", "train.fid_samples=64", "train.log_every=2",
                                             "train.sample_every=4", "train.ckpt_every=4", *TINY_STANDING_SETS])
    assert load_config("fmnist32").train.fid_every == 1000  # the preset's default
    data = load_data(cfg.data, 32, True)
    data.images, data.labels = data.images[:300], data.labels[:300]
    fid = TrainingFID.from_config(cfg, data, torch.device("cpu"))  # what `sagan train` hands the Trainer
    trainer = Trainer(resolve_for_data(cfg, data, torch.device("cpu"))[0], tmp_path / "run", data, progress=False,
                      fid=fid)
    assert trainer.fid is not None and trainer.fid.features == "fmnist"
    trainer.fit()
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("eval/fid_fmnist")]
    # classifier-feature scalars are named for the classifier: no plain eval/fid or eval/is column
    assert {"eval/fid_fmnist", "eval/best_fid_fmnist", "eval/is_fmnist", "eval/class_acc"} <= set(reader.fieldnames)
    assert not {"eval/fid", "eval/best_fid", "eval/is"} & set(reader.fieldnames)
    assert [float(r["step"]) for r in rows] == [2.0, 4.0]
    for r in rows:
        assert (float(r["eval/fid_fmnist"]) > 0 and 1 <= float(r["eval/is_fmnist"]) <= 10
                and 0 <= float(r["eval/class_acc"]) <= 1)
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    state = torch.load(best, map_location="cpu", weights_only=True)
    fids = {int(float(r["step"])): float(r["eval/fid_fmnist"]) for r in rows}
    assert state["best"]["step"] == min(fids, key=fids.get)
    assert state["best"]["fid"] == pytest.approx(min(fids.values())) and state["best"]["features"] == "fmnist"
    assert float(rows[-1]["eval/best_fid_fmnist"]) == pytest.approx(min(fids.values()))
    loaded = load_run(best)
    assert loaded.step == state["best"]["step"] and loaded.run_dir == tmp_path / "run"
    # sagan evaluate --checkpoint best on this Fashion-MNIST run: fmnist features by default, class accuracy
    assert main(["evaluate", str(tmp_path / "run"), "--checkpoint", "best", "-n", "50", "--metrics", "is",
                 "--no-progress"]) == 0
    rec = json.loads((tmp_path / "run" / "eval" / f"step_{loaded.step:08d}-fmnist-train.json").read_text())
    assert rec["extractor"]["name"] == "fmnist" and rec["reference"] is None and rec["num_real"] is None
    assert set(rec["metrics"]) == {"is_mean_fmnist", "is_std_fmnist", "class_accuracy"}
    assert 0 <= rec["metrics"]["class_accuracy"] <= 1
    assert rec["model"]["source"] == str(best) and rec["model"]["checkpoint"] == "best"
    assert rec["model"]["step"] == loaded.step and rec["model"]["tracked_fid"]["features"] == "fmnist"
    # evaluating does not move the training RNG streams: the same run without FID ends identical
    cfg.train.fid_every = 0
    plain = Trainer(resolve_for_data(cfg, data, torch.device("cpu"))[0], tmp_path / "plain", data, progress=False)
    assert plain.fid is None
    plain.fit()
    for k, v in trainer.gan.G.state_dict().items():
        assert torch.equal(v, plain.gan.G.state_dict()[k]), k


def test_training_fid_off_when_it_would_never_run_or_inception_is_not_local(tiny_folder, tmp_path, monkeypatch):
    from sagan.config import load_config
    from sagan.data import load_data
    from sagan.metrics.tracking import TrainingFID

    monkeypatch.setenv(INCEPTION_ENV, "")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("sagan.metrics.inception_offline.fid_helper_model_file", lambda: None)  # nor the offline extra
    # ... nor converted weights from it: replaced in the namespace the tracker's lookup really uses (in the full
    # suite, and only there, the lookup found converted weights despite the line above; cause not found yet)
    import sagan.metrics.tracking as tracking
    monkeypatch.setitem(tracking.resolve_inception_weights.__globals__, "offline_inception_weights", lambda: None)
    cfg = load_config("fmnist32", overrides=["data.dataset=image_folder", f"data.root={tiny_folder}",
                                             "train.steps=10", "train.fid_every=5"])
    data = load_data(cfg.data, 32, True)
    notes = []
    assert TrainingFID.from_config(cfg, data, torch.device("cpu"), say=notes.append) is None
    assert "training-time FID is off" in notes[0] and INCEPTION_FILE in notes[0]
    assert f"To turn it on, put it at {tmp_path / 'hub' / 'checkpoints' / INCEPTION_FILE}" in notes[0]  # says how
    assert load_config("imagefolder64").train.fid_every == load_config("cifar32").train.fid_every == 5000
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
    assert main(["evaluate", *args, "--out", str(tmp_path / "one")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", SAGAN_CACHE=str(cache))
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "sagan", "evaluate", *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.count("evaluating ") == 1 and "in 2 processes" in proc.stdout  # rank 0 speaks
    files = list((run / "eval").glob("*.json"))
    assert len(files) == 1, files  # written once, by rank 0
    two, one = json.loads(files[0].read_text()), json.loads((tmp_path / "one" / files[0].name).read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["num_generated"] == one["num_generated"] == 600
    discrete = {"precision_fmnist", "recall_fmnist", "class_accuracy"}
    assert {"precision_fmnist", "recall_fmnist"} <= set(one["metrics"])
    for k, v in one["metrics"].items():
        if k in discrete:
            assert two["metrics"][k] == v, k
        else:
            assert two["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
