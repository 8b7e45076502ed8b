"""The configuration schema (``sagan.schema``): importable on its own, below every component; the
components check their own sections; and ``Generator.from_config`` / ``Discriminator.from_config``
build, for every preset, the models the ``model`` section describes."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

import sagan.config
import sagan.schema
from sagan.config import PRESETS, ConfigError, preset, validate
from sagan.models import Discriminator, Generator, build_models
from sagan.models.arch import D_ARCH, check_model_config
from sagan.models.build import attention_layers, gamma_layers
from sagan.models.standing import STANDING_BATCH_SIZE, STANDING_BATCHES
from sagan.nn.spectral import DEFAULT_INIT
from sagan.schema import Config, DataConfig, ModelConfig, TrainConfig

# Channels each preset's dataset has by default (the model is built for the data).
PRESET_CHANNELS = {"fmnist32": 1, "cifar32": 3, "imagefolder64": 3, "imagenet128": 3}


def test_the_schema_imports_nothing_of_the_package_and_no_torch():
    probe = ("import json, sys; import sagan.schema; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('sagan', 'torch', 'numpy'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == ["sagan", "sagan.schema"]


def test_sagan_config_still_offers_the_schema():
    for name in ("Config", "ModelConfig", "DataConfig", "OptimConfig", "LossConfig", "TrainConfig", "MAX_TRAIN_SEED", "MAX_SAMPLE_SEED",
                 "PRECISIONS", "ON_DIVERGENCE", "FID_FEATURES", "migrate_model_section"):
        assert getattr(sagan.config, name) is getattr(sagan.schema, name), name
    for name in sagan.config.__all__:
        assert hasattr(sagan.config, name), name


def test_the_schema_defaults_are_the_components_defaults():
    assert ModelConfig().init == DEFAULT_INIT
    assert (TrainConfig().ema_bn_batches, TrainConfig().ema_bn_batch_size) == (STANDING_BATCHES, STANDING_BATCH_SIZE)
    assert Config().model == ModelConfig() and Config().data == DataConfig()


def test_validate_reports_the_components_checks_first_to_last():
    """A config wrong in the model and the data section reports the model's key (the order of the
    checks, unchanged since they moved into the components)."""
    cfg = preset("fmnist32")
    cfg.model.attn_variant, cfg.data.dataset = "x", "mnist"
    with pytest.raises(ConfigError, match=r"^model.attn_variant='x'; choose one of \['paper', 'biggan'\]$"):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"^model.attn_variant='x'"):
        check_model_config(cfg.model)
    cfg.model.g_ch = 0  # the widths come before the variant
    with pytest.raises(ConfigError, match=r"^model.g_ch=0 must be between 1 and 4096$"):
        validate(cfg)
    cfg.model = preset("fmnist32").model
    with pytest.raises(ConfigError, match=r"^data.dataset='mnist' is not known"):
        validate(cfg)


def _explicit(m: ModelConfig, num_classes: int, channels: int, names: list[str] | None):
    """G and D built by their constructors, every argument named from the section's keys."""
    g = Generator(resolution=m.resolution, ch=m.g_ch, z_dim=m.z_dim, num_classes=num_classes, img_channels=channels,
                  attn=list(m.g_attn), attn_variant=m.attn_variant, use_sn=m.g_sn, attn_bias=m.attn_bias,
                  init=m.init, class_names=names, attn_reduction=m.attn_reduction, resblock=list(m.g_resblock))
    d = Discriminator(resolution=m.resolution, ch=m.d_ch, num_classes=num_classes, img_channels=channels,
                      attn=list(m.d_attn), attn_variant=m.attn_variant, use_sn=m.d_sn, attn_bias=m.attn_bias,
                      init=m.init, attn_reduction=m.attn_reduction, resblock=list(m.d_resblock),
                      extra_placement=m.d_extra_layers)
    return g, d


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _section(name: str) -> ModelConfig:
    """The preset's model section; fmnist32's with every key away from its default (a residual bottleneck
    in G and D, D's attention at the size three of its blocks output, placed after each), so that every
    key is seen to reach the models."""
    m = preset(name).model
    if name == "fmnist32":
        m = dataclasses.replace(m, d_attn=[8], attn_variant="biggan", attn_bias=True, attn_reduction=4,
                                g_resblock=[8], d_resblock=[16], d_extra_layers="every", init="xavier", d_sn=False)
    return m


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_from_config_round_trip(name):
    """``build_models`` (``from_config``) builds what the constructors build from the section's keys (the
    same weights from the same seed), and the built models read back as the section: G's export config,
    both models' layers."""
    m, channels = _section(name), PRESET_CHANNELS[name]
    validate(dataclasses.replace(preset(name), model=m))
    names = [f"class {i}" for i in range(10)]
    torch.manual_seed(0)
    g, d = build_models(m, 10, channels, class_names=names)
    torch.manual_seed(0)
    g_ref, d_ref = _explicit(m, 10, channels, names)
    assert _same_weights(g, g_ref) and _same_weights(d, d_ref)
    assert g._hub_mixin_config == g_ref._hub_mixin_config

    config = g._hub_mixin_config  # what an export's config.json holds
    assert {k: config[k] for k in ("resolution", "ch", "z_dim", "attn", "attn_variant", "use_sn", "attn_bias",
                                   "init", "attn_reduction", "resblock")} == {
        "resolution": m.resolution, "ch": m.g_ch, "z_dim": m.z_dim, "attn": m.g_attn, "attn_variant": m.attn_variant,
        "use_sn": m.g_sn, "attn_bias": m.attn_bias, "init": m.init, "attn_reduction": m.attn_reduction,
        "resblock": m.g_resblock}
    assert (config["num_classes"], config["img_channels"], config["class_names"]) == (10, channels, names)
    assert (d.resolution, d.ch, d.num_classes, d.img_channels) == (m.resolution, m.d_ch, 10, channels)
    for model, prefix, attn, resblock in ((g, "G", m.g_attn, m.g_resblock), (d, "D", m.d_attn, m.d_resblock)):
        assert {label.split(".")[1] for label in gamma_layers(model, prefix)} == (
            {f"attn{s}" for s in attn} | {f"res{s}" for s in resblock})
        for layer in attention_layers(model, prefix).values():
            assert (layer.variant, layer.reduction, layer.use_bias) == (m.attn_variant, m.attn_reduction, m.attn_bias)
    outputs = [s.resolution for s in D_ARCH[m.resolution]]
    assert len(attention_layers(d, "D")) == sum(outputs.count(s) if m.d_extra_layers == "every" else 1
                                                for s in m.d_attn)
    for model, use_sn in ((g, m.g_sn), (d, m.d_sn)):
        convs = [x for x in model.modules() if isinstance(x, torch.nn.Conv2d)]
        assert all(hasattr(x, "parametrizations") == use_sn for x in convs)
