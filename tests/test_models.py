"""Generator/discriminator: every preset built with its defaults, shapes, parameter counts, spectral
norm of fresh and trained models, weight init, attention biases and configs of older versions."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from sagan.config import (
    PRESETS,
    config_from_dict,
    load_config,
    migrate_model_section,
    preset,
)
from sagan.errors import ConfigError
from sagan.models import (
    D_ARCH,
    G_ARCH,
    Discriminator,
    Generator,
    attention_layers,
    build_models,
    count_parameters,
)
from sagan.nn.attention import SelfAttention2d
from sagan.nn.norm import ConditionalBatchNorm2d
from sagan.nn.spectral import INIT_SCHEMES, sn, spectral_norm_of, sync_spectral_norm
from sagan.runs.checkpoints import architecture_differences

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


@pytest.fixture(scope="module")
def imagenet128_models():
    """Freshly built 128 px models (1000 classes, as in the paper), paper and biggan attention,
    built once for this module: building them is the slow part. Tests only read them (and put
    them in eval mode, where spectral norm's power iteration does not run)."""
    out = {}
    for variant in ("paper", "biggan"):
        m = preset("imagenet128").model
        m.attn_variant = variant
        out[variant] = build_models(m, 1000, 3)
    return out


def test_imagenet128_parameter_counts_match_the_public_reimplementation(imagenet128_models):
    """BigGAN-PyTorch's SAGAN launch script (1000 classes, ch=64, attention at 64 in G and D)
    counts G 42,017,412 and D 39,448,258 parameters; with ``attn_variant=biggan`` we match them
    exactly (spectral-norm u/v vectors are buffers, not parameters, in both).

    The preset's paper attention differs only in its value path: h projects to C/8 channels
    instead of C/2 and v maps C/8 -> C instead of C/2 -> C, so each layer has
    2 * C * (C/2 - C/8) = 3 C^2 / 4 fewer weights: 12,288 in G (C = 2 * 64 at the 64x64 map) and
    3,072 in D (C = 64 there). Neither has biases on its attention convs (the paper's equations
    and the authors' code have none); ``model.attn_bias=true``, the layout of checkpoints from
    earlier versions, adds 3 * C/8 + C bias terms per layer (176 in G, 88 in D).
    """
    g, d = imagenet128_models["paper"]
    gb, db = imagenet128_models["biggan"]
    assert (count_parameters(gb), count_parameters(db)) == (42_017_412, 39_448_258)
    assert count_parameters(gb) - count_parameters(g) == 3 * 128 ** 2 // 4 == 12_288
    assert count_parameters(db) - count_parameters(d) == 3 * 64 ** 2 // 4 == 3_072
    assert (count_parameters(g), count_parameters(d)) == (42_005_124, 39_445_186)
    gbias = Generator(128, 64, 128, 1000, 3, [64], "paper", attn_bias=True)
    assert count_parameters(gbias) - count_parameters(g) == 3 * 16 + 128 == 176
    # D's attention layer alone (its count with biases, without building another 128 px D).
    assert n_params(SelfAttention2d(64, "paper", bias=True)) - n_params(SelfAttention2d(64, "paper")) == 3 * 8 + 64


def _normalised_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if parametrize.is_parametrized(m, "weight")]


def _assert_spectral_norms_are_one(model: nn.Module, tol: float = 1e-3) -> None:
    model.eval()  # the eval-mode forward divides by u^T W v with the stored u, v: no power iteration
    found = _normalised_weights(model)
    assert found
    for name, m in found:
        sigma = float(spectral_norm_of(m))
        assert abs(sigma - 1.0) < tol, f"{name}: largest singular value {sigma:.6g} of the normalised weight"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_fresh_models_have_spectral_norm_one_in_eval_mode(name, imagenet128_models):
    """Regression: spectral norm was registered before init_weights re-initialised the weights,
    so u/v belonged to the old weights and a fresh model in eval mode had normalised weights of
    spectral norm 3.5 to 10^5 (every output pixel saturated). Every preset's G and D as built for
    its data, and the 128 px model with the biggan attention too."""
    if name == "imagenet128":
        models = [*imagenet128_models["paper"], *imagenet128_models["biggan"]]
    else:
        models = list(build_models(preset(name).model, 10, PRESET_CHANNELS[name]))
    for model in models:
        _assert_spectral_norms_are_one(model)


