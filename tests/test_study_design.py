"""The studies' design: paired arms start from the same weights, data and noise; one extra layer per
arm (in G and in D) with unique labels; the statistics against slow, obvious references (scipy's t
interval, a brute-force enumeration of sign flips, Holm by hand)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from sagan.config import PRESETS, load_config, migrate_model_section
from sagan.models import (
    D_ARCH,
    G_ARCH,
    Discriminator,
    Generator,
    build_models,
    gamma_layers,
)
from sagan.models.arch import d_attention_sizes, g_attention_sizes
from sagan.nn.attention import SelfAttention2d
from sagan.nn.blocks import ResidualBottleneck
from sagan.nn.spectral import spectral_parametrizations
from sagan.study.arms import StudySpec
from sagan.study.results import (
    PRIMARY,
    RunResult,
    compare_arms,
    summarise,
    summary_tables,
)
from sagan.study.stats import (
    ALPHA,
    MIN_SEEDS,
    compare,
    holm,
    sign_flip_p,
    t_interval,
    t_test_p,
    verdict,
)
from sagan.viz.study import plot_differences

SMALL = ["model.g_ch=8", "model.d_ch=8"]


def _models(arm_name: str, kind: str, seed: int = 3, preset: str = "fmnist32"):
    spec = StudySpec(kind=kind, out="x", preset=preset, sets=SMALL, steps=40)
    cfg = spec.config_of(spec.arm(arm_name), seed)
    torch.manual_seed(cfg.train.seed)  # as the trainer does before building
    return build_models(cfg.model, 10, 1), cfg


def _backbone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the model outside the arm's own layers, named as in a model without them (the
    spectral-normalised weights by their stored original; u/v included)."""
    extra = {id(m) for m in model.modules() if isinstance(m, (SelfAttention2d, ResidualBottleneck))}
    inside = {name for name, m in model.named_modules() if id(m) in extra}
    out = {}
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if any(name.startswith(p + ".") for p in inside):
            continue
        out[name.replace(".parametrizations.weight.original", ".weight")] = t.detach()
    return out


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys=None) -> None:
    keys = keys if keys is not None else a.keys()
    assert set(keys) <= set(a) and set(keys) <= set(b)
    for k in keys:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("arm", ["attn8", "attn16", "res16", "attn32"])
def test_attention_arms_share_the_baselines_backbone(arm):
    (g0, d0), _ = _models("none", "attention")
    (g1, d1), _ = _models(arm, "attention")
    for base, other in ((g0, g1), (d0, d1)):
        a, b = _backbone(base), _backbone(other)
        assert set(a) == set(b)  # the arm adds layers and nothing else
        _same(a, b)  # weights, spectral-norm u/v and BN buffers of the backbone: identical
    # The arm's own layers are not a copy of anything: G's attention or bottleneck has weights of its own.
    assert len(gamma_layers(g1, "G")) == 1


def test_an_extra_layer_is_the_same_in_every_arm_that_has_it():
    """Its own stream: seeded by the run's seed and its label, not by what else the arm builds."""
    (g1, _), _ = _models("attn16", "attention")
    torch.manual_seed(3)
    g2 = Generator(32, 8, 128, 10, 1, attn=[8, 16])  # attention at 8 as well
    a, b = g1.blocks[1][1].state_dict(), g2.blocks[1][1].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(4)  # another seed: other weights
    g3 = Generator(32, 8, 128, 10, 1, attn=[16])
    assert not torch.equal(g3.blocks[1][1].f.parametrizations.weight.original, g1.blocks[1][1].f.parametrizations.weight.original)


def test_sn_arms_share_weights_and_d_spectral_vectors():
    (g0, d0), _ = _models("sn-d", "stabilisation")  # no SN on G
    (g1, d1), _ = _models("sn-gd", "stabilisation")
    a, b = _backbone(g0), _backbone(g1)
    _same(a, b, [k for k in a if not k.endswith(("._u", "._v"))])  # G's weights (G of sn-d has no u/v)
    _same(_backbone(d0), _backbone(d1))  # D: weights and u/v
    assert len(spectral_parametrizations(g0)) == 0 < len(spectral_parametrizations(g1))


def test_paired_runs_see_the_same_first_batches_of_data_and_noise(tiny_folder, tmp_path):
    from sagan.data.datasets import load_data
    from sagan.train.resolve import resolve_for_data
    from sagan.train.trainer import Trainer

    def first(arm: str, kind: str):
        spec = StudySpec(kind=kind, out="x", preset="fmnist32", steps=4,
                         sets=[*SMALL, "data.dataset=image_folder", f"data.root={tiny_folder}", "train.batch_size=4"])
        cfg = spec.config_of(spec.arm(arm), 1)
        data = load_data(cfg.data, cfg.model.resolution, cfg.model.conditional, progress=False)
        trainer = Trainer(resolve_for_data(cfg, data, torch.device("cpu"))[0], tmp_path / f"{kind}-{arm}", data,
                          progress=False)
        x, y = trainer._next_batch()
        noise = torch.randn(4, cfg.model.z_dim, generator=trainer.gan.noise)
        return x, y, noise, _backbone(trainer.gan.G), _backbone(trainer.gan.D)

    for kind, arms in (("attention", ("none", "attn16")), ("stabilisation", ("sn-d", "sn-gd"))):
        a, b = first(arms[0], kind), first(arms[1], kind)
        for t, u in zip(a[:3], b[:3]):
            assert torch.equal(t, u)
        if kind == "attention":
            _same(a[3], b[3])
            _same(a[4], b[4])


