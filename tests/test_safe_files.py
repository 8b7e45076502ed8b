"""Files are data, never code: the Inception weights and the statistics cache (issue 27).

torch-fidelity reads both with ``torch.load(weights_only=False)``, which runs whatever a pickle
names. Each test below puts a pickle whose ``__reduce__`` calls ``os.system`` (creating a marker
file) where ``sagan evaluate`` reads, and checks that the marker never appears, that the command
exits 2 with one line and no traceback. No test needs the real Inception weights or the internet.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from sagan.cli import main
from sagan.errors import InceptionWeightsError
from sagan.metrics.extractors import (
    FIDELITY_NAMES,
    INCEPTION_ENV,
    INCEPTION_FILE,
    register_extractors,
)


class _RunsCode:
    """Unpickling this calls ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_evil_pickle(path, marker) -> None:
    """A torch.save file that creates ``marker`` when it is unpickled with weights_only=False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"Conv2d_1a_3x3.conv.weight": _RunsCode(f"touch {marker}")}, path)


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "CODE_RAN"
    yield m
    assert not m.exists(), "a file's code ran"


def one_refusal_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.count("\n") == 1, err
    return err


def test_the_evil_pickle_does_run_code_when_unpickled(tmp_path):
    """The fixture is a real exploit: loaded as torch-fidelity loads files, it runs its command."""
    m, evil = tmp_path / "ran", tmp_path / "evil.pth"
    write_evil_pickle(evil, m)
    torch.load(evil, weights_only=False)
    assert m.exists()


# --------------------------------------------------------------------------- the Inception weights

@pytest.mark.parametrize("origin", ["--inception-weights", INCEPTION_ENV, "torch.hub cache"])
def test_inception_weights_that_are_not_plain_tensors_are_refused(tiny_run, tmp_path, marker, monkeypatch,
                                                                  capsys, origin):
    evil = tmp_path / "w" / INCEPTION_FILE
    write_evil_pickle(evil, marker)
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "w" / "hub"))
    args = ["evaluate", str(tiny_run), "-n", "10", "--no-progress", "--out", str(tmp_path / "eval")]
    if origin == "--inception-weights":
        args += ["--inception-weights", str(evil)]
    elif origin == INCEPTION_ENV:
        monkeypatch.setenv(INCEPTION_ENV, str(evil))
    else:
        cached = tmp_path / "w" / "hub" / "checkpoints" / INCEPTION_FILE
        cached.parent.mkdir(parents=True)
        evil.rename(cached)
        evil = cached

    def must_not_sample(*a, **k):
        raise AssertionError("sampling started before the Inception weights were checked")
    monkeypatch.setattr("sagan.sampling.generate", must_not_sample)
    assert main(args) == 2  # an image-folder run is evaluated with Inception features by default
    err = one_refusal_line(capsys)
    assert str(evil) in err and "is not a plain tensor file" in err and INCEPTION_FILE in err
    assert not (tmp_path / "eval").exists()


def test_an_empty_inception_weights_file_is_one_line(tiny_run, tmp_path, marker, capsys):
    empty = tmp_path / INCEPTION_FILE
    empty.write_bytes(b"")
    assert main(["evaluate", str(tiny_run), "-n", "10", "--no-progress", "--inception-weights", str(empty),
                 "--out", str(tmp_path / "eval")]) == 2
    err = one_refusal_line(capsys)
    assert f"--inception-weights {empty} is empty" in err


def test_the_inception_extractor_reads_its_weights_as_data(tmp_path, marker):
    """Built directly (as torch-fidelity's create_feature_extractor does), the registered Inception
    extractor refuses the pickle too; a plain tensor file of other weights is refused in one line."""
    from torch_fidelity.utils import create_feature_extractor

    register_extractors()
    evil = tmp_path / "evil.pth"
    write_evil_pickle(evil, marker)
    with pytest.raises(InceptionWeightsError, match="is not a plain tensor file"):
        create_feature_extractor(FIDELITY_NAMES["inception"], ["2048"], cuda=False,
                                 feature_extractor_weights_path=str(evil))
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(InceptionWeightsError, match="not the Inception v3 weights") as e:
        create_feature_extractor(FIDELITY_NAMES["inception"], ["2048"], cuda=False,
                                 feature_extractor_weights_path=str(other))
    assert "\n" not in str(e.value) and "fc.weight: file (3, 3), network (1008, 2048)" in str(e.value)


# --------------------------------------------------------------------------- the statistics cache

def _evaluate_fid(run, out, capsys) -> int:
    return main(["evaluate", str(run), "--features", "fmnist", "--metrics", "fid", "-n", "20", "--batch-size", "20",
                 "--no-progress", "--device", "cpu", "--out", str(out)])


def test_statistics_cache_files_are_read_as_data(tiny_run, tmp_path, marker, monkeypatch, capsys):
    monkeypatch.setenv("SAGAN_CACHE", str(tmp_path / "cache"))
    stats = tmp_path / "cache" / "stats"
    assert _evaluate_fid(tiny_run, tmp_path / "e1", capsys) == 0
    capsys.readouterr()
    written = sorted(stats.iterdir())
    names = [p.name for p in written]
    assert len(written) == 2 and any("-features-128.pt" in n for n in names) and any("stat-fid" in n for n in names)

    # A cache hit gives the same number.
    assert _evaluate_fid(tiny_run, tmp_path / "e2", capsys) == 0
    capsys.readouterr()
    fid = [json.loads(next((tmp_path / e).glob("*.json")).read_text())["metrics"]["fid_fmnist"] for e in ("e1", "e2")]
    assert fid[1] == pytest.approx(fid[0])

    # Every file of the cache, replaced by a pickle that runs code: refused, nothing runs.
    for path in written:
        good = path.read_bytes()
        write_evil_pickle(path, marker)
        assert _evaluate_fid(tiny_run, tmp_path / "e3", capsys) == 2
        err = one_refusal_line(capsys)
        assert f"statistics cache file {path} is not a plain tensor file" in err and "delete it" in err
        path.write_bytes(good)
    assert not (tmp_path / "e3").exists()

    # Plain tensors of the wrong form are refused too (a damaged or foreign file).
    features = next(p for p in written if "-features-" in p.name)
    good = features.read_bytes()
    torch.save(torch.zeros(5, 7), features)
    assert _evaluate_fid(tiny_run, tmp_path / "e4", capsys) == 2
    assert "does not hold features at layer 128" in one_refusal_line(capsys)
    features.write_bytes(good)

    # torch-fidelity's own statistics file (numpy arrays in a pickle) is never read at all.
    legacy = features.with_name(features.name.replace("-features-128.pt", "-stat-fid-128.pt"))
    write_evil_pickle(legacy, marker)
    assert _evaluate_fid(tiny_run, tmp_path / "e5", capsys) == 0
