"""``train.precision=auto``: explicit values win; no native bf16 means fp32 without a probe; the probe's
ratio is cached per machine and step, unless its rounds disagree; bf16 only at MIN_SPEEDUP and with the quality check passed; the CLI
says what it chose and stores the resolved value. No time is asserted."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from sagan.cli import main
from sagan.config import load_config
from sagan.train import precision as P

from conftest import TINY_TRAIN_ARGS

CPU = torch.device("cpu")


def _cfg(value: str = "auto"):
    return load_config("fmnist32", overrides=["model.g_ch=8", "model.d_ch=8", "train.batch_size=4",
                                              f"train.precision={value}", "data.diffaugment=[]"])


def _no_probe(*args, **kwargs):
    raise AssertionError("the probe ran")


@pytest.mark.parametrize("value", ["fp32", "bf16"])
def test_an_explicit_precision_wins(value, monkeypatch):
    monkeypatch.setattr(P, "probe_speedup", _no_probe)
    assert P.resolve_precision(_cfg(value), 10, 1, CPU)[0] == value


def test_without_native_bf16_auto_is_fp32_without_a_probe(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "native_bf16", lambda device: False)
    monkeypatch.setattr(P, "probe_speedup", _no_probe)
    precision, why = P.resolve_precision(_cfg(), 10, 1, CPU, cache=tmp_path)
    assert precision == "fp32" and "no native bf16" in why and not (tmp_path / P.PROBE_FILE).exists()
    assert P.resolve_precision(_cfg(), 10, 1, CPU, world=2)[0] == "fp32"  # distributed: no per-process probe


@pytest.mark.parametrize("ratio,quality,want", [(1.5, True, "bf16"), (1.5, None, "fp32"), (1.5, False, "fp32"),
                                                (1.19, True, "fp32"), (0.01, True, "fp32")])
def test_bf16_needs_the_speedup_and_the_quality_check(ratio, quality, want, monkeypatch, tmp_path):
    monkeypatch.setattr(P, "native_bf16", lambda device: True)
    monkeypatch.setattr(P, "BF16_QUALITY", quality)
    calls = []
    monkeypatch.setattr(P, "probe_speedup", lambda *a, **k: calls.append(1) or [ratio * 1.1, ratio, ratio * 0.9])
    precision, why = P.resolve_precision(_cfg(), 10, 1, CPU, cache=tmp_path)
    assert precision == want and f"{ratio:.2f}x" in why and "measured now" in why
    if quality is None and ratio >= P.MIN_SPEEDUP:
        assert "quality check has not been run" in why
    # The second time comes from the cache (per processor, torch version and step shape).
    again, why2 = P.resolve_precision(_cfg(), 10, 1, CPU, cache=tmp_path)
    assert again == want and "cached" in why2 and calls == [1]
    records = json.loads((tmp_path / P.PROBE_FILE).read_text())
    assert list(records) == [P.probe_key(_cfg(), CPU)] and records[P.probe_key(_cfg(), CPU)]["bf16_speedup"] == ratio
    other = load_config("fmnist32", overrides=["model.g_ch=16", "train.precision=auto"])
    assert P.probe_key(other, CPU) != P.probe_key(_cfg(), CPU)


def test_a_damaged_cache_is_measured_again(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "native_bf16", lambda device: True)
    monkeypatch.setattr(P, "probe_speedup", lambda *a, **k: [0.5, 0.5])
    (tmp_path / P.PROBE_FILE).write_bytes(b"\x00not json")
    precision, why = P.resolve_precision(_cfg(), 10, 1, CPU, cache=tmp_path)
    assert precision == "fp32" and "0.50x" in why and "measured now" in why
    assert json.loads((tmp_path / P.PROBE_FILE).read_text())[P.probe_key(_cfg(), CPU)]["bf16_speedup"] == 0.5


def test_rounds_that_disagree_are_used_but_not_cached(monkeypatch, tmp_path):
    # A busy moment (other work took the CPU during some rounds) must not be kept for every later start.
    monkeypatch.setattr(P, "native_bf16", lambda device: True)
    monkeypatch.setattr(P, "BF16_QUALITY", True)
    rounds = [[0.6, 2.1, 2.2], [2.0, 2.1, 2.2]]
    monkeypatch.setattr(P, "probe_speedup", lambda *a, **k: rounds.pop(0))
    precision, why = P.resolve_precision(_cfg(), 10, 1, CPU, cache=tmp_path)
    assert precision == "bf16" and "2.10x" in why and "0.60-2.20x disagree, so not cached" in why
    assert not (tmp_path / P.PROBE_FILE).exists()
    precision, why = P.resolve_precision(_cfg(), 10, 1, CPU, cache=tmp_path)  # measured again, now cached
    assert precision == "bf16" and "measured now" in why and "disagree" not in why
    assert json.loads((tmp_path / P.PROBE_FILE).read_text())[P.probe_key(_cfg(), CPU)]["rounds"] == [2.0, 2.1, 2.2]
    assert "cached" in P.resolve_precision(_cfg(), 10, 1, CPU, cache=tmp_path)[1] and rounds == []


def test_the_probe_times_real_steps_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    rounds = P.probe_speedup(_cfg(), 10, 1, CPU, steps=2, pair=("fp32", "fp32"))  # bf16 may be emulated here
    assert len(rounds) == 2 and all(r > 0 for r in rounds) and torch.equal(torch.random.get_rng_state(), state)


def test_sagan_train_says_what_auto_chose_and_stores_it(tmp_path, tiny_folder, caplog):
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "2", "--out", str(tmp_path),
               "--name", "auto", "--set", "train.precision=auto"])
    assert rc == 0
    stored = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["train"]["precision"]
    assert stored in ("fp32", "bf16")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision: auto")]
    assert len(lines) == 1 and f"auto: {stored}" in lines[0]
