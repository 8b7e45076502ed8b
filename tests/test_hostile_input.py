"""Hostile and careless input (issue 27): absurd sizes, tampered exports, read-only and full disks,
damaged checkpoints, bad benchmark flags. Every case goes through the CLI and must end with exit 2,
exactly one line on stderr (no traceback), before any compute, with nothing the user had changed.

The cases that used to exhaust the machine (``interpolate --steps 10000000`` was OOM-killed,
``config.json`` with ``ch`` 4096 allocated gigabytes) run in a subprocess under a time limit and an
address-space limit (RLIMIT_AS), so a regression fails the test instead of taking the machine down.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sagan import Generator
from sagan.cli import main
from sagan.errors import CheckpointError
from sagan.models.export import CONFIG_NAME, WEIGHTS_NAME, save_export
from sagan.runs.checkpoints import Checkpoints

# Memory a child may map: importing torch and sagan takes ~3.5 GiB of address space (mostly
# reserved, not resident); what is left is too little for any of the refused requests.
CHILD_ADDRESS_SPACE = 6 * 2 ** 30
CHILD_SECONDS = 120


# --------------------------------------------------------------------------- helpers

def one_line_error(err: str, command: str) -> str:
    err = err.strip()
    assert err.startswith(f"sagan {command}: error:"), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a digest of its bytes (to show nothing was changed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def make_export(folder: Path, num_classes: int = 2) -> Path:
    """An untrained 32-px grayscale generator written by save_export (fast, no training)."""
    torch.manual_seed(0)
    g = Generator(resolution=32, ch=8, z_dim=16, num_classes=num_classes, img_channels=1, attn=[16],
                  class_names=[f"c{i}" for i in range(num_classes)] or None).eval()
    return save_export(g, folder, {"step": 3, "ema": True})


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """Read-only for the tests: copy it to tamper with it."""
    return make_export(tmp_path_factory.mktemp("hostile") / "export")


def _limit_child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))


def run_limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``sagan ARGS`` in a child process with a time and an address-space limit."""
    try:
        return subprocess.run([sys.executable, "-m", "sagan", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=CHILD_SECONDS, preexec_fn=_limit_child,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
    except subprocess.TimeoutExpired:
        pytest.fail(f"sagan {' '.join(args)} still ran after {CHILD_SECONDS} s: the size was not refused up front")


def tampered(src: Path, dst: Path, **changes) -> Path:
    """A copy of the export ``src`` whose config.json has ``changes`` (a dict value updates that section)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / CONFIG_NAME).read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    (dst / CONFIG_NAME).write_text(json.dumps(config))
    return dst


# --------------------------------------------------------------------------- bounded work

@pytest.mark.parametrize("args, says", [
    (["interpolate", "{export}", "--steps", "10000000"], "--steps 10000000: must be between 2 and 1000"),
    (["interpolate", "{export}", "--seeds", "0-100000"], "at most 10000 per call"),
    (["interpolate", "{export}", "--scale", "1000000"], "--scale 1000000: must be between 1 and 64"),
    (["interpolate", "{export}", "--scale", "64", "--steps", "1000", "--seeds", "0-9"], "GiB of memory"),
    (["sample", "{export}", "-n", "1000000000000"], "--num 1000000000000: must be between 1 and 1000000"),
    (["sample", "{export}", "-n", "1000000"], "GiB of memory"),
    (["evaluate", "{export}", "-n", "1000000000000"], "--num-samples 1000000000000: must be between 2 and 1000000"),
    (["sample", "{ch4096}", "-n", "2"], "does not describe model.safetensors"),
    (["sample", "{ch1e7}", "-n", "2"], "ch is 10000000.0; must be a whole number from 1 to 4096"),
    (["sample", "{z1e9}", "-n", "2"], "z_dim is 1000000000.0; must be a whole number from 1 to 4096"),
], ids=["steps", "seeds", "scale", "animation-memory", "num", "images-memory", "evaluate-num", "ch4096", "ch1e7",
        "z_dim1e9"])
def test_sizes_are_refused_before_compute_under_a_memory_and_time_limit(export_dir, tmp_path, args, says):
    paths = {"export": export_dir,
             "ch4096": tampered(export_dir, tmp_path / "ch4096", ch=4096),
             "ch1e7": tampered(export_dir, tmp_path / "ch1e7", ch=1e7),
             "z1e9": tampered(export_dir, tmp_path / "z1e9", z_dim=1e9)}
    before = snapshot(export_dir)
    out = tmp_path / "out"
    proc = run_limited([a.format(**paths) for a in args] + ["--out", str(out), "--no-progress"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert says in one_line_error(proc.stderr, args[0])
    assert not out.exists() or not any(out.iterdir())  # nothing written
    assert snapshot(export_dir) == before


def test_seed_beyond_two_to_the_63_is_one_line(export_dir, tmp_path, capsys):
    for command in ("sample", "interpolate", "evaluate", "report"):
        flags = ["--classes", "0,1"] if command == "interpolate" else []
        assert main([command, str(export_dir), *flags, "--seed", str(2 ** 64), "--out", str(tmp_path / "o")]) == 2
        assert f"--seed {2 ** 64}: must be between 0 and {2 ** 63 - 1}" in one_line_error(capsys.readouterr().err,
                                                                                       command)
        assert not (tmp_path / "o").exists()


def test_interpolate_refuses_truncation_nan(export_dir, tmp_path, capsys):
    assert main(["interpolate", str(export_dir), "--truncation", "nan", "--out", str(tmp_path / "o")]) == 2
    assert "--truncation nan" in one_line_error(capsys.readouterr().err, "interpolate")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- exported config.json

@pytest.mark.parametrize("content, says", [
    ("", "cannot be read as JSON: the file is empty (0 bytes)"),
    ('{"ch": 8', "cannot be read as JSON: JSONDecodeError"),
    ("[1, 2]", "not a JSON object"),
    ('"ch"', "not a JSON object"),
], ids=["empty", "truncated", "list", "string"])
def test_unreadable_config_json_is_one_line(export_dir, tmp_path, capsys, content, says):
    d = shutil.copytree(export_dir, tmp_path / "export")
    (d / CONFIG_NAME).write_text(content)
    assert main(["sample", str(d), "-n", "2", "--out", str(tmp_path / "o")]) == 2
    assert says in one_line_error(capsys.readouterr().err, "sample")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("changes, says", [
    ({"ch": -8}, "ch is -8; must be a whole number from 1 to 4096"),
    ({"ch": "8"}, "ch is '8'; must be a whole number"),
    ({"ch": 8.5}, "ch is 8.5; must be a whole number"),
    ({"ch": True}, "ch is True; must be a whole number"),
    ({"ch": 16}, "does not describe model.safetensors"),
    ({"z_dim": 64}, "does not describe model.safetensors"),
    ({"resolution": 48}, "resolution is 48; must be one of [32, 64, 128, 256]"),
    ({"resolution": 64, "attn": [16]}, "does not describe model.safetensors"),
    ({"num_classes": 5}, "class_names is ['c0', 'c1']; must be null or a list of 5 names"),
    ({"num_classes": 0, "class_names": None}, "blocks.0.0.bn1.gain.weight would be absent"),
    ({"class_names": "ab"}, "class_names is 'ab'"),
    ({"img_channels": 0}, "img_channels is 0; must be 1 or 3"),
    ({"img_channels": 3}, "does not describe model.safetensors"),
    ({"attn": [3]}, "attn is [3]; must list distinct feature-map sizes from [8, 16, 32]"),
    ({"attn": "16"}, "attn is '16'"),
    ({"use_sn": "no"}, "use_sn is 'no'; must be true or false"),
    ({"use_sn": False}, "linear.weight would be (512, 16), the file has no such tensor"),
    ({"attn_variant": "x"}, "attn_variant is 'x'; must be one of ['paper', 'biggan']"),
    ({"attn_reduction": 3}, "attn_reduction is 3; must be one of [1, 2, 4, 8]"),
    ({"init": 3}, "init is 3; must be one of"),
    ({"sagan": {"step": "abc"}}, "sagan.step is 'abc'; must be a whole number >= 0"),
    ({"sagan": {"step": -1}}, "sagan.step is -1"),
    ({"sagan": {"ema": "yes"}}, "sagan.ema is 'yes'; must be true or false"),
    ({"sagan": {"tracked_fid": {"fid": "low"}}}, "sagan.tracked_fid is {'fid': 'low'}"),
    ({"sagan": "record"}, "'sagan' is 'record'; must be an object"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_tampered_config_json_is_refused_in_one_line_before_building(export_dir, tmp_path, capsys, monkeypatch,
                                                                     changes, says):
    d = tampered(export_dir, tmp_path / "export", **changes)
    before = snapshot(d)
    import sagan.models.generator as generator
    built, real_specs = [], generator.checked_specs
    monkeypatch.setattr(generator, "checked_specs", lambda *a, **k: (built.append(a), real_specs(*a, **k))[1])
    assert main(["sample", str(d), "-n", "2", "--out", str(tmp_path / "o")]) == 2
    assert says in one_line_error(capsys.readouterr().err, "sample")
    assert built == []  # refused before any Generator was constructed
    assert snapshot(d) == before and not (tmp_path / "o").exists()
    with pytest.raises(CheckpointError, match=r".+"):  # the Python API refuses it the same way
        Generator.from_pretrained(d)


def test_non_finite_weights_are_refused(export_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    d = shutil.copytree(export_dir, tmp_path / "export")
    state = load_file(d / WEIGHTS_NAME)
    name = next(k for k in sorted(state) if k.endswith("conv1.parametrizations.weight.original"))
    state[name] = torch.full_like(state[name], float("nan"))  # one tensor is enough to make blank images
    save_file(state, str(d / WEIGHTS_NAME))
    assert main(["sample", str(d), "-n", "2", "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys.readouterr().err, "sample")
    assert "NaN or infinite values in 1 of" in err and name in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        Generator.from_pretrained(d)


def test_export_without_config_json_is_named_as_such(export_dir, tmp_path, capsys):
    d = shutil.copytree(export_dir, tmp_path / "export")
    (d / CONFIG_NAME).unlink()
    for command in (["sample", str(d), "-n", "2"], ["export", str(d)]):
        assert main(command + ["--out", str(tmp_path / "o")]) == 2
        err = one_line_error(capsys.readouterr().err, command[0])
        assert "is an exported model without its config.json" in err and "no checkpoints" not in err


# --------------------------------------------------------------------------- read-only and full disks

def _out_under_a_file(tmp_path: Path) -> Path:
    """A folder that cannot be created: its parent is a regular file (root ignores chmod, not this)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker / "out"


# Where each command's compute is defined: the commands import it when they run (so their --help imports no
# torch), so it is replaced in its own module.
COMPUTE = {"sample": ("sagan.sampling", ["generate"]),
           "interpolate": ("sagan.viz.interpolation", ["render"]),
           "export": ("sagan.models.export", ["save_export", "write_onnx_export"]),
           "evaluate": ("sagan.commands.evaluate", ["generate"]),
           "report": ("sagan.viz.report", ["build_report"])}


def no_compute(command: str, monkeypatch) -> list:
    """Replace what ``command`` computes (and writes) with a recorder: the list stays empty when the
    command stops before it."""
    import importlib
    module, names = COMPUTE[command]
    ran: list = []
    for name in names:
        monkeypatch.setattr(importlib.import_module(module), name, lambda *a, **k: ran.append(1))
    return ran


@pytest.mark.parametrize("command", [["sample", "-n", "2"], ["interpolate", "--steps", "2"], ["export"],
                                     ["evaluate", "-n", "4", "--features", "fmnist"], ["report", "--no-real"]],
                         ids=lambda c: c[0])
def test_output_folder_that_cannot_be_written_fails_before_compute(export_dir, tmp_path, capsys, monkeypatch,
                                                                   command):
    ran = no_compute(command[0], monkeypatch)
    out = _out_under_a_file(tmp_path)
    assert main([command[0], str(export_dir), *command[1:], "--out", str(out)]) == 2
    err = one_line_error(capsys.readouterr().err, command[0])
    assert "a-file" in err and ("Not a directory" in err or "is a file" in err)
    assert ran == []


@pytest.mark.parametrize("command", [["sample", "-n", "2"], ["interpolate", "--steps", "2"], ["export"]],
                         ids=lambda c: c[0])
def test_read_only_output_folder_fails_before_compute(export_dir, tmp_path, capsys, monkeypatch, command):
    """A read-only folder (simulated: the test runs as root, for whom chmod does not bite)."""
    import sagan.commands.common as common

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(common.tempfile, "mkstemp", read_only)
    ran = no_compute(command[0], monkeypatch)
    out = tmp_path / "out"
    assert main([command[0], str(export_dir), *command[1:], "--out", str(out)]) == 2
    assert "Read-only file system" in one_line_error(capsys.readouterr().err, command[0])
    assert ran == []


def _fail_after(n: int, target, name: str, monkeypatch) -> None:
    """``target.name`` raises ENOSPC from its (n+1)-th call on (a disk that fills up part-way)."""
    real, calls = getattr(target, name), []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)
    monkeypatch.setattr(target, name, flaky)


def test_disk_full_mid_way_through_pngs_leaves_a_record(export_dir, tmp_path, capsys, monkeypatch):
    from PIL import Image
    _fail_after(7, Image.Image, "save", monkeypatch)
    out = tmp_path / "out"
    assert main(["sample", str(export_dir), "--seeds", "0-19", "--format", "png", "--out", str(out),
                 "--no-progress"]) == 2
    err = one_line_error(capsys.readouterr().err, "sample")
    assert "No space left on device" in err and "7 files written before it (listed in" in err and '"complete": false' in err
    info = json.loads((out / "sample_info.json").read_text())
    assert info["complete"] is False and len(info["written"]) == 7 and info["seeds"] == "0-19"
    assert all((out / p).is_file() for p in info["written"])
    assert len(list(out.rglob("*.png"))) == 7 and not list(out.rglob("*.tmp"))


def test_disk_full_with_no_room_for_the_record_removes_the_partial_set(export_dir, tmp_path, capsys, monkeypatch):
    from PIL import Image

    import sagan.commands.common as common
    out = tmp_path / "out"
    (out / "00_c0").mkdir(parents=True)
    earlier = out / "00_c0" / "mine.png"  # a file the user had there stays
    earlier.write_bytes(b"keep me")
    _fail_after(5, Image.Image, "save", monkeypatch)
    _fail_after(0, common, "atomic_write_text", monkeypatch)
    assert main(["sample", str(export_dir), "--seeds", "0-19", "--format", "png", "--out", str(out),
                 "--no-progress"]) == 2
    err = one_line_error(capsys.readouterr().err, "sample")
    assert "5 new files written before it: deleted" in err
    assert [p.name for p in out.rglob("*.png")] == ["mine.png"] and earlier.read_bytes() == b"keep me"
    assert not (out / "sample_info.json").exists()


def test_disk_full_during_an_interpolation_leaves_a_record(export_dir, tmp_path, capsys, monkeypatch):
    import sagan.viz.interpolation as interpolation
    _fail_after(0, interpolation, "write_gif", monkeypatch)
    out = tmp_path / "out"
    assert main(["interpolate", str(export_dir), "--steps", "3", "--out", str(out), "--no-progress"]) == 2
    err = one_line_error(capsys.readouterr().err, "interpolate")
    assert "No space left on device" in err
    record = json.loads((out / "seeds_0-1_class0.json").read_text())
    assert record["complete"] is False and record["written"] == ["seeds_0-1_class0.png"]


def test_disk_full_during_an_export_leaves_nothing(export_dir, tmp_path, capsys, monkeypatch):
    def full(self, save_directory):
        (Path(save_directory) / WEIGHTS_NAME).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Generator, "_save_pretrained", full)
    out = tmp_path / "exports" / "new"
    assert main(["export", str(export_dir), "--out", str(out)]) == 2
    err = one_line_error(capsys.readouterr().err, "export")
    assert "No space left on device" in err and "nothing was written" in err
    assert not out.exists() and not list((tmp_path / "exports").iterdir())


