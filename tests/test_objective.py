"""The GAN objective against numbers worked out by hand: the three adversarial losses (values,
signs and gradients), the WGAN-GP penalty on discriminators whose input gradient is known in
closed form, double backward through the attention layer's explicit path, and ``train.n_dis``.

Tolerances. The loss tests use float64 logits with exactly representable or closed-form values:
a mean of two or three float64 numbers is within a few ulps (~1e-16 relative) of the hand value,
so ``rel=1e-12`` leaves a wide margin while a single wrong term (>= 1e-2 here) fails by ten orders
of magnitude. The gradient-penalty tests are float64 too: a norm and a square of O(1) numbers,
rounding ~1e-15, hence 1e-12. ``gradcheck``'s own defaults (eps=1e-6, atol=1e-5, rtol=1e-3) are
made for float64, where central differences are accurate to ~eps^2 + ulp/eps ~ 1e-10.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sagan.losses import LOSSES, d_loss, g_loss, gradient_penalty
from sagan.nn.attention import SelfAttention2d, double_backward_mode

F64 = torch.float64
REL = 1e-12  # float64 arithmetic on O(1) numbers; see the module docstring
LN3 = math.log(3.0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test here runs many tiny ops (gradcheck: hundreds of small forward/backward passes);
    two intra-op threads on a shared 2-core machine make them ~10x slower, one is fastest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=True)


def _grads(loss: torch.Tensor, *inputs: torch.Tensor) -> list[list[float]]:
    return [g.tolist() for g in torch.autograd.grad(loss, inputs)]


def _approx(values: list[float]):
    return pytest.approx(values, rel=REL, abs=1e-15)


# --------------------------------------------------------------------------- losses: values


def test_hinge_values_and_gradients_by_hand():
    real, fake = _t(2.0, 0.5), _t(-3.0, 0.25)
    # D: mean(relu(1 - r)) + mean(relu(1 + f)) = (0 + 0.5)/2 + (0 + 1.25)/2 = 0.25 + 0.625
    loss = d_loss("hinge", real, fake)
    assert loss.item() == pytest.approx(0.875, rel=REL)
    # d/dr_i = -1/n where r_i < 1 (inside the margin), else 0;  d/df_i = +1/n where f_i > -1, else 0
    assert _grads(loss, real, fake) == [_approx([0.0, -0.5]), _approx([0.0, 0.5])]
    # G: -mean(f) = -(-3 + 0.25)/2 = 1.375;  d/df_i = -1/n
    fake = _t(-3.0, 0.25)
    loss = g_loss("hinge", fake)
    assert loss.item() == pytest.approx(1.375, rel=REL)
    assert _grads(loss, fake) == [_approx([-0.5, -0.5])]


def test_ns_values_and_gradients_by_hand():
    """Non-saturating loss: softplus(t) = log(1 + e^t), d softplus(t)/dt = sigmoid(t).

    softplus(0) = ln 2, softplus(-ln 3) = ln(1 + 1/3) = ln(4/3), softplus(ln 3) = ln 4;
    sigmoid(0) = 1/2, sigmoid(-ln 3) = 1/4, sigmoid(ln 3) = 3/4.
    """
    real, fake = _t(0.0, LN3), _t(0.0, LN3)
    # D: mean(softplus(-r)) + mean(softplus(f)) = (ln2 + ln(4/3))/2 + (ln2 + ln4)/2
    loss = d_loss("ns", real, fake)
    expected = (math.log(2) + math.log(4 / 3)) / 2 + (math.log(2) + math.log(4)) / 2
    assert loss.item() == pytest.approx(expected, rel=REL)
    # d/dr_i = -sigmoid(-r_i)/n = [-1/2, -1/4]/2;  d/df_i = sigmoid(f_i)/n = [1/2, 3/4]/2
    assert _grads(loss, real, fake) == [_approx([-0.25, -0.125]), _approx([0.25, 0.375])]
    # G: mean(softplus(-f)) = (ln2 + ln(4/3))/2;  d/df_i = -sigmoid(-f_i)/n = [-1/4, -1/8]
    fake = _t(0.0, LN3)
    loss = g_loss("ns", fake)
    assert loss.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=REL)
    assert _grads(loss, fake) == [_approx([-0.25, -0.125])]


def test_wasserstein_values_and_gradients_by_hand():
    real, fake = _t(2.0, 0.5), _t(-3.0, 0.25)
    # D: mean(f) - mean(r) = -1.375 - 1.25 = -2.625;  d/dr_i = -1/n, d/df_i = +1/n
    loss = d_loss("wasserstein", real, fake)
    assert loss.item() == pytest.approx(-2.625, rel=REL)
    assert _grads(loss, real, fake) == [_approx([-0.5, -0.5]), _approx([0.5, 0.5])]
    # G: -mean(f) = 1.375;  d/df_i = -1/n
    fake = _t(-3.0, 0.25)
    loss = g_loss("wasserstein", fake)
    assert loss.item() == pytest.approx(1.375, rel=REL)
    assert _grads(loss, fake) == [_approx([-0.5, -0.5])]


def test_real_and_fake_terms_are_averaged_separately():
    """With 2 real and 3 fake scores each term is its own mean (not one mean over 5 scores)."""
    real, fake = _t(2.0, 0.5), _t(-3.0, 0.25, 0.0)
    # hinge: (0 + 0.5)/2 + (0 + 1.25 + 1)/3 = 0.25 + 0.75
    assert d_loss("hinge", real, fake).item() == pytest.approx(1.0, rel=REL)
    # wasserstein: (-3 + 0.25 + 0)/3 - (2 + 0.5)/2 = -11/12 - 5/4
    assert d_loss("wasserstein", real, fake).item() == pytest.approx(-11 / 12 - 5 / 4, rel=REL)
    # ns: (softplus(-2) + softplus(-0.5))/2 + (softplus(-3) + softplus(0.25) + softplus(0))/3
    sp = lambda t: math.log1p(math.exp(t))  # noqa: E731
    expected = (sp(-2) + sp(-0.5)) / 2 + (sp(-3) + sp(0.25) + sp(0)) / 3
    assert d_loss("ns", real, fake).item() == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("name", LOSSES)
def test_signs_d_rewards_high_real_and_low_fake_scores_and_g_high_fake_scores(name):
    """A confident, correct D has a lower D loss than a confident, wrong one; G's loss falls as
    D scores its samples higher. A flipped sign anywhere inverts one of these."""
    good, bad = torch.tensor([3.0], dtype=F64), torch.tensor([-3.0], dtype=F64)
    assert d_loss(name, real=good, fake=bad).item() < d_loss(name, real=bad, fake=good).item()
    assert g_loss(name, good).item() < g_loss(name, bad).item()
    # Directional derivatives: raising a real score never raises D's loss, raising a fake score
    # never lowers it, and raising a fake score lowers G's loss (all strictly, at 0: inside the
    # hinge margin, and where the softplus slope is 1/2).
    r, f = _t(0.0), _t(0.0)
    gr, gf = torch.autograd.grad(d_loss(name, r, f), (r, f))
    assert gr.item() < 0 < gf.item()
    f = _t(0.0)
    (gg,) = torch.autograd.grad(g_loss(name, f), f)
    assert gg.item() < 0


@pytest.mark.parametrize("name", LOSSES)
def test_optimum_values(name):
    """Hinge D is exactly 0 once every real >= 1 and every fake <= -1 (no gradient beyond the
    margin); ns D keeps a softplus tail at every score; wasserstein has no floor: D's loss is the
    negative score gap."""
    real, fake = torch.tensor([1.0, 20.0], dtype=F64), torch.tensor([-1.0, -20.0], dtype=F64)
    expected = {"hinge": 0.0,
                "ns": math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-20.0)),  # (2 x sum)/2 per term
                "wasserstein": -10.5 - 10.5}[name]
    assert d_loss(name, real, fake).item() == pytest.approx(expected, rel=REL, abs=1e-15)


def test_unknown_loss_name_raises_value_error():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="not known"):
        d_loss("lsgan", x, x)
    with pytest.raises(ValueError, match="not known"):
        g_loss("lsgan", x)
    with pytest.raises(ValueError):
        d_loss("Hinge", x, x)  # names are exact


# --------------------------------------------------------------------------- gradient penalty


class LinearD(nn.Module):
    """D(x) = <w, flatten(x)> + b per image: grad_x D = w everywhere, whatever x_hat is."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(shape, generator=g, dtype=F64) * 0.4)
        self.b = nn.Parameter(torch.tensor(0.3, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1) + self.b


def _images(n: int = 3, shape=(2, 3, 3), seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=F64), torch.randn(n, *shape, generator=g, dtype=F64)


def test_gradient_penalty_of_a_linear_d_is_norm_of_w_minus_one_squared_for_any_alpha():
    real, fake = _images()
    d = LinearD(real.shape[1:])
    w_norm = d.w.detach().flatten().norm().item()
    assert abs(w_norm - 1.0) > 0.1  # otherwise the penalty (and its gradient) would be ~0
    expected = (w_norm - 1.0) ** 2
    for alpha in (torch.zeros(3), torch.ones(3), torch.tensor([0.1, 0.5, 0.9]), None):
        gp = gradient_penalty(d, real, fake, alpha)
        assert gp.dtype == F64
        assert gp.item() == pytest.approx(expected, rel=REL)


def test_gradient_penalty_gradient_wrt_d_parameters_is_analytic():
    """d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||;  d/db = 0 (b does not move grad_x D).

    Needs the penalty's graph (create_graph=True): without it there is no gradient to D at all."""
    real, fake = _images()
    d = LinearD(real.shape[1:], seed=2)
    gp = gradient_penalty(d, real, fake, torch.tensor([0.2, 0.7, 0.4]))
    assert gp.requires_grad
    gw, gb = torch.autograd.grad(gp, [d.w, d.b], allow_unused=True)
    w = d.w.detach()
    n = w.flatten().norm()
    torch.testing.assert_close(gw, 2 * (n - 1) * w / n, rtol=REL, atol=1e-14)
    assert gb is None or gb.abs().item() == 0.0


def test_gradient_penalty_of_a_quadratic_d_uses_per_image_interpolates():
    """D(x) = 0.5 * sum(x^2) per image has grad = x_hat, so the penalty is
    mean_i (||x_hat_i|| - 1)^2 with x_hat_i = alpha_i * real_i + (1 - alpha_i) * fake_i.

    alpha = 1 picks the real image, 0 the fake one; the norm is per image, not over the batch."""
    real, fake = _images(n=4, seed=3)
    fake = fake * 0.2  # norms well apart from 1 and from each other
    alpha = torch.tensor([1.0, 0.0, 0.25, 0.8], dtype=F64)

    def quad(x):
        return 0.5 * x.square().flatten(1).sum(1)

    gp = gradient_penalty(quad, real, fake, alpha)
    terms = []
    for i in range(4):  # slow, explicit
        x_hat = alpha[i] * real[i] + (1 - alpha[i]) * fake[i]
        terms.append((math.sqrt(sum(v * v for v in x_hat.flatten().tolist())) - 1.0) ** 2)
    assert gp.item() == pytest.approx(sum(terms) / 4, rel=REL)
    # Swapping the roles of real and fake (alpha -> 1 - alpha would undo it) changes the value.
    assert gradient_penalty(quad, fake, real, alpha).item() != pytest.approx(gp.item(), rel=1e-3)


def test_gradient_penalty_gradient_through_a_parametrised_quadratic_d():
    """D(x) = 0.5 * c * sum(x^2): grad = c x_hat, penalty = mean (c r_i - 1)^2 with r_i = ||x_hat_i||,
    d penalty / dc = mean 2 (c r_i - 1) r_i."""
    real, fake = _images(n=3, seed=4)
    alpha = torch.tensor([0.3, 0.6, 0.9], dtype=F64)
    c = torch.tensor(0.7, dtype=F64, requires_grad=True)
    gp = gradient_penalty(lambda x: 0.5 * c * x.square().flatten(1).sum(1), real, fake, alpha)
    r = (alpha.view(-1, 1, 1, 1) * real + (1 - alpha.view(-1, 1, 1, 1)) * fake).flatten(1).norm(dim=1)
    assert gp.item() == pytest.approx(((c.detach() * r - 1) ** 2).mean().item(), rel=REL)
    (gc,) = torch.autograd.grad(gp, c)
    assert gc.item() == pytest.approx((2 * (c.detach() * r - 1) * r).mean().item(), rel=REL)


def test_gradient_penalty_draws_alpha_from_the_global_rng_when_not_given():
    real, fake = _images(n=5, seed=5)

    def quad(x):
        return 0.5 * x.square().flatten(1).sum(1)

    torch.manual_seed(11)
    gp = gradient_penalty(quad, real, fake)
    torch.manual_seed(11)
    alpha = torch.rand(5)
    assert gp.item() == pytest.approx(gradient_penalty(quad, real, fake, alpha).item(), rel=REL)


# --------------------------------------------------------------------------- attention double backward


def _attention(variant: str, seed: int = 0) -> SelfAttention2d:
    torch.manual_seed(seed)
    # .double() converts the weights and the spectral-norm u/v buffers; eval() freezes the power
    # iteration so W / sigma(W, u, v) is one fixed differentiable function during the check.
    layer = SelfAttention2d(16, variant).double().eval()
    with torch.no_grad():
        layer.gamma.fill_(0.8)  # nonzero: with gamma = 0 the layer is the identity
    for p in layer.parameters():
        assert p.dtype == F64
    for b in layer.buffers():
        assert b.dtype == F64
    return layer


def _no_fused_attention(*args, **kwargs):
    raise AssertionError("the fused SDPA path ran where the explicit path was required")


@pytest.mark.parametrize("variant", ["paper", "biggan"])
def test_gradcheck_and_gradgradcheck_through_explicit_attention(variant, monkeypatch):
    """First and second derivatives of the explicit path w.r.t. the input and every parameter.

    At batch 2, 16 channels, 4x4 a full (element-by-element) check needs ~10^3 backward passes per
    check, minutes on a loaded 2-core machine, so these use gradcheck's fast mode: it compares
    v^T J u for random u, v (one directional finite difference against one vector-Jacobian
    product), which a wrong derivative fails with probability 1. The full element-wise check is
    the next test, on a smaller map.
    """
    layer = _attention(variant)
    # Prove the check is about the explicit path: the fused kernel must not be called at all.
    monkeypatch.setattr(F, "scaled_dot_product_attention", _no_fused_attention)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 4, 4, generator=g, dtype=F64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    ps = tuple(p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters())

    def fn(x, *ps):
        with double_backward_mode():
            return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    # The attention branch matters: y - x is not small, so its derivatives are really checked.
    with torch.no_grad():
        assert (fn(x, *ps) - x).abs().max() > 0.05
    assert torch.autograd.gradcheck(fn, (x, *ps), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, *ps), fast_mode=True)