@pytest.mark.parametrize("init", INIT_SCHEMES)
@pytest.mark.parametrize("num_classes", [10, 0], ids=["conditional", "unconditional"])
def test_spectral_norm_is_one_for_every_init_and_attention_layout(init, num_classes):
    torch.manual_seed(0)
    for variant, bias in (("paper", False), ("paper", True), ("biggan", False)):
        m = preset("fmnist32").model
        m.init, m.attn_variant, m.attn_bias, m.g_attn, m.d_attn = init, variant, bias, [16, 32], [16]
        for model in build_models(m, num_classes, 1):
            _assert_spectral_norms_are_one(model)


def test_spectral_norm_of_is_the_matrix_2_norm():
    """The fast (Gram-matrix) spectral norm used by the checks above agrees with matrix_norm(ord=2)."""
    torch.manual_seed(0)
    g, d = build_models(preset("fmnist32").model, 10, 1)
    layers = [m for model in (g.eval(), d.eval()) for _, m in _normalised_weights(model)]
    layers += [nn.Linear(7, 300), nn.Linear(300, 7), nn.Conv2d(5, 3, 3)]  # tall, wide, unnormalised
    for m in layers:
        w = m.weight.detach()
        exact = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1).double(), ord=2)
        torch.testing.assert_close(spectral_norm_of(m), exact, rtol=1e-10, atol=0)


def test_stale_power_iteration_vectors_are_what_sync_fixes():
    """Re-initialising a normalised weight in place leaves u/v stale (the bug); sync_spectral_norm
    sets them to the top singular pair, without touching buffer names or the state-dict layout."""
    torch.manual_seed(0)
    layer = sn(nn.Conv2d(16, 32, 3))
    keys = list(layer.state_dict())
    nn.init.orthogonal_(layer.parametrizations.weight.original)
    layer.eval()
    assert abs(float(spectral_norm_of(layer)) - 1.0) > 0.5  # stale u/v: far from 1
    sync_spectral_norm(layer)
    assert abs(float(spectral_norm_of(layer)) - 1.0) < 1e-5
    assert list(layer.state_dict()) == keys
    p = layer.parametrizations.weight[0]
    u, v = p._u, p._v
    w = p._reshape_weight_to_matrix(layer.parametrizations.weight.original.detach())
    torch.testing.assert_close(torch.linalg.vector_norm(u), torch.tensor(1.0))
    torch.testing.assert_close(w @ v, torch.linalg.matrix_norm(w.double(), ord=2).float() * u, rtol=1e-4, atol=1e-5)


def test_training_mode_still_runs_one_power_iteration_per_forward():
    """Unchanged by the fix: each training-mode forward does exactly one power iteration
    (u <- normalize(W v), v <- normalize(W^T u)) and divides by u^T W v with the new u, v."""
    torch.manual_seed(0)
    g, d = build_models(preset("fmnist32").model, 10, 1)
    for model, inputs in ((g, (torch.randn(4, 128), torch.randint(0, 10, (4,)))),
                          (d, (torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))))):
        expected = {}
        with torch.no_grad():
            for name, m in _normalised_weights(model):
                p = m.parametrizations.weight[0]
                assert p.n_power_iterations == 1
                # Start away from the fixed point so that one iteration and two are told apart.
                p._u.copy_(F.normalize(torch.randn_like(p._u), dim=0))
                p._v.copy_(F.normalize(torch.randn_like(p._v), dim=0))
                w = p._reshape_weight_to_matrix(m.parametrizations.weight.original)
                u = F.normalize(w @ p._v, dim=0, eps=p.eps)
                v = F.normalize(w.T @ u, dim=0, eps=p.eps)
                expected[name] = (u, v, m.parametrizations.weight.original / torch.dot(u, w @ v))
        model.train()
        with torch.no_grad():
            model(*inputs)
        for name, m in _normalised_weights(model):
            p = m.parametrizations.weight[0]
            u, v, w_sn = expected[name]
            torch.testing.assert_close(p._u, u, msg=name)
            torch.testing.assert_close(p._v, v, msg=name)
            model.eval()
            torch.testing.assert_close(m.weight, w_sn, msg=name)
            model.train()


