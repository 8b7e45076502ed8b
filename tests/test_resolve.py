"""The config a Trainer takes: resolved once for its data and machine (train/resolve.py), never changed."""
from __future__ import annotations

import copy

import pytest
import torch

from sagan.config import load_config
from sagan.data.augment import resolve_policy
from sagan.data.datasets import ImageData
from sagan.errors import ConfigError
from sagan.train.resolve import check_resolved, resolve_for_data


def _folder_data(n: int = 16, channels: int = 3, classes: int = 4) -> ImageData:
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (n, channels, 32, 32), generator=g, dtype=torch.uint8)
    return ImageData("tiny", "random", classes, channels, 32, [f"c{i}" for i in range(classes)], images,
                     torch.arange(n) % max(classes, 1))


def _folder_config(*sets: str):
    return load_config("fmnist32", None, ["data.dataset=image_folder", "data.root=/nowhere", "train.batch_size=8",
                                          "train.device=cpu", *sets])


def test_auto_values_are_filled_in_on_a_copy_and_the_input_is_left_alone():
    cfg = _folder_config()
    assert cfg.data.diffaugment == "auto" and cfg.train.precision == "fp32" and cfg.data.channels is None
    before = copy.deepcopy(cfg.to_dict())
    out, lines = resolve_for_data(cfg, _folder_data(), torch.device("cpu"))
    assert cfg.to_dict() == before  # the caller's config is not changed
    assert out is not cfg
    assert out.data.channels == 3  # a folder's channels, detected from the data, are stored
    assert out.data.diffaugment == resolve_policy("auto", "image_folder", 16)[0]  # auto's choice for 16 images
    assert [ln for ln in lines if ln.startswith("note: data.diffaugment=auto")]
    check_resolved(out)
    again, _ = resolve_for_data(out, _folder_data(), torch.device("cpu"))  # resolving twice changes nothing
    assert again.to_dict() == out.to_dict()


def test_precision_auto_on_a_cpu_is_resolved_and_said():
    out, lines = resolve_for_data(_folder_config("train.precision=auto"), _folder_data(), torch.device("cpu"))
    assert out.train.precision in ("fp32", "bf16")
    assert lines[0].startswith("precision: auto: ")


def test_a_model_asked_to_be_conditional_on_classless_data_is_noted():
    _, lines = resolve_for_data(_folder_config(), _folder_data(classes=0), torch.device("cpu"))
    assert any("the data has no classes" in ln for ln in lines)


@pytest.mark.parametrize("batch, world, message", [
    (32, 1, "train.batch_size=32 is larger than the dataset (16 images); use at most 16"),
    (8, 3, "train.batch_size=8 (the global batch) must be divisible by the number of processes (3)"),
])
def test_the_batch_is_checked_against_data_and_processes_in_one_place(batch, world, message):
    with pytest.raises(ConfigError) as e:
        resolve_for_data(_folder_config(f"train.batch_size={batch}"), _folder_data(), torch.device("cpu"), world)
    assert str(e.value) == message


def test_a_trainer_refuses_an_unresolved_config(tmp_path):
    from sagan.train.trainer import Trainer
    with pytest.raises(ConfigError, match=r"data\.diffaugment still 'auto'.*resolve_for_data"):
        Trainer(_folder_config(), tmp_path / "run", _folder_data(), progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_trainer_never_changes_the_config_it_is_given(tmp_path):
    from sagan.train.trainer import Trainer
    data = _folder_data()
    cfg, _ = resolve_for_data(_folder_config("model.g_ch=8", "model.d_ch=8", "train.steps=2", "train.log_every=1",
                                             "train.fid_every=0", "train.sample_every=1000"), data,
                              torch.device("cpu"))
    before = copy.deepcopy(cfg.to_dict())
    trainer = Trainer(cfg, tmp_path / "run", data, progress=False)
    trainer.fit()
    assert trainer.step == 2 and cfg.to_dict() == before
