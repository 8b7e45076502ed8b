"""Distributed training on CPU with gloo: 2 real processes, checked against 1 process.

The 2-process runs are real processes (this file run as a script, with the environment torchrun
would set, or torchrun itself), never threads, so DDP, gloo and the buffer synchronisation are
the ones users get.

Why the plain-BN 2-process run cannot reproduce the 1-process losses: the generator's batch
norms normalise with the statistics of the batch they see. With 2 processes each G forward
sees 4 of the 8 images, so its activations (and hence the fake images, D's scores of them and
both losses) differ from the 1-process run that normalises over all 8. Everything that does
not pass through G's BN does agree (D has no BN: its scores of the *real* images match), and
with ``train.sync_bn=true`` G normalises with the statistics of the global batch, so the
losses and the (DDP-averaged) gradients of the first step match the 1-process run.

Why float64: N processes sum the same numbers in another order than 1 process (BN statistics,
DDP's gradient all-reduce, batch means), and oneDNN picks other kernels (other summation orders)
on other CPUs. In float32 those reorderings move results by ~1e-6 relative and can flip the sign
of a near-zero activation, so a float32 tolerance is a guess tuned to one CPU. The equivalence
runs here are made in float64 (``torch.set_default_dtype``, in the workers and in the 1-process
reference alike), where reordering a sum of n terms changes it by at most ~n * 2^-53 of the sum
of magnitudes: with at most ~1e5 terms per reduction in these tiny models that is < 1e-11
relative, so the tolerances below (1e-9 relative) hold on every CPU with a wide margin, while a
real difference (a wrong shard, a missing all-reduce) is of order 1e-2..1.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_STANDING_SETS

HERE = Path(__file__).resolve()
GLOBAL_BATCH = 8
STEPS = 3
# 600: 3 sampling batches of 256, rank 0 generates 512 samples, rank 1 the other 88;
# 200: one batch, so rank 1 has nothing to generate and sends an empty share.
FID_SAMPLES = (600, 200)
# Relative tolerance of the float64 equivalences (see the module docstring for the bound).
REL64 = 1e-9


# The configurations the 2-process worker runs: plain BN, SyncBN, and SyncBN with a WGAN-GP
# penalty (its second forward through the DDP-wrapped D, with a double backward, before D's backward)
# plus DiffAugment and flips (their random numbers drawn for the global batch and sharded, like the noise).
CONFIGS = {"plain": (False, False), "sync": (True, False), "gp": (True, True)}


def _tiny_config(sync_bn: bool, gp: bool = False):
    from sagan.config import load_config
    extra = ["loss.name=wasserstein", "loss.gp_weight=10", "data.diffaugment=[color,translation,cutout]",
             "data.hflip=true"] if gp else []
    return load_config("fmnist32", None, [
        "model.g_ch=8", "model.d_ch=8", f"train.batch_size={GLOBAL_BATCH}", "train.device=cpu",
        f"train.sync_bn={str(sync_bn).lower()}", "train.log_every=1000", *TINY_STANDING_SETS, *extra,
    ])


def _tiny_data():
    """16 random 3-channel 32x32 images in 4 classes, identical in every process."""
    from sagan.data.datasets import ImageData
    g = torch.Generator().manual_seed(1234)
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(16) % 4
    return ImageData("tiny", "random", 4, 3, 32, [f"c{i}" for i in range(4)], images, labels)


def _snapshot(trainer) -> dict:
    return {
        "G": {k: v.detach().clone() for k, v in trainer.gan.G.state_dict().items()},
        "D": {k: v.detach().clone() for k, v in trainer.gan.D.state_dict().items()},
        "G_ema": {k: v.detach().clone() for k, v in trainer.gan.ema.state_dict().items()},
        "grad_G": {n: p.grad.detach().clone() for n, p in trainer.gan.G.named_parameters() if p.grad is not None},
        "grad_D": {n: p.grad.detach().clone() for n, p in trainer.gan.D.named_parameters() if p.grad is not None},
    }


def _run_steps(dist, config: str, run_dir: Path, steps: int) -> dict:
    """``steps`` training steps in float64 (the caller sets the default dtype and one thread)."""
    from sagan.metrics.tracking import TrainingFID
    from sagan.train.resolve import resolve_for_data
    from sagan.train.trainer import Trainer
    assert torch.get_default_dtype() == torch.float64 and torch.get_num_threads() == 1
    cfg, data = _tiny_config(*CONFIGS[config]), _tiny_data()
    fid = TrainingFID(cfg, data, torch.device("cpu"), dist=dist)  # what `sagan train` passes in
    trainer = Trainer(resolve_for_data(cfg, data, torch.device("cpu"), dist.world)[0], run_dir, data, dist,
                      progress=False, fid=fid)
    stats, first = [], None
    for i in range(steps):
        s = trainer.train_step()
        stats.append({"loss_d": s.loss_d, "loss_g": s.loss_g, "d_real": s.d_real, "d_fake": s.d_fake})
        if i == 0:
            first = _snapshot(trainer)
    out = {"stats": stats, "first": first, "final": _snapshot(trainer)}
    if config == "sync":  # training-time FID of the EMA generator, sampled in shards
        for n in FID_SAMPLES:
            trainer.fid.num_samples = n
            out[f"fid{n}"] = trainer.fid(trainer.gan.ema.shadow)
    if trainer.logger is not None:
        trainer.logger.close()
    return out


def _worker_main(out: str) -> None:
    """One rank of the 2-process trainer test (environment as torchrun sets it)."""
    from sagan import distributed as dist_utils
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist = dist_utils.init_from_env("cpu")
    rank_dir = Path(out).parent / f"run_rank{dist.rank}"
    results = {c: _run_steps(dist, c, rank_dir / c, STEPS) for c in CONFIGS}
    torch.save(results, f"{out}.rank{dist.rank}")
    dist_utils.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("ddp")
    out, port = tmp / "result", _free_port()
    procs = [subprocess.Popen([sys.executable, str(HERE), "worker", str(out)],
                              env=_env(RANK=r, LOCAL_RANK=r, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, OMP_NUM_THREADS=1),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("2-process worker timed out")
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]
    return {r: torch.load(f"{out}.rank{r}", weights_only=False) for r in range(2)}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_parameters_and_buffers_identical_on_both_ranks(two_rank_results, config):
    a, b = two_rank_results[0][config]["final"], two_rank_results[1][config]["final"]
    for part in ("G", "D", "G_ema"):
        assert a[part].keys() == b[part].keys()
        kinds = {"running_mean": 0, "_u": 0, "num_batches_tracked": 0}
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs between ranks ({config})"
            for k in kinds:
                kinds[k] += key.endswith(k)
        if part != "D":  # make sure the buffers we claim to check are really there
            assert kinds["running_mean"] > 0 and kinds["num_batches_tracked"] > 0
        assert kinds["_u"] > 0
    # and they moved: the BN running statistics are not still at their initial zeros
    assert any(v.abs().sum() > 0 for k, v in a["G"].items() if k.endswith("running_mean"))


def _mean_stats(two_rank_results, config: str) -> dict:
    s0, s1 = two_rank_results[0][config]["stats"][0], two_rank_results[1][config]["stats"][0]
    return {k: (s0[k] + s1[k]) / 2 for k in s0}  # equal shards: mean of per-rank means = global mean


@contextlib.contextmanager
def _as_the_workers_run():
    """The 1-process reference as the workers run: float64, one intra-op thread (so evaluation
    batches go through the same kernels); both restored afterwards."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