@pytest.mark.parametrize("resolution", sorted(G_ARCH))
def test_one_layer_per_arm_in_g_and_d_at_every_size(resolution):
    for size in sorted(set(g_attention_sizes(resolution)) | set(d_attention_sizes(resolution))):
        for kw in ({"attn": [size]}, {"attn": [], "resblock": [size]}):
            layers = []
            if size in g_attention_sizes(resolution):
                layers.append(gamma_layers(Generator(resolution, 8, 16, 2, 3, **kw), "G"))
            if size in d_attention_sizes(resolution):
                layers.append(gamma_layers(Discriminator(resolution, 8, 2, 3, **kw), "D"))
            for found in layers:
                assert len(found) == 1, (resolution, size, kw, list(found))
                (label,) = found
                assert label.endswith(f"{'attn' if kw['attn'] else 'res'}{size}")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_attention_arm_of_every_preset_has_one_layer_in_g_and_d(preset):
    sets = [*SMALL, "data.root=/nonexistent"] if PRESETS[preset]().data.dataset == "image_folder" else SMALL
    spec = StudySpec(kind="attention", out="x", preset=preset, sets=sets)
    for arm in spec.arms():
        m = spec.config_of(arm, 0).model
        g, d = build_models(m, 10, 3)
        want_g = len(m.g_attn) + len(m.g_resblock)
        want_d = len(m.d_attn) + len(m.d_resblock)
        labels = list(gamma_layers(g, "G")) + list(gamma_layers(d, "D"))
        assert (len(gamma_layers(g, "G")), len(gamma_layers(d, "D"))) == (want_g, want_d), arm.name
        assert len(set(labels)) == len(labels)


def test_d_at_32px_puts_one_layer_after_its_first_8x8_block_and_old_runs_keep_three():
    assert [s.resolution for s in D_ARCH[32]] == [16, 8, 8, 8]
    d = Discriminator(32, 8, 10, 1, attn=[8])
    assert [len(stage) for stage in d.blocks] == [1, 2, 1, 1] and list(gamma_layers(d, "D")) == ["D.attn8"]
    # A run written before the key existed built one after each 8x8 block: it still loads as it was.
    old = migrate_model_section({"d_attn": [8]})
    assert old["d_extra_layers"] == "every"
    d_old = Discriminator(32, 8, 10, 1, attn=[8], extra_placement=old["d_extra_layers"])
    assert list(gamma_layers(d_old, "D")) == ["D.attn8.b1", "D.attn8.b2", "D.attn8.b3"]  # labels unique
    assert load_config("fmnist32").model.d_extra_layers == "first"


# --------------------------------------------------------------------------- statistics

def test_t_interval_against_scipy_and_the_n_below_4_rule():
    d = np.array([-3.0, -1.5, 0.5, -2.0, -4.0])
    lo, hi = t_interval(d)
    want = scipy_stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))
    assert (lo, hi) == pytest.approx(want, rel=1e-12)
    assert MIN_SEEDS == 4 and t_interval(d[:3]) is None and t_interval(d[:4]) is not None
    assert compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})["ci95"] is None


def _brute_p(d: list[float]) -> float:
    """Every sign pattern, one by one: the share with |mean| at least the observed |mean|."""
    observed = abs(sum(d)) / len(d)
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        hits += abs(sum(s * x for s, x in zip(signs, d))) / len(d) >= observed - 1e-12
    return hits / 2 ** len(d)


@pytest.mark.parametrize("d", [[-3.0, -1.5, 0.5, -2.0, -4.0], [1.0, 2.0, 3.0, 4.0], [0.3, -0.2, 0.1, -0.4, 0.25, 0.05],
                               [2.0, -2.0], [5.0], [1.0, 1.0, -1.0, -1.0, 0.0]])
def test_sign_flip_p_against_brute_force(d):
    assert sign_flip_p(np.array(d)) == pytest.approx(_brute_p(d), abs=1e-15)


def test_sign_flip_p_bounds():
    assert sign_flip_p(np.array([1.0, 2.0, 3.0, 4.0])) == 2 / 16  # all one sign: the smallest p with 4 pairs
    assert sign_flip_p(np.array([])) is None
    rng = np.random.default_rng(0)
    assert 0 < sign_flip_p(rng.normal(size=12)) <= 1


def test_holm_against_a_hand_computation():
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5); monotone; None skipped.
    assert holm([0.03, 0.5, None, 0.01, 0.02]) == pytest.approx([0.06, 0.5, None, 0.04, 0.06])
    assert holm([0.04, 0.03]) == pytest.approx([0.06, 0.06])  # 0.03 x 2 = 0.06, then max(0.06, 0.04)
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []


