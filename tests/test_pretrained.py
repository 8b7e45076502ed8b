"""The generator shipped with the package: it loads offline, by name, and draws its classes."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sagan import Generator, generate, pretrained_names
from sagan.cli import main
from sagan.data.datasets import to_uint8
from sagan.metrics.classifier import accuracy, load_classifier
from sagan.models.export import export_info

ROOT = Path(__file__).resolve().parents[1]


def test_fmnist32_is_shipped_and_draws_the_classes_it_is_asked_for():
    assert "fmnist32" in pretrained_names()
    g = Generator.from_pretrained("fmnist32")
    info = export_info(g)
    assert info["trained_by"]["command"][:2] == ["sagan", "train"]  # made by the project's own command
    assert info["config"]["preset"] == "fmnist32" and info["ema"] is True
    assert g.class_names[3] == "Dress" and (g.resolution, g.img_channels, g.num_classes) == (32, 1, 10)
    images, labels = generate(g, 2000, seed=0)
    # The shipped classifier (91.45% on real test images) must recognise the asked-for class: a real
    # check of the weights, not of the file format.
    acc = accuracy(load_classifier(), to_uint8(images), labels)
    assert acc >= 0.90, f"class accuracy {acc:.4f} of the shipped generator's samples"


def test_commands_take_the_shipped_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--pretrained", "fmnist32", "-n", "8", "--classes", "Dress,sneaker", "--no-progress"]) == 0
    assert "shipped model fmnist32" in capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "pretrained-fmnist32" / "samples_out").iterdir())
    assert any(n.endswith(".png") for n in written) and any(n.endswith(".npz") for n in written)
    assert main(["attention", "--pretrained", "fmnist32", "--class", "Sneaker", "-n", "1"]) == 0
    assert list((tmp_path / "pretrained-fmnist32" / "attention").glob("*.png"))
    assert main(["sample", "--pretrained", "nosuchmodel"]) == 2
    assert "fmnist32" in capsys.readouterr().err  # the message lists what is shipped


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_model(tmp_path):
    """A fresh (non-editable) install gets the model: the built wheel contains its files."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True)
    wheel = next(tmp_path.glob("sagan_torch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("config.json", "model.safetensors"):
        assert f"sagan/models/pretrained/fmnist32/{f}" in names