@pytest.mark.parametrize("variant,shape", [("paper", (1, 8, 2, 3)), ("biggan", (1, 8, 2, 4))])
def test_full_gradgradcheck_through_explicit_attention_on_a_small_map(variant, shape, monkeypatch):
    """Element-by-element gradcheck and gradgradcheck w.r.t. x (and the output cotangents) on a
    map small enough to afford it: 48 (paper, 6 keys) or 64 (biggan, 2 pooled keys) inputs."""
    torch.manual_seed(5)
    layer = SelfAttention2d(shape[1], variant).double().eval()
    with torch.no_grad():
        layer.gamma.fill_(1.5)
    monkeypatch.setattr(F, "scaled_dot_product_attention", _no_fused_attention)
    x = torch.randn(*shape, dtype=F64, requires_grad=True)

    def fn(x):
        with double_backward_mode():
            return layer(x)

    with torch.no_grad():
        assert (fn(x) - x).abs().max() > 0.05
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("variant", ["paper", "biggan"])
def test_gradcheck_of_gradient_penalty_through_attention(variant, monkeypatch):
    """The WGAN-GP penalty of D = (sum of an attention layer's output) is differentiable in the
    layer's parameters exactly: a first-order check of a function that contains a gradient."""
    layer = _attention(variant, seed=3)
    monkeypatch.setattr(F, "scaled_dot_product_attention", _no_fused_attention)
    names = [n for n, _ in layer.named_parameters()]
    ps = tuple(p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters())
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(2, 2, 16, 4, 4, generator=g, dtype=F64)
    alpha = torch.tensor([0.3, 0.8], dtype=F64)

    def penalty(*ps):
        def d_fn(im):
            out = torch.func.functional_call(layer, dict(zip(names, ps)), (im,))
            return out.square().flatten(1).sum(1) * 0.05
        return gradient_penalty(d_fn, real, fake, alpha)

    assert penalty(*ps).item() > 1e-3
    assert torch.autograd.gradcheck(penalty, ps, fast_mode=True)


