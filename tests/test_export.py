"""``sagan export`` and ``Generator.from_pretrained``: a generator that loads without the training code."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sagan import Generator, load_run
from sagan.cli import main
from sagan.errors import CheckpointError
from sagan.models.export import CONFIG_NAME, WEIGHTS_NAME, export_info
from sagan.runs.checkpoints import load_checkpoint, resolve_checkpoint, save_best
from sagan.sampling import generate


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-export"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    return out


def test_round_trip_gives_bit_identical_samples(tiny_run, exported):
    from_run = load_run(tiny_run)  # EMA generator of the newest checkpoint
    g = Generator.from_pretrained(exported)
    assert not g.training
    a, la = generate(from_run.G, 12, seed=3, batch_size=5)
    b, lb = generate(g, 12, seed=3, batch_size=5)
    assert torch.equal(a, b) and torch.equal(la, lb)
    for name, t in from_run.G.state_dict().items():
        assert torch.equal(t, g.state_dict()[name]), name


def test_export_records_where_the_weights_came_from(tiny_run, exported):
    config = json.loads((exported / CONFIG_NAME).read_text())
    info = config["sagan"]
    ckpt = resolve_checkpoint(tiny_run)
    assert info["step"] == load_checkpoint(ckpt)["step"] == 4
    assert info["ema"] is True and info["checkpoint_kind"] == "latest" and info["checkpoint"] == str(ckpt)
    assert config["class_names"] == ["class_0", "class_1"] and config["num_classes"] == 2
    assert config["resolution"] == 32 and config["img_channels"] == 3
    assert info["config"]["model"]["g_ch"] == 8  # the whole training config travels with the weights
    g = Generator.from_pretrained(exported)
    assert g.class_names == ["class_0", "class_1"] and export_info(g)["step"] == 4
    card = (exported / "README.md").read_text()  # the model card: what it is, where from, how to load it
    assert card.startswith("---\nlibrary_name: sagan-torch\n") and "2 classes (class_0, class_1)" in card
    assert "EMA generator at step 4 (latest checkpoint)" in card and "`sagan train " in card
    assert 'Generator.from_pretrained("PATH_OR_NAME")' in card


def test_an_export_is_a_model_source_like_a_run(tiny_run, exported):
    run = load_run(exported)
    assert (run.kind, run.which, run.step, run.D) == ("export", "export", 4, None)
    assert run.cfg.model.g_ch == 8 and run.dataset == load_run(tiny_run).dataset
    assert "exported model" in run.describe() and "step 4" in run.describe()


def test_export_never_overwrites(tiny_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(tiny_run), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_best_checkpoint_is_exported_when_asked(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = load_checkpoint(resolve_checkpoint(run))
    save_best(state, run / "checkpoints" / "best.pt", 4, {"fid": 12.5, "step": 4, "features": "fmnist"})
    loaded = load_run(run, checkpoint="best")
    assert loaded.which == "best" and loaded.tracked_fid["fid"] == 12.5
    assert main(["export", str(run), "--checkpoint", "best", "--out", str(tmp_path / "exp")]) == 0
    info = json.loads((tmp_path / "exp" / CONFIG_NAME).read_text())["sagan"]
    assert info["checkpoint_kind"] == "best" and info["tracked_fid"]["fid"] == 12.5


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "best"], "best.pt"),
    (["--checkpoint", "nothere.pt"], "not 'latest', 'best' or an existing checkpoint file"),
])
def test_bad_checkpoint_choice_is_one_line(tiny_run, tmp_path, capsys, args, message):
    assert main(["export", str(tiny_run), *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_bad_sources_are_one_line_errors(tmp_path, exported, capsys):
    bad = tmp_path / "pickled"
    shutil.copytree(exported, bad)
    torch.save({"weights": torch.zeros(3)}, bad / WEIGHTS_NAME)  # a pickle under the safetensors name
    not_export = tmp_path / "empty"
    not_export.mkdir()
    for source, message in [(bad, "not a readable safetensors file"), (tmp_path / "missing", "no such run directory"),
                            (not_export, "has no checkpoints")]:
        assert main(["export", str(source), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Generator.from_pretrained(bad)
    with pytest.raises(CheckpointError, match="not an exported sagan model"):
        Generator.from_pretrained(not_export)
    assert main(["export", str(exported), "--checkpoint", "best", "--out", str(tmp_path / "o")]) == 2
    assert "holds one set of weights" in capsys.readouterr().err


def test_a_newer_export_format_is_refused(exported, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(exported, newer)
    config = json.loads((newer / CONFIG_NAME).read_text())
    config["sagan"]["format"] = 99
    (newer / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="newer than this code"):
        Generator.from_pretrained(newer)


def test_onnx_export_matches_pytorch(exported, tmp_path):
    import onnxruntime as ort  # in the dev extras (scripts/setup.sh installs them); optional for users
    out = tmp_path / "onnx"
    assert main(["export", str(exported), "--format", "onnx", "--out", str(out)]) == 0
    info = json.loads((out / "generator.json").read_text())
    assert info["sagan"]["onnx_inputs"] == ["z", "y"] and info["class_names"] == ["class_0", "class_1"]
    session = ort.InferenceSession(str(out / "generator.onnx"))
    g = Generator.from_pretrained(exported)
    for n in (1, 5):  # the batch size is dynamic
        z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(n))
        y = torch.arange(n) % 2
        got = session.run(["image"], {"z": z.numpy(), "y": y.numpy()})[0]
        with torch.no_grad():
            want = g(z, y).numpy()
        assert got.shape == want.shape
        # Same float32 graph, other kernels: agreement to float32 rounding of values in [-1, 1].
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
