"""Precision, memory-format and compile options against the plain path (CPU).

Tolerances: channels_last and compile change only the order of floating-point operations. Those
equivalences run in float64 (``torch.set_default_dtype``), where reordering a reduction of n
terms moves it by at most ~n * 2^-53 relative to the sum of magnitudes (< 1e-11 here), so
1e-9 holds on every CPU whatever kernels oneDNN picks. In float32 they would not be a sound
test: Adam's first update is lr * sign(g), so a gradient whose sign is rounding noise moves a
parameter by 2 * lr between two runs. bf16 autocast rounds every matmul/conv input to 8 bits of
mantissa, so its outputs agree with fp32 to a few 1e-2.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sagan.nn.attention import SelfAttention2d, recording_attention


def _data():
    from sagan.data.datasets import ImageData
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageData("tiny", "random", 4, 3, 32, [f"c{i}" for i in range(4)], images, torch.arange(16) % 4)


def _trainer(tmp: Path, *overrides: str):
    from sagan.config import load_config
    from sagan.train.resolve import resolve_for_data
    from sagan.train.trainer import Trainer
    cfg = load_config("fmnist32", None, ["model.g_ch=8", "model.d_ch=8", "train.batch_size=8", "train.device=cpu",
                                         "train.log_every=1000", *overrides])
    data = _data()
    return Trainer(resolve_for_data(cfg, data, torch.device("cpu"))[0], tmp, data, progress=False)


def _run(tmp: Path, steps: int, *overrides: str, dtype: torch.dtype = torch.float32):
    """``steps`` training steps with ``dtype`` as torch's default floating dtype (restored after)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        tr = _trainer(tmp, *overrides)
        stats = [tr.train_step() for _ in range(steps)]
    finally:
        torch.set_default_dtype(default)
    if tr.logger is not None:
        tr.logger.close()
    return tr, stats


REL64 = 1e-9  # see the module docstring
# The G biases that feed a batch norm have a true gradient of 0; Adam turns their rounding-noise
# gradient into a step of up to ~1.4 * lr (beta1 = 0) in either direction, so two runs can differ
# there by ~2.8 * lr per step after the first. The BN running means absorb that shift at momentum
# 0.1: after 2 steps they differ by at most 0.1 * 2 * 1.4 * lr_g = 2.8e-5 (lr_g = 1e-4).
RUNNING_MEAN_ATOL = 1e-4


def _assert_same_run(a, b, rtol: float, atol: float) -> None:
    (tr_a, st_a), (tr_b, st_b) = a, b
    for x, y in zip(st_a, st_b):
        for k in ("loss_d", "loss_g", "d_real", "d_fake"):
            assert getattr(x, k) == pytest.approx(getattr(y, k), rel=rtol, abs=atol), k
    for name in ("G", "D"):
        sa, sb = getattr(tr_a.gan, name).state_dict(), getattr(tr_b.gan, name).state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            if name == "G" and key.endswith(".bias") and "bn" not in key:
                # Every conv/linear bias in G feeds a batch norm, which removes it: its true gradient is 0 and
                # what it gets is rounding noise, which Adam's first steps scale up to +-lr.
                continue
            tol = (rtol, max(atol, RUNNING_MEAN_ATOL)) if name == "G" and "running_mean" in key else (rtol, atol)
            torch.testing.assert_close(sa[key].float(), sb[key].float(), rtol=tol[0], atol=tol[1], msg=f"{name}.{key}")


@pytest.fixture(scope="module")
def eager_run(tmp_path_factory):
    """The plain fp32 reference (contiguous, not compiled): 2 steps, shared by the tests below."""
    return _run(tmp_path_factory.mktemp("eager"), 2, "train.channels_last=false")


@pytest.fixture(scope="module")
def eager_run64(tmp_path_factory):
    """The same reference in float64, for the equivalences that only reorder operations."""
    return _run(tmp_path_factory.mktemp("eager64"), 2, "train.channels_last=false", dtype=torch.float64)


def test_channels_last_training_matches_contiguous(tmp_path, eager_run64):
    plain = eager_run64
    w = plain[0].gan.D.blocks[0][0].conv1.parametrizations.weight.original
    assert w.is_contiguous() and not w.is_contiguous(memory_format=torch.channels_last)  # really contiguous
    cl = _run(tmp_path / "b", 2, "train.channels_last=true", dtype=torch.float64)
    w = cl[0].gan.D.blocks[0][0].conv1.parametrizations.weight.original
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert w.dtype == torch.float64
    _assert_same_run(plain, cl, rtol=REL64, atol=REL64)