@pytest.fixture
def float64_one_thread():
    with _as_the_workers_run():
        yield


@pytest.fixture(scope="module")
def one_rank_results(tmp_path_factory) -> dict:
    from sagan.distributed import DistInfo
    with _as_the_workers_run():
        return {c: _run_steps(DistInfo(), c, tmp_path_factory.mktemp("one") / c, 1) for c in ("plain", "gp")}


@pytest.mark.parametrize("config", ["sync", "gp"])
def test_sync_bn_two_processes_match_one_process_first_step(two_rank_results, one_rank_results, config):
    """SyncBN: first-step losses, D's scores and DDP-averaged gradients equal the 1-process run's.

    With ``gp`` the D loss includes the gradient penalty (its interpolation weights come from the
    run's noise stream for the global batch, so they match too): the losses and the gradients,
    which went through two forwards of the DDP-wrapped D and a double backward, are compared.
    """
    one_run = one_rank_results["plain" if config == "sync" else "gp"]  # 1 process: SyncBN is plain BN
    two, one = _mean_stats(two_rank_results, config), one_run["stats"][0]
    for k in ("loss_d", "loss_g", "d_real", "d_fake"):
        # abs: d_real/d_fake are means of O(1) scores, a sum's rounding is relative to that scale
        assert two[k] == pytest.approx(one[k], rel=REL64, abs=REL64), k
    for part in ("grad_G", "grad_D"):
        ref, got = one_run["first"][part], two_rank_results[0][config]["first"][part]
        assert ref.keys() == got.keys() and len(ref) > 0
        assert all(g.dtype == torch.float64 for g in got.values())
        # Biases right before a BN have a true gradient of 0 (BN removes a constant shift); what
        # they get is rounding noise, so the absolute tolerance follows the gradients' scale.
        scale = max(float(g.abs().max()) for g in ref.values())
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=REL64, atol=REL64 * scale,
                                       msg=lambda m: f"{part} {name}: {m}")


