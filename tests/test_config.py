"""Config: presets, strict overrides, and the promised error messages."""
from __future__ import annotations

import pytest
import yaml

from sagan.config import PRESETS, ConfigError, config_from_dict, load_config, parse_override, preset


def test_defaults_are_the_papers_optimiser_settings():
    cfg = load_config()
    assert cfg.preset == "fmnist32"
    assert (cfg.optim.lr_g, cfg.optim.lr_d) == (1e-4, 4e-4)
    assert (cfg.optim.beta1, cfg.optim.beta2) == (0.0, 0.9)
    assert isinstance(cfg.optim.beta1, float)
    assert cfg.train.n_dis == 1
    assert cfg.loss.name == "hinge"
    assert cfg.model.conditional


def test_imagenet128_is_the_papers_model():
    cfg = preset("imagenet128")
    assert (cfg.model.resolution, cfg.model.g_ch, cfg.model.d_ch) == (128, 64, 64)
    assert cfg.model.g_attn == [64] and cfg.model.d_attn == [64]
    assert cfg.train.batch_size == 256


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_round_trip(name):
    cfg = load_config(name)
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_overrides_parse_types():
    cfg = load_config(overrides=["optim.lr_d=2e-4", "model.g_attn=[8, 16]", "model.d_attn=[]",
                                 "train.deterministic=true", "data.root=/some path/ü", "name=x"])
    assert cfg.optim.lr_d == 2e-4
    assert cfg.model.g_attn == [8, 16] and cfg.model.d_attn == []
    assert cfg.train.deterministic is True
    assert cfg.data.root == "/some path/ü"
    assert parse_override("optim.lr_g=1E-5") == ("optim.lr_g", 1e-5)


def test_yaml_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: cifar32\noptim:\n  lr_d: 0.0002\ntrain:\n  steps: 10\n")
    cfg = load_config(file=f, overrides=["train.steps=20"])
    assert cfg.preset == "cifar32" and cfg.optim.lr_d == 2e-4 and cfg.train.steps == 20
    assert cfg.model.g_ch == 64  # the rest comes from the preset


@pytest.mark.parametrize("override, message", [
    ("optim.lrd=1e-4", r"unknown config key 'optim.lrd'; keys at optim: .*lr_d"),
    ("modle.ch=3", r"unknown config key 'modle'"),
    ("model.resolution=48", r"model.resolution=48 is not supported; choose one of \[32, 64, 128, 256\]"),
    ("model.g_attn=[64]", r"model.g_attn=\[64\].*never produces a 64x64 feature map; choose sizes from \[8, 16, 32\]"),
    ("model.d_attn=[32]", r"model.d_attn=\[32\].*choose sizes from \[8, 16\]"),
    ("train.n_dis=0", r"train.n_dis=0 must be >= 1"),
    ("train.batch_size=-4", r"train.batch_size=-4 must be >= 1"),
    ("optim.lr_d=-1", r"optim.lr_d=-1.0 must be in \(0, 1\)"),
    ("optim.beta2=1.5", r"optim.beta2=1.5 must be in \[0, 1\)"),
    ("train.steps=ten", r"train.steps: expected an integer, got 'ten'"),
    ("model.conditional=maybe", r"model.conditional: expected true or false"),
    ("loss.name=lsgan", r"loss.name='lsgan' is not known; choose one of \['hinge', 'ns', 'wasserstein'\]"),
    ("data.dataset=mnist", r"data.dataset='mnist' is not known"),
    ("model.attn_variant=x", r"model.attn_variant='x'; choose one of \['paper', 'biggan'\]"),
    ("model=3", r"model: is a section"),
    ("optim.lr_d", r"must look like section.key=value"),
])
def test_config_errors_name_the_key_and_allowed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_biggan_values_need_even_channels_before_anything_is_built():
    """The biggan variant projects the values to C/2: an odd channel count at an attention layer is a
    ConfigError from validation (before it was a ValueError from the layer, after the data loaded)."""
    bad = ["model.resolution=64", "model.attn_variant=biggan", "model.attn_reduction=1", "model.d_ch=15",
           "model.d_attn=[32]"]  # D's 32x32 block has d_ch channels
    with pytest.raises(ConfigError, match=r"model.d_ch=15: the attention layer at 32x32 would get 15 channels, "
                                          r"which is not divisible by 2 .*biggan variant's values to C/2"):
        load_config(overrides=bad)
    load_config(overrides=[*bad[:-2], "model.d_ch=16", "model.d_attn=[32]"])  # even: accepted
    load_config(overrides=[*bad[:1], "model.attn_reduction=1", "model.d_ch=15", "model.d_attn=[32]"])  # paper: C/1


def test_unknown_preset_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="preset 'nope' is not known; choose one of"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(file=bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.stepz'"):
        load_config(file=unknown)