# --------------------------------------------------------------------------- n_dis


def _tiny_data():
    from sagan.data.datasets import ImageData
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (32, 1, 32, 32), generator=g, dtype=torch.uint8)
    return ImageData("tiny", "random", 4, 1, 32, [f"c{i}" for i in range(4)], images, torch.arange(32) % 4)


def _count_one_step(tmp_path, n_dis: int):
    from sagan.config import load_config
    from sagan.train.resolve import resolve_for_data
    from sagan.train.trainer import Trainer
    cfg = load_config("fmnist32", None, ["model.g_ch=8", "model.d_ch=8", "train.batch_size=4", "train.device=cpu",
                                         "train.log_every=1000", "train.fid_every=0", f"train.n_dis={n_dis}"])
    data = _tiny_data()
    tr = Trainer(resolve_for_data(cfg, data, torch.device("cpu"))[0], tmp_path, data, progress=False)
    batches = []
    inner = tr.gan.next_batch  # the real-batch source the training step draws from

    def counting_next_batch():
        x, y = inner()
        batches.append((x.clone(), y.clone()))
        return x, y

    tr.gan.next_batch = counting_next_batch
    try:
        tr.train_step()
    finally:
        if tr.logger is not None:
            tr.logger.close()
    steps_d = {int(tr.gan.opt_d.state[p]["step"]) for p in tr.gan.D.parameters()}
    steps_g = {int(tr.gan.opt_g.state[p]["step"]) for p in tr.gan.G.parameters()}
    return tr, batches, steps_d, steps_g


@pytest.mark.parametrize("n_dis", [1, 2])
def test_n_dis_discriminator_steps_per_generator_step(tmp_path, n_dis):
    tr, batches, steps_d, steps_g = _count_one_step(tmp_path, n_dis)
    # Every parameter of D was updated n_dis times, every parameter of G once.
    assert steps_d == {n_dis}, steps_d
    assert steps_g == {1}, steps_g
    assert tr.step == 1
    # n_dis * batch real images were drawn from the stream, n_dis distinct batches, in order.
    assert len(batches) == n_dis
    assert all(x.shape == (4, 1, 32, 32) for x, _ in batches)
    assert tr.stream.epoch == 0 and tr.stream.position == 4 * n_dis
    if n_dis == 2:
        assert not torch.equal(batches[0][0], batches[1][0])
        from sagan.data.stream import epoch_permutation
        perm = epoch_permutation(32, tr.cfg.train.seed, 0)
        from sagan.data.datasets import to_model_range
        expected = to_model_range(tr.data.images[perm[:8]])
        torch.testing.assert_close(torch.cat([batches[0][0], batches[1][0]]), expected, rtol=0, atol=0)
