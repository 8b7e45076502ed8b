"""Checkpoints survive failed writes, rotate without touching best.pt, and are data, never code."""
from __future__ import annotations

import errno
import io
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN_ARGS

from sagan.cli import main
from sagan.errors import EXIT_CHECKPOINT_WRITE, EXIT_USAGE
from sagan.runs import checkpoints as ckpt_mod
from sagan.runs.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    Checkpoints,
    CheckpointWriteError,
    atomic_save,
    load_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

def _state(value: float) -> dict:
    return {"G": {"w": torch.full((3, 3), value)}, "D": {}, "G_ema": {}, "opt_g": {}, "opt_d": {},
            "stream": {}, "rng": {}, "config": {"model": {}}, "data": {}}


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    good = Checkpoints(d).save(_state(1.0), 2, keep=3)
    real_save = torch.save

    def save_then_fail(obj, f, *a, **k):  # half a file on disk, then the disk is full
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(CheckpointWriteError, match="No space left"):
        Checkpoints(d).save(_state(2.0), 4, keep=3)
    monkeypatch.undo()
    assert Checkpoints(d).list() == [good]
    assert sorted(p.name for p in d.iterdir()) == [good.name]  # no temporary file left behind
    assert torch.equal(load_checkpoint(good)["G"]["w"], torch.full((3, 3), 1.0))


def test_failed_rename_and_torch_runtime_error_are_write_errors(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    good = Checkpoints(d).save(_state(1.0), 2, keep=3)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied")))
    with pytest.raises(CheckpointWriteError, match="Permission denied"):
        Checkpoints(d).save(_state(2.0), 4, keep=3)
    monkeypatch.undo()

    def torch_style_failure(obj, f, *a, **k):  # how PyTorch's zip writer reports a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", torch_style_failure)
    with pytest.raises(CheckpointWriteError, match="RuntimeError"):
        atomic_save(_state(3.0), d / "ckpt_00000006.pt")
    monkeypatch.undo()
    assert Checkpoints(d).list() == [good] and len(list(d.iterdir())) == 1
    assert torch.equal(load_checkpoint(good)["G"]["w"], torch.full((3, 3), 1.0))


def test_interrupt_during_write_cleans_up_and_reraises(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    good = Checkpoints(d).save(_state(1.0), 2, keep=3)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        Checkpoints(d).save(_state(2.0), 4, keep=3)
    assert list(d.iterdir()) == [good]


def test_rotation_keeps_last_k_and_never_touches_best(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    (d / "best.pt").write_bytes(b"best")
    (d / "notes.txt").write_text("mine")
    for step in range(1, 7):
        Checkpoints(d).save(_state(float(step)), step, keep=2)
    assert [p.name for p in Checkpoints(d).list()] == ["ckpt_00000005.pt", "ckpt_00000006.pt"]
    assert (d / "best.pt").read_bytes() == b"best" and (d / "notes.txt").read_text() == "mine"
    # keep=0 would delete everything; the checkpoint just written always stays
    Checkpoints(d).save(_state(7.0), 7, keep=0)
    assert (d / "ckpt_00000007.pt").is_file()


def test_stale_temporary_files_are_removed(tmp_path):
    d = tmp_path / "checkpoints"
    good = Checkpoints(d).save(_state(1.0), 2, keep=3)
    stale = d / ".ckpt_00000004.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert Checkpoints(d).remove_stale_temp_files() == [stale]
    assert list(d.iterdir()) == [good]


def test_newer_format_and_non_checkpoints_refused(tmp_path):
    p = tmp_path / "future.pt"
    torch.save(dict(_state(1.0), format_version=FORMAT_VERSION + 1, step=3), p)
    with pytest.raises(CheckpointError, match=f"format {FORMAT_VERSION + 1}, newer than this code's {FORMAT_VERSION}"):
        load_checkpoint(p)
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="no format_version"):
        load_checkpoint(p)
    torch.save({"format_version": FORMAT_VERSION, "G": {}}, p)
    with pytest.raises(CheckpointError, match="missing D"):
        load_checkpoint(p)
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a loadable sagan checkpoint"):
        load_checkpoint(p)


class _Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _check_exploit_works(marker: Path) -> None:
    """The payload is real: plain pickle.loads does run it (so refusing it below means something)."""
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()
    marker.unlink()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the raw pickle's protocol
def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    _check_exploit_works(marker)
    zip_ckpt = tmp_path / "evil_zip.pt"
    torch.save(dict(_state(1.0), format_version=FORMAT_VERSION, step=1, payload=_Exploit(marker)), zip_ckpt)
    with zipfile.ZipFile(zip_ckpt) as z:  # it is a genuine torch.save file
        assert any(n.endswith("data.pkl") for n in z.namelist())
    legacy = tmp_path / "evil_legacy.pt"
    legacy.write_bytes(pickle.dumps(_Exploit(marker)))
    for path in (zip_ckpt, legacy):
        with pytest.raises(CheckpointError, match="refused"):
            load_checkpoint(path)
        assert not marker.exists()


def _poison(path: Path, marker: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["payload"] = _Exploit(marker)
    torch.save(state, path)


def test_cli_refuses_code_carrying_checkpoint(tmp_path, tiny_run, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    older, newest = Checkpoints(run / "checkpoints").list()
    _poison(newest, marker)
    assert main(["sample", str(newest), "-n", "2", "--out", str(tmp_path / "o")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "is refused" in err and "posix.system" in err and "Traceback" not in err
    # Resuming skips the refused checkpoint (saying so), continues from the one before and
    # replaces the poisoned file with a clean checkpoint of the same step.
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{newest} is refused" in err and "falling back to the previous checkpoint" in err
    assert load_checkpoint(newest)["step"] == 4
    # With every checkpoint poisoned there is nothing to resume from: a clear error, exit 2.
    for p in Checkpoints(run / "checkpoints").list():
        _poison(p, marker)
    assert main(["train", "--resume", str(run), "--no-progress", "--steps", "6"]) == EXIT_USAGE
    assert "can be read" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_refuses_another_architecture(tmp_path, tiny_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg_file = run / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("g_ch: 8", "g_ch: 16"))
    rc = main(["train", "--resume", str(run), "--no-progress", "--steps", "6"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "another architecture" in err and "model.g_ch: checkpoint 8, this run 16" in err
    assert "shape" in err  # and the tensors that would not fit are named
    assert len(Checkpoints(run / "checkpoints").list()) == 2  # nothing written


def test_training_stops_on_checkpoint_write_failure(tmp_path, tiny_folder, monkeypatch, capsys):
    calls = {"n": 0}
    real = ckpt_mod.atomic_save

    def fail_second(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise CheckpointWriteError(f"could not write checkpoint {path}: OSError: [Errno 28] No space left on device")
        return real(obj, path)

    monkeypatch.setattr(ckpt_mod, "atomic_save", fail_second)
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "8", "--out", str(tmp_path),
               "--name", "r", "--set", "train.sample_every=100"])
    err = capsys.readouterr().err
    assert rc == EXIT_CHECKPOINT_WRITE
    assert "No space left" in err and "previous checkpoint is intact" in err
    ckpts = Checkpoints(tmp_path / "r" / "checkpoints").list()
    assert [p.name for p in ckpts] == ["ckpt_00000002.pt"]  # training did not go on past step 4
    assert load_checkpoint(ckpts[0])["step"] == 2
