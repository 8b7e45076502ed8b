"""``sagan evaluate FOLDER`` / ``sagan evaluate FILE.npz``: images made elsewhere, per-class accuracy and iFID.

The images are real Fashion-MNIST test images written as ``sagan sample --format png`` writes its
samples (``03_Dress/seed0042.png``, greyscale PNGs) and as the ecosystem's NPZ batches (``arr_0``
NHWC uint8 with ``arr_1`` labels, as guided-diffusion saves them; ``images`` NCHW).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from sagan.cli import main
from sagan.config import DataConfig
from sagan.data.datasets import FMNIST_CLASSES, load_data
from sagan.metrics.perclass import intra_class_fids, per_class_accuracy

PER_CLASS = 6
NUM_REAL = 400  # a seeded subset of the training split: at least 2 images of every class


@pytest.fixture(scope="module")
def fmnist_test_images():
    data = load_data(DataConfig(dataset="fashion_mnist"), 32, train=False)
    idx = torch.cat([torch.nonzero(data.labels == c)[:PER_CLASS, 0] for c in range(10)])
    return data.images[idx], data.labels[idx]


@pytest.fixture(scope="module")
def sample_folder(fmnist_test_images, tmp_path_factory):
    """The layout of ``sagan sample --seeds ... --format png``: NN_ClassName/seedXXXX.png, greyscale."""
    root = tmp_path_factory.mktemp("samples") / "samples"
    images, labels = fmnist_test_images
    for i, (img, c) in enumerate(zip(images, labels, strict=False)):
        folder = root / f"{int(c):02d}_{FMNIST_CLASSES[c].replace('/', '_').replace(' ', '_')}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(folder / f"seed{i:04d}.png")
    return root


def _evaluate(capsys, *args) -> tuple[int, str, str]:
    rc = main(["evaluate", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


def _slow_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance written out: means and covariances by explicit sums, scipy's sqrtm."""
    def stats(x):
        mu = x.sum(0) / len(x)
        d = x - mu
        return mu, sum(np.outer(r, r) for r in d) / (len(x) - 1)
    (m1, s1), (m2, s2) = stats(a.astype(np.float64)), stats(b.astype(np.float64))
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# --------------------------------------------------------------------------- the maths, against slow references

def test_per_class_accuracy_and_ifid_match_slow_references():
    gen = torch.Generator().manual_seed(0)
    fake, real = torch.randn(60, 5, generator=gen), torch.randn(90, 5, generator=gen) + 0.3
    fake_c, real_c = torch.arange(60) % 3, torch.arange(90) % 3
    predicted = torch.randint(0, 3, (60,), generator=gen)
    acc = per_class_accuracy(predicted, fake_c)
    for c in range(3):
        hits = [int(p) == c for p, y in zip(predicted.tolist(), fake_c.tolist(), strict=False) if y == c]
        assert acc[c] == sum(hits) / len(hits)
    fids = intra_class_fids(fake, fake_c, real, real_c)
    assert set(fids) == {0, 1, 2}
    for c in range(3):
        want = _slow_fid(fake[fake_c == c].numpy(), real[real_c == c].numpy())
        # float32 features, float64 maths on both sides; eigvals vs sqrtm: agree to ~1e-6 relative
        assert fids[c] == pytest.approx(want, rel=1e-5, abs=1e-8)


def test_ifid_refuses_a_class_without_two_images_on_each_side():
    from sagan.errors import MetricsError
    x = torch.randn(6, 4)
    with pytest.raises(MetricsError, match=r"class\(es\) 2 \(2 generated, 1 real\)"):
        intra_class_fids(x, torch.tensor([0, 0, 1, 1, 2, 2]), x, torch.tensor([0, 0, 1, 1, 2, 0]))


# --------------------------------------------------------------------------- as the user types it

