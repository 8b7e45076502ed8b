"""End-to-end plumbing: state that must survive a checkpoint, CLI switches that must select the
right weights, the Inception metrics path with a real (random) weights file, a real Fashion-MNIST
training run, and the files the package ships.

Data or weights that the project ships or that CI installs make these tests fail when missing,
never skip silently: the only skip is the Fashion-MNIST one outside CI (``CI`` unset).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sagan.cli import main

# --------------------------------------------------------------------------- helpers

def require_debian_fmnist() -> Path:
    """The Debian dataset-fashion-mnist folder; fails under CI (scripts/setup.sh installs it),
    skips elsewhere when the package is absent."""
    from sagan.data.datasets import DEBIAN_FMNIST, FMNIST_FILES
    missing = [n for n in FMNIST_FILES
               if not (DEBIAN_FMNIST / n).is_file() and not (DEBIAN_FMNIST / (n + ".gz")).is_file()]
    if missing:
        why = (f"Fashion-MNIST IDX files {missing} not found in {DEBIAN_FMNIST} (Debian package "
               "dataset-fashion-mnist, installed by scripts/setup.sh)")
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why}; CI is set, so the data must be there")
        pytest.skip(why)
    return DEBIAN_FMNIST


def _tiny_data():
    from sagan.data.datasets import ImageData
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageData("tiny", "random", 4, 3, 32, [f"c{i}" for i in range(4)], images, torch.arange(16) % 4)


def _tiny_trainer(run_dir: Path):
    from sagan.config import load_config
    from sagan.train.resolve import resolve_for_data
    from sagan.train.trainer import Trainer
    cfg = load_config("fmnist32", None, ["model.g_ch=8", "model.d_ch=8", "train.batch_size=8", "train.device=cpu",
                                         "train.log_every=1000", "train.fid_every=0", "train.keep_ckpts=5"])
    data = _tiny_data()
    return Trainer(resolve_for_data(cfg, data, torch.device("cpu"))[0], run_dir, data, progress=False)


# --------------------------------------------------------------------------- 1. fp16 GradScaler state in checkpoints

def test_grad_scaler_state_round_trips_through_a_checkpoint(tmp_path, one_thread):
    """fp16 needs CUDA, so the Trainer's two GradScalers are CPU ones here; everything else (the
    scaled backward/step/update in train_step, Trainer.save -> save_checkpoint, Trainer.resume ->
    load_checkpoint with weights_only=True -> load_state_dict) is the real path."""
    from sagan.runs.checkpoints import load_checkpoint
    a = _tiny_trainer(tmp_path / "run")
    a.gan.scalers = (torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_factor=4.0, backoff_factor=0.25,
                                      growth_interval=3),
                 torch.amp.GradScaler("cpu", init_scale=2.0 ** 7, growth_factor=3.0, backoff_factor=0.125,
                                      growth_interval=5))
    for _ in range(2):
        a.train_step()  # finite gradients: each scaler's growth tracker counts 1, 2
    a.gan.scalers[1].update(new_scale=321.0)  # a scale no default or growth rule would give
    expected = [s.state_dict() for s in a.gan.scalers]
    assert expected[0] == {"scale": 1024.0, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 3,
                           "_growth_tracker": 2}
    assert expected[1] == {"scale": 321.0, "growth_factor": 3.0, "backoff_factor": 0.125, "growth_interval": 5,
                           "_growth_tracker": 2}
    path = a.save()
    a.logger.close()

    saved = load_checkpoint(path)  # weights_only=True: scaler state must be plain values
    assert saved["scalers"] == expected

    b = _tiny_trainer(tmp_path / "run")  # same run directory, as `sagan train --resume` does
    b.gan.scalers = (torch.amp.GradScaler("cpu"), torch.amp.GradScaler("cpu"))  # defaults: scale 65536, interval 2000
    assert b.resume() == 2
    assert [s.state_dict() for s in b.gan.scalers] == expected
    assert [s.get_scale() for s in b.gan.scalers] == [1024.0, 321.0]

    # The restored scalers behave like the originals: the next step reaches scaler 0's growth
    # interval (3) and multiplies its scale by its growth factor (4), both from the checkpoint.
    sa, sb = a.train_step(), b.train_step()
    assert [s.state_dict() for s in b.gan.scalers] == [s.state_dict() for s in a.gan.scalers]
    assert b.gan.scalers[0].state_dict()["scale"] == 4096.0 and b.gan.scalers[0].state_dict()["_growth_tracker"] == 0
    assert b.gan.scalers[1].state_dict()["_growth_tracker"] == 3
    assert sb.loss_d == pytest.approx(sa.loss_d, rel=1e-5, abs=1e-6)
    assert sb.loss_g == pytest.approx(sa.loss_g, rel=1e-5, abs=1e-6)
    b.logger.close()


# --------------------------------------------------------------------------- 2. sample --no-ema

def _npz_images(folder: Path) -> np.ndarray:
    (path,) = folder.glob("*.npz")
    with np.load(path) as f:
        return f["images"]


def test_sample_no_ema_uses_the_raw_generator(tiny_run, tmp_path, one_thread):
    import shutil

    from sagan.config import config_from_dict
    from sagan.models import build_models
    from sagan.runs.checkpoints import load_checkpoint, resolve_checkpoint

    # After 4 steps of lr 1e-4 the raw and EMA generators differ by ~2 uint8 levels: too close to
    # tell apart reliably. In a copy of the run, the raw G is replaced by a freshly initialised one
    # (same architecture), so that the two are far apart; G_ema stays the trained one.
    run = shutil.copytree(tiny_run, tmp_path / "run")
    ckpt = resolve_checkpoint(run)
    state = load_checkpoint(ckpt)
    cfg, meta = config_from_dict(state["config"]), state["data"]
    assert meta["num_classes"] > 0  # conditional: labels cycle through the classes
    torch.manual_seed(1234)
    fresh_g, _ = build_models(cfg.model, meta["num_classes"], meta["channels"])
    state["G"] = fresh_g.state_dict()
    torch.save(state, ckpt)

    n, seed = 6, 5
    common = ["-n", str(n), "--seed", str(seed), "--format", "npz", "--device", "cpu"]
    assert main(["sample", str(run), *common, "--out", str(tmp_path / "ema")]) == 0
    assert main(["sample", str(run), *common, "--no-ema", "--out", str(tmp_path / "raw")]) == 0
    got_ema, got_raw = _npz_images(tmp_path / "ema"), _npz_images(tmp_path / "raw")

    # The latents of `sagan sample --seed S` (one batch): torch.randn from a generator seeded with S.
    z = torch.randn(n, cfg.model.z_dim, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n) % meta["num_classes"]

    def direct(key: str) -> np.ndarray:
        g, _ = build_models(cfg.model, meta["num_classes"], meta["channels"])
        g.load_state_dict(state[key])
        with torch.no_grad():
            x = g.eval()(z, y)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    want_raw, want_ema = direct("G"), direct("G_ema")
    assert np.abs(want_raw.astype(int) - want_ema.astype(int)).max() > 20
    assert got_raw.shape == got_ema.shape == want_raw.shape

    def close(a, b):  # identical computation; allow one uint8 level for a rounding tie
        return np.abs(a.astype(int) - b.astype(int)).max() <= 1

    assert close(got_raw, want_raw), "--no-ema did not use the checkpoint's raw G"
    assert not close(got_raw, want_ema), "--no-ema used the EMA generator"
    assert close(got_ema, want_ema), "the default did not use the checkpoint's G_ema"
    assert not close(got_ema, want_raw), "the default used the raw generator"


# --------------------------------------------------------------------------- 3. Inception path, random weights

INCEPTION_TEST_SIZE = 75  # InceptionV3's smallest input; 299 (the real one) is in test_metrics' slow test


@pytest.fixture
def random_inception_file(tmp_path):
    """torch-fidelity's TF-ported Inception v3 with random weights, saved as the weights file it
    loads (a plain state dict). Convolutions get He init so that features vary between images
    (the default init shrinks activations ~1e9-fold over the 90+ layers: near-constant features)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    from sagan.metrics.extractors import INCEPTION_FILE
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        torch.manual_seed(0)
        model = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.nn.init.normal_(model.fc.weight, std=2048 ** -0.5)
    path = tmp_path / "weights" / INCEPTION_FILE
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    return path