def test_bf16_autocast_keeps_spectral_norm_and_softmax_in_fp32():
    from sagan.models import Discriminator, Generator
    torch.manual_seed(0)
    g = Generator(32, 8, 16, 4, 3, [16])
    d = Discriminator(32, 8, 4, 3, [16])
    z, y = torch.randn(4, 16), torch.arange(4)
    ref_g = Generator(32, 8, 16, 4, 3, [16])
    ref_g.load_state_dict(g.state_dict())
    with torch.no_grad():
        expected = ref_g(z, y)
    with torch.autocast("cpu", dtype=torch.bfloat16), recording_attention(g) as layers:
        out = g(z, y)
        score = d(out, y)
    assert out.dtype == torch.bfloat16 and torch.isfinite(score).all()  # autocast is really on
    for model in (g, d):
        for m in model.modules():
            if hasattr(m, "parametrizations"):
                sn = m.parametrizations.weight[0]
                assert sn._u.dtype == torch.float32 and sn._v.dtype == torch.float32
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    assert m.weight.dtype == torch.float32  # normalised weight (power iteration, sigma)
    # the explicit path's softmax ran in fp32: fp32 map whose rows sum to 1 to fp32 accuracy
    (attn_layer,) = layers.values()
    amap = attn_layer.last_attention
    assert amap is not None and amap.dtype == torch.float32
    torch.testing.assert_close(amap.sum(-1), torch.ones_like(amap[..., 0]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=0.05)


def test_bf16_fused_attention_matches_fp32_within_bf16_tolerance():
    torch.manual_seed(0)
    for variant in ("paper", "biggan"):
        layer = SelfAttention2d(32, variant).eval()
        with torch.no_grad():
            layer.gamma.fill_(1.0)
        x = torch.randn(2, 32, 8, 8)
        ref = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = layer(x)
        torch.testing.assert_close(got.float(), ref, rtol=0.05, atol=0.05)


def test_bf16_fused_attention_runs_its_sdpa_in_fp32_on_cpu(monkeypatch):
    """PyTorch's CPU flash kernel is slower in bf16 than in fp32 (docs/speed.md), so on CPU the fused
    path hands SDPA fp32 inputs with autocast off, and returns the dtype it would have returned;
    gradients reach the input."""
    import torch.nn.functional as F

    from sagan.nn import attention

    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, k, v, **kw)
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    for variant in ("paper", "biggan"):
        layer = SelfAttention2d(32, variant)
        x = torch.randn(2, 32, 8, 8, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        out.float().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    assert seen == [(torch.float32,) * 3 + (False,)] * 2


def test_bf16_training_on_cpu_runs_and_tracks_fp32(tmp_path, eager_run):
    fp32 = eager_run
    bf16 = _run(tmp_path / "b", 1, "train.precision=bf16")
    for k in ("loss_d", "loss_g"):
        a, b = getattr(fp32[1][0], k), getattr(bf16[1][0], k)
        assert b == pytest.approx(a, rel=0.05, abs=0.05), k
    for buf_name, buf in bf16[0].gan.G.named_buffers():
        assert buf.dtype in (torch.float32, torch.int64), buf_name


def test_fp16_is_refused_on_cpu(tmp_path):
    from sagan.config import ConfigError
    with pytest.raises(ConfigError, match="needs CUDA"):
        _trainer(tmp_path, "train.precision=fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (none was lent to this session)")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_training_steps(tmp_path, precision):
    from sagan.config import load_config
    from sagan.train.resolve import resolve_for_data
    from sagan.train.trainer import Trainer
    cfg = load_config("fmnist32", None, ["model.g_ch=8", "model.d_ch=8", "train.batch_size=8", "train.device=cuda",
                                         f"train.precision={precision}"])
    data = _data()
    tr = Trainer(resolve_for_data(cfg, data, torch.device("cuda"))[0], tmp_path, data, progress=False)
    for _ in range(2):
        s = tr.train_step()
        assert all(torch.isfinite(torch.tensor([s.loss_d, s.loss_g])))
    for m in tr.gan.G.modules():
        if hasattr(m, "parametrizations"):
            assert m.parametrizations.weight[0]._u.dtype == torch.float32


@pytest.mark.slow
def test_compile_training_matches_eager(tmp_path, eager_run64):
    """torch.compile (inductor, C++ codegen on CPU): slow because inductor compiles several graphs
    (G in train mode with and without grad, D forward/backward) taking minutes on 2 shared cores;
    run with ``-m slow``."""
    compiled = _run(tmp_path / "b", 2, "train.compile=true", "train.channels_last=false", dtype=torch.float64)
    _assert_same_run(eager_run64, compiled, rtol=REL64, atol=REL64)


def test_compile_option_compiles_in_place(tmp_path, eager_run64):
    """Fast check of the wiring with the cheap 'eager' dynamo backend: the option compiles G and D
    in place (state-dict keys unchanged, EMA copy not compiled) and training matches eager."""
    calls = []
    orig = torch.nn.Module.compile

    def compile_eager(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return orig(self, backend="eager")

    torch.nn.Module.compile = compile_eager
    try:
        compiled = _run(tmp_path / "b", 2, "train.compile=true", "train.channels_last=false", dtype=torch.float64)
    finally:
        torch.nn.Module.compile = orig
    assert calls == ["Generator", "Discriminator"]
    assert compiled[0].gan.G._compiled_call_impl is not None
    assert getattr(compiled[0].gan.ema.shadow, "_compiled_call_impl", None) is None
    assert not any(k.startswith("_orig_mod") for k in compiled[0].state_dict()["G"])
    _assert_same_run(eager_run64, compiled, rtol=REL64, atol=REL64)
