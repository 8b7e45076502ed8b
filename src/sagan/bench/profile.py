"""Where a training step's time goes: ``torch.profiler`` over a few steps, the ops grouped by what they do.

``step_profile`` runs ``steps`` training steps of a preset (after ``warmup`` unprofiled ones) under
``torch.profiler.profile`` (CPU activities; CUDA too on a GPU) and sums each op's *self* time (the time
in the op itself, not in the ops it calls), grouped by ``CATEGORIES`` (the first pattern that matches
an op's name wins). What no op accounts for, the step's wall time minus the summed self time of the
main thread's top-level ops, is reported as "outside ops": the Python of the step, dispatch, and the
profiler's own overhead. The profiler adds overhead of its own, so the shares are what to read, not
the absolute times; ``sagan bench --only train`` gives the unprofiled speed.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

# category -> substrings of aten op names, in the order they are tried.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution", ("conv",)),
    ("attention matmuls and softmax", ("bmm", "softmax", "scaled_dot_product", "_flash_attention", "_efficient_attention")),
    ("other matmuls (linear, embedding)", ("addmm", "aten::mm", "aten::matmul", "embedding", "aten::linear")),
    ("batch norm", ("batch_norm", "native_batch_norm")),
    ("dtype casts and copies", ("aten::to", "_to_copy", "aten::copy_", "clone", "contiguous")),
    ("pooling and resampling", ("pool", "upsample", "interpolate")),
)
# Forward ops inside these scopes count for the scope's category whatever they are (the scopes are
# entered by forward hooks on the modules, see _scoped; the optimizer names its own step).
SCOPES: tuple[tuple[str, str], ...] = (
    ("sagan::spectral_norm", "spectral norm (forward: power iteration, W / sigma)"),
    ("sagan::attention", "attention layers (forward)"),
    ("sagan::ema", "EMA update"),
    ("Optimizer.", "optimizer (Adam: step and zero_grad)"),
)
REDUCTIONS = frozenset({"sum", "mean", "amax", "amin", "max", "min", "var", "std", "var_mean", "norm", "prod"})
# Elementwise ops by their base name (no namespace, in-place "_" and "_backward" stripped): exact names,
# since short ones ("ne", "lt") would match inside other names.
ELEMENTWISE = frozenset({"relu", "threshold", "add", "mul", "sub", "rsub", "div", "tanh", "neg", "exp", "sqrt", "rsqrt",
                         "where", "clamp", "clamp_min", "pow", "fill", "zero", "abs", "sign", "lt", "gt", "ge", "le",
                         "eq", "ne", "reciprocal", "sigmoid", "hardtanh", "leaky_relu", "maximum", "minimum", "masked_fill",
                         "ones_like", "zeros_like", "empty_like", "full_like"})
OTHER = "other ops"
OUTSIDE = "outside ops (Python, dispatch, profiler)"


def category(op: str) -> str:
    name = op.lower()
    for cat, patterns in CATEGORIES:
        if any(p in name for p in patterns):
            return cat
    base = name.split("::")[-1].removesuffix("_backward").rstrip("_")
    return "elementwise" if base in ELEMENTWISE else "reductions" if base in REDUCTIONS else OTHER


def summarise_ops(self_us: dict[str, float], wall_us: float, steps: int, top: int = 10,
                  scoped_us: dict[str, float] | None = None) -> dict[str, Any]:
    """Per-step milliseconds and shares of wall time, by category and for the ``top`` ops. ``self_us``:
    op -> self time outside any scope; ``scoped_us``: category -> self time of the ops inside its scope."""
    by_cat: dict[str, float] = dict(scoped_us or {})
    for op, us in self_us.items():
        by_cat[category(op)] = by_cat.get(category(op), 0.0) + us
    in_ops = sum(self_us.values()) + sum((scoped_us or {}).values())
    by_cat[OUTSIDE] = max(0.0, wall_us - in_ops)
    total = max(wall_us, in_ops)

    def row(name: str, us: float) -> dict[str, Any]:
        return {"name": name, "ms_per_step": us / steps / 1e3, "share": us / total if total else 0.0}

    return {"categories": [row(c, us) for c, us in sorted(by_cat.items(), key=lambda kv: -kv[1])],
            "top_ops": [{**row(op, us), "category": category(op)}
                        for op, us in sorted(self_us.items(), key=lambda kv: -kv[1])[:top]],
            "ms_per_step": wall_us / steps / 1e3}


def _scope_of(evt) -> str | None:
    parent = evt.cpu_parent
    while parent is not None:
        for prefix, cat in SCOPES:
            if parent.name.startswith(prefix):
                return cat
        parent = parent.cpu_parent
    return None


def _self_times(prof: profile, device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """(op -> self time of the ops outside any scope, category -> self time of the ops inside its scope), in µs."""
    ops: dict[str, float] = {}
    scoped: dict[str, float] = {}
    for evt in prof.events():
        us = float(evt.self_device_time_total if device.type == "cuda" else evt.self_cpu_time_total)
        if us <= 0 or evt.name.startswith(("ProfilerStep", "##")) or any(evt.name.startswith(p) for p, _ in SCOPES):
            continue
        scope = _scope_of(evt)
        if scope is not None:
            scoped[scope] = scoped.get(scope, 0.0) + us
        else:
            ops[evt.name] = ops.get(evt.name, 0.0) + us
    return ops, scoped


@contextlib.contextmanager
def _scoped(trainer):
    """Forward hooks that open a profiler scope around every spectral-norm parametrization and attention
    layer of G and D, and a scope around the EMA update."""
    from sagan.nn.attention import SelfAttention2d
    from sagan.nn.spectral import FP32SpectralNorm

    handles, open_scopes = [], []

    def enter(name):
        def hook(module, args):
            scope = record_function(name)
            scope.__enter__()
            open_scopes.append(scope)
        return hook

    def leave(module, args, out):
        open_scopes.pop().__exit__(None, None, None)

    for model in (trainer.gan.G, trainer.gan.D):
        for m in model.modules():
            name = ("sagan::spectral_norm" if isinstance(m, FP32SpectralNorm)
                    else "sagan::attention" if isinstance(m, SelfAttention2d) else None)
            if name:
                handles += [m.register_forward_pre_hook(enter(name)), m.register_forward_hook(leave)]
    ema = trainer.gan.ema
    update = ema.update

    def scoped_update(*args, **kwargs):
        with record_function("sagan::ema"):
            return update(*args, **kwargs)
    ema.update = scoped_update
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        ema.update = update


def step_profile(preset_name: str, batch: int, device: torch.device, precision: str = "fp32", steps: int = 5,
                 warmup: int = 10, overrides: list[str] | None = None) -> dict[str, Any]:
    """Profile ``steps`` training steps of ``preset_name`` at ``batch`` in ``precision``. The first steps
    of a process touch fresh memory until glibc's malloc settles on reusing it; they are ``warmup``: with
    2 of them the fp32 fmnist32 step's ReLU took 23 ms/step in the profile, with 12 13 ms (docs/speed.md)."""
    from sagan.bench.synthetic import synthetic_trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = synthetic_trainer(preset_name, batch, device, Path(tmp),
                                    [f"train.precision={precision}", *(overrides or [])])
        for _ in range(warmup):
            trainer.train_step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with _scoped(trainer), profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall = time.perf_counter() - start
        if trainer.logger is not None:
            trainer.logger.close()
    ops, scoped = _self_times(prof, device)
    summary = summarise_ops(ops, wall * 1e6, steps, scoped_us=scoped)
    return {"preset": preset_name, "batch": batch, "precision": precision, "steps": steps, "warmup": warmup,
            "threads": torch.get_num_threads(), **summary}