def test_plain_bn_two_processes_match_where_bn_is_not_involved(two_rank_results, one_rank_results):
    """Plain BN: per-process statistics change G's output (see module docstring); D's real scores agree."""
    two, one = _mean_stats(two_rank_results, "plain"), one_rank_results["plain"]["stats"][0]
    assert two["d_real"] == pytest.approx(one["d_real"], rel=REL64, abs=REL64)
    # D's scores of the fakes carry the documented difference (G's per-process BN statistics):
    # of order 1e-2 and more, far outside float64 rounding
    assert abs(two["d_fake"] - one["d_fake"]) > 1e-4 * abs(one["d_fake"])


def test_training_fid_sampled_in_shards_equals_one_process(two_rank_results, float64_one_thread):
    """Both ranks generate and extract their share of the FID samples; rank 0 gathers the features.

    The scores equal those of one process evaluating the same EMA generator on all the samples.
    Tolerance: the float64 generator's images agree to ~1e-15 and are quantised to uint8 (a
    difference only where a pixel lies within ~1e-13 of a rounding boundary); the classifier then
    sees identical uint8 batches of identical shapes (256, 256, 88) with one thread in both runs,
    so its float32 features are the same and the float64 statistics too, to REL64.
    """
    from sagan.metrics.tracking import TrainingFID
    from sagan.models import build_models
    from sagan.sampling import shard_range
    assert [shard_range(600, 256, r, 2) for r in range(2)] == [(0, 512), (512, 600)]
    assert [shard_range(200, 256, r, 2) for r in range(2)] == [(0, 200), (200, 200)]
    cfg = _tiny_config(True)
    g, _ = build_models(cfg.model, 4, 3)
    g.load_state_dict(two_rank_results[0]["sync"]["final"]["G_ema"])
    fid = TrainingFID(cfg, _tiny_data(), torch.device("cpu"))
    for n in FID_SAMPLES:
        on_rank0, on_rank1 = two_rank_results[0]["sync"][f"fid{n}"], two_rank_results[1]["sync"][f"fid{n}"]
        assert set(on_rank1) == {"eval/seconds"}  # rank 1 delivered its features and computed nothing
        fid.num_samples = n
        one = fid(g)
        assert on_rank0["eval/fid_fmnist"] == pytest.approx(one["eval/fid_fmnist"], rel=REL64), n
        assert on_rank0["eval/is_fmnist"] == pytest.approx(one["eval/is_fmnist"], rel=REL64), n


def test_sync_batchnorm_single_process_is_batchnorm():
    from sagan.models import Generator
    from sagan.nn.norm import SyncBatchNorm2d, convert_sync_batchnorm
    torch.manual_seed(0)
    g = Generator(32, 8, 16, 0, 3, [16])  # unconditional: label-ignoring BN takes (x, y)
    ref_state = {k: v.clone() for k, v in g.state_dict().items()}
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    z = torch.randn(4, 16)
    ref = g(z)
    g.load_state_dict(ref_state)
    converted = convert_sync_batchnorm(g)
    assert n_bn == 7 and sum(isinstance(m, SyncBatchNorm2d) for m in converted.modules()) == n_bn
    assert list(converted.state_dict()) == list(ref_state)
    torch.testing.assert_close(converted(z), ref)


