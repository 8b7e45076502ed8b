"""A user's own folder as the data (issue 26, items 1 and 2): `--data DIR` is read as an image folder
when it holds images, never replaced by Fashion-MNIST, and a folder's channels are detected."""
from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest
import yaml
from conftest import TINY_STANDING_ARGS
from PIL import Image

from sagan.cli import main
from sagan.commands.train import _train_config
from sagan.config import DataConfig, load_config, preset
from sagan.data import load_data
from sagan.data.datasets import FMNIST_FILES, detect_folder_dataset
from sagan.errors import DataError, UsageError
from sagan.runs.folder import RunDir


def _grey(path, seed=0, size=28):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8), mode="L").save(path)


def _colour(path, seed=0, size=28):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)


def _grey_classes(root, classes=("Dress", "Bag"), per_class=4):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            _grey(root / c / f"seed{i:04d}.png", seed=i)
    return root


# --------------------------------------------------------------------------- what a folder holds

def test_a_folder_is_recognised_by_its_layout(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    _grey(flat / "a.PNG")
    assert detect_folder_dataset(flat) == "image_folder"
    assert detect_folder_dataset(_grey_classes(tmp_path / "classes")) == "image_folder"
    nested = tmp_path / "nested" / "cats" / "2024"
    nested.mkdir(parents=True)
    _grey(nested / "x.jpg")
    assert detect_folder_dataset(tmp_path / "nested") == "image_folder"
    idx = tmp_path / "idx"
    idx.mkdir()
    for name in FMNIST_FILES:
        (idx / (name + ".gz")).write_bytes(b"x")
    _grey(idx / "preview.png")  # IDX files win over a stray picture
    assert detect_folder_dataset(idx) == "fashion_mnist"
    tv = tmp_path / "tv" / "FashionMNIST" / "raw"
    tv.mkdir(parents=True)
    for name in FMNIST_FILES:
        (tv / name).write_bytes(b"x")
    assert detect_folder_dataset(tmp_path / "tv") == "fashion_mnist"
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    assert detect_folder_dataset(tmp_path / "cifar") == "cifar10"
    other = tmp_path / "other"
    (other / ".hidden").mkdir(parents=True)
    _grey(other / ".hidden" / "a.png")
    (other / "notes.txt").write_text("no images")
    assert detect_folder_dataset(other) is None
    assert detect_folder_dataset(tmp_path / "missing") is None


def test_default_preset_reads_a_folder_of_images_as_an_image_folder(tmp_path):
    data = _grey_classes(tmp_path / "pngs")
    notes: list[str] = []
    cfg = load_config(None, None, [f"data.root={data}"], notes)
    assert cfg.data.dataset == "image_folder" and cfg.preset == "fmnist32"
    assert cfg.model == preset("fmnist32").model  # the preset's model otherwise unchanged
    assert any("holds image files, not Fashion-MNIST" in n and "data.dataset=image_folder" in n for n in notes)
    cifar = load_config("cifar32", None, [f"data.root={data}"])
    assert cifar.data.dataset == "image_folder" and cifar.model == preset("cifar32").model


def test_idx_folders_and_explicit_choices_keep_their_dataset(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    for name in FMNIST_FILES:
        (idx / name).write_bytes(b"x")
    assert load_config(None, None, [f"data.root={idx}"]).data.dataset == "fashion_mnist"
    pngs = _grey_classes(tmp_path / "pngs")
    explicit = load_config(None, None, [f"data.root={pngs}", "data.dataset=fashion_mnist"])
    assert explicit.data.dataset == "fashion_mnist"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": {"dataset": "fashion_mnist", "root": str(pngs)}}))
    assert load_config(None, cfg_file).data.dataset == "fashion_mnist"


def test_an_explicit_builtin_dataset_never_replaces_the_folder(tmp_path):
    """Fashion-MNIST named explicitly with a folder of PNGs: refused in one line (no cache, no download)."""
    pngs = _grey_classes(tmp_path / "pngs")
    with pytest.raises(DataError, match="no Fashion-MNIST IDX files .* It holds image files: .*data.dataset=image_folder"):
        load_data(DataConfig(dataset="fashion_mnist", root=str(pngs), download=True), 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="Nor image files"):
        load_data(DataConfig(dataset="fashion_mnist", root=str(empty), download=True), 32)
    with pytest.raises(DataError, match="CIFAR-10 not found .* holds image files"):
        load_data(DataConfig(dataset="cifar10", root=str(pngs), download=True), 32)
    assert not (pngs / "cifar-10-python.tar.gz").exists()


# --------------------------------------------------------------------------- channels

def test_greyscale_folders_are_read_with_one_channel(tmp_path):
    data = load_data(DataConfig(dataset="image_folder", root=str(_grey_classes(tmp_path / "g"))), 32)
    assert data.channels == 1 and data.folder[0][0].shape == (1, 32, 32)
    assert "all greyscale: 1 channel" in data.source
    rgb = load_data(DataConfig(dataset="image_folder", root=str(tmp_path / "g"), channels=3), 32)
    assert rgb.channels == 3 and rgb.folder[0][0].shape == (3, 32, 32) and "all greyscale" not in rgb.source


def test_one_colour_image_makes_a_folder_rgb(tmp_path):
    root = _grey_classes(tmp_path / "m")
    _colour(root / "Bag" / "colour.png")
    data = load_data(DataConfig(dataset="image_folder", root=str(root)), 32)
    assert data.channels == 3 and "1 of 9 images in colour" in data.source and "colour.png" in data.source
    assert data.folder[0][0].shape == (3, 32, 32)
    grey_data = load_data(DataConfig(dataset="image_folder", root=str(root), channels=1), 32)
    assert grey_data.channels == 1 and "in colour" not in grey_data.source


def test_palette_and_alpha_images_count_by_what_they_hold(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    grey_palette = Image.new("P", (20, 20))
    grey_palette.putpalette([v for i in range(256) for v in (i, i, i)])
    grey_palette.save(root / "grey_palette.png")
    Image.new("LA", (20, 20), (100, 255)).save(root / "grey_alpha.png")
    Image.open(root / "grey_alpha.png").convert("I;16").save(root / "grey16.png")
    assert load_data(DataConfig(dataset="image_folder", root=str(root)), 32).channels == 1
    Image.new("RGBA", (20, 20), (10, 200, 30, 255)).save(root / "rgba.png")
    assert load_data(DataConfig(dataset="image_folder", root=str(root)), 32).channels == 3


def _train_args(**kw) -> argparse.Namespace:
    base = dict(overrides=[], resolution=None, data=None, steps=None, device=None, resume=None, init_from=None,
                preset=None, config=None)
    return argparse.Namespace(**dict(base, **kw))


def test_a_run_stored_before_detection_resumes_as_rgb(tmp_path):
    run = tmp_path / "old-run"
    run.mkdir()
    cfg = preset("imagefolder64")
    cfg.data.root = str(_grey_classes(tmp_path / "g"))
    assert cfg.data.channels is None  # what every image-folder run stored before channels were detected
    RunDir(run).config.write_text(cfg.to_yaml(), encoding="utf-8")
    resumed, _ = _train_config(_train_args(resume=str(run)))
    assert resumed.data.channels == 3


# --------------------------------------------------------------------------- as the user types it

def test_sampled_pngs_fine_tune_the_shipped_model(tmp_path, capsys):
    """The README's fine-tune line on the PNG folders `sagan sample` writes: read as a greyscale image
    folder, accepted by the 1-channel fmnist32 model, the choice said in the start-up lines."""
    pngs = tmp_path / "pngs"
    assert main(["sample", "--pretrained", "fmnist32", "--seeds", "0-15", "--classes", "Dress", "--format", "png",
                 "--out", str(pngs), "--no-progress"]) == 0
    shutil.copytree(pngs, tmp_path / "two" / "pngs")
    (tmp_path / "two" / "bags").mkdir()
    for i in range(8):
        _grey(tmp_path / "two" / "bags" / f"{i}.png", seed=i)
    capsys.readouterr()
    rc = main(["train", "--init-from", "fmnist32", "--data", str(tmp_path / "two"), "--steps", "2",
               "--set", "train.batch_size=8", "--set", "train.fid_every=0", "--set", "train.sample_every=2",
               "--set", "train.ckpt_every=2", *TINY_STANDING_ARGS, "--out", str(tmp_path / "runs"), "--name", "ft",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "all greyscale: 1 channel" in out and "reading it as an image folder (data.dataset=image_folder)" in out
    assert "Fashion-MNIST from" not in out
    stored = yaml.safe_load(RunDir(tmp_path / "runs" / "ft").config.read_text())
    assert stored["data"]["dataset"] == "image_folder" and stored["data"]["channels"] == 1


def test_an_empty_folder_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["train", "--data", str(tmp_path / "empty"), "--steps", "1", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == UsageError.exit_code and len(err.strip().splitlines()) == 1
    assert "no Fashion-MNIST IDX files" in err and "Nor image files" in err
    assert not (tmp_path / "runs").exists()


def test_class_names_as_sample_writes_them_are_accepted():
    """`sagan sample --format png` names folders 09_Ankle_boot; those spellings name the class too (issue 26, item 10)."""
    from sagan.commands.common import resolve_class, resolve_classes
    from sagan.data.datasets import FMNIST_CLASSES
    names = list(FMNIST_CLASSES)
    for text in ("Ankle boot", "ankle_boot", "09_Ankle_boot", "ANKLE-BOOT", "9"):
        assert resolve_class(text, 10, names) == 9, text
    assert resolve_classes("t-shirt_top,00_T-shirt_top,Sneaker", 10, names) == [0, 0, 7]
    with pytest.raises(UsageError, match="no such class"):
        resolve_class("Boot", 10, names)


@pytest.mark.parametrize("command", ["train", "sample", "interpolate", "export", "push", "train-evaluator",
                                     "evaluate", "attention", "report", "study", "bench"])
def test_help_shows_a_plain_percent(capsys, command):
    """A help text never shows argparse's escape '%%' (study --help once printed '95%%')."""
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: sagan" in out and "%%" not in out
