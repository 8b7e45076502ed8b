"""Generator/discriminator: every preset built with its defaults, shapes, parameter counts, SN."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sagan.config import PRESETS, preset
from sagan.models import D_ARCH, G_ARCH, Discriminator, Generator
from sagan.nn.attention import SelfAttention2d
from sagan.nn.norm import ConditionalBatchNorm2d
from sagan.nn.spectral import spectral_norm_of
from sagan.models import attention_layers, build_models

# Channels each preset's dataset has by default (the model is built for the data).
PRESET_CHANNELS = {"fmnist32": 1, "cifar32": 3, "imagefolder64": 3, "imagenet128": 3}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("num_classes", [10, 0], ids=["conditional", "unconditional"])
def test_every_preset_builds_with_defaults_and_runs(name, num_classes):
    cfg = preset(name)
    channels = PRESET_CHANNELS[name]
    g, d = build_models(cfg.model, num_classes, channels)
    res = cfg.model.resolution
    z = torch.randn(2, cfg.model.z_dim)
    y = torch.tensor([0, 1]) if num_classes else None
    with torch.no_grad():
        x = g(z, y)
        assert x.shape == (2, channels, res, res)
        assert x.abs().max() <= 1.0
        out = d(x, y)
    assert out.shape == (2,)
    assert torch.isfinite(out).all()
    # Attention exactly where the preset says, in G and D separately.
    assert sorted(int(k.split("attn")[1]) for k in attention_layers(g, "G")) == sorted(cfg.model.g_attn)
    assert sorted(int(k.split("attn")[1]) for k in attention_layers(d, "D")) == sorted(cfg.model.d_attn)
    has_cbn = any(isinstance(m, ConditionalBatchNorm2d) for m in g.modules())
    assert has_cbn == (num_classes > 0)
    assert (d.embed is not None) == (num_classes > 0)


def test_imagenet128_parameter_counts_match_the_public_reimplementation():
    """BigGAN-PyTorch's SAGAN launch script (1000 classes, ch=64, attention at 64) counts
    G 42.02M and D 39.45M parameters. We match within 2%.

    The small difference in G (42.005M vs 42.02M) comes from the attention layer: the preset
    uses the paper's formulation (f, g, h at C/8 with biases, v: C/8 -> C), while that
    re-implementation uses the authors' released variant (h at C/2, v: C/2 -> C, no biases);
    with ``attn_variant=biggan`` the count moves toward theirs. Spectral-norm u/v vectors are
    buffers, not parameters, in both.
    """
    cfg = preset("imagenet128")
    g, d = build_models(cfg.model, 1000, 3)
    assert abs(n_params(g) / 42.02e6 - 1) < 0.02, n_params(g)
    assert abs(n_params(d) / 39.45e6 - 1) < 0.02, n_params(d)
    gb = Generator(128, 64, 128, 1000, 3, [64], "biggan")
    assert abs(n_params(gb) - 42.02e6) < abs(n_params(g) - 42.02e6)


@pytest.mark.parametrize("res", sorted(G_ARCH))
def test_architecture_table_reaches_resolution(res):
    g = Generator(res, 8, 16, 0, 3, [], use_sn=False)
    d = Discriminator(res, 8, 0, 3, [])
    with torch.no_grad():
        x = g(torch.randn(1, 16))
    assert x.shape[-1] == res
    assert G_ARCH[res][-1].resolution == res
    assert D_ARCH[res][-1].resolution == 4 if res > 32 else D_ARCH[res][-1].resolution == 8
    assert d(x).shape == (1,)


def test_attention_placement_is_validated():
    with pytest.raises(ValueError, match="never produced"):
        Generator(32, 8, 16, 0, 3, [64])
    with pytest.raises(ValueError, match="never produced"):
        Discriminator(64, 8, 0, 3, [64])
    with pytest.raises(ValueError, match="choose one of"):
        Generator(48, 8, 16, 0, 3, [])


def test_spectral_norm_everywhere_except_cbn_embeddings():
    g, d = build_models(preset("fmnist32").model, 10, 1)
    for model in (g, d):
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                assert hasattr(m, "parametrizations"), f"{name} lacks spectral norm"
            if isinstance(m, nn.Embedding):
                in_cbn = ".gain" in name or ".bias" in name
                assert hasattr(m, "parametrizations") != in_cbn, name


def test_spectral_norm_bounds_largest_singular_value():
    torch.manual_seed(0)
    g, d = build_models(preset("fmnist32").model, 10, 1)
    d.train()
    x = torch.randn(8, 1, 32, 32)
    y = torch.randint(0, 10, (8,))
    for _ in range(30):  # power iterations run on each training-mode forward
        d(x, y)
    d.eval()
    for name, m in d.named_modules():
        if hasattr(m, "parametrizations") and isinstance(m, (nn.Linear, nn.Embedding)):
            assert abs(float(spectral_norm_of(m)) - 1.0) < 0.05, name
        elif hasattr(m, "parametrizations") and isinstance(m, nn.Conv2d):
            # SN normalises the (out, in*k*k) reshaped weight, as in Miyato et al.
            assert abs(float(spectral_norm_of(m)) - 1.0) < 0.05, name


def test_discriminator_blocks_do_not_modify_their_input():
    """Out-of-place pre-activation: the residual shortcut must see the untouched input."""
    torch.manual_seed(0)
    d = Discriminator(32, 8, 0, 3, [16])
    x = torch.randn(2, 3, 32, 32)
    h = x
    for stage in d.blocks:
        for layer in stage:
            before = h.clone()
            out = layer(h)
            assert torch.equal(h, before)
            h = out


def test_conditional_model_requires_labels():
    g = Generator(32, 8, 16, 10, 1, [])
    with pytest.raises(ValueError, match="class-conditional"):
        g(torch.randn(1, 16))


def test_gamma_is_one_scalar_per_layer():
    g, d = build_models(preset("imagenet128").model, 10, 3)
    for model in (g, d):
        for m in model.modules():
            if isinstance(m, SelfAttention2d):
                assert m.gamma.shape == ()


def test_fp32_spectral_norm_matches_pytorch_and_stays_fp32_under_autocast():
    from torch.nn.utils.parametrizations import spectral_norm

    from sagan.nn.spectral import sn
    torch.manual_seed(0)
    ours = sn(nn.Conv2d(4, 8, 3))
    torch.manual_seed(0)
    stock = spectral_norm(nn.Conv2d(4, 8, 3), eps=1e-6)
    assert ours.state_dict().keys() == stock.state_dict().keys()  # checkpoints interchangeable
    x = torch.randn(2, 4, 5, 5)
    for _ in range(3):  # power iterations update u/v identically
        torch.testing.assert_close(ours(x), stock(x), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours.weight.dtype == torch.float32
        assert ours(x).dtype == torch.bfloat16
    assert ours.parametrizations.weight[0]._u.dtype == torch.float32


def test_ema_tracks_an_exponential_average_with_warmup():
    from sagan.train.ema import EMA
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.9, start=2)
    assert [ema.decay_at(s) for s in (0, 1, 2, 3)] == [0.0, 0.0, 0.1, 2 / 11]
    assert ema.decay_at(10_000) == 0.9
    expected = model.weight.detach().clone()
    for step in range(1, 40):
        with torch.no_grad():
            model.weight.add_(1.0)
        d = ema.decay_at(step)
        expected = d * expected + (1 - d) * model.weight.detach()
        ema.update(model, step)
    torch.testing.assert_close(ema.shadow.weight, expected)
    fixed = EMA(model, decay=0.9, start=0, warmup=False)
    assert fixed.decay_at(0) == 0.9
