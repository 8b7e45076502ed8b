"""Batch-norm statistics that belong to the weights and the noise they sample with.

Standing statistics (``sagan.models.standing``) against a slow reference; the EMA generator's own
buffers during training; truncation through the inverse CDF; and what both do to the shipped model.
"""
from __future__ import annotations

import math

import pytest
import torch

from sagan.models import Generator
from sagan.models.standing import (
    batch_norms,
    bn_state,
    standing_statistics,
    statistics_for_truncation,
    truncated_normal,
)
from sagan.train.ema import EMA


def small_generator(num_classes: int = 3, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    g = Generator(resolution=32, ch=8, z_dim=16, num_classes=num_classes, img_channels=1, attn=[16])
    # Move the weights away from their init so the statistics are not trivial.
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return g.eval()


def reference_statistics(g: Generator, batches: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """The slow, obvious version: run the same batches with the batch norms normalising by their
    batch statistics, capture every batch norm's input, and average its per-channel mean and
    unbiased variance over the batches by hand, in float64."""
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, list[torch.Tensor]] = {}
    names = {id(m): n for n, m in g.named_modules()}
    captured: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: captured.append((names[id(m)], args[0].detach())))
             for m in batch_norms(g)]
    for m in batch_norms(g):
        m.train()
    try:
        with torch.no_grad():
            for b in range(batches):
                z = torch.randn(batch_size, g.z_dim, generator=gen)
                y = torch.arange(b * batch_size, (b + 1) * batch_size) % g.num_classes if g.num_classes else None
                captured.clear()
                g(z, y)
                for name, x in captured:
                    x = x.double()
                    mean = x.mean(dim=(0, 2, 3))
                    n = x.numel() // x.shape[1]
                    var = ((x - mean[None, :, None, None]) ** 2).sum(dim=(0, 2, 3)) / (n - 1)
                    acc = sums.setdefault(name, [torch.zeros_like(mean), torch.zeros_like(var)])
                    acc[0] += mean / batches
                    acc[1] += var / batches
    finally:
        for h in hooks:
            h.remove()
        g.eval()
    return {f"{k}.running_mean": v[0] for k, v in sums.items()} | {f"{k}.running_var": v[1] for k, v in sums.items()}


@pytest.mark.parametrize("num_classes", [3, 0])
def test_standing_statistics_equal_a_slow_reference(num_classes):
    g = small_generator(num_classes)
    ref = reference_statistics(small_generator(num_classes), batches=3, batch_size=8, seed=5)
    spectral_before = {k: v.clone() for k, v in g.state_dict().items() if k.endswith(("._u", "._v"))}
    standing_statistics(g, batches=3, batch_size=8, seed=5)
    got = g.state_dict()
    assert len(ref) == 2 * len(batch_norms(g)) and len(ref) > 4
    for key, expected in ref.items():
        # float32 cumulative averages of 3 batches against a float64 average: rounding of a few ulps.
        torch.testing.assert_close(got[key].double(), expected, rtol=1e-5, atol=1e-6, msg=key)
    for m in batch_norms(g):
        assert int(m.num_batches_tracked) == 3 and m.momentum == 0.1 and not m.training
    assert not any(m.training for m in g.modules())  # the modes are as they were
    for k, v in spectral_before.items():  # spectral-norm vectors are not touched
        assert torch.equal(got[k], v), k


def test_standing_statistics_are_a_function_of_weights_and_seed():
    g = small_generator()
    standing_statistics(g, batches=2, batch_size=8, seed=1)
    first = bn_state(g)
    with torch.no_grad():  # scramble the statistics: they are recomputed from nothing
        for m in batch_norms(g):
            m.running_mean.normal_()
            m.running_var.uniform_(1, 5)
    standing_statistics(g, batches=2, batch_size=8, seed=1)
    assert all(torch.equal(first[k], v) for k, v in bn_state(g).items())
    standing_statistics(g, batches=2, batch_size=8, seed=2)
    assert not all(torch.equal(first[k], v) for k, v in bn_state(g).items())


