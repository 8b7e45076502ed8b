"""Hostile input: broken image folders, odd image modes, huge images, awkward paths, existing run dirs."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN_ARGS, make_image_folder
from PIL import Image

from sagan.cli import main
from sagan.config import DataConfig
from sagan.data.datasets import DataError, check_image, load_image_folder
from sagan.errors import EXIT_USAGE
from sagan.runs.checkpoints import Checkpoints, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _rgb(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8))


def _hostile_folder(root: Path) -> tuple[dict[str, str], list[str]]:
    """Two class folders mixing usable images of every awkward kind with broken files.

    Returns {usable file name: what it is} and the names of the files that must be skipped.
    """
    a, b = root / "cats", root / "dogs"
    a.mkdir(parents=True)
    b.mkdir()
    _rgb(0).save(a / "plain.png")
    _rgb(1).save(a / "photo.jpg", quality=90)
    _rgb(2).convert("CMYK").save(a / "cmyk.jpg")
    rgba = _rgb(3).convert("RGBA")
    rgba.putalpha(0)  # fully transparent: must come out white, not the hidden colours
    rgba.save(a / "transparent.png")
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(a / "gray16.png")
    _rgb(4).convert("L").save(b / "gray8.png")
    _rgb(5).convert("P").save(b / "palette.gif")
    _rgb(6).save(b / "no_extension", format="PNG")  # a PNG without an extension is still an image
    usable = {"plain.png": "rgb", "photo.jpg": "jpeg", "cmyk.jpg": "cmyk", "transparent.png": "rgba",
              "gray16.png": "16-bit", "gray8.png": "gray", "palette.gif": "palette", "no_extension": "png"}
    (b / "empty.png").write_bytes(b"")
    (b / "notes.txt").write_text("not an image")
    (b / "fake.jpg").write_text("<html>a download error page</html>")
    jpg = (a / "photo.jpg").read_bytes()
    (b / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    png = (a / "plain.png").read_bytes()
    (b / "truncated.png").write_bytes(png[: len(png) // 2])
    corrupt = bytearray(png)
    corrupt[len(corrupt) // 2: len(corrupt) // 2 + 16] = b"\xff" * 16  # bad CRC / deflate stream
    (b / "corrupt.png").write_bytes(bytes(corrupt))
    (b / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored silently
    (root / ".ipynb_checkpoints").mkdir()  # hidden folder: not a class
    skipped = ["empty.png", "notes.txt", "fake.jpg", "truncated.jpg", "truncated.png", "corrupt.png"]
    return usable, skipped


def test_broken_images_are_skipped_counted_and_named(tmp_path, caplog):
    usable, skipped = _hostile_folder(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="sagan.data"):
        data = load_image_folder(DataConfig(dataset="image_folder", root=str(tmp_path / "data")), 32)
    assert data.num_classes == 2 and data.class_names == ["cats", "dogs"]
    names = sorted(Path(p).name for p, _ in data.folder.samples)
    assert names == sorted(usable)
    warning = caplog.text
    assert f"skipped {len(skipped)} of {len(skipped) + len(usable)} files" in warning
    for name in skipped:  # each with its path and why
        assert str(tmp_path / "data" / "dogs" / name) in warning
    assert "empty file (0 bytes)" in warning and "truncated" in warning and "not an image file" in warning
    assert ".DS_Store" not in warning
    assert f"{len(skipped)} unreadable files skipped" in data.source
    for i in range(len(data)):  # every kept image decodes to the model's format
        x, _ = data.folder[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert -1 <= x.min() and x.max() <= 1
    by_name = {Path(p).name: i for i, (p, _) in enumerate(data.folder.samples)}
    g16 = data.folder[by_name["gray16.png"]][0]
    assert torch.allclose(g16, torch.full_like(g16, round(40000 / 65535 * 255) / 127.5 - 1), atol=1e-6)  # scaled, not clipped
    assert torch.equal(data.folder[by_name["transparent.png"]][0], torch.ones(3, 32, 32))  # white


def test_grayscale_model_reads_colour_and_16_bit(tmp_path):
    _hostile_folder(tmp_path / "data")
    data = load_image_folder(DataConfig(dataset="image_folder", root=str(tmp_path / "data"), channels=1), 32)
    assert data.channels == 1 and all(data.folder[i][0].shape == (1, 32, 32) for i in range(len(data)))


def test_huge_images_warned_or_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stand-in for PIL's 89-megapixel guard
    root = tmp_path / "data" / "only"
    root.mkdir(parents=True)
    _rgb(0, 40).save(root / "large.png")  # 1600 px: above the warning size, still used
    _rgb(1, 50).save(root / "bomb.png")  # 2500 px > 2x the limit: PIL refuses to decode it
    with pytest.warns(Image.DecompressionBombWarning):  # PIL's own warning; the scan counts these instead
        assert check_image(str(root / "large.png")) == (None, True)
    reason, _ = check_image(str(root / "bomb.png"))
    assert reason.startswith("too large to decode safely")
    with caplog.at_level(logging.WARNING, logger="sagan.data"):
        data = load_image_folder(DataConfig(dataset="image_folder", root=str(tmp_path / "data")), 32)
    assert [Path(p).name for p, _ in data.folder.samples] == ["large.png"]
    assert "bomb.png: too large" in caplog.text and "larger than 1000 pixels" in caplog.text


def test_only_broken_files_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "data" / "c"
    root.mkdir(parents=True)
    (root / "a.png").write_bytes(b"")
    (root / "b.jpg").write_text("nope")
    with pytest.raises(DataError, match="no readable images .* 2 files, all skipped"):
        load_image_folder(DataConfig(dataset="image_folder", root=str(tmp_path / "data")), 32)
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(tmp_path / "data"), "--steps", "2", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "no readable images" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # decided before any run dir


def test_fewer_usable_images_than_the_batch_is_a_clear_error(tmp_path, capsys):
    usable, _ = _hostile_folder(tmp_path / "data")
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(tmp_path / "data"), "--steps", "2", "--out", str(tmp_path / "runs"),
               "--set", "train.batch_size=16"])
    captured = capsys.readouterr()
    assert rc == EXIT_USAGE
    assert f"train.batch_size=16 is larger than the dataset ({len(usable)} images)" in captured.err
    assert "6 unreadable files skipped" in captured.out


def test_spaces_and_non_ascii_paths(tmp_path, capsys):
    data = make_image_folder(tmp_path / "my data ü" / "数据 set", per_class=4)
    (data / "class_0" / "img_000.png").rename(data / "class_0" / "bild für 猫.png")
    out = tmp_path / "runs with spaces é"
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(data), "--steps", "2", "--out", str(out), "--name", "lauf ü 1"])
    assert rc == 0, capsys.readouterr().err
    run = out / "lauf ü 1"
    assert load_checkpoint(Checkpoints(run / "checkpoints").list()[-1])["step"] == 2
    assert main(["train", "--resume", str(run), "--steps", "3", "--no-progress"]) == 0
    assert load_checkpoint(Checkpoints(run / "checkpoints").list()[-1])["step"] == 3
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "samples ü")]) == 0


def test_run_directory_is_never_overwritten(tmp_path, tiny_folder, capsys):
    args = ["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "1", "--out", str(tmp_path), "--name", "exp"]
    assert main(args) == 0
    first = tmp_path / "exp"
    before = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{first} exists and is left untouched; writing to {tmp_path / 'exp-2'} instead" in out
    assert (tmp_path / "exp-2" / "checkpoints").is_dir()
    after = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    assert after == before
    assert main([*args[:-1], "../escape"]) == EXIT_USAGE  # a name is a name, not a path
    assert "plain directory name" in capsys.readouterr().err
    assert not (tmp_path.parent / "escape").exists()