def test_evaluate_runs_the_inception_path_end_to_end(tiny_run, tmp_path, monkeypatch, random_inception_file,
                                                      one_thread, capsys):
    """`sagan evaluate RUN --inception-weights FILE`: IS/FID/KID/PR of 40 samples through
    torch-fidelity's Inception network loaded from FILE. Inception's input size is lowered from 299
    to 75 to keep the test fast on a CPU (same network, same weights, same code path otherwise)."""
    import shutil

    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    monkeypatch.setenv("SAGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SAGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(tfi.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", INCEPTION_TEST_SIZE)
    from sagan.metrics.extractors import (
        FIDELITY_NAMES,
        FeatureExtractorInceptionV3Safe,
        register_extractors,
    )
    register_extractors()
    # torch-fidelity's network, its weights file read as data (torch-fidelity's own class unpickles it)
    assert FEATURE_EXTRACTORS_REGISTRY[FIDELITY_NAMES["inception"]] is FeatureExtractorInceptionV3Safe
    assert issubclass(FeatureExtractorInceptionV3Safe, tfi.FeatureExtractorInceptionV3)

    built, calls = [], []
    init, forward = FeatureExtractorInceptionV3Safe.__init__, tfi.FeatureExtractorInceptionV3.forward

    def spy_init(self, name, features_list, feature_extractor_weights_path=None, **kw):
        built.append((list(features_list), feature_extractor_weights_path))
        init(self, name, features_list, feature_extractor_weights_path, **kw)

    def spy_forward(self, x):
        out = forward(self, x)
        calls.append((len(x), {f: tuple(o.shape) for f, o in zip(self.features_list, out)}))
        return out

    monkeypatch.setattr(FeatureExtractorInceptionV3Safe, "__init__", spy_init)
    monkeypatch.setattr(tfi.FeatureExtractorInceptionV3, "forward", spy_forward)

    run = shutil.copytree(tiny_run, tmp_path / "run")
    out_dir = tmp_path / "eval"
    rc = main(["evaluate", str(run), "-n", "40", "--inception-weights", str(random_inception_file),
               "--no-progress", "--batch-size", "40", "--device", "cpu", "--out", str(out_dir)])
    printed = capsys.readouterr().out
    assert rc == 0, printed

    # Every extractor was the Inception one, loaded from our file (no download, no other weights).
    assert built and all(w == str(random_inception_file) for _, w in built)
    fake_calls = [c for c in calls if "logits_unbiased" in c[1]]
    real_calls = [c for c in calls if "logits_unbiased" not in c[1]]
    assert sum(n for n, _ in fake_calls) == 40  # the generated images, at IS and FID layers
    assert sum(n for n, _ in real_calls) == 16  # the tiny folder's 16 real images, FID layer
    for n, shapes in calls:
        assert shapes["2048"] == (n, 2048)
        if "logits_unbiased" in shapes:
            assert shapes["logits_unbiased"] == (n, 1008)

    record = json.loads((out_dir / "step_00000004-inception-train.json").read_text())
    assert record["extractor"]["name"] == "inception"
    assert record["extractor"]["torch_fidelity"] == "sagan-inception-v3-compat"
    assert record["extractor"]["weights"] == str(random_inception_file)
    assert record["num_generated"] == 40 and record["num_real"] == 16 and record["kid_subset_size"] == 16
    m = record["metrics"]
    for key in ("is_mean", "is_std", "fid", "kid_mean", "kid_std", "precision", "recall"):
        assert np.isfinite(m[key]), key
    assert m["is_mean"] >= 1.0 - 1e-6
    assert m["fid"] > 0  # generated vs real images, features that vary: not a degenerate zero
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert "FID" in printed and "IS" in printed