def test_statistics_for_truncation_are_measured_under_psi_and_put_back():
    g = small_generator()
    standing_statistics(g, batches=2, batch_size=16)
    before = bn_state(g)
    with statistics_for_truncation(g, 0.5, batches=2, batch_size=16):
        during = bn_state(g)
    assert all(torch.equal(before[k], v) for k, v in bn_state(g).items())
    assert any(not torch.equal(before[k], during[k]) for k in before if k.endswith("running_var"))
    with statistics_for_truncation(g, None):
        assert all(torch.equal(before[k], v) for k, v in bn_state(g).items())
    with statistics_for_truncation(g, math.inf):
        assert all(torch.equal(before[k], v) for k, v in bn_state(g).items())


def test_truncated_normal_is_the_conditioned_normal_at_any_psi():
    gen = torch.Generator().manual_seed(0)
    for psi in (0.25, 1.0, 2.0):
        z = truncated_normal((200_000,), psi, gen)
        assert z.dtype == torch.float32 and z.abs().max() <= psi
        # The variance of N(0, 1) conditioned on |z| <= t: 1 - 2 t phi(t) / (2 Phi(t) - 1).
        phi = math.exp(-psi * psi / 2) / math.sqrt(2 * math.pi)
        var = 1 - 2 * psi * phi / math.erf(psi / math.sqrt(2))
        se = var * math.sqrt(2 / 200_000) * 2  # generous standard error of a sample variance
        assert abs(float(z.var()) - var) < 5 * se, (psi, float(z.var()), var)
        assert abs(float(z.mean())) < 5 * math.sqrt(var / 200_000)
    assert torch.equal(truncated_normal((3, 4), 0.0, gen), torch.zeros(3, 4))
    a = truncated_normal((5,), math.inf, torch.Generator().manual_seed(3))
    assert torch.equal(a, torch.randn(5, generator=torch.Generator().manual_seed(3)))
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            truncated_normal((2,), bad, gen)


def test_truncated_normal_costs_the_same_for_every_psi():
    """Rejection sampling redrew without bound (1e-300 never returned); the inverse CDF draws once.
    Counted in random draws, not seconds: the generator's state advances by exactly one draw per value."""
    for psi in (1e-300, 1e-5, 3.0):
        gen = torch.Generator().manual_seed(0)
        z = truncated_normal((1000, 128), psi, gen)
        assert torch.isfinite(z).all() and z.abs().max() <= psi
        after = gen.get_state()
        ref = torch.Generator().manual_seed(0)
        torch.rand((1000, 128), generator=ref, dtype=torch.float64)
        assert torch.equal(after, ref.get_state()), psi


def test_ema_keeps_its_own_spectral_vectors_and_statistics():
    """Each update runs one power iteration on the *shadow's* weights, checked against the same
    iteration written out by hand (u = W v / |W v|, then v = W^T u / |W^T u|) in float64."""
    g = small_generator()
    ema = EMA(g, decay=0.5, warmup=False)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.3 * torch.randn_like(p))
    shadow = ema.shadow
    sn_layers = [(n, m, m.parametrizations.weight[0]) for n, m in shadow.named_modules()
                 if hasattr(m, "parametrizations") and hasattr(m.parametrizations.weight[0], "_u")]
    ref = {n: (p._u.double().clone(), p._v.double().clone()) for n, _, p in sn_layers}
    for step in range(20):
        ema.update(g, step)
        for n, m, p in sn_layers:
            w = p._reshape_weight_to_matrix(m.parametrizations.weight.original.detach()).double()
            u, v = ref[n]
            u = w @ v
            u = u / u.norm().clamp_min(1e-12)
            v = w.T @ u
            v = v / v.norm().clamp_min(1e-12)
            ref[n] = (u, v)
    g_u = {n: p._u for n, m, p in ((n, m, m.parametrizations.weight[0]) for n, m in g.named_modules()
                                   if hasattr(m, "parametrizations") and hasattr(m.parametrizations.weight[0], "_u"))}
    moved = 0
    for n, _, p in sn_layers:
        # 20 float32 iterations against float64 ones: rounding only.
        torch.testing.assert_close(p._u.double(), ref[n][0], rtol=0, atol=1e-4, msg=n)
        torch.testing.assert_close(p._v.double(), ref[n][1], rtol=0, atol=1e-4, msg=n)
        moved += not torch.allclose(p._u, g_u[n], atol=1e-3)  # not G's vectors (G ran no forward)
    assert moved > 0
    # BN statistics are not copied from G in the default mode; refresh_bn makes them the shadow's own.
    g_bn = bn_state(g)
    assert ema.refresh_bn(step=59) and not ema.refresh_bn(step=59)  # computed once per step
    assert any(not torch.equal(g_bn[k], v) for k, v in bn_state(shadow).items() if k.endswith("running_mean"))
    ema_copy = EMA(g, decay=0.5, bn="copy")
    ema_copy.update(g, 0)
    assert all(torch.equal(g_bn[k], v) for k, v in bn_state(ema_copy.shadow).items())
    assert not ema_copy.refresh_bn(step=0)


