"""``sagan bench --only profile`` and the alternating timer: ops land in the right categories, the shares
add up, the scopes see the spectral-norm and attention forwards; no time is asserted."""
from __future__ import annotations

import json

import pytest
import torch

from sagan.bench.measure import alternating_times, machine_info, native_bf16
from sagan.bench.profile import OTHER, OUTSIDE, category, step_profile, summarise_ops
from sagan.cli import main


@pytest.mark.parametrize("op,want", [
    ("aten::mkldnn_convolution", "convolution"), ("aten::convolution_backward", "convolution"),
    ("aten::bmm", "attention matmuls and softmax"), ("aten::_softmax_backward_data", "attention matmuls and softmax"),
    ("aten::addmm", "other matmuls (linear, embedding)"), ("aten::native_batch_norm", "batch norm"),
    ("aten::_to_copy", "dtype casts and copies"), ("aten::copy_", "dtype casts and copies"),
    ("aten::clamp_min", "elementwise"), ("aten::add_", "elementwise"), ("aten::threshold_backward", "elementwise"),
    ("aten::ne", "elementwise"), ("aten::sum", "reductions"), ("aten::new_empty", OTHER), ("aten::ones", OTHER),
])
def test_ops_fall_into_their_category(op, want):
    assert category(op) == want


def test_summary_shares_add_up_and_the_rest_is_outside_ops():
    s = summarise_ops({"aten::mkldnn_convolution": 600.0, "aten::add": 200.0}, wall_us=1000.0, steps=2,
                      scoped_us={"EMA update": 100.0})
    cats = {c["name"]: c for c in s["categories"]}
    assert cats["convolution"]["share"] == pytest.approx(0.6) and cats["convolution"]["ms_per_step"] == pytest.approx(0.3)
    assert cats[OUTSIDE]["share"] == pytest.approx(0.1) and cats["EMA update"]["share"] == pytest.approx(0.1)
    assert sum(c["share"] for c in s["categories"]) == pytest.approx(1.0)
    assert [o["name"] for o in s["top_ops"]] == ["aten::mkldnn_convolution", "aten::add"]


def test_a_profiled_step_sees_convolutions_spectral_norm_and_attention():
    row = step_profile("fmnist32", 4, torch.device("cpu"), steps=1, warmup=1, overrides=["model.g_ch=8", "model.d_ch=8"])
    cats = {c["name"]: c["share"] for c in row["categories"]}
    assert sum(cats.values()) == pytest.approx(1.0, abs=1e-9)
    for name in ("convolution", "spectral norm (forward: power iteration, W / sigma)", "attention layers (forward)",
                 "optimizer (Adam: step and zero_grad)", "batch norm", "EMA update"):
        assert cats.get(name, 0) > 0, name
    assert row["precision"] == "fp32" and len(row["top_ops"]) == 10


def test_alternating_times_calls_each_in_turn():
    calls = []
    t = alternating_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3,
                          device=torch.device("cpu"), warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and set(t) == {"a", "b"} and all(v >= 0 for v in t.values())


def test_machine_info_names_family_model_and_flags():
    info = machine_info(torch.device("cpu"))
    assert info["cpu_family"] is not None and info["cpu_model"] is not None and isinstance(info["cpu_flags"], list)
    assert native_bf16(torch.device("cpu")) == bool(info["cpu_bf16_flags"])


def test_bench_profile_through_the_cli(tmp_path, capsys):
    rc = main(["bench", "--only", "profile", "--presets", "fmnist32", "--train-batch", "4", "--out", str(tmp_path),
               "--set", "model.g_ch=8", "--set", "model.d_ch=8", "--markdown", str(tmp_path / "bench.md")])
    assert rc == 0
    result = json.loads((tmp_path / "results.json").read_text())
    (row, *bf16) = result["profile"]
    assert row["preset"] == "fmnist32" and row["batch"] == 4 and len(bf16) == int(bool(result["machine"]["cpu_bf16_flags"]))
    assert "train" not in result and "attention" not in result  # only what was asked
    md = (tmp_path / "bench.md").read_text()
    assert "## Where the training step's time goes" in md and "| convolution |" in md
