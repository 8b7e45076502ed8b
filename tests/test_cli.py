"""The CLI as a user calls it: train a few steps, resume, sample; clear errors on bad input."""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_TRAIN_ARGS, make_image_folder
from PIL import Image

from sagan.cli import main
from sagan.machine import processor
from sagan.runs.checkpoints import Checkpoints, load_checkpoint
from sagan.runs.folder import run_machines


def test_train_writes_a_complete_run_directory(tiny_run):
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["model"]["g_ch"] == 8 and cfg["train"]["steps"] == 4
    assert cfg["optim"]["lr_d"] == 4e-4
    version = (tiny_run / "version.json").read_text()
    assert "sagan_torch" in version and "torch" in version
    samples = sorted(p.name for p in (tiny_run / "samples").glob("*.png"))
    assert samples == ["final.png", "step_00000000.png", "step_00000002.png", "step_00000004.png"]
    # One row per class: 2 classes x 8 columns, 32 px + 2 px padding.
    assert Image.open(tiny_run / "samples" / "final.png").size == (8 * 34 + 2, 2 * 34 + 2)
    assert (tiny_run / "attention" / "attention_G.png").is_file()
    assert list((tiny_run / "tb").glob("events.out.tfevents.*"))
    with open(tiny_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows] == [2, 4]
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "images_per_s", "gamma/G.attn16", "gamma/D.attn16"):
        assert key in rows[0] and np.isfinite(float(rows[-1][key]))
    ckpts = Checkpoints(tiny_run / "checkpoints").list()
    assert [p.name for p in ckpts] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    state = load_checkpoint(ckpts[-1])
    assert state["step"] == 4
    assert set(state) >= {"G", "D", "G_ema", "opt_g", "opt_d", "rng", "stream", "config", "code_version"}


