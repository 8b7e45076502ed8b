"""``sagan.losses.objective``: a loss's D and G halves resolved once from its name, computing exactly
what the loss's formulas do (the training step holds them; ``d_loss`` / ``g_loss`` go through them)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sagan.config import ConfigError, load_config
from sagan.losses import LOSSES, Objective, check_loss_config, d_loss, g_loss, objective
from sagan.schema import LossConfig

# The formulas, written out: hinge and ns from the SAGAN / original GAN papers, wasserstein's critic.
D_FORMULAS = {
    "hinge": lambda real, fake: F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean(),
    "ns": lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
    "wasserstein": lambda real, fake: fake.mean() - real.mean(),
}
G_FORMULAS = {
    "hinge": lambda fake: -fake.mean(),
    "ns": lambda fake: F.softplus(-fake).mean(),
    "wasserstein": lambda fake: -fake.mean(),
}


def test_the_known_losses_are_the_three():
    assert LOSSES == ("hinge", "ns", "wasserstein")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LOSSES)
def test_objective_is_the_formula_bit_for_bit(name, dtype):
    gen = torch.Generator().manual_seed(0)
    real = (3 * torch.randn(257, generator=gen)).to(dtype).requires_grad_(True)
    fake = (3 * torch.randn(257, generator=gen)).to(dtype).requires_grad_(True)
    o = objective(name)
    assert isinstance(o, Objective) and o.name == name
    got_d, want_d = o.d_loss(real, fake), D_FORMULAS[name](real, fake)
    got_g, want_g = o.g_loss(fake), G_FORMULAS[name](fake)
    assert got_d.dtype == dtype and torch.equal(got_d, want_d) and torch.equal(got_g, want_g)
    for got, want in ((got_d, want_d), (got_g, want_g)):
        grads = torch.autograd.grad(got, (real, fake), allow_unused=True)
        wanted = torch.autograd.grad(want, (real, fake), allow_unused=True)
        for a, b in zip(grads, wanted):
            assert (a is None and b is None) or torch.equal(a, b)
    # The name-based functions give the same numbers.
    assert torch.equal(d_loss(name, real, fake), want_d) and torch.equal(g_loss(name, fake), want_g)


@pytest.mark.parametrize("bad", ["lsgan", "Hinge", "", ["hinge"]])
def test_unknown_names_are_refused_with_the_known_ones(bad):
    with pytest.raises(ValueError, match=r"is not known; choose one of \('hinge', 'ns', 'wasserstein'\)"):
        objective(bad)


def test_the_loss_section_is_checked_by_the_losses():
    check_loss_config(LossConfig())
    check_loss_config(LossConfig(name="wasserstein", gp_weight=10.0))
    with pytest.raises(ConfigError, match=r"^loss.name='lsgan' is not known; choose one of \['hinge', 'ns', 'wasserstein'\]$"):
        check_loss_config(LossConfig(name="lsgan"))
    with pytest.raises(ConfigError, match=r"^loss.gp_weight=-1.0 must be >= 0$"):
        check_loss_config(LossConfig(gp_weight=-1.0))
    with pytest.raises(ConfigError, match=r"^loss.gp_weight=-1.0 must be >= 0$"):  # what load_config reports
        load_config("fmnist32", None, ["loss.gp_weight=-1"])