# --------------------------------------------------------------------------- weight init

def _initialised_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every conv/linear/embedding weight init_weights sets (the stored, un-normalised one),
    CBN tables excluded."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) and not name.endswith((".gain", ".bias")):
            w = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            out[name] = w.detach()
    return out


def _fmnist_models(init: str, use_sn: bool = True):
    torch.manual_seed(0)
    m = preset("fmnist32").model
    m.init, m.g_sn, m.d_sn = init, use_sn, use_sn
    return build_models(m, 10, 1)


@pytest.mark.parametrize("use_sn", [True, False], ids=["sn", "no_sn"])
def test_ortho_init_gives_orthonormal_rows_or_columns(use_sn):
    g, d = _fmnist_models("ortho", use_sn)
    weights = {**{f"G.{k}": w for k, w in _initialised_weights(g).items()},
               **{f"D.{k}": w for k, w in _initialised_weights(d).items()}}
    assert "D.embed" in weights  # the projection embedding is covered
    for name, w in weights.items():
        mat = w.reshape(w.shape[0], -1).double()
        gram = mat @ mat.T if mat.shape[0] <= mat.shape[1] else mat.T @ mat
        torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=gram.dtype), atol=1e-5, rtol=0, msg=name)


def _mean_square_bound(n: int, fourth_over_second_sq: float, sigmas: float = 6.0) -> float:
    """Bound on |mean(x^2) / E[x^2] - 1| for n i.i.d. zero-mean draws.

    mean(x^2) has variance Var(x^2) / n = (E[x^4] - E[x^2]^2) / n, so its relative standard
    error is sqrt((E[x^4] / E[x^2]^2 - 1) / n): sqrt(0.8 / n) for a uniform distribution
    (E[x^4] / E[x^2]^2 = 9/5) and sqrt(2 / n) for a normal one (= 3). The bound is 6 standard
    errors (a correct init fails with probability ~1e-9 per weight in the normal approximation;
    the seeds are fixed anyway). Per weight it is loose for the smallest ones (n = 64: +-65% for
    uniform), so each test also pools all weights (n > 10^5: +-1%).
    """
    return sigmas * math.sqrt((fourth_over_second_sq - 1) / n)


def test_xavier_init_matches_glorot_uniform():
    """xavier_uniform (gain 1): U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), variance
    a^2 / 3 = 2 / (fan_in + fan_out); fans of a conv include its kernel area."""
    g, d = _fmnist_models("xavier")
    weights = {**{f"G.{k}": w for k, w in _initialised_weights(g).items()},
               **{f"D.{k}": w for k, w in _initialised_weights(d).items()}}
    assert "D.embed" in weights
    standardised = []
    for name, w in weights.items():
        receptive = w[0][0].numel() if w.dim() > 2 else 1
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        var = 2.0 / (fan_in + fan_out)
        a = math.sqrt(3 * var)
        assert float(w.abs().max()) <= a, name  # uniform, not normal: bounded support
        rel = float(w.double().square().mean()) / var - 1
        assert abs(rel) < _mean_square_bound(w.numel(), 9 / 5), (name, rel)
        standardised.append(w.flatten().double() / math.sqrt(var))
    pooled = torch.cat(standardised)  # U(-sqrt(3), sqrt(3)): mean square 1
    assert abs(float(pooled.square().mean()) - 1) < _mean_square_bound(pooled.numel(), 9 / 5) < 0.01


def test_normal_init_is_n_0_002():
    g, d = _fmnist_models("normal")
    weights = {**{f"G.{k}": w for k, w in _initialised_weights(g).items()},
               **{f"D.{k}": w for k, w in _initialised_weights(d).items()}}
    assert "D.embed" in weights
    for name, w in weights.items():
        rel = float(w.double().square().mean()) / 0.02 ** 2 - 1
        assert abs(rel) < _mean_square_bound(w.numel(), 3.0), (name, rel)
    pooled = torch.cat([w.flatten() for w in weights.values()]).double()
    assert abs(float(pooled.square().mean()) / 0.02 ** 2 - 1) < _mean_square_bound(pooled.numel(), 3.0) < 0.02
    assert abs(float(pooled.mean())) < 6 * 0.02 / math.sqrt(pooled.numel())