def test_compare_pairs_by_seed():
    row = compare({0: 10.0, 1: 12.0, 2: 9.0, 3: 11.0, 7: 1.0}, {0: 11.0, 1: 12.5, 2: 10.0, 3: 12.0, 5: 3.0})
    assert row["seeds"] == [0, 1, 2, 3] and row["diffs"] == [-1.0, -0.5, -1.0, -1.0]
    assert row["diff"] == -0.875 and row["p"] == 2 / 16
    lo, hi = row["ci95"]
    assert lo < -0.875 < hi < 0 and math.isclose((lo + hi) / 2, -0.875)


@pytest.mark.parametrize("d", [[-3.0, -1.5, 0.5, -2.0, -4.0], [1.0, 2.0, 3.0, 4.0], [0.3, -0.2, 0.1, -0.4, 0.25, 0.05],
                               [-0.1, 0.2, -0.3, 0.05]])
def test_t_test_p_against_scipy(d):
    want = scipy_stats.ttest_1samp(d, 0.0).pvalue
    assert t_test_p(np.array(d)) == pytest.approx(want, rel=1e-10)


def test_t_test_p_below_4_pairs_and_without_spread():
    assert t_test_p(np.array([1.0, 2.0, 3.0])) is None  # n < 4: like the interval, no p
    assert t_test_p(np.array([0.5, 0.5, 0.5, 0.5])) == 0.0  # all the same, not 0: no spread to doubt it
    assert t_test_p(np.zeros(4)) == 1.0


def test_verdict_rule():
    assert ALPHA == 0.05
    assert verdict(-1.2, 0.049, 4) == "resolved: arm lower"
    assert verdict(0.7, 0.01, 5) == "resolved: arm higher"
    assert verdict(-1.2, 0.05, 4) == "not resolved"  # strictly below ALPHA
    assert verdict(-1.2, None, 3) == verdict(-1.2, 0.001, 3) == "no verdict (n < 4)"


def test_the_primary_verdict_uses_holm_over_the_t_test_p(tmp_path):
    """Four seeds of four attention arms with hand-made endpoints: the primary comparisons get both
    p-values Holm-adjusted across the study's comparisons, and the verdict follows the adjusted t p."""
    spec = StudySpec(kind="attention", out="x", preset="fmnist32", seeds=4, arms_only=["none", "attn8", "attn16", "res16"])
    base = {0: 10.0, 1: 12.0, 2: 11.0, 3: 13.0}
    shift = {"none": [0, 0, 0, 0], "attn8": [-2.0, -2.1, -1.9, -2.05],  # clearly lower every seed
             "attn16": [0.5, -0.4, 0.3, -0.2], "res16": [0.1, 0.2, 0.0, 0.15]}
    runs = [RunResult(arm=a, seed=s, dir="", status="finished", metrics={PRIMARY: base[s] + shift[a][s], "fid": 1.0})
            for a in shift for s in range(4)]
    comparisons = compare_arms(runs, spec, [PRIMARY, "fid"])
    rows = {f"{c['arm']}-{c['reference']}": c["metrics"][PRIMARY] for c in comparisons}
    assert set(rows) == {"attn8-none", "attn16-none", "res16-none", "attn16-res16"}
    want_t = holm([scipy_stats.ttest_1samp(r["diffs"], 0.0).pvalue for r in rows.values()])
    assert [r["p_t_holm"] for r in rows.values()] == pytest.approx(want_t, rel=1e-10)
    assert [r["p_holm"] for r in rows.values()] == pytest.approx(holm([_brute_p(r["diffs"]) for r in rows.values()]))
    assert rows["attn8-none"]["verdict"] == "resolved: arm lower" and rows["attn8-none"]["p_t_holm"] < ALPHA
    assert rows["attn16-none"]["verdict"] == "not resolved"
    assert all(r["p_holm"] >= 0.5 for r in rows.values())  # the exact p cannot decide with 4 seeds
    assert "verdict" not in comparisons[0]["metrics"]["fid"]  # secondary: unadjusted, no verdict
    results = {"features": None, "summary": summarise(runs, list(shift)),
               "comparisons": comparisons, "primary": PRIMARY,
               "arms": [{"name": a, "description": "", "overrides": []} for a in shift]}
    tables = {t["short"]: t for t in summary_tables(results)}
    figure = tmp_path / "differences.png"
    assert plot_differences(comparisons, PRIMARY, figure, "FID")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_pairs = [dict(c, metrics={PRIMARY: dict(c["metrics"][PRIMARY], n=0)}) for c in comparisons]
    assert not plot_differences(no_pairs, PRIMARY, tmp_path / "none.png", "FID") and not (tmp_path / "none.png").exists()
    primary = next(t for t in tables.values() if "verdict" in t["header"])
    assert primary["header"][-5:] == ["t p", "t p (Holm)", "verdict", "exact p", "exact p (Holm)"]
    assert all(len(row) == len(primary["header"]) for row in primary["rows"])
