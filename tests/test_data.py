"""Datasets and the resumable, sharded batch stream."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from sagan.config import DataConfig
from sagan.data import BatchStream, load_data
from sagan.data.datasets import DEBIAN_FMNIST
from sagan.signals import StopRequest


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="needs the Debian dataset-fashion-mnist package "
                    "(installed by .ci/run)")
def test_fashion_mnist_from_debian_package():
    data = load_data(DataConfig(), 32)
    assert data.images.shape == (60000, 1, 32, 32) and data.images.dtype == torch.uint8
    assert data.num_classes == 10 and data.class_names[9] == "Ankle boot"
    assert torch.bincount(data.labels).tolist() == [6000] * 10
    test = load_data(DataConfig(), 32, train=False)
    assert len(test) == 10000
    rgb = load_data(DataConfig(channels=3), 64, train=False)
    assert rgb.images.shape == (10000, 3, 64, 64)


def test_image_folder_resizes_and_labels(tiny_folder):
    data = load_data(DataConfig(dataset="image_folder", root=str(tiny_folder)), 32)
    assert data.num_classes == 2 and len(data) == 16
    x, y = data.folder[0]
    assert x.shape == (3, 32, 32) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    gray = load_data(DataConfig(dataset="image_folder", root=str(tiny_folder), channels=1), 32, conditional=False)
    assert gray.num_classes == 0 and gray.folder[0][0].shape == (1, 32, 32)


def _tensor_data(n=10):
    from sagan.data.datasets import ImageData
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageData("t", "test", 0, 1, 2, images=images, labels=torch.arange(n))


def test_stream_covers_each_epoch_and_resumes_exactly():
    data = _tensor_data(10)
    s = BatchStream(data, 4, seed=3)
    seen = [next(s)[1].tolist() for _ in range(5)]
    # Two full batches per epoch (the last incomplete one dropped), no repeats within an epoch.
    assert len(set(seen[0] + seen[1])) == 8
    s2 = BatchStream(data, 4, seed=3)
    for _ in range(3):
        next(s2)
    state = s2.state_dict()
    s3 = BatchStream(data, 4, seed=3)
    s3.load_state_dict(state)
    assert [next(s3)[1].tolist() for _ in range(2)] == seen[3:5]


def test_stream_shards_the_global_batch_over_ranks():
    data = _tensor_data(12)
    whole = BatchStream(data, 4, seed=1)
    r0 = BatchStream(data, 4, seed=1, rank=0, world=2)
    r1 = BatchStream(data, 4, seed=1, rank=1, world=2)
    for _ in range(4):
        g = next(whole)[1].tolist()
        a, b = next(r0)[1].tolist(), next(r1)[1].tolist()
        assert sorted(a + b) == sorted(g) and len(a) == len(b) == 2


def test_stream_rejects_bad_batches():
    with pytest.raises(ValueError, match="larger than the dataset"):
        BatchStream(_tensor_data(4), 8)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        BatchStream(_tensor_data(10), 3, world=2)


def _kill_workers_and_handle_their_sigchld(pids: list[int], timeout: float = 120) -> None:
    """SIGKILL the loader workers; return once they are dead and this process has run its SIGCHLD
    handler (PyTorch's, as wrapped by the stream) for the last death, without it raising.

    The workers are not reaped (WNOWAIT), as PyTorch's handler and the loader expect to see them.
    """
    def dead(pid: int) -> bool:
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # already reaped
            return True

    handled_after_all_died = []
    installed = signal.getsignal(signal.SIGCHLD)
    assert getattr(installed, "_sagan_deferred", False), "the stream's SIGCHLD handler is not installed"

    def spy(signum, frame):
        installed(signum, frame)  # an exception here (mid-step) fails the test, as it should
        if all(dead(p) for p in pids):
            handled_after_all_died.append(True)

    signal.signal(signal.SIGCHLD, spy)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            if not dead(pid):
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # blocks until it is dead
        # The last death's SIGCHLD may have been taken by another thread: Python runs the handler
        # in the main thread at its next bytecode, so poll (the deadline is only a safety net).
        deadline = time.monotonic() + timeout
        while not handled_after_all_died:
            assert time.monotonic() < deadline, "no SIGCHLD handled after the workers died"
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGCHLD, installed)


def test_stream_survives_workers_killed_during_a_stop(tiny_folder):
    """A scheduler's SIGTERM to the process group also kills the DataLoader workers.

    Once a stop is under way (StopRequest has seen the signal), their death is no error: the stream
    loads the remaining batches in this process, and they are the batches the workers would have made.
    """
    cfg = DataConfig(dataset="image_folder", root=str(tiny_folder), num_workers=2)
    data = load_data(cfg, 32)
    reference = [b for b, _ in zip(BatchStream(data, 4, seed=5), range(6))]
    stream = BatchStream(data, 4, seed=5, num_workers=2)
    got = [next(stream)]
    workers = [w.pid for w in stream._loader_iter._workers]
    with StopRequest(announce=False, on_stop=lambda: setattr(stream, "workers_may_exit", True)) as stop:
        signal.raise_signal(signal.SIGTERM)  # the stop request arrives first (handled on return) ...
        assert stop.requested
        # ... then the same signal kills the workers; their SIGCHLD comes mid-step, where PyTorch's
        # own handler would raise.
        _kill_workers_and_handle_their_sigchld(workers)
        got += [next(stream) for _ in range(5)]
        assert stop.requested and stream.num_workers == 0  # finished in-process
        stream.close()
    for (x, y), (xr, yr) in zip(got, reference):
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_stream_worker_killed_before_the_stop_is_seen(tiny_folder):
    """The race of a multi-threaded process: the worker's death (SIGCHLD) reaches Python before the
    SIGTERM that killed it does. Nothing is raised mid-step; the stop then finishes in process."""
    data = load_data(DataConfig(dataset="image_folder", root=str(tiny_folder)), 32)
    reference = [b for b, _ in zip(BatchStream(data, 4, seed=2), range(5))]
    stream = BatchStream(data, 4, seed=2, num_workers=1)
    got = [next(stream)]
    with StopRequest(announce=False, on_stop=lambda: setattr(stream, "workers_may_exit", True)) as stop:
        _kill_workers_and_handle_their_sigchld([stream._loader_iter._workers[0].pid])  # no stop yet: no exception
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested
        got += [next(stream) for _ in range(4)]
        stream.close()
    for (x, y), (xr, yr) in zip(got, reference):
        assert torch.equal(x, xr) and torch.equal(y, yr)


class _HandOverBroken:
    """A loader iterator whose worker died while handing over a batch's shared memory."""

    def __init__(self, it):
        self.it = it

    def __next__(self):
        raise ConnectionResetError(104, "Connection reset by peer")

    def _shutdown_workers(self):
        self.it._shutdown_workers()


def test_stream_worker_killed_while_handing_over_a_batch(tiny_folder):
    """The worker can die while this process is receiving a batch from it; the fetch then fails with
    a connection error, not PyTorch's "DataLoader worker" one. During a stop that batch, too, is
    loaded in this process, and it is the one the worker would have made; without a stop it is an error."""
    data = load_data(DataConfig(dataset="image_folder", root=str(tiny_folder)), 32)
    reference = [b for b, _ in zip(BatchStream(data, 4, seed=3), range(4))]
    stream = BatchStream(data, 4, seed=3, num_workers=1)
    got = [next(stream)]
    stream._loader_iter = _HandOverBroken(stream._loader_iter)
    with pytest.raises(ConnectionResetError):
        next(stream)
    stream.workers_may_exit = True  # what StopRequest's on_stop does in a run
    got += [next(stream) for _ in range(3)]
    assert stream.num_workers == 0
    for (x, y), (xr, yr) in zip(got, reference):
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_stream_worker_death_is_an_error_without_a_stop(tiny_folder):
    data = load_data(DataConfig(dataset="image_folder", root=str(tiny_folder)), 32)
    stream = BatchStream(data, 4, seed=5, num_workers=1)
    next(stream)
    worker = stream._loader_iter._workers[0]
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        for _ in range(20):  # reported by the fetch after the prefetched batches (within ~5 s)
            next(stream)
    stream.close()
