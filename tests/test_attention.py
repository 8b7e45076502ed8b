"""SelfAttention2d against a slow, explicit reference written here from the paper's equations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sagan.nn.attention import SelfAttention2d, double_backward_mode, recording_attention


def reference_attention(layer: SelfAttention2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop-over-positions implementation of the paper's formulas.

    s_ij = f(x_i)^T g(x_j); beta_{j,i} = softmax_i s_ij; o_j = v(sum_i beta_{j,i} h(x_i));
    y = gamma * o + x. Uses the layer's (spectrally normalised) weights via its 1x1 convs.
    """
    b, c, hh, ww = x.shape
    n = hh * ww
    gq = layer.g(x).reshape(b, -1, n)  # query g(x_j)
    fk = layer.f(x)
    hv = layer.h(x)
    if layer.variant == "biggan":
        fk, hv = F.max_pool2d(fk, 2), F.max_pool2d(hv, 2)
    fk, hv = fk.reshape(b, fk.shape[1], -1), hv.reshape(b, hv.shape[1], -1)
    m = fk.shape[2]
    beta = torch.zeros(b, n, m, dtype=x.dtype)
    o_pre = torch.zeros(b, hv.shape[1], n, dtype=x.dtype)
    for bi in range(b):
        for j in range(n):
            s = torch.stack([torch.dot(fk[bi, :, i], gq[bi, :, j]) for i in range(m)])
            e = torch.exp(s - s.max())
            beta_j = e / e.sum()
            beta[bi, j] = beta_j
            o_pre[bi, :, j] = (hv[bi] * beta_j[None, :]).sum(dim=1)
    o = layer.v(o_pre.reshape(b, -1, hh, ww))
    return layer.gamma * o + x, beta


def _layer(variant: str, channels: int = 16, gamma: float = 0.7, seed: int = 0, bias: bool = False,
           reduction: int = 8) -> SelfAttention2d:
    torch.manual_seed(seed)
    layer = SelfAttention2d(channels, variant, bias=bias, reduction=reduction).double()
    with torch.no_grad():
        layer.gamma.fill_(gamma)
    layer.eval()  # freeze the spectral-norm power iteration so every call sees the same weights
    return layer


@pytest.mark.parametrize("variant,bias,reduction",
                         [("paper", False, 8), ("biggan", False, 8), ("paper", True, 8),
                          ("paper", False, 1), ("paper", False, 2), ("paper", False, 4), ("biggan", False, 1)],
                         ids=["paper", "biggan", "paper-bias", "paper-r1", "paper-r2", "paper-r4", "biggan-r1"])
@pytest.mark.parametrize("path", ["fused", "explicit"])
def test_matches_reference_values_and_gradients(variant, bias, reduction, path):
    layer = _layer(variant, bias=bias, reduction=reduction)
    assert layer.f.weight.shape[0] == layer.g.weight.shape[0] == 16 // reduction  # C' = C / reduction
    if bias:  # nn.Conv2d's default init: nonzero biases, so they are really tested
        assert all(conv.bias.abs().sum() > 0 for conv in (layer.f, layer.g, layer.h, layer.v))
    x = torch.randn(2, 16, 4, 6, dtype=torch.double, requires_grad=True)
    if path == "fused":
        y = layer(x)
    else:
        y, attn = layer(x, return_attention=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref, beta_ref = reference_attention(layer, x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-6)
    if path == "explicit":
        torch.testing.assert_close(attn.double(), beta_ref, rtol=1e-4, atol=1e-7)

    w = torch.randn_like(y)
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad((y * w).sum(), [x, *params])
    grads_ref = torch.autograd.grad((y_ref * w).sum(), [x_ref, *params])
    for g, gr in zip(grads, grads_ref):
        torch.testing.assert_close(g, gr, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", ["paper", "biggan"])
def test_fused_and_explicit_agree_in_fp32(variant):
    torch.manual_seed(1)
    layer = SelfAttention2d(32, variant).eval()
    with torch.no_grad():
        layer.gamma.fill_(1.3)
    x = torch.randn(3, 32, 8, 8, requires_grad=True)
    y_fused = layer(x)
    y_expl, _ = layer(x, return_attention=True)
    torch.testing.assert_close(y_fused, y_expl, rtol=1e-4, atol=1e-5)
    (gf,) = torch.autograd.grad(y_fused.square().sum(), x)
    (ge,) = torch.autograd.grad(y_expl.square().sum(), x)
    torch.testing.assert_close(gf, ge, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["paper", "biggan"])
def test_gamma_zero_is_identity_and_rows_sum_to_one(variant):
    torch.manual_seed(2)
    layer = SelfAttention2d(16, variant)
    assert layer.gamma.shape == () and float(layer.gamma.detach()) == 0.0  # one scalar, initialised to 0
    x = torch.randn(2, 16, 8, 8)
    y, attn = layer(x, return_attention=True)
    assert torch.equal(y, x)
    n_keys = 64 if variant == "paper" else 16
    assert attn.shape == (2, 64, n_keys)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 64))
    assert (attn >= 0).all()