def test_resume_continues_where_it_stopped(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = load_checkpoint(Checkpoints(run / "checkpoints").list()[-1])
    assert main(["train", "--resume", str(run), "--steps", "6", "--no-progress"]) == 0
    after = load_checkpoint(Checkpoints(run / "checkpoints").list()[-1])
    assert after["step"] == 6
    assert after["opt_d"]["state"][0]["step"] == before["opt_d"]["state"][0]["step"] + 2
    assert not torch.equal(after["G"]["linear.parametrizations.weight.original"],
                           before["G"]["linear.parametrizations.weight.original"])
    with open(run / "metrics.csv") as f:
        assert [int(float(r["step"])) for r in csv.DictReader(f)] == [2, 4, 6]
    version = json.loads((run / "version.json").read_text())
    assert len(version["resumes"]) == 1 and "--resume" in version["resumes"][0]["command"]
    # The start and the resume each name the machine that trained them, CPU family and model included.
    for entry in (version, version["resumes"][0]):
        machine = entry["machine"]
        assert machine["processor"] == processor(torch.device("cpu")) and "family" in machine["processor"]
        assert machine["device"] == "cpu" and machine["threads"] >= 1 and isinstance(machine["cpu_bf16_flags"], list)
    assert run_machines(run) == [processor(torch.device("cpu"))]


def test_resume_refuses_model_changes(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["train", "--resume", str(run), "--set", "model.g_ch=16"]) == 2
    assert "only train.*" in capsys.readouterr().err


def test_sample_writes_png_and_npz(tiny_run, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", str(tiny_run), "-n", "6", "--classes", "1", "--out", str(out)]) == 0
    npz = np.load(next(out.glob("*.npz")))
    assert npz["images"].shape == (6, 32, 32, 3) and npz["images"].dtype == np.uint8
    assert (npz["labels"] == 1).all()
    assert next(out.glob("*.png")).is_file()
    # A checkpoint file works as well as a run directory, and --no-ema uses the raw G.
    ckpt = Checkpoints(tiny_run / "checkpoints").list()[-1]
    assert main(["sample", str(ckpt), "-n", "4", "--no-ema", "--format", "npz", "--out", str(out / "raw")]) == 0
    assert len(list((out / "raw").glob("*.npz"))) == 1


def test_sample_rejects_unknown_class(tiny_run, capsys):
    assert main(["sample", str(tiny_run), "--classes", "5"]) == 2
    assert "classes 0..1" in capsys.readouterr().err


def test_run_directory_is_never_overwritten(tiny_folder, tmp_path, capsys):
    args = ["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "1", "--out", str(tmp_path), "--name", "r"]
    assert main(args) == 0
    marker = tmp_path / "r" / "mine.txt"
    marker.write_text("keep")
    assert main(args) == 0
    assert marker.read_text() == "keep"
    assert (tmp_path / "r-2" / "config.yaml").is_file()
    assert "writing to" in capsys.readouterr().out


def test_single_folder_is_unconditional(tmp_path):
    data = make_image_folder(tmp_path / "one", classes=1, per_class=8)
    assert main(["train", *TINY_TRAIN_ARGS, "--data", str(data), "--steps", "1", "--out", str(tmp_path / "runs"),
                 "--name", "u"]) == 0
    state = load_checkpoint(Checkpoints(tmp_path / "runs" / "u" / "checkpoints").list()[-1])
    assert state["data"]["num_classes"] == 0


@pytest.mark.parametrize("setup, extra, message", [
    ("missing", [], "does not exist"),
    ("empty", [], "is empty: put images in it"),
    ("tiny", ["--set", "train.batch_size=64"], "train.batch_size=64 is larger than the dataset (16 images)"),
    ("tiny", ["--set", "model.resolution=48"], "model.resolution=48 is not supported"),
    ("tiny", ["--set", "optim.lr_dd=1"], "unknown config key 'optim.lr_dd'"),
])
def test_train_errors_are_clear_and_early(setup, extra, message, tmp_path, tiny_folder, capsys):
    data = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "tiny": tiny_folder}[setup]
    if setup == "empty":
        data.mkdir()
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(data), *extra, "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAGAN_CACHE", str(tmp_path / "cache"))
    rc = main(["train", "--data", str(tmp_path), "--set", "data.download=false", "--out", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no Fashion-MNIST IDX files" in err and str(tmp_path) in err


def test_console_script_and_module_entry_points():
    out = subprocess.run([sys.executable, "-m", "sagan", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("train", "sample"):
        assert cmd in out.stdout
    exe = shutil.which("sagan")
    assert exe is not None, "the 'sagan' console script is not installed"
    assert subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout.startswith("sagan-torch")


def test_every_command_shares_the_common_flags():
    """--no-progress everywhere, --device defaulting to auto where there is a device, --out a folder
    (train-evaluator's is the one weights file it writes, and says so)."""
    from sagan.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "sample", "interpolate", "export", "evaluate", "attention", "report", "bench"} <= set(sub.choices)
    commands = dict(sub.choices)
    study = commands.pop("study")  # its parsers are one level down: sagan study attention|collect|...
    nested = next(a for a in study._actions if isinstance(a, argparse._SubParsersAction))
    commands.update({f"study {k}": p for k, p in nested.choices.items()})
    # 'study status' only reads a few small files and prints: no long work to show, nothing to write.
    status = commands.pop("study status")
    assert {s for a in status._actions for s in a.option_strings} == {"-h", "--help", "-q", "--quiet", "-v", "--verbose"}
    for name, parser in commands.items():
        opts = {s: a for a in parser._actions for s in a.option_strings}
        assert "--no-progress" in opts, name
        if "--device" in opts:
            assert opts["--device"].default in ("auto", None) and "auto" in opts["--device"].help, name
        out = opts["--out"]
        if name == "train-evaluator":
            assert out.metavar == "FILE" and "not a folder" in out.help
        else:
            assert out.metavar == "DIR" and "folder" in out.help, name
        if name in ("sample", "interpolate", "export", "evaluate", "attention", "report"):
            assert {"--checkpoint", "--pretrained"} <= set(opts), name


def test_train_device_flag_is_the_config_key(tiny_folder, tmp_path):
    from sagan.cli import build_parser
    from sagan.commands.train import _train_config
    args = build_parser().parse_args(["train", "--device", "cpu", "--data", str(tiny_folder)])
    assert _train_config(args)[0].train.device == "cpu"