# --------------------------------------------------------------------------- 4. real Fashion-MNIST training

def test_train_two_steps_on_debian_fashion_mnist(tmp_path, monkeypatch, one_thread, capsys):
    require_debian_fmnist()
    import yaml

    from sagan.runs.checkpoints import Checkpoints, load_checkpoint
    monkeypatch.setenv("SAGAN_CACHE", str(tmp_path / "cache"))  # IDX files are staged here, not in ~/.cache
    rc = main(["train", "--preset", "fmnist32", "--steps", "2",
               "--set", "model.g_ch=8", "--set", "model.d_ch=8", "--set", "train.batch_size=8",
               "--set", "train.fid_every=0", "--set", "train.device=cpu",
               "--out", str(tmp_path / "runs"), "--name", "fm", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    run = tmp_path / "runs" / "fm"
    assert "dataset-fashion-mnist" in printed  # the data came from the Debian package
    assert "60000 images, 10 classes, 1 channel, 32x32" in printed

    ckpts = Checkpoints(run / "checkpoints").list()
    assert ckpts and ckpts[-1].name == "ckpt_00000002.pt"
    state = load_checkpoint(ckpts[-1])
    assert state["step"] == 2
    assert state["data"]["num_classes"] == 10 and state["data"]["channels"] == 1
    assert state["data"]["name"] == "fashion_mnist" and state["data"]["class_names"][9] == "Ankle boot"

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["preset"] == "fmnist32" and cfg["data"]["dataset"] == "fashion_mnist"
    assert cfg["data"]["channels"] in (None, 1) and cfg["model"]["conditional"] is True
    assert cfg["train"]["steps"] == 2 and cfg["model"]["g_ch"] == 8
    assert (run / "samples" / "final.png").is_file()


# --------------------------------------------------------------------------- 5. shipped classifier weights

def test_shipped_classifier_weights_exist_and_load():
    from importlib.resources import files

    from sagan.metrics import classifier
    shipped = Path(str(files("sagan") / "metrics" / "weights" / "fmnist_cnn.pt"))
    assert classifier.WEIGHTS_FILE.is_file(), f"{classifier.WEIGHTS_FILE} is missing from the package"
    assert shipped.resolve() == classifier.WEIGHTS_FILE.resolve()
    model = classifier.load_classifier()
    info = classifier.classifier_info()
    assert info.get("test_accuracy", 0) > 0.85, info
    x = torch.zeros(2, 1, classifier.INPUT_RESOLUTION, classifier.INPUT_RESOLUTION, dtype=torch.uint8)
    with torch.no_grad():
        feats, logits = model.features_and_logits(classifier.prepare_input(x))
    assert feats.shape == (2, classifier.FEATURE_DIM) and logits.shape == (2, classifier.NUM_CLASSES)
    assert torch.isfinite(logits).all()
