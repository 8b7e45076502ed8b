"""``sagan sample``: seeds that regenerate single images, truncation, class names, per-image PNGs in
ImageFolder layout, checkpoint choice and the sample_info.json record, all through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sagan.cli import main
from sagan.commands.common import compact_seeds, parse_seeds
from sagan.commands.sample import class_folder_name
from sagan.errors import UsageError
from sagan.models import Generator
from sagan.models.export import save_export
from sagan.sampling import seed_latents, truncated_normal


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def info_of(out: Path) -> dict:
    return json.loads((out / "sample_info.json").read_text(encoding="utf-8"))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("sagan sample: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def tiny_export(folder: Path, num_classes: int, class_names: list[str] | None = None) -> Path:
    """An exported grayscale 32 px generator (untrained), made without training."""
    torch.manual_seed(0)
    g = Generator(resolution=32, ch=8, z_dim=16, num_classes=num_classes, img_channels=1, attn=[16],
                  class_names=class_names).eval()
    return save_export(g, folder, {"step": 0, "ema": True})


# --------------------------------------------------------------------------- --seeds

def test_a_seed_regenerates_its_image_alone_from_run_or_export(tiny_run, tmp_path):
    assert main(["sample", str(tiny_run), "--seeds", "0-5", "--format", "png", "--out", str(tmp_path / "all"),
                 "--no-progress"]) == 0
    # Classes cycle as with -n: seed i (index i) has class i % 2.
    got = {p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.png")}
    assert got == {f"{i % 2:02d}_class_{i % 2}/seed{i:04d}.png" for i in range(6)}
    # Seed 3 alone (class 1 asked for explicitly) gives the same pixels.
    assert main(["sample", str(tiny_run), "--seeds", "3", "--classes", "class_1", "--format", "png",
                 "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    want = pixels(tmp_path / "all" / "01_class_1" / "seed0003.png")
    assert want.shape == (32, 32, 3) and want.std() > 0
    np.testing.assert_array_equal(pixels(tmp_path / "one" / "01_class_1" / "seed0003.png"), want)
    # ... and so does the exported generator.
    export = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(export)]) == 0
    assert main(["sample", str(export), "--seeds", "3", "--classes", "1", "--format", "png",
                 "--out", str(tmp_path / "from_export"), "--no-progress"]) == 0
    np.testing.assert_array_equal(pixels(tmp_path / "from_export" / "01_class_1" / "seed0003.png"), want)
    info = info_of(tmp_path / "one")
    assert (info["mode"], info["seeds"], info["classes"], info["batch_size"]) == ("seeds", "3", [1], 1)
    assert info["files"] == {"png": 1} and info["formats"] == ["png"]


def test_seeds_latents_are_per_seed():
    z = seed_latents([3, 7, 10], 16)
    torch.testing.assert_close(z[1], seed_latents([7], 16)[0], rtol=0, atol=0)
    assert not torch.equal(z[0], z[1])


@pytest.mark.parametrize("text,want", [("0-3", [0, 1, 2, 3]), ("3,7,10-12", [3, 7, 10, 11, 12]),
                                       (" 5 , 1-2 ", [5, 1, 2]), ("4-4", [4])])
def test_parse_seeds(text, want):
    assert parse_seeds(text) == want
    assert parse_seeds(compact_seeds(want)) == want


@pytest.mark.parametrize("bad", ["5-2", "x", "-3", "1,,2", "", "1-", "3,1-4", "0-99999999999", "1.5"])
def test_bad_seeds_are_one_line_usage_errors_and_write_nothing(tiny_run, tmp_path, capsys, bad):
    out = tmp_path / "o"
    assert main(["sample", str(tiny_run), "--seeds", bad, "--out", str(out)]) == 2
    assert "--seeds" in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("extra", [["-n", "4"], ["--seed", "1"], ["--batch-size", "8"]])
def test_seeds_excludes_num_and_seed(tiny_run, tmp_path, capsys, extra):
    assert main(["sample", str(tiny_run), "--seeds", "0-3", *extra, "--out", str(tmp_path / "o")]) == 2
    assert extra[0] in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- --truncation

def test_truncated_normal_is_bounded_and_deterministic():
    for psi in (0.5, 1.0, 2.0):
        z = truncated_normal((64, 32), psi, torch.Generator().manual_seed(1))
        assert z.abs().max() <= psi and z.std() > 0
        torch.testing.assert_close(z, truncated_normal((64, 32), psi, torch.Generator().manual_seed(1)), rtol=0, atol=0)
    assert torch.equal(truncated_normal((4, 8), 0.0, torch.Generator().manual_seed(1)), torch.zeros(4, 8))
    assert seed_latents([0, 1], 16, truncation=0.5).abs().max() <= 0.5


def test_truncation_zero_gives_one_image_per_class(tiny_run, tmp_path):
    out = tmp_path / "o"
    assert main(["sample", str(tiny_run), "--seeds", "0-3", "--truncation", "0", "--format", "png,npz",
                 "--out", str(out), "--no-progress"]) == 0
    for c in (0, 1):
        a, b = (pixels(p) for p in sorted((out / f"{c:02d}_class_{c}").glob("seed*.png")))
        np.testing.assert_array_equal(a, b)
    assert info_of(out)["truncation"] == 0.0
    # -n mode: the same, and a truncation > 0 draws deterministically from --seed.
    assert main(["sample", str(tiny_run), "-n", "4", "--truncation", "0", "--format", "npz",
                 "--out", str(tmp_path / "n0"), "--no-progress"]) == 0
    imgs = np.load(next((tmp_path / "n0").glob("*.npz")))["images"]
    np.testing.assert_array_equal(imgs[0], imgs[2])
    runs = []
    for name in ("t1", "t2"):
        assert main(["sample", str(tiny_run), "-n", "4", "--seed", "7", "--truncation", "0.5", "--format", "npz",
                     "--out", str(tmp_path / name), "--no-progress"]) == 0
        runs.append(np.load(next((tmp_path / name).glob("*.npz")))["images"])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], runs[0][2])  # same class, different latents


def test_negative_truncation_is_a_usage_error(tiny_run, tmp_path, capsys):
    assert main(["sample", str(tiny_run), "--truncation", "-0.5", "--out", str(tmp_path / "o")]) == 2
    assert "--truncation" in one_line_error(capsys)


# --------------------------------------------------------------------------- --format png

def test_png_folders_are_an_image_folder_with_the_right_classes(tiny_run, tmp_path):
    from torchvision.datasets import ImageFolder
    out = tmp_path / "o"
    assert main(["sample", str(tiny_run), "-n", "7", "--format", "grid,png", "--out", str(out), "--no-progress"]) == 0
    ds = ImageFolder(str(out))
    assert ds.classes == ["00_class_0", "01_class_1"]
    assert np.bincount(ds.targets).tolist() == [4, 3]
    assert sorted(Path(p).name for p, t in ds.samples if t == 1) == ["img000001.png", "img000003.png", "img000005.png"]
    info = info_of(out)
    assert info["files"]["png"] == 7 and (out / info["files"]["grid"]).is_file() and "npz" not in info["files"]


def test_png_folder_names_are_safe_and_grayscale_stays_one_channel(tmp_path):
    names = ["T-shirt/top", "Trouser", "Dress"]
    export = tiny_export(tmp_path / "export", 3, names)
    out = tmp_path / "o"
    assert main(["sample", str(export), "--seeds", "10-12", "--classes", "dress,0", "--format", "png",
                 "--out", str(out), "--no-progress"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["00_T-shirt_top/seed0011.png", "02_Dress/seed0010.png", "02_Dress/seed0012.png"]
    with Image.open(out / files[0]) as im:
        assert im.mode == "L" and im.size == (32, 32)
    assert class_folder_name(3, 10, ["a", "b", "c", "Dress"]) == "03_Dress"
    assert class_folder_name(7, 120, []) == "007"


def test_unconditional_model(tmp_path, capsys):
    export = tiny_export(tmp_path / "export", 0)
    out = tmp_path / "o"
    assert main(["sample", str(export), "--seeds", "0-2", "--format", "png,npz", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["seed0000.png", "seed0001.png", "seed0002.png"]
    assert not [p for p in out.iterdir() if p.is_dir()]
    npz = np.load(next(out.glob("*.npz")))
    assert npz["images"].shape == (3, 32, 32, 1) and npz["seeds"].tolist() == [0, 1, 2]
    capsys.readouterr()
    assert main(["sample", str(export), "--classes", "0", "--out", str(tmp_path / "c")]) == 2
    assert "unconditional" in one_line_error(capsys)


# --------------------------------------------------------------------------- --classes

def test_classes_by_name_equal_classes_by_index(tiny_run, tmp_path, capsys):
    got = []
    for name, classes in (("by_name", "CLASS_1"), ("by_index", "1")):
        assert main(["sample", str(tiny_run), "--seeds", "0-2", "--classes", classes, "--format", "npz",
                     "--out", str(tmp_path / name), "--no-progress"]) == 0
        got.append(np.load(next((tmp_path / name).glob("*.npz"))))
    assert got[0]["labels"].tolist() == [1, 1, 1]
    np.testing.assert_array_equal(got[0]["images"], got[1]["images"])
    assert info_of(tmp_path / "by_name")["class_names"] == ["class_1"]
    capsys.readouterr()
    assert main(["sample", str(tiny_run), "--classes", "sneaker", "--out", str(tmp_path / "x")]) == 2
    err = one_line_error(capsys)
    assert "sneaker" in err and "class_0" in err and "class_1" in err
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- weights, record, files

def test_checkpoint_choice_and_sample_info(tiny_run, tmp_path, capsys):
    assert main(["sample", str(tiny_run), "--checkpoint", "best", "--out", str(tmp_path / "b")]) == 2
    err = one_line_error(capsys)
    assert "best.pt" in err and "--checkpoint latest" in err
    out = tmp_path / "latest"
    assert main(["sample", str(tiny_run), "--checkpoint", "latest", "-n", "4", "--seed", "3", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "ckpt_00000004.pt" in printed and "step 4" in printed and "EMA" in printed
    info = info_of(out)
    assert info["model"]["step"] == 4 and info["model"]["checkpoint"] == "latest" and info["model"]["generator"] == "ema"
    assert (info["mode"], info["n"], info["seed"], info["truncation"], info["classes"]) == ("num", 4, 3, None, None)
    assert info["formats"] == ["grid", "npz"] and info["sagan_version"]
    assert sorted(p.name for p in out.iterdir()) == sorted([info["files"]["grid"], info["files"]["npz"], "sample_info.json"])
    assert main(["sample", str(tiny_run), "--no-ema", "-n", "2", "--format", "both", "--out", str(tmp_path / "raw"),
                 "--no-progress"]) == 0
    info = info_of(tmp_path / "raw")
    assert info["model"]["generator"] == "raw" and info["formats"] == ["grid", "npz"]


def test_earlier_files_are_never_overwritten(tiny_run, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["sample", str(tiny_run), "-n", "2", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    first = {p.name: p.read_bytes() for p in out.glob("samples_*")}
    assert len(first) == 2
    assert main(args) == 0
    assert {p.name: p.read_bytes() for p in out.glob("samples_*") if p.name in first} == first
    second = info_of(out)["files"]
    assert second["grid"].endswith("-2.png") and second["npz"].endswith("-2.npz")
    assert (out / "notes.txt").read_text() == "mine"


def test_out_that_is_a_file_fails_before_sampling(tiny_run, tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("keep")
    assert main(["sample", str(tiny_run), "--out", str(f)]) == 2
    assert "is a file" in one_line_error(capsys)
    assert f.read_text() == "keep"


def test_bad_format_is_a_usage_error(tiny_run, tmp_path, capsys):
    assert main(["sample", str(tiny_run), "--format", "grid,jpg", "--out", str(tmp_path / "o")]) == 2
    assert "jpg" in one_line_error(capsys)
    with pytest.raises(UsageError):
        parse_seeds("1-0")


# --------------------------------------------------------------------------- a seed names one image

def png_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}


def test_a_seed_names_one_image_in_any_list_of_seeds(tmp_path):
    """Seed 42's class and file do not depend on which other seeds are sampled (issue 26): without
    --classes, seed S has class S mod 10 (a 10-class model with Fashion-MNIST's names)."""
    from sagan.data.datasets import FMNIST_CLASSES
    torch.manual_seed(0)
    g = Generator(resolution=32, ch=8, z_dim=16, num_classes=10, img_channels=1, attn=[16],
                  class_names=list(FMNIST_CLASSES)).eval()
    with torch.no_grad():  # class embeddings start at zero: random ones make every class draw differently
        for m in g.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.normal_(0, 0.5)
    export = save_export(g, tmp_path / "export", {"step": 0, "ema": False})  # its own BN statistics, kept

    def sample(seeds: str, *extra: str) -> Path:
        out = tmp_path / f"{seeds}{''.join(extra)}"
        assert main(["sample", str(export), "--seeds", seeds, *extra, "--format", "png,npz",
                     "--out", str(out), "--no-progress"]) == 0
        return out

    wide, narrow = sample("0-199"), sample("41-50")
    wide_files, narrow_files = png_files(wide), png_files(narrow)
    assert "02_Pullover/seed0042.png" in narrow_files and "00_T-shirt_top/seed0040.png" in wide_files
    assert len(narrow_files) == 10 and narrow_files == {k: wide_files[k] for k in narrow_files}  # the same bytes
    assert np.load(next(narrow.glob("*.npz")))["labels"].tolist() == [s % 10 for s in range(41, 51)]
    assert np.bincount(np.load(next(wide.glob("*.npz")))["labels"]).tolist() == [20] * 10
    # One class: every seed has it (stylegan2-ada's --class); seed 42 as a Sneaker, alone or in a list.
    one, listed = png_files(sample("42", "--classes", "Sneaker")), png_files(sample("41-50", "--classes", "sneaker"))
    assert list(one) == ["07_Sneaker/seed0042.png"] and one["07_Sneaker/seed0042.png"] == listed["07_Sneaker/seed0042.png"]
    assert {k.split("/")[0] for k in listed} == {"07_Sneaker"}
    assert one["07_Sneaker/seed0042.png"] != narrow_files["02_Pullover/seed0042.png"]
    # Several classes: seed S gets the (S mod K)-th listed, so seed 42 is the Dress of --classes Dress alone.
    two = png_files(sample("41-44", "--classes", "Dress,Sneaker"))
    assert sorted(two) == ["03_Dress/seed0042.png", "03_Dress/seed0044.png", "07_Sneaker/seed0041.png",
                           "07_Sneaker/seed0043.png"]
    assert two["03_Dress/seed0042.png"] == png_files(sample("42", "--classes", "03_Dress"))["03_Dress/seed0042.png"]


def test_shipped_model_writes_the_readme_path_and_python_gives_the_same_image(tmp_path):
    """The README's ``--seeds 0-99 --format png`` example names 02_Pullover/seed0042.png; it is the
    image ``generate(G, seeds=[42])`` gives in Python."""
    out = tmp_path / "o"
    assert main(["sample", "--pretrained", "fmnist32", "--seeds", "40-42", "--format", "png", "--out", str(out),
                 "--no-progress"]) == 0
    assert sorted(png_files(out)) == ["00_T-shirt_top/seed0040.png", "01_Trouser/seed0041.png",
                                      "02_Pullover/seed0042.png"]
    from sagan import generate, load_run
    images, labels = generate(load_run("fmnist32").G, seeds=[42], output="pil")
    assert labels.tolist() == [2]
    np.testing.assert_array_equal(np.asarray(images[0]), pixels(out / "02_Pullover" / "seed0042.png"))


def test_counts_of_one_are_singular(tmp_path, capsys):
    """'1 image', '1 PNG', never '1 images' (issue 26): one helper words every count in a message."""
    from sagan.errors import plural
    assert (plural(1, "image"), plural(0, "PNG"), plural(2, "class", "classes")) == ("1 image", "0 PNGs", "2 classes")
    export = tiny_export(tmp_path / "export", 0)
    capsys.readouterr()
    assert main(["sample", str(export), "--seeds", "3", "--format", "png", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "sampling 1 image from" in printed and "wrote 1 PNG under" in printed, printed
