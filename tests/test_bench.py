"""`sagan bench`: each benchmark runs on tiny sizes and reports sound fields. No timing is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sagan.bench import measure as bench


# Pinned glibc malloc thresholds stay pinned for the rest of a process (glibc has no way back to
# its dynamic defaults), so whatever pins them runs in a child process here; conftest fails a test
# that pins them in the test process.

def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


PEAK_CHILD = """
import json, sys
import torch
from sagan.bench import measure as bench
if not bench._reset_peak():
    print(json.dumps({"skip": True}))
    sys.exit(0)
pinned = bench.pin_malloc_thresholds()

def alloc():
    t = torch.ones(16, 2**20)  # 64 MiB, touched
    return float(t[-1, -1])

print(json.dumps({"pinned": pinned, "peak": bench.measure_peak_extra(alloc, torch.device("cpu"))}))
"""


def test_peak_memory_measurement_sees_a_large_tensor():
    res = subprocess.run([sys.executable, "-c", PEAK_CHILD], env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out.get("skip"):
        pytest.skip("no /proc/self/clear_refs on this system")
    peak = out["peak"]
    assert out["pinned"] is True
    assert peak is not None and 56 * 2**20 <= peak <= 256 * 2**20


def test_attention_bench_rows_and_does_not_fit_prediction(monkeypatch):
    # Pretend every call peaks at 10 MiB and 100 MiB are available: at 16x16 (4x the positions of
    # 8x8) the explicit paths are predicted at 160 MiB (N^2) and skipped, the fused one at 40 MiB runs.
    monkeypatch.setattr(bench, "measure_peak_extra", lambda fn, dev: (fn(), 10 * 2**20)[1])
    monkeypatch.setattr(bench, "available_memory", lambda dev: 100 * 2**20)
    rows = bench.attention_bench(torch.device("cpu"), sizes=(8, 16), batch=1, channels=16,
                                 variants=("paper",), reps=1, log=lambda *a: None)
    status = {(r["impl"], r["size"]): r["status"] for r in rows}
    assert status == {("fused", 8): "ok", ("explicit", 8): "ok", ("naive", 8): "ok",
                      ("fused", 16): "ok", ("explicit", 16): "does not fit", ("naive", 16): "does not fit"}
    skipped = [r for r in rows if r["status"] != "ok"]
    assert all(r["predicted_peak_bytes"] == 160 * 2**20 for r in skipped)
    assert all(r["seconds"] > 0 and r["batch"] == 1 and r["channels"] == 16 for r in rows if r["status"] == "ok")


def test_naive_attention_matches_our_layer_with_a_full_value_head():
    """The seed notes' layer computes the same function as ours up to its wider value head."""
    torch.manual_seed(0)
    naive = bench.NaiveAttention(16)
    x = torch.randn(2, 16, 4, 4)
    q = naive.query_conv(x).flatten(2).transpose(1, 2)
    k = naive.key_conv(x).flatten(2).transpose(1, 2)
    v = naive.value_conv(x).flatten(2).transpose(1, 2)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2).reshape(2, 16, 4, 4)
    torch.testing.assert_close(naive(x), 0.5 * ref + x, rtol=1e-5, atol=1e-5)


def test_train_step_bench_counts_flops_and_samples():
    row = bench.train_step_bench("fmnist32", 8, torch.device("cpu"), reps=1,
                                 overrides=["model.g_ch=8", "model.d_ch=8"])
    assert row["batch"] == 8 and row["preset_batch"] == 64
    assert row["flops_per_step"] > 1e8  # convs of G (x2: D step and G step) and D (x3 images) fwd+bwd
    assert row["images_per_s"] > 0 and row["gflops_per_s"] > 0
    assert row["sampling"]["batch"] == 8 and row["sampling"]["images_per_s"] > 0


def test_bench_command_writes_json_and_markdown(tmp_path):
    # --only attention runs the attention section in this process, which pins malloc: a child process.
    out, md = tmp_path / "results", tmp_path / "b.md"  # --out: a folder, created
    res = subprocess.run([sys.executable, "-m", "sagan", "bench", "--only", "attention", "--sizes", "8",
                          "--attn-batch", "1", "--attn-channels", "16", "--reps", "1", "--out", str(out),
                          "--markdown", str(md), "--note", "test run", "--device", "cpu"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"wrote {out / 'results.json'}" in res.stdout
    data = json.loads((out / "results.json").read_text())
    assert data["malloc_thresholds_pinned"] is True
    assert {r["impl"] for r in data["attention"]} == {"fused", "explicit", "naive"}
    assert data["sdpa_backend"]["biggan_as_run"] == data["sdpa_backend"]["paper"]
    text = md.read_text()
    assert "## 1. Attention layer" in text and "| paper | 8x8 | fused |" in text and "test run" in text


def test_bench_flag_errors_before_measuring(tmp_path, capsys):
    from sagan.cli import main
    (tmp_path / "taken").write_text("")
    for args, message in [
        (["--out", str(tmp_path / "r.json")], f"--out is a folder (the results are written as results.json in it); "
                                              f"give e.g. --out {tmp_path / 'r'}"),
        (["--out", str(tmp_path / "taken")], "is a file; --out names the folder to write results.json into"),
        (["--device", "nosuchdevice"], "--device nosuchdevice: "),
    ]:
        assert main(["bench", "--only", "attention", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_bench_data_path_next_to_the_training_step(tmp_path, tiny_folder, capsys):
    """--data PATH: the loader's images/s (0 and 2 workers) beside a training step of the same batch."""
    from sagan.bench.render import render
    from sagan.cli import main
    args = ["bench", "--only", "data", "--presets", "imagefolder64", "--data", str(tiny_folder), "--train-batch", "4",
            "--set", "model.resolution=32", "--set", "model.g_ch=8", "--set", "model.d_ch=8", "--reps", "1",
            "--device", "cpu", "--out", str(tmp_path / "b")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "data path imagefolder64 on image folder" in out and "limits training" in out
    (row,) = json.loads((tmp_path / "b" / "results.json").read_text())["data"]
    assert [r["num_workers"] for r in row["loaders"]] == [0, 2] and row["images"] == 16 and row["resolution"] == 32
    assert all(r["images_per_s"] > 0 for r in row["loaders"]) and row["train_step_images_per_s"] > 0
    assert row["limit"] in ("data path", "training step")
    assert "## Data path vs training step" in render(json.loads((tmp_path / "b" / "results.json").read_text()))
    assert main(["bench", "--only", "data", "--out", str(tmp_path / "c")]) == 2
    assert "give its folder with --data PATH" in capsys.readouterr().err