def test_evaluate_a_folder_of_samples(sample_folder, fmnist_test_images, capsys):
    rc, out, err = _evaluate(capsys, sample_folder, "--num-real", NUM_REAL)
    assert rc == 0, err
    assert "all greyscale: 1 channel" in out and "Fashion-MNIST classifier features" in out
    assert "iFID (Fashion-MNIST classifier features)" in out and "per class (FID on" in out
    rec = json.loads((sample_folder.parent / "samples-fmnist-fashion_mnist-train.json").read_text())
    assert rec["samples"]["kind"] == "folder" and rec["samples"]["channels"] == 1
    assert rec["samples"]["num_images"] == 10 * PER_CLASS and rec["num_generated"] == 10 * PER_CLASS
    assert rec["reference"]["dataset"] == "fashion_mnist" and rec["num_real"] == NUM_REAL
    m = rec["metrics"]
    assert {"fid_fmnist", "kid_mean_fmnist", "precision_fmnist", "is_mean_fmnist", "ifid_fmnist",
            "class_accuracy"} <= set(m)
    rows = rec["per_class"]
    assert [r["class"] for r in rows] == [f"{c:02d}_{n.replace('/', '_').replace(' ', '_')}"
                                          for c, n in enumerate(FMNIST_CLASSES)]
    assert [r["reference_class"] for r in rows] == list(FMNIST_CLASSES)
    assert all(r["num_generated"] == PER_CLASS for r in rows)
    # the accuracy per class: the shipped classifier's predictions on these very images, counted by hand
    from sagan.metrics.classifier import load_classifier, prepare_input
    images, labels = fmnist_test_images
    predicted = load_classifier()(prepare_input(images)).argmax(1)
    for c, r in enumerate(rows):
        mine = [int(p) for p, y in zip(predicted, labels, strict=False) if int(y) == c]
        assert r["accuracy"] == pytest.approx(sum(p == c for p in mine) / len(mine), abs=1e-12)
    assert m["class_accuracy"] == pytest.approx(float((predicted == labels).double().mean()), abs=1e-12)
    assert m["ifid_fmnist"] == pytest.approx(sum(r["fid_fmnist"] for r in rows) / len(rows), rel=1e-12)


def test_evaluate_npz_batches_in_both_layouts(sample_folder, fmnist_test_images, tmp_path, capsys):
    images, labels = fmnist_test_images
    nhwc = tmp_path / "adm.npz"
    np.savez(nhwc, images.permute(0, 2, 3, 1).numpy(), labels.numpy())  # arr_0, arr_1 as guided-diffusion saves
    nchw = tmp_path / "nchw.npz"
    np.savez(nchw, images=images.numpy())  # unlabelled, channels first
    rc, out, err = _evaluate(capsys, nhwc, "--num-real", NUM_REAL, "--metrics", "fid,ifid")
    assert rc == 0, err
    a = json.loads((tmp_path / "adm-fmnist-fashion_mnist-train.json").read_text())
    assert a["samples"]["array"] == "arr_0" and a["samples"]["layout"] == "NHWC" and a["samples"]["labels"] == "arr_1"
    assert [r["class"] for r in a["per_class"]] == [str(c) for c in range(10)]  # bare indices: Fashion-MNIST's
    assert [r["reference_class"] for r in a["per_class"]] == list(FMNIST_CLASSES)
    rc, out, err = _evaluate(capsys, nchw, "--num-real", NUM_REAL, "--metrics", "fid")
    assert rc == 0, err
    b = json.loads((tmp_path / "nchw-fmnist-fashion_mnist-train.json").read_text())
    assert b["samples"]["layout"] == "NCHW" and b["samples"]["classes"] is None and "per_class" not in b
    assert a["metrics"]["fid_fmnist"] == pytest.approx(b["metrics"]["fid_fmnist"], rel=1e-9)
    # the same images as the folder (PNG is lossless): the same FID and iFID
    assert _evaluate(capsys, sample_folder, "--num-real", NUM_REAL, "--metrics", "fid,ifid",
                     "--out", tmp_path / "f")[0] == 0
    f = json.loads(next((tmp_path / "f").glob("*.json")).read_text())
    for k in ("fid_fmnist", "ifid_fmnist"):
        assert f["metrics"][k] == pytest.approx(a["metrics"][k], rel=1e-6), k