def test_evaluate_that_cannot_write_its_record_prints_the_results(tiny_run, tmp_path, capsys, monkeypatch):
    import sagan.commands.evaluate as evaluate
    _fail_after(0, evaluate, "atomic_write_text", monkeypatch)
    assert main(["evaluate", str(tiny_run), "--features", "fmnist", "-n", "20", "--metrics", "fid",
                 "--batch-size", "10", "--no-progress", "--out", str(tmp_path / "eval")]) == 2
    err = one_line_error(capsys.readouterr().err, "evaluate")
    assert "No space left on device" in err and "the results: fid_fmnist " in err


# --------------------------------------------------------------------------- damaged files

def test_damaged_checkpoint_says_so_and_names_an_intact_one(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    older, newest = Checkpoints(run / "checkpoints").list()
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short after it was written
    before = snapshot(run)
    for command, hint in ((["sample", str(run), "-n", "2"], f"--checkpoint {older.name}"),
                          (["export", str(run)], f"--checkpoint {older.name}"),
                          (["sample", str(newest), "-n", "2"], str(older))):
        assert main(command + ["--out", str(tmp_path / "o")]) == 2
        err = one_line_error(capsys.readouterr().err, command[0])
        assert "damaged" in err and "never code" not in err and "an older checkpoint is intact" in err
        assert err.endswith(hint)
    assert snapshot(run) == before and not (tmp_path / "o").exists()
    assert main(["sample", str(run), "--checkpoint", older.name, "-n", "2", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0


def test_report_on_a_metrics_csv_that_is_not_utf8(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (run / "metrics.csv").write_bytes(b"step,loss_d\n1,\xff\xfe\n")
    before = snapshot(run)
    assert main(["report", str(run), "--no-progress", "--no-real", "--out", str(tmp_path / "o")]) == 2
    assert "metrics.csv is not UTF-8 text (byte 14 is 0xff)" in one_line_error(capsys.readouterr().err, "report")
    assert snapshot(run) == before


# --------------------------------------------------------------------------- sagan bench

@pytest.mark.parametrize("flags, says", [
    (["--sizes", "0"], "--sizes 0: 0 is not a size"),
    (["--sizes", "3"], "even feature-map sizes from 2 to 256"),
    (["--sizes", "16,x"], "give comma-separated integers"),
    (["--reps", "0"], "--reps 0: must be between 1 and 1000"),
    (["--attn-batch", "0"], "--attn-batch 0: must be between 1 and 1024"),
    (["--attn-channels", "12"], "--attn-channels 12: must be a multiple of 8"),
    (["--train-batch", "0"], "--train-batch 0: must be between 1 and 65536"),
    (["--threads", "-1"], "--threads -1: must be between 1 and 1024"),
    (["--presets", "bogus"], "'bogus' is not a preset; choose from"),
    (["--markdown", "{tmp}"], "is a folder; --markdown names the file"),
    (["--markdown", "{tmp}/a-file/x.md"], "is a file, not a folder"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bench_flags_are_checked_before_measuring(tmp_path, capsys, monkeypatch, flags, says):
    import sagan.bench.measure as measure  # 'sagan bench' imports it when it runs
    monkeypatch.setattr(measure, "run_benchmarks", lambda **k: pytest.fail("measured despite a bad flag"))
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "results"
    assert main(["bench", *[f.format(tmp=tmp_path) for f in flags], "--out", str(out)]) == 2
    assert says in one_line_error(capsys.readouterr().err, "bench")
    assert not out.exists()


# --------------------------------------------------------------------------- ONNX

def test_onnx_refuses_a_class_index_pytorch_refuses(export_dir, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import numpy as np
    out = tmp_path / "onnx"
    assert main(["export", str(export_dir), "--format", "onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out / "generator.onnx"))
    g = Generator.from_pretrained(export_dir)
    z = np.random.default_rng(0).standard_normal((2, g.z_dim)).astype(np.float32)
    for bad in (-1, 2, -3):  # PyTorch refuses each; the ONNX graph used to read class 1 for -1
        with pytest.raises(IndexError):
            g(torch.from_numpy(z), torch.tensor([bad, 0]))
        with pytest.raises(Exception, match="out of data bounds"):
            session.run(None, {"z": z, "y": np.array([bad, 0], dtype=np.int64)})
    good = np.array([1, 0], dtype=np.int64)
    with torch.no_grad():
        want = g(torch.from_numpy(z), torch.from_numpy(good)).numpy()
    assert np.abs(session.run(None, {"z": z, "y": good})[0] - want).max() < 1e-4
