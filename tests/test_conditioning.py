"""Class conditioning against slow explicit references: conditional batch norm in G
(``BN_affine_free(x) * (1 + gain[y]) + bias[y]``) and the projection discriminator
(``D(x, y) = linear(h) + <embed(y), h>``, h the ReLU'd, sum-pooled features).

Everything runs in float64. Tolerances: the references reduce in a different order than the
library (python loops / explicit sums vs. ATen kernels), so results agree to a few ulps times the
number of summed terms (<= ~10^3 here): relative ~1e-13, hence rtol = 1e-10 with atol = 1e-10
on O(1..100) values, far below the O(0.1..10) effects a wrong formula produces. Where the two
sides run the same kernels on the same numbers the test asks for exact equality.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm

from sagan.models import Discriminator, Generator
from sagan.nn.attention import SelfAttention2d
from sagan.nn.norm import BatchNorm2dIgnoringLabel, ConditionalBatchNorm2d

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)  # float64, reduction order differs; see the module docstring


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models, many small ops: one intra-op thread is fastest on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _freeze_spectral_norm(model: nn.Module) -> None:
    """Stop the power iteration (it runs on every training-mode forward and would change the
    effective weights between the calls a test compares) while BN keeps batch statistics."""
    for m in model.modules():
        if isinstance(m, _SpectralNorm):
            m.eval()


def _randomise_cbn(model: nn.Module, seed: int = 0) -> list[ConditionalBatchNorm2d]:
    """Non-trivial gain and bias tables (they start at zero, where every class is the same)."""
    g = torch.Generator().manual_seed(seed)
    layers = [m for m in model.modules() if isinstance(m, ConditionalBatchNorm2d)]
    with torch.no_grad():
        for m in layers:
            m.gain.weight.copy_(torch.randn(m.gain.weight.shape, generator=g, dtype=F64) * 0.5)
            m.bias.weight.copy_(torch.randn(m.bias.weight.shape, generator=g, dtype=F64) * 0.5)
    return layers


# --------------------------------------------------------------------------- conditional BN


def reference_cbn(x: torch.Tensor, y: torch.Tensor, gain_table: torch.Tensor, bias_table: torch.Tensor,
                  eps: float, mean: torch.Tensor | None = None, var: torch.Tensor | None = None) -> torch.Tensor:
    """Slow, explicit conditional batch norm, one channel at a time.

    Training mode (mean/var not given): statistics of the whole batch over (N, H, W), the biased
    variance (divide by the count), as batch norm normalises with; then per sample i
    out = x_hat * (1 + gain[y_i]) + bias[y_i].
    """
    n, c, hh, ww = x.shape
    out = torch.empty_like(x)
    count = n * hh * ww
    for ch in range(c):
        vals = x[:, ch]
        if mean is None:
            mu = vals.sum() / count
            v = ((vals - mu) ** 2).sum() / count
        else:
            mu, v = mean[ch], var[ch]
        x_hat = (vals - mu) / torch.sqrt(v + eps)
        for i in range(n):
            k = int(y[i])
            out[i, ch] = x_hat[i] * (1.0 + gain_table[k, ch]) + bias_table[k, ch]
    return out


def _cbn(seed: int = 0, features: int = 6, classes: int = 4) -> ConditionalBatchNorm2d:
    torch.manual_seed(seed)
    layer = ConditionalBatchNorm2d(features, classes).double()
    _randomise_cbn(layer, seed)
    return layer


def _x(shape=(5, 6, 3, 3), seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # non-zero mean and non-unit variance per channel, so the normalisation does something
    return torch.randn(shape, generator=g, dtype=F64) * 2.5 + torch.arange(shape[1], dtype=F64).view(1, -1, 1, 1)


def test_cbn_starts_as_plain_affine_free_batch_norm():
    layer = ConditionalBatchNorm2d(6, 4).double()
    assert torch.count_nonzero(layer.gain.weight) == 0 and torch.count_nonzero(layer.bias.weight) == 0
    assert not layer.bn.affine  # the only affine parameters are the per-class tables
    x, y = _x(), torch.tensor([0, 2, 1, 2, 3])
    zeros = torch.zeros(4, 6, dtype=F64)
    torch.testing.assert_close(layer(x, y), reference_cbn(x, y, zeros, zeros, layer.bn.eps), **TOL)


def test_cbn_matches_the_explicit_formula_with_mixed_classes_in_the_batch():
    layer = _cbn()
    x = _x().requires_grad_(True)
    y = torch.tensor([0, 2, 1, 2, 3])
    out = layer(x, y)
    x_ref = x.detach().clone().requires_grad_(True)
    ref = reference_cbn(x_ref, y, layer.gain.weight, layer.bias.weight, layer.bn.eps)
    torch.testing.assert_close(out, ref, **TOL)
    # and against the gain parametrised without the 1 (a plain multiplicative gain): clearly different
    wrong = reference_cbn(x_ref.detach(), y, layer.gain.weight.detach() - 1.0, layer.bias.weight.detach(),
                          layer.bn.eps)
    assert (out.detach() - wrong).abs().max() > 0.5
    # Gradients w.r.t. the input and both class tables agree with the reference's.
    w = torch.randn_like(out)
    got = torch.autograd.grad((out * w).sum(), [x, layer.gain.weight, layer.bias.weight])
    exp = torch.autograd.grad((ref * w).sum(), [x_ref, layer.gain.weight, layer.bias.weight])
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, **TOL)
    # By hand for the tables: d/d bias[k, c] = sum over samples of class k and positions of w;
    # class 1 appears once (sample 2), class 2 twice (samples 1, 3); unseen rows get no gradient.
    gb = got[2]
    torch.testing.assert_close(gb[1], w[2].sum((1, 2)), **TOL)
    torch.testing.assert_close(gb[2], w[1].sum((1, 2)) + w[3].sum((1, 2)), **TOL)
    layer5 = _cbn(classes=5)
    out5 = layer5(x.detach(), y)
    (gb5,) = torch.autograd.grad(out5.sum(), layer5.bias.weight)
    assert torch.count_nonzero(gb5[4]) == 0  # class 4 is not in y


def test_cbn_eval_mode_uses_running_statistics_with_the_same_class_affine():
    layer = _cbn(seed=2)
    x, y = _x(seed=3), torch.tensor([3, 3, 0, 1, 2])
    layer(x, y)  # one training step of the running statistics (momentum 0.1, from mean 0 / var 1)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean((0, 2, 3))
    unbiased_var = ((x - mean.view(1, -1, 1, 1)) ** 2).sum((0, 2, 3)) / (n - 1)
    torch.testing.assert_close(layer.bn.running_mean, 0.1 * mean, **TOL)
    torch.testing.assert_close(layer.bn.running_var, 0.9 * 1.0 + 0.1 * unbiased_var, **TOL)
    layer.eval()
    x2 = _x(seed=4)
    ref = reference_cbn(x2, y, layer.gain.weight.detach(), layer.bias.weight.detach(), layer.bn.eps,
                        layer.bn.running_mean, layer.bn.running_var)
    torch.testing.assert_close(layer(x2, y), ref, **TOL)


def test_two_classes_differ_exactly_by_their_table_rows():
    """Same input, every sample class a vs. every sample class b:
    out_b - out_a = x_hat * (gain[b] - gain[a]) + (bias[b] - bias[a])."""
    layer = _cbn(seed=4)
    x = _x(seed=5)
    a, b = 1, 3
    out_a = layer(x, torch.full((5,), a))
    out_b = layer(x, torch.full((5,), b))
    zeros = torch.zeros(4, 6, dtype=F64)
    x_hat = reference_cbn(x, torch.zeros(5, dtype=torch.long), zeros, zeros, layer.bn.eps)
    gw, bw = layer.gain.weight.detach(), layer.bias.weight.detach()
    expected = x_hat * (gw[b] - gw[a]).view(1, -1, 1, 1) + (bw[b] - bw[a]).view(1, -1, 1, 1)
    torch.testing.assert_close(out_b - out_a, expected, **TOL)
    assert (out_b - out_a).abs().max() > 0.5


# --------------------------------------------------------------------------- cBN inside G


def _generator(seed: int = 0, classes: int = 5) -> Generator:
    torch.manual_seed(seed)
    g = Generator(32, ch=4, z_dim=8, num_classes=classes, img_channels=1, attn=[16]).double()
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, SelfAttention2d):
                m.gamma.fill_(0.5)
    _randomise_cbn(g, seed)
    g.train()  # batch statistics: samples interact through BN, which the tests below must survive
    _freeze_spectral_norm(g)
    return g


def _zy(n: int = 6, z_dim: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, z_dim, generator=g, dtype=F64), torch.tensor([0, 1, 2, 1, 4, 3])[:n]


def test_every_cbn_in_g_applies_the_formula_to_the_labels_g_was_given():
    g = _generator()
    z, y = _zy()
    seen: list[tuple[ConditionalBatchNorm2d, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def hook(mod, args, out):
        seen.append((mod, args[0].detach(), args[1], out.detach()))

    layers = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(layers) == 2 * len(g.blocks)  # bn1 and bn2 of every G block
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            g(z, y)
    finally:
        for h in handles:
            h.remove()
    assert [s[0] for s in seen] == layers  # each one ran once, in order
    for mod, x_in, y_in, out in seen:
        assert torch.equal(y_in, y)
        ref = reference_cbn(x_in, y_in, mod.gain.weight.detach(), mod.bias.weight.detach(), mod.bn.eps)
        torch.testing.assert_close(out, ref, **TOL)
    # The output BN is the lineage's unconditional one.
    assert type(g.out_bn) is nn.BatchNorm2d


def test_swapping_two_classes_table_rows_swaps_gs_outputs():
    """With rows a and b exchanged in every cBN table, G(z, y) equals the original G(z, y') where
    y' has a and b exchanged: a class acts on G only through its own table rows. Same kernels on
    the same numbers, so the outputs are equal exactly."""
    a, b = 1, 4
    g = _generator(seed=2)
    z, y = _zy(seed=3)
    y_swapped = torch.where(y == a, b, torch.where(y == b, a, y))
    assert not torch.equal(y, y_swapped)
    with torch.no_grad():
        before = g(z, y)
        before_swapped = g(z, y_swapped)
        for m in g.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                for table in (m.gain.weight, m.bias.weight):
                    table[[a, b]] = table[[b, a]].clone()
        after = g(z, y)
    assert torch.equal(after, before_swapped)
    # and the class made a difference: the samples whose label was swapped changed, the others
    # moved only through the batch statistics they share with them
    changed = (y == a) | (y == b)
    assert (after - before)[changed].abs().max() > 1e-2


def test_equal_table_rows_make_two_classes_indistinguishable_and_default_init_ignores_class():
    g = _generator(seed=4)
    z, _ = _zy(seed=5)
    ones, twos = torch.full((6,), 1), torch.full((6,), 2)
    with torch.no_grad():
        assert (g(z, ones) - g(z, twos)).abs().max() > 1e-2
        for m in g.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.gain.weight[2] = m.gain.weight[1]
                m.bias.weight[2] = m.bias.weight[1]
        assert torch.equal(g(z, ones), g(z, twos))
    fresh = Generator(32, ch=4, z_dim=8, num_classes=5, img_channels=1, attn=[16]).double().train()
    _freeze_spectral_norm(fresh)
    with torch.no_grad():
        assert torch.equal(fresh(z, ones), fresh(z, twos))  # tables start at zero: plain BN


def test_unconditional_generator_ignores_labels():
    torch.manual_seed(6)
    g = Generator(32, ch=4, z_dim=8, num_classes=0, img_channels=1, attn=[16]).double().train()
    _freeze_spectral_norm(g)
    assert not any(isinstance(m, ConditionalBatchNorm2d) for m in g.modules())
    assert any(isinstance(m, BatchNorm2dIgnoringLabel) for m in g.modules())
    z, y = _zy(seed=7)
    with torch.no_grad():
        assert torch.equal(g(z), g(z, y))


# --------------------------------------------------------------------------- projection D


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """Spectral-normalised weight by hand from the stored parametrization (eval mode: no power
    iteration): W / sigma, sigma = u^T W v with W reshaped to (rows, -1), u/v the stored vectors."""
    sn = module.parametrizations.weight[0]
    w = module.parametrizations.weight.original.detach()
    mat = w.reshape(w.shape[0], -1)
    sigma = sum(float(a) * float(b) for a, b in zip(sn._u, mat @ sn._v))
    return w / sigma


def _discriminator(seed: int = 0, classes: int = 5) -> Discriminator:
    torch.manual_seed(seed)
    d = Discriminator(32, ch=4, num_classes=classes, img_channels=1, attn=[16]).double()
    with torch.no_grad():
        for m in d.modules():
            if isinstance(m, SelfAttention2d):
                m.gamma.fill_(0.5)
    return d.eval()  # D has no BN: eval only freezes the spectral-norm power iteration


def _features_by_hand(d: Discriminator, x: torch.Tensor) -> torch.Tensor:
    """D's forward up to the pooled features, one layer at a time: blocks (and attention), then
    ReLU, then a sum (not a mean) over all positions."""
    h = x
    for stage in d.blocks:
        for layer in stage:
            h = layer(h)
    assert h.shape[1:] == (4 * d.ch, 8, 8)  # D_ARCH[32]: 4*ch channels at 8x8 after two down-blocks
    n, c = h.shape[:2]
    pooled = torch.zeros(n, c, dtype=h.dtype)
    for i in range(n):
        for k in range(c):
            pooled[i, k] = sum(max(v, 0.0) for v in h[i, k].flatten().tolist())
    return pooled


def test_projection_discriminator_equals_linear_plus_inner_product_with_class_embedding():
    d = _discriminator()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 32, 32, generator=g, dtype=F64)
    y = torch.tensor([4, 0, 2])
    captured = {}
    hooks = [d.linear.register_forward_hook(lambda m, a, o: captured.update(h=a[0].detach(), lin=o.detach()))]
    try:
        with torch.no_grad():
            out = d(x, y)
            h = _features_by_hand(d, x)
    finally:
        for hk in hooks:
            hk.remove()
    torch.testing.assert_close(captured["h"], h, **TOL)  # what D projects is the sum-pooled ReLU features
    assert h.abs().max() > 1.0
    w_lin = _effective_weight(d.linear)
    e = _effective_weight(d.embed)
    torch.testing.assert_close(d.linear.weight.detach(), w_lin, **TOL)
    torch.testing.assert_close(d.embed.weight.detach(), e, **TOL)
    unconditional = h @ w_lin[0] + d.linear.bias.detach()[0]
    torch.testing.assert_close(captured["lin"].squeeze(1), unconditional, **TOL)
    proj = torch.tensor([sum(float(e[int(y[i]), k]) * float(h[i, k]) for k in range(h.shape[1]))
                         for i in range(3)], dtype=F64)
    assert proj.abs().min() > 1e-3  # the projection term is really there for every sample
    torch.testing.assert_close(out - unconditional, proj, **TOL)
    torch.testing.assert_close(out, unconditional + (d.embed(y).detach() * h).sum(1), **TOL)


def test_changing_the_class_changes_only_the_projection_term():
    d = _discriminator(seed=2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1, 32, 32, generator=g, dtype=F64)
    y1, y2 = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 1, 0, 2])
    lin_out: list[torch.Tensor] = []
    hk = d.linear.register_forward_hook(lambda m, a, o: lin_out.append(o.detach()))
    try:
        with torch.no_grad():
            out1, out2 = d(x, y1), d(x, y2)
            h = d.features(x)
    finally:
        hk.remove()
    assert torch.equal(lin_out[0], lin_out[1])  # features and linear part do not see y at all
    e = d.embed.weight.detach()
    torch.testing.assert_close(out2 - out1, ((e[y2] - e[y1]) * h).sum(1), **TOL)
    assert out2[1] == out1[1]  # same label, same score (sample 1 kept class 1)
    assert (out2 - out1)[[0, 2, 3]].abs().min() > 1e-3


def test_projection_gradient_wrt_embedding_is_the_features():
    """Gradient of D w.r.t. the raw (un-normalised) embedding table, through the spectral norm.

    In eval mode the effective table is E = E_raw / sigma with sigma = u^T E_raw v (u, v stored
    buffers), so d/dE_raw is not just the features h scattered to rows y: sigma depends on every
    row. Autograd through the hand-written E must give the same gradient as D's own.
    """
    d = _discriminator(seed=5)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 1, 32, 32, generator=g, dtype=F64)
    y = torch.tensor([3, 1])
    raw = d.embed.parametrizations.weight.original
    (got,) = torch.autograd.grad(d(x, y).sum(), raw)
    sn = d.embed.parametrizations.weight[0]
    raw_ref = raw.detach().clone().requires_grad_(True)
    e_ref = raw_ref / torch.dot(sn._u, raw_ref @ sn._v)
    with torch.no_grad():
        h = d.features(x)
        lin = d.linear(h).squeeze(1)
    (exp,) = torch.autograd.grad((lin + (e_ref[y] * h).sum(1)).sum(), raw_ref)
    torch.testing.assert_close(got, exp, **TOL)
    # rows of classes not in the batch move only through sigma: proportional to u_k, not zero
    assert got[[0, 2, 4]].abs().max() > 0


def test_unconditional_discriminator_is_the_linear_part_only():
    torch.manual_seed(7)
    d = Discriminator(32, ch=4, num_classes=0, img_channels=1, attn=[16]).double().eval()
    assert d.embed is None and not d.conditional
    x = torch.randn(2, 1, 32, 32, dtype=F64)
    with torch.no_grad():
        h = d.features(x)
        torch.testing.assert_close(d(x), h @ _effective_weight(d.linear)[0] + d.linear.bias[0], **TOL)


def test_conditional_models_refuse_missing_labels():
    d, g = _discriminator(), _generator()
    with pytest.raises(ValueError, match="class labels"):
        d(torch.zeros(1, 1, 32, 32, dtype=F64))
    with pytest.raises(ValueError, match="class labels"):
        g(torch.zeros(1, 8, dtype=F64))


def test_sanity_of_reference_cbn_against_batch_norm_functional():
    """The slow reference itself, with zero tables, equals torch's batch_norm in training mode."""
    x, y = _x(seed=9), torch.zeros(5, dtype=torch.long)
    zeros = torch.zeros(4, 6, dtype=F64)
    ref = reference_cbn(x, y, zeros, zeros, 1e-5)
    bn = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-5)
    torch.testing.assert_close(ref, bn, **TOL)
    assert math.isclose(float(ref.mean()), 0.0, abs_tol=1e-12)