def test_training_saves_the_ema_generator_with_its_own_statistics(tiny_run):
    from sagan.runs.checkpoints import load_checkpoint, resolve_checkpoint
    state = load_checkpoint(resolve_checkpoint(tiny_run), map_location="cpu")
    assert state["G_ema_bn"]["mode"] == "standing"
    g_keys = [k for k in state["G"] if k.endswith("running_mean")]
    assert g_keys and any(not torch.equal(state["G"][k], state["G_ema"][k]) for k in g_keys)
    assert all(int(state["G_ema"][k.replace("running_mean", "num_batches_tracked")]) == state["G_ema_bn"]["batches"]
               for k in g_keys)


# --------------------------------------------------------------------------- the shipped model

def class_accuracy_and_mean_pixel(g: Generator, psi: float | None, n: int = 2000) -> tuple[float, float]:
    from sagan import generate
    from sagan.data.datasets import to_uint8
    from sagan.metrics.classifier import accuracy, load_classifier
    images, labels = generate(g, n, seed=0, truncation=psi)
    images = to_uint8(images)
    return accuracy(load_classifier(), images, labels), float(images.float().mean())


@pytest.mark.heavy  # samples and scores the shipped model at several truncations: about a minute
def test_truncation_trades_variety_for_fidelity_on_the_shipped_model():
    """With statistics measured under psi, a milder psi raises class accuracy and no psi darkens the
    images (with the statistics of untruncated noise, psi 1 gave 0.545 and mean pixel 31; psi 0, 7).
    psi 1, not 0.5: with its own statistics the model's accuracy at 0.5 equals that without
    truncation (0.929 both on 5000 samples, docs/sampling.md), too close to test on 2000; at 1 it
    is 0.946 against 0.929."""
    g = Generator.from_pretrained("fmnist32")
    acc_inf, pixel_inf = class_accuracy_and_mean_pixel(g, None)
    acc_one, _ = class_accuracy_and_mean_pixel(g, 1.0)
    acc_half, pixel_half = class_accuracy_and_mean_pixel(g, 0.5)
    _, pixel_zero = class_accuracy_and_mean_pixel(g, 0.0)
    assert acc_one >= acc_inf, (acc_one, acc_inf)
    assert acc_half >= 0.9, acc_half
    for pixel in (pixel_half, pixel_zero):
        assert abs(pixel - pixel_inf) <= 0.2 * pixel_inf, (pixel, pixel_inf)


def test_an_old_export_gets_statistics_for_its_own_weights(tmp_path):
    """An export written before standing statistics (no record) is made consistent at load."""
    import json
    import shutil

    from sagan.models.export import PRETRAINED_DIR
    folder = tmp_path / "old"
    shutil.copytree(PRETRAINED_DIR / "fmnist32", folder)
    config = json.loads((folder / "config.json").read_text())
    config["sagan"].pop("bn_statistics", None)
    (folder / "config.json").write_text(json.dumps(config))
    g = Generator.from_pretrained(folder)
    record = g._hub_mixin_config["sagan"]["bn_statistics"]
    assert record["mode"] == "standing" and record["recomputed_at_load"]
    shipped = Generator.from_pretrained("fmnist32")
    assert shipped._hub_mixin_config["sagan"]["bn_statistics"]["mode"] == "standing"
    # the shipped model's statistics are its standing statistics: recomputing gives the same
    for k, v in bn_state(g).items():
        torch.testing.assert_close(v.float(), bn_state(shipped)[k].float(), rtol=1e-4, atol=1e-5)