@pytest.mark.parametrize("arrays, words", [
    ({"arr_0": np.array([None, 1], dtype=object)}, "object arrays are refused"),
    ({"arr_0": np.zeros((4, 32, 30, 1), np.uint8)}, "square, with C = 1 or 3"),
    ({"arr_0": np.zeros((4, 32, 32), np.uint8)}, "(N, H, W, C) or (N, C, H, W)"),
    ({"arr_0": np.zeros((4, 32, 32, 1), np.float32)}, "images must be uint8"),
    ({"samples": np.zeros((4, 32, 32, 1), np.uint8)}, "no image array"),
    ({"images": np.zeros((4, 32, 32, 1), np.uint8), "labels": np.zeros(3, np.int64)}, "one per image"),
])
def test_a_bad_npz_is_one_line_before_any_compute(arrays, words, tmp_path, capsys, monkeypatch):
    def must_not_run(*a, **k):
        raise AssertionError("features were extracted from a refused file")
    monkeypatch.setattr("sagan.commands.evaluate.compute_metrics", must_not_run)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    rc, out, err = _evaluate(capsys, path)
    assert rc == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("sagan evaluate: ")


def test_a_file_that_is_no_npz_and_model_options_on_images_are_one_line(sample_folder, tmp_path, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    rc, _, err = _evaluate(capsys, junk)
    assert rc == 2 and "is not an NPZ file" in err and err.count("\n") == 1
    rc, _, err = _evaluate(capsys, sample_folder, "--truncation", "0.5")
    assert rc == 2 and "--truncation" in err and "holds images, not a generator" in err and err.count("\n") == 1
    rc, _, err = _evaluate(capsys, sample_folder, "--metrics", "ifid", "--num-real", "5")
    assert rc == 2 and "--metrics ifid: the reference has fewer than 2 images" in err and err.count("\n") == 1


def test_an_empty_class_folder_is_no_class(sample_folder, tmp_path, capsys):
    """A class folder without images (here one sorted last) is left out of the per-class numbers."""
    import shutil
    folder = shutil.copytree(sample_folder, tmp_path / "samples")
    (folder / "zz_empty").mkdir()
    rc, out, err = _evaluate(capsys, folder, "--num-real", NUM_REAL, "--metrics", "ifid", "--out", tmp_path / "r")
    assert rc == 0, err
    rec = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    assert len(rec["per_class"]) == 10 and "zz_empty" not in {r["class"] for r in rec["per_class"]}


def test_a_model_against_another_folder_and_the_class_names_it_shares(tiny_run, tiny_folder, tmp_path, capsys):
    """--reference FOLDER: the tiny run's classes (class_0, class_1) are matched by name with the folder's."""
    rc, out, err = _evaluate(capsys, tiny_run, "--reference", tiny_folder, "--features", "fmnist", "-n", "20",
                             "--metrics", "fid,ifid", "--out", tmp_path)
    assert rc == 0, err
    rec = json.loads(next(tmp_path.glob("step_00000004-fmnist-vs-tiny.json")).read_text())
    assert rec["reference"]["folder"] == str(tiny_folder) and rec["num_real"] == 16
    assert [(r["class"], r["reference_class"], r["num_generated"], r["num_real"]) for r in rec["per_class"]] == [
        ("class_0", "class_0", 10, 8), ("class_1", "class_1", 10, 8)]
    rc, _, err = _evaluate(capsys, tiny_run, "--reference", tmp_path / "nowhere", "-n", "20", "--features", "fmnist")
    assert rc == 2 and "no such folder" in err and err.count("\n") == 1