def test_hand_made_input_attends_where_it_should():
    """Query j attends to the key i maximising f(x_i).g(x_j): plant one such key."""
    layer = SelfAttention2d(8, "paper", spectral_norm=False)
    with torch.no_grad():
        for conv in (layer.f, layer.g, layer.h, layer.v):
            conv.weight.zero_()
        layer.g.weight[0, 0] = 1.0  # query = channel 0
        layer.f.weight[0, 1] = 1.0  # key = channel 1
    x = torch.zeros(1, 8, 4, 4)
    x[0, 0] = 1.0  # every query position has query value 1
    x[0, 1, 2, 3] = 20.0  # one key position (row 2, col 3) stands out
    _, attn = layer(x, return_attention=True)
    target = 2 * 4 + 3
    assert (attn[0].argmax(dim=1) == target).all()
    assert attn[0, :, target].min() > 0.99


@pytest.mark.parametrize("variant", ["paper", "biggan"])
def test_no_biases_by_default_as_in_the_paper(variant):
    """f, g, h and v are linear maps (no biases) in the paper's equations and the authors' code.
    So a zero input gives a zero output whatever gamma; with ``bias=True`` (the layout of
    checkpoints from earlier versions) it does not."""
    c = 32
    layer = SelfAttention2d(c, variant)
    convs = (layer.f, layer.g, layer.h, layer.v)
    assert all(conv.bias is None for conv in convs)
    dv = c // 8 if variant == "paper" else c // 2
    weights = 2 * c * (c // 8) + c * dv + dv * c
    assert sum(p.numel() for p in layer.parameters()) == weights + 1  # + gamma
    biased = SelfAttention2d(c, variant, bias=True)
    assert sum(p.numel() for p in biased.parameters()) == weights + 1 + 2 * (c // 8) + dv + c
    assert "bias=False" in repr(layer) and "bias=True" in repr(biased)
    zero = torch.zeros(2, c, 4, 4)
    for m in (layer, biased):
        with torch.no_grad():
            m.gamma.fill_(1.0)
    assert torch.equal(layer(zero), zero)
    assert layer(zero, return_attention=True)[0].abs().max() == 0
    assert biased(zero).abs().max() > 0


def test_double_backward_falls_back_to_explicit_path():
    """A gradient penalty differentiates through a gradient; the layer must support it."""
    torch.manual_seed(3)
    layer = SelfAttention2d(16, "paper")
    with torch.no_grad():
        layer.gamma.fill_(0.5)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    with double_backward_mode():
        out = layer(x).square().sum()
        (g,) = torch.autograd.grad(out, x, create_graph=True)
    penalty = g.square().sum()
    penalty.backward()
    assert layer.gamma.grad is not None and torch.isfinite(layer.gamma.grad)
    assert layer.g.parametrizations.weight.original.grad.abs().sum() > 0


def test_gradient_penalty_runs_through_a_discriminator():
    from sagan.losses import gradient_penalty
    from sagan.models import Discriminator
    torch.manual_seed(4)
    d = Discriminator(32, 8, 0, 3, [16])
    with torch.no_grad():
        for m in d.modules():
            if isinstance(m, SelfAttention2d):
                m.gamma.fill_(0.5)
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    gp = gradient_penalty(lambda im: d(im), real, fake)
    gp.backward()
    assert torch.isfinite(gp)


def test_recording_attention_collects_maps():
    layer = SelfAttention2d(16)
    model = torch.nn.Sequential(layer)
    with recording_attention(model) as layers:
        model(torch.randn(1, 16, 4, 4))
    (rec,) = layers.values()
    assert rec.last_attention.shape == (1, 16, 16)
    assert not layer.record_attention


@pytest.mark.parametrize("variant", ["paper", "biggan"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("reduction", [1, 2, 4, 8])
def test_parameter_count_without_building_matches_the_layer(variant, bias, reduction):
    layer = SelfAttention2d(64, variant, bias=bias, reduction=reduction)
    assert SelfAttention2d.parameter_count(64, variant, bias, reduction) == sum(p.numel() for p in layer.parameters())


def test_channel_requirements_are_explained():
    with pytest.raises(ValueError, match="divisible by 8"):
        SelfAttention2d(12)
    with pytest.raises(ValueError, match="divisible by 4"):
        SelfAttention2d(6, reduction=4)
    with pytest.raises(ValueError, match=r"reduction 3 .*choose one of \(1, 2, 4, 8\)|choose one of \(1, 2, 4, 8\)"):
        SelfAttention2d(12, reduction=3)
    SelfAttention2d(12, reduction=4)  # 12 channels are enough for C/4
    with pytest.raises(ValueError, match="variant"):
        SelfAttention2d(16, "nope")