@pytest.mark.parametrize("init", INIT_SCHEMES)
def test_init_zeroes_biases_and_leaves_cbn_tables_at_zero(init):
    g, d = _fmnist_models(init)
    for model in (g, d):
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0, name
            if isinstance(m, ConditionalBatchNorm2d):  # every class starts as plain BN
                assert torch.count_nonzero(m.gain.weight) == 0 and torch.count_nonzero(m.bias.weight) == 0, name
    # The embedding is really re-initialised, not left at nn.Embedding's N(0, 1).
    assert float(d.embed.parametrizations.weight.original.detach().std()) < 0.5


def test_init_is_validated():
    with pytest.raises(ValueError, match="choose one of"):
        Generator(32, 8, 16, 0, 3, [], init="kaiming")
    with pytest.raises(ConfigError, match="model.init"):
        load_config("fmnist32", overrides=["model.init=kaiming"])
    assert load_config("fmnist32", overrides=["model.init=xavier"]).model.init == "xavier"
    assert preset("fmnist32").model.init == "ortho"  # the default, see docs/models.md


# --------------------------------------------------------------------------- attention biases, old configs

def test_new_models_have_no_attention_biases():
    for variant in ("paper", "biggan"):
        m = preset("fmnist32").model
        m.attn_variant = variant
        for model in build_models(m, 10, 1):
            layers = [x for x in model.modules() if isinstance(x, SelfAttention2d)]
            assert layers
            for layer in layers:
                for conv in (layer.f, layer.g, layer.h, layer.v):
                    assert conv.bias is None


def _old_style_config(variant: str = "paper") -> dict:
    """A resolved config as earlier versions wrote it (config.yaml, a checkpoint's "config"):
    complete, but without model.attn_bias and model.init."""
    data = preset("fmnist32").to_dict()
    del data["model"]["attn_bias"], data["model"]["init"]
    data["model"]["attn_variant"] = variant
    return data


def test_old_configs_mean_what_they_meant():
    old = _old_style_config()
    cfg = config_from_dict(copy.deepcopy(old))
    assert cfg.model.attn_bias is True and cfg.model.init == "ortho"
    assert config_from_dict(_old_style_config("biggan")).model.attn_bias is False  # biggan never had biases
    assert config_from_dict(preset("fmnist32").to_dict()).model.attn_bias is False  # new configs: as written
    assert migrate_model_section(old["model"]) is not old["model"] and "attn_bias" not in old["model"]
    assert migrate_model_section("not a mapping") == "not a mapping"


def test_old_checkpoint_state_loads_into_a_model_built_from_its_config():
    """A state dict with attention biases (the old layout) loads, strictly, into the models built
    from an old-style config dict lacking model.attn_bias, and the checkpoint compares equal to
    the run's model config."""
    torch.manual_seed(0)
    m = preset("fmnist32").model
    m.attn_bias = True
    old_g, old_d = build_models(m, 10, 1)
    assert any(k.endswith(".g.bias") for k in old_g.state_dict())
    old = _old_style_config()
    state = {"config": old, "data": {"num_classes": 10, "channels": 1},
             "G": old_g.state_dict(), "D": old_d.state_dict(), "G_ema": old_g.state_dict()}
    cfg = config_from_dict(old)
    g, d = build_models(cfg.model, 10, 1)
    g.load_state_dict(state["G"])
    d.load_state_dict(state["D"])
    assert architecture_differences(state, cfg.to_dict()["model"], state["data"], {"G": g, "D": d, "G_ema": g}) == []
    # A run with today's default (no biases) is told apart, by config and by state-dict keys.
    new_g, new_d = build_models(preset("fmnist32").model, 10, 1)
    diffs = architecture_differences(state, preset("fmnist32").to_dict()["model"], state["data"], {"G": new_g})
    assert "model.attn_bias: checkpoint True, this run False" in diffs
    assert any("in the checkpoint but not in this model" in x for x in diffs)


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


def test_gamma_is_one_scalar_per_layer(imagenet128_models):
    for model in imagenet128_models["paper"]:
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
