"""Your own images: flat folders are unconditional data, class folders are classes, loose files
next to class folders are named; the resolution is one choice (attention placed relative to it)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS, make_image_folder

from sagan.cli import main
from sagan.config import DataConfig
from sagan.data import load_data
from sagan.train.checkpoint import list_checkpoints, load_checkpoint


def _flatten(folder: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for i, f in enumerate(sorted(folder.rglob("*.png"))):
        shutil.copy(f, out / f"{i:03d}_{f.name}")
    return out


def test_a_flat_folder_is_unconditional_data(tmp_path, tiny_folder):
    flat = _flatten(tiny_folder, tmp_path / "flat")
    (flat / ".hidden.png").write_bytes(b"not read")
    data = load_data(DataConfig(dataset="image_folder", root=str(flat)), 32, conditional=True)
    assert (len(data), data.num_classes, data.class_names) == (16, 0, [])
    assert "16 images directly in it, no class sub-folders: unconditional" in data.source
    image, label = data.folder[3]
    assert tuple(image.shape) == (3, 32, 32) and label == 0 and -1 <= float(image.min()) <= float(image.max()) <= 1


def test_training_on_a_flat_folder_says_it_is_unconditional(tmp_path, tiny_folder, capsys):
    flat = _flatten(tiny_folder, tmp_path / "flat")
    assert main(["train", *TINY_TRAIN_ARGS, "--data", str(flat), "--steps", "1", "--out", str(tmp_path / "runs"),
                 "--name", "u"]) == 0
    out = capsys.readouterr().out
    assert "no class sub-folders: unconditional" in out and "so the model is unconditional" in out
    state = load_checkpoint(list_checkpoints(tmp_path / "runs" / "u" / "checkpoints")[-1])
    assert state["data"]["num_classes"] == 0


def test_class_folders_say_conditional_and_loose_files_are_named(tmp_path, caplog):
    root = make_image_folder(tmp_path / "mixed", classes=3, per_class=2)
    shutil.copy(next((root / "class_0").iterdir()), root / "stray.png")
    with caplog.at_level(logging.WARNING):
        data = load_data(DataConfig(dataset="image_folder", root=str(root)), 32, conditional=True)
    assert data.num_classes == 3 and len(data) == 6
    assert "3 class folders: class-conditional" in data.source
    assert "1 file(s) directly in" in caplog.text and "stray.png" in caplog.text


def test_an_empty_folder_says_where_images_go(tmp_path):
    from sagan.errors import DataError
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty: put images in it .*sub-folders are the classes"):
        load_data(DataConfig(dataset="image_folder", root=str(tmp_path / "empty")), 32)
