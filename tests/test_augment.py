"""DiffAugment and random flips: each operation against a slow per-image reference, the identity
when off, gradients reaching G through it, and the config's checks."""
from __future__ import annotations

import pytest
import torch

from sagan.config import load_config
from sagan.data.augment import (
    NUMBERS,
    OPS,
    color,
    cutout,
    diff_augment,
    random_hflip,
    resolve_policy,
    translation,
)
from sagan.errors import ConfigError


def _x(n: int = 4, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(n, c, h, w, dtype=torch.double)


def test_translation_matches_a_per_image_shift_with_zero_fill():
    x = _x(h=8, w=6)
    u = torch.tensor([[0.0, 0.99], [0.5, 0.5], [0.99, 0.0], [0.3, 0.8]], dtype=torch.double)
    out = translation(x, u)
    sh, sw = 1, 1  # round(8 / 8), round(6 / 8)
    for b in range(4):
        tx = min(int(u[b, 0] * (2 * sh + 1)), 2 * sh) - sh
        ty = min(int(u[b, 1] * (2 * sw + 1)), 2 * sw) - sw
        ref = torch.zeros_like(x[b])
        for i in range(8):
            for j in range(6):
                if 0 <= i + tx < 8 and 0 <= j + ty < 6:
                    ref[:, i, j] = x[b, :, i + tx, j + ty]
        torch.testing.assert_close(out[b], ref, rtol=0, atol=0)
    assert torch.equal(out[1], x[1])  # u = 0.5: the middle offset, no shift


def test_cutout_zeroes_one_half_size_square_per_image():
    x = _x(h=8, w=8)
    u = torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.99, 0.2], [0.7, 0.99]], dtype=torch.double)
    out = cutout(x, u)
    size = 4
    for b in range(4):
        cx = min(int(u[b, 0] * 9), 8)  # centres 0..8 (size even: one past the edge allowed)
        cy = min(int(u[b, 1] * 9), 8)
        ref = x[b].clone()
        for i in range(8):
            for j in range(8):
                if cx - size // 2 <= i < cx - size // 2 + size and cy - size // 2 <= j < cy - size // 2 + size:
                    ref[:, i, j] = 0
        torch.testing.assert_close(out[b], ref, rtol=0, atol=0)


def test_color_matches_the_formulas():
    x = _x()
    u = torch.rand(4, 3, dtype=torch.double)
    out = color(x, u)
    for b in range(4):
        y = x[b] + (u[b, 0] - 0.5)
        y = (y - y.mean(0, keepdim=True)) * (2 * u[b, 1]) + y.mean(0, keepdim=True)
        y = (y - y.mean()) * (u[b, 2] + 0.5) + y.mean()
        torch.testing.assert_close(out[b], y)


def test_empty_policy_is_the_identity_and_draws_nothing():
    x = _x()
    calls = []
    assert diff_augment(x, [], lambda k: calls.append(k)) is x and calls == []


def test_policy_draws_its_numbers_once_and_applies_in_order():
    x = _x()
    u = torch.rand(4, 7, dtype=torch.double)
    calls = []

    def draw(k):
        calls.append(k)
        return u[:, :k]
    out = diff_augment(x, list(OPS), draw)
    assert calls == [sum(NUMBERS.values())]
    torch.testing.assert_close(out, cutout(translation(color(x, u[:, :3]), u[:, 3:5]), u[:, 5:7]))


@pytest.mark.parametrize("op", OPS)
def test_gradients_flow_through_every_operation(op):
    x = _x().requires_grad_(True)
    u = torch.full((4, 3), 0.3, dtype=torch.double)
    y = diff_augment(x, [op], lambda k: u[:, :k])
    (g,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), [x])
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, [op], lambda k: u[:, :k]), (x[:1].detach().requires_grad_(),))


def test_hflip_flips_the_images_drawn_below_one_half():
    x = _x()
    u = torch.tensor([[0.1], [0.9], [0.49], [0.5]])
    out = random_hflip(x, lambda k: u)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    assert torch.equal(out[2], x[2].flip(-1)) and torch.equal(out[3], x[3])


def test_the_generator_learns_through_the_augmentation():
    """With DiffAugment on, G's loss depends on G through the augmented images: G gets gradients,
    and they differ from those without augmentation (same weights, same noise)."""
    from sagan import distributed as dist_utils
    from sagan.models import build_models
    from sagan.train.step import SAGANStep

    grads = {}
    for policy in ([], ["color", "translation", "cutout"]):
        cfg = load_config(None, None, ["model.g_ch=8", "model.d_ch=8", "train.batch_size=4",
                                       f"data.diffaugment=[{','.join(policy)}]"])
        torch.manual_seed(0)
        g, d = build_models(cfg.model, 10, 1)
        step = SAGANStep(cfg, g, d, torch.device("cpu"), dist_utils.DistInfo(), lambda: None, 10)
        step.opt_g.step = lambda *a, **k: None  # keep the weights: only the gradients are compared
        step.g_step()
        grads[bool(policy)] = torch.cat([p.grad.flatten() for p in g.parameters() if p.grad is not None])
    assert grads[True].abs().sum() > 0 and torch.isfinite(grads[True]).all()
    assert not torch.allclose(grads[True], grads[False])


def test_policy_is_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"'colour' is unknown or repeated; choose auto, or from \['color', 'translation', 'cutout'\]"):
        load_config(None, None, ["data.diffaugment=[colour]"])
    with pytest.raises(ConfigError, match="'cutout' is unknown or repeated"):
        load_config(None, None, ["data.diffaugment=[cutout,cutout]"])
    with pytest.raises(ConfigError, match=r"data.diffaugment='color': give auto or a list of operations, e.g. \[color\]"):
        load_config(None, None, ["data.diffaugment=color"])
    assert load_config(None, None, []).data.diffaugment == "auto" and load_config(None, None, []).data.hflip is False


def test_auto_follows_the_measured_boundary(monkeypatch):
    import sagan.data.augment as augment
    full = ["color", "translation", "cutout"]
    assert augment.AUTO_MAX_IMAGES is None  # the A/Bs found no folder size where it helps (docs/experiments.md)
    for n in (10, 500, 2000, 100_000):
        policy, note = resolve_policy("auto", "image_folder", n)
        assert policy == [] and f"no DiffAugment for {n} images" in note and "[color, translation, cutout]" in note
    monkeypatch.setattr(augment, "AUTO_MAX_IMAGES", 1000)  # where a measurement sets a boundary
    policy, note = resolve_policy("auto", "image_folder", 999)
    assert policy == full and "999 images (fewer than 1000)" in note
    assert resolve_policy("auto", "image_folder", 1000)[0] == []
    assert resolve_policy("auto", "fashion_mnist", 100) == ([], None)  # built-in data sets: off, silently
    assert resolve_policy("auto", "cifar10", 100) == ([], None)
    assert resolve_policy([], "image_folder", 10) == ([], None)  # an explicit choice is kept, small folder or not
    assert resolve_policy(["cutout"], "fashion_mnist", 10) == (["cutout"], None)
    with pytest.raises(ValueError, match="must be resolved"):
        diff_augment(torch.zeros(1, 1, 4, 4), "auto", lambda k: torch.zeros(1, k))
