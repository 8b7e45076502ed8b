"""The residual bottleneck block, the attention study's equal-size control: its maths against a
slow reference, its size against the attention layer at every placement of every preset, and its
placement through ``model.g_resblock`` / ``model.d_resblock``."""
from __future__ import annotations

import pytest
import torch

from sagan.config import PRESETS, load_config, preset
from sagan.errors import ConfigError
from sagan.models import D_ARCH, G_ARCH, Discriminator, Generator, build_models, gamma_layers
from sagan.models.arch import d_attention_sizes, g_attention_sizes
from sagan.nn.attention import REDUCTIONS, SelfAttention2d
from sagan.nn.blocks import ResidualBottleneck, bottleneck_width


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def reference_bottleneck(block: ResidualBottleneck, x: torch.Tensor) -> torch.Tensor:
    """Explicit sums over channels and the 3x3 neighbourhood (zero padding), position by position."""
    w_in, w_mid, w_out = block.conv_in.weight, block.conv_mid.weight, block.conv_out.weight
    b, c, hh, ww = x.shape
    out = torch.zeros_like(x)
    h1 = torch.einsum("oc,bchw->bohw", w_in[:, :, 0, 0], x).relu()
    padded = torch.nn.functional.pad(h1, (1, 1, 1, 1))
    h2 = torch.zeros(b, w_mid.shape[0], hh, ww, dtype=x.dtype)
    for i in range(hh):
        for j in range(ww):
            patch = padded[:, :, i:i + 3, j:j + 3]  # (B, width, 3, 3)
            h2[:, :, i, j] = torch.einsum("oikl,bikl->bo", w_mid, patch)
    out = torch.einsum("oc,bchw->bohw", w_out[:, :, 0, 0], h2.relu())
    return block.gamma * out + x


def test_bottleneck_matches_reference_values_and_gradients():
    torch.manual_seed(0)
    block = ResidualBottleneck(16, 5).double().eval()
    with torch.no_grad():
        block.gamma.fill_(0.6)
    x = torch.randn(2, 16, 5, 4, dtype=torch.double, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = block(x), reference_bottleneck(block, x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-9)
    w = torch.randn_like(y)
    params = list(block.parameters())
    grads = torch.autograd.grad((y * w).sum(), [x, *params])
    grads_ref = torch.autograd.grad((y_ref * w).sum(), [x_ref, *params])
    for g, gr in zip(grads, grads_ref):
        torch.testing.assert_close(g, gr, rtol=1e-6, atol=1e-9)


def test_gamma_starts_at_zero_so_the_block_starts_as_identity():
    block = ResidualBottleneck(32, 6)
    x = torch.randn(3, 32, 4, 4)
    assert float(block.gamma.detach()) == 0.0
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("bias", [False, True])
def test_parameter_count_formula(bias):
    for c, w in ((16, 3), (64, 10), (256, 38)):
        assert ResidualBottleneck.parameter_count(c, w, bias) == n_params(ResidualBottleneck(c, w, bias=bias))


def _placements():
    """(preset, G or D, size, channels) of every feature map each preset's G and D produce."""
    for name in sorted(PRESETS):
        m = preset(name).model
        for who, arch, ch in (("G", G_ARCH, m.g_ch), ("D", D_ARCH, m.d_ch)):
            for spec in arch[m.resolution]:
                yield name, who, spec.resolution, spec.out_mult * ch


@pytest.mark.parametrize("name,who,size,channels", sorted(set(_placements())))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bottleneck_has_the_attention_layers_parameter_count_within_10_percent(name, who, size, channels,
                                                                             reduction):
    m = preset(name).model
    attn = SelfAttention2d(channels, m.attn_variant, bias=m.attn_bias, reduction=reduction)
    target = n_params(attn)
    block = ResidualBottleneck(channels, bottleneck_width(channels, target, m.attn_bias), bias=m.attn_bias)
    assert abs(n_params(block) - target) <= 0.10 * target, (n_params(block), target)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_resblock_placement_follows_the_config_in_g_and_d(name):
    base = preset(name).model
    g_sizes, d_sizes = g_attention_sizes(base.resolution), d_attention_sizes(base.resolution)
    size = g_sizes[0]
    small = ["model.g_ch=8", "model.d_ch=8"]  # placement is what is tested here (every preset's defaults: test_models)
    cfg = load_config(name, None, [*small, "model.g_attn=[]", "model.d_attn=[]", f"model.g_resblock=[{size}]",
                                   f"model.d_resblock=[{size}]" if size in d_sizes else "model.d_resblock=[]"])
    g, d = build_models(cfg.model, 10, 3)
    assert list(gamma_layers(g, "G")) == [f"G.res{size}"]
    assert list(gamma_layers(d, "D")) == ([f"D.res{size}"] if size in d_sizes else [])
    assert not any(isinstance(m, SelfAttention2d) for m in [*g.modules(), *d.modules()])
    # Same parameter count as the attention model of the same placement, within 10% of the layer.
    cfg_attn = load_config(name, None, [*small, f"model.g_attn=[{size}]", "model.d_attn=[]", "model.g_resblock=[]",
                                        "model.d_resblock=[]"])
    g_attn, _ = build_models(cfg_attn.model, 10, 3)
    (layer,) = gamma_layers(g_attn, "G").values()
    assert abs(n_params(g) - n_params(g_attn)) <= 0.10 * n_params(layer)


def test_both_layers_at_one_size_are_attention_then_bottleneck():
    g = Generator(32, 16, 16, 0, 1, attn=[16], resblock=[16])
    (stage,) = [s for s in g.blocks if len(s) > 1]
    assert isinstance(stage[1], SelfAttention2d) and isinstance(stage[2], ResidualBottleneck)
    assert list(gamma_layers(g, "G")) == ["G.attn16", "G.res16"]
    x = g(torch.randn(2, 16))
    assert x.shape == (2, 1, 32, 32)


def test_default_models_are_unchanged_by_the_new_options():
    """No resblock and reduction 8 build the same modules from the same seed as before the options."""
    torch.manual_seed(0)
    a = Generator(32, 16, 16, 10, 1, attn=[16])
    torch.manual_seed(0)
    b = Generator(32, 16, 16, 10, 1, attn=[16], attn_reduction=8, resblock=[])
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb)


def test_placement_and_reduction_are_validated():
    with pytest.raises(ConfigError, match=r"model.g_resblock=\[64\].*choose sizes from \[8, 16, 32\]"):
        load_config("fmnist32", None, ["model.g_resblock=[64]"])
    with pytest.raises(ConfigError, match=r"model.d_resblock=\[32\]"):
        load_config("fmnist32", None, ["model.d_resblock=[32]"])
    with pytest.raises(ConfigError, match=r"model.attn_reduction=3; choose one of \[1, 2, 4, 8\]"):
        load_config("fmnist32", None, ["model.attn_reduction=3"])
    with pytest.raises(ValueError, match="residual block at \\[64\\] is never produced"):
        Discriminator(32, 16, 0, 1, [], resblock=[64])
    cfg = load_config("fmnist32", None, ["model.attn_reduction=2"])
    g, d = build_models(cfg.model, 10, 1)
    assert {layer.reduction for layer in gamma_layers(g, "G").values()} == {2}
    assert {layer.reduction for layer in gamma_layers(d, "D").values()} == {2}
