"""Shared fixtures: a tiny image folder and a tiny trained run (made once per test session).

Every test leaves the process as it found it (autouse fixtures below): torch's thread count and
deterministic-algorithms flag, the SIGCHLD/SIGTERM/SIGINT handlers, and the sagan cache
(``$SAGAN_CACHE``: a temporary directory per test, never ``~/.cache/sagan-torch``). glibc's malloc
thresholds cannot be put back once pinned, so pinning them in the test process is an error: tests
of ``sagan bench``'s pinning run it in a subprocess.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the Hugging Face Hub (a hub id fails at once, not after retries)

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# The EMA generator's standing BN statistics (train.ema_bn) at a tiny run's size: the default 16 x 128
# latents through G at every sample grid and checkpoint were most of a tiny run's time. The mechanism
# is the same; its defaults are tested in test_standing_stats.py and by every preset's defaults.
TINY_STANDING_SETS = ["train.ema_bn_batches=2", "train.ema_bn_batch_size=16"]
TINY_STANDING_ARGS = [x for kv in TINY_STANDING_SETS for x in ("--set", kv)]  # as sagan train flags

TINY_TRAIN_ARGS = [
    "--preset", "fmnist32",
    "--set", "data.dataset=image_folder",
    "--set", "model.g_ch=8", "--set", "model.d_ch=8",
    "--set", "train.batch_size=8", "--set", "train.log_every=2",
    "--set", "train.sample_every=2", "--set", "train.ckpt_every=2",
    "--set", "train.keep_ckpts=2",
    *TINY_STANDING_ARGS,
    "--no-progress",
]

RESTORED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGCHLD", "SIGTERM", "SIGINT") if hasattr(signal, name))


def make_image_folder(root: Path, classes: int = 2, per_class: int = 8, size: int = 40, seed: int = 0) -> Path:
    """Class folders of small RGB PNGs: class k is a bright square at a class-specific place."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        d = root / f"class_{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            o = 4 + 12 * k % (size - 16)
            img[o:o + 12, o:o + 12] = 220
            Image.fromarray(img).save(d / f"img_{i:03d}.png")
    return root


# --------------------------------------------------------------------------- process state

@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """Thread count and the deterministic-algorithms flag (Trainer(deterministic=true) sets it)."""
    threads = torch.get_num_threads()
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (deterministic, warn_only):
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _torch_sigchld_module():
    return sys.modules.get("torch.utils.data._utils.signal_handling")


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """SIGCHLD (PyTorch's DataLoader handler and the stream's wrapper of it), SIGTERM and SIGINT.

    PyTorch installs its SIGCHLD handler once per process and remembers that in a module flag; the
    flag is restored with the handler, so a later test's DataLoader installs it again.
    """
    handlers = {s: signal.getsignal(s) for s in RESTORED_SIGNALS}
    mod = _torch_sigchld_module()
    torch_flag = getattr(mod, "_SIGCHLD_handler_set", None)
    yield
    for s, h in handlers.items():
        if signal.getsignal(s) is not h and h is not None:  # None: set outside Python, cannot be restored
            signal.signal(s, h)
    mod = _torch_sigchld_module()
    if mod is not None and torch_flag is not None:
        mod._SIGCHLD_handler_set = torch_flag
    elif mod is not None:  # imported during the test: its handler was not there before
        mod._SIGCHLD_handler_set = False


@pytest.fixture(autouse=True)
def _malloc_thresholds_stay_unpinned(monkeypatch):
    """Pinned glibc malloc thresholds stay for the rest of the process (glibc has no way back to
    its dynamic defaults), so a test that pins them must do it in a subprocess."""
    from sagan.bench import measure as bench

    def refuse() -> bool:
        pytest.fail("bench.pin_malloc_thresholds() would change glibc malloc for every later test: "
                    "run it in a subprocess")

    monkeypatch.setattr(bench, "pin_malloc_thresholds", refuse)


# --------------------------------------------------------------------------- the sagan cache

@pytest.fixture(scope="session", autouse=True)
def _session_sagan_cache(tmp_path_factory):
    """A temporary ``$SAGAN_CACHE`` for session- and module-scoped fixtures (set before them)."""
    before = os.environ.get("SAGAN_CACHE")
    path = str(tmp_path_factory.mktemp("sagan_cache_session"))
    os.environ["SAGAN_CACHE"] = path
    yield path
    if before is None:
        os.environ.pop("SAGAN_CACHE", None)
    else:
        os.environ["SAGAN_CACHE"] = before


@pytest.fixture(autouse=True)
def _sagan_cache(_session_sagan_cache, tmp_path_factory):
    """An empty ``$SAGAN_CACHE`` per test (subprocesses inherit it). A module that chose its own
    cache (a module-scoped fixture sharing reference statistics between its tests) keeps it."""
    if os.environ.get("SAGAN_CACHE") != _session_sagan_cache:
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGAN_CACHE", str(tmp_path_factory.mktemp("sagan_cache")))
        yield


@pytest.fixture
def one_thread():
    """One intra-op thread for tests that train in process on a shared 2-core machine (faster
    overall than two oversubscribed threads); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- a training process paused at a step

# Injected into a child `sagan train` as sitecustomize.py (through PYTHONPATH): when the loop is
# about to run step N+1 (step N finished: logged, sampled, checkpointed as configured), it tells
# the test through a pipe and then waits there, mid-run with its signal handlers installed, until
# it is killed or a signal handler raises (a second stop signal). Nothing in the package changes.
PAUSE_HOOK = r'''
import os
_at, _fd = os.environ.pop("SAGAN_TEST_PAUSE_AT_STEP", None), os.environ.pop("SAGAN_TEST_PAUSE_FD", None)
if _at is not None and _fd is not None:
    import time
    from sagan.train.trainer import Trainer
    _real, _at, _fd, _pid, _fired = Trainer.train_step, int(_at), int(_fd), os.getpid(), []

    def _paused_train_step(self):
        if self.step == _at and os.getpid() == _pid and not _fired:
            _fired.append(True)
            os.write(_fd, b"%d\n" % self.step)
            os.close(_fd)
            while True:  # Python runs signal handlers between the sleeps
                time.sleep(0.05)
        return _real(self)

    Trainer.train_step = _paused_train_step
'''


def signal_and_wait(proc, signals, timeout: float = 120) -> int:
    """Send ``signals`` in order to a child (paused by :func:`start_paused_at_step`), wait for it to
    exit, and return its exit status; a child still running after ``timeout`` is killed."""
    try:
        for sig in signals:
            proc.send_signal(sig)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_paused_at_step(cmd: list[str], step: int, env: dict[str, str], workdir: Path, timeout: float = 240,
                         **popen_kw) -> tuple[subprocess.Popen, Path]:
    """Start ``cmd`` (a ``sagan train`` command) and return once it has finished ``step`` steps and
    waits before the next one (see PAUSE_HOOK). Returns the process and the file holding its stderr."""
    hook_dir = workdir / "pause_hook"
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(PAUSE_HOOK)
    err_path = workdir / "stderr.txt"
    rfd, wfd = os.pipe()
    env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (str(hook_dir), env.get("PYTHONPATH")) if p),
               SAGAN_TEST_PAUSE_AT_STEP=str(step), SAGAN_TEST_PAUSE_FD=str(wfd))
    try:
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, pass_fds=(wfd,), **popen_kw)
    finally:
        os.close(wfd)
    try:
        deadline, said = time.monotonic() + timeout, b""
        while True:
            if select.select([rfd], [], [], 1.0)[0]:
                said = os.read(rfd, 64)  # b"": the pipe was closed without a word (the process ended)
                break
            if proc.poll() is not None and not select.select([rfd], [], [], 0)[0]:
                break  # ended (a loader worker it forked may still hold the pipe open)
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"training did not reach step {step} within {timeout:.0f} s")
    finally:
        os.close(rfd)
    if said.strip() != str(step).encode():
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait()
        pytest.fail(f"training ended (rc {rc}) before pausing at step {step}: "
                    f"{err_path.read_text(errors='replace')[-2000:]}")
    return proc, err_path


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_folder) -> Path:
    """A finished 4-step conditional run on the tiny folder (read-only for tests: copy to modify)."""
    from sagan.cli import main
    out = tmp_path_factory.mktemp("runs")
    rc = main(["train", *TINY_TRAIN_ARGS, "--data", str(tiny_folder), "--steps", "4",
               "--out", str(out), "--name", "tiny"])
    assert rc == 0
    return out / "tiny"