def test_elastic_run_lookup(tmp_path, monkeypatch):
    from sagan.runs import elastic
    for name, rid in (("job", "other"), ("job-2", "abc"), ("job-3", "zzz")):
        (tmp_path / name).mkdir()
        (tmp_path / name / elastic.ELASTIC_MARK).write_text(json.dumps({"run_id": rid}))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert elastic.find_elastic_run(tmp_path, "job") is None  # first attempt: always a new run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert elastic.find_elastic_run(tmp_path, "job") == tmp_path / "job-2"  # this job's, not the older "job"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert elastic.find_elastic_run(tmp_path, "job") is None
    assert elastic.elastic_run_name("cifar32") is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x/y z")
    assert elastic.elastic_run_name("cifar32") == "cifar32-x-y-z"


def test_duplicate_signal_window_only_under_torchrun_and_overridable(monkeypatch):
    from sagan.config import ConfigError
    from sagan.train.trainer import (
        DUPLICATE_SIGNAL_WINDOW,
        WINDOW_ENV,
        duplicate_signal_window,
    )
    for k in [k for k in os.environ if k.startswith("TORCHELASTIC_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv(WINDOW_ENV, "30")
    assert duplicate_signal_window() == 0.0  # outside torchrun a second signal always aborts
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    assert duplicate_signal_window() == 30.0
    monkeypatch.delenv(WINDOW_ENV)
    assert duplicate_signal_window() == DUPLICATE_SIGNAL_WINDOW == 2.0
    for bad in ("-1", "soon", "nan"):
        monkeypatch.setenv(WINDOW_ENV, bad)
        with pytest.raises(ConfigError, match=WINDOW_ENV):
            duplicate_signal_window()


# --------------------------------------------------------------------------- torchrun end to end

AUDIT_HOOK = r'''
import os, sys
_root, _log = os.environ.get("SAGAN_AUDIT_ROOT"), os.environ.get("SAGAN_AUDIT_LOG")
if _root and _log and "RANK" in os.environ:
    _tag = f"{_log}.rank{os.environ['RANK']}.attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def _hook(event, args):
        if event not in ("open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate"):
            return
        try:
            path = os.fspath(args[0])
        except TypeError:
            return
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if not isinstance(path, str) or not os.path.abspath(path).startswith(_root):
            return
        if event == "open":
            mode, flags = args[1], args[2]
            if not ((mode and any(c in mode for c in "wax+")) or (mode is None and flags & _WRITE)):
                return
        with open(_tag, "a") as f:
            f.write(f"{event} {path}\n")
    sys.addaudithook(_hook)
'''


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _rank_of(pid: int) -> tuple[str | None, str | None]:
    try:
        env = dict(kv.split("=", 1) for kv in (Path("/proc") / str(pid) / "environ").read_text().split("\0") if "=" in kv)
    except OSError:
        return None, None
    return env.get("RANK"), env.get("TORCHELASTIC_RESTART_COUNT")


def _output_or_fail(proc: subprocess.Popen, timeout: float) -> str:
    """torchrun's output once it exits; on a timeout its whole process group is killed and the test fails."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"torchrun did not finish within {timeout} s:\n" + proc.communicate()[0][-4000:])


@pytest.mark.heavy  # two torchrun launches with an elastic restart: about 1.5 minutes
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find torchrun's worker processes")
def test_torchrun_rank0_writes_and_elastic_restart_resumes(tmp_path, tiny_folder):
    """`torchrun -m sagan train`: kill rank 1 after the first checkpoint; the restarted group
    continues the same run directory from its newest checkpoint, and rank 1 never writes there."""
    from conftest import TINY_TRAIN_ARGS
    hook_dir, out = tmp_path / "hook", (tmp_path / "runs").resolve()
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    audit = tmp_path / "audit"
    steps = 30
    # c10d rendezvous (as --standalone uses) starts each restarted group in a fresh store round.
    # Up to 3 restarts: the resume logic is the same for every attempt, and a spare restart keeps
    # a transient start-up failure on a loaded machine from failing the test.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max-restarts=3",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=sagan-test",
           "-m", "sagan", "train", *TINY_TRAIN_ARGS,
           "--set", "train.sample_every=1000", "--data", str(tiny_folder), "--steps", str(steps),
           "--out", str(out), "--name", "elastic"]
    env = _env(PYTHONPATH=os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")]),
               SAGAN_AUDIT_ROOT=str(out), SAGAN_AUDIT_LOG=str(audit), OMP_NUM_THREADS=1)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    ckpt_dir, killed = out / "elastic" / "checkpoints", None
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and killed is None:
            if (ckpt_dir / "ckpt_00000002.pt").exists():
                for pid in _children(proc.pid):
                    if _rank_of(pid) == ("1", "0"):
                        os.kill(pid, signal.SIGKILL)
                        killed = pid
            time.sleep(0.02)
        log = _output_or_fail(proc, 240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed is not None, "the run ended before rank 1 could be killed:\n" + log[-3000:]
    assert proc.returncode == 0, log[-4000:]
    assert re.search(r"elastic restart \d+: continuing", log), log[-3000:]
    resumed = [ln for ln in log.splitlines() if "resuming" in ln and "from step" in ln]
    assert resumed and int(resumed[-1].rsplit("step", 1)[1]) >= 2, log[-3000:]
    assert (ckpt_dir / f"ckpt_{steps:08d}.pt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["elastic"]  # no second run directory
    rows = (out / "elastic" / "metrics.csv").read_text().splitlines()[1:]
    logged = [float(r.split(",")[0]) for r in rows]
    assert logged == sorted(set(logged)) and logged[-1] == steps  # resumed log has no duplicate steps
    # Only rank 0 wrote into the output tree, in both attempts.
    written = {p.name: p.read_text().splitlines() for p in tmp_path.glob("audit.rank*")}
    assert any(k.startswith("audit.rank0.attempt0") for k in written)
    assert any(k.startswith("audit.rank0.attempt") and not k.endswith("attempt0") for k in written)
    assert not [k for k in written if k.startswith("audit.rank1")], written
    assert any("ckpt_" in line for lines in written.values() for line in lines)



@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find torchrun's worker processes")
def test_torchrun_sigterm_to_every_process_checkpoints(tmp_path, tiny_folder):
    """SLURM's scancel signals every process of the job step: torchrun's agent, which forwards the
    SIGTERM to its workers' process groups, and the workers and their DataLoader workers directly.
    Each worker thus sees SIGTERM twice within milliseconds; that is one stop request (not the
    "second signal aborts" case): the ranks agree on a step, rank 0 writes its checkpoint."""
    from conftest import TINY_TRAIN_ARGS

    from sagan.runs.checkpoints import load_checkpoint
    out = (tmp_path / "runs").resolve()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sagan", "train", *TINY_TRAIN_ARGS, "--set", "train.sample_every=100000",
           "--set", "train.ckpt_every=100000", "--set", "train.log_every=1", "--set", "data.num_workers=1",
           "--data", str(tiny_folder), "--steps", "100000", "--out", str(out), "--name", "stop"]
    # The agent's forwarded copy of the signal can reach a worker seconds after the direct one on
    # a loaded 2-core machine; a 120 s window makes "one request" independent of that timing
    # (the default window's logic is unit-tested in test_signals.py).
    proc = subprocess.Popen(cmd, env=_env(OMP_NUM_THREADS=1, SAGAN_DUPLICATE_SIGNAL_WINDOW=120),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    metrics = out / "stop" / "metrics.csv"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        every = [proc.pid]
        for pid in _children(proc.pid):  # the ranks, then their DataLoader workers
            every += [pid, *_children(pid)]
        assert len(every) >= 5, every  # agent, 2 ranks, 2 loader workers
        for pid in every:  # as slurmstepd does it: one SIGTERM to each process
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        log = _output_or_fail(proc, 120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    shown = log if len(log) < 12000 else log[:6000] + "\n[...]\n" + log[-6000:]  # every rank's lines
    assert "aborted by a second signal" not in log, shown
    m = re.search(r"stopped by SIGTERM at step (\d+); wrote checkpoint (\S+)", log)
    assert m, shown
    state = load_checkpoint(Path(m.group(2).rstrip(";")))
    assert state["step"] == int(m.group(1)) >= 2


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "worker":
    _worker_main(sys.argv[2])
