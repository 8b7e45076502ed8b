"""A resumable, shardable stream of training batches.

Each epoch is a permutation of the dataset drawn from ``seed + epoch``; a global batch is the
next ``batch_size`` indices of it, and process ``rank`` of ``world`` takes every world-th of
those. The stream's state is just (epoch, position), so a resumed run sees exactly the batches
the uninterrupted run would have seen, and a 2-process run sees the same global batches as a
1-process run. The last incomplete batch of an epoch is dropped.
"""
from __future__ import annotations

import signal
import threading
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from sagan.data.datasets import ImageData, to_model_range
from sagan.errors import ConfigError, plural

# How PyTorch's errors about a dead DataLoader worker begin (from its SIGCHLD handler and from a fetch).
WORKER_ERROR = "DataLoader worker"


def _report_worker_deaths_at_fetch() -> None:
    """Make a DataLoader worker's death an error of the next fetch, not of an arbitrary moment.

    PyTorch's SIGCHLD handler raises the death of a worker as a RuntimeError wherever the main
    process happens to be, mid-step. A scheduler's SIGTERM to the whole process group kills the
    workers (PyTorch's own SIGTERM handler in them) at the same moment it asks the run to stop,
    and nothing orders the two: in a multi-threaded process the SIGTERM may be taken by another
    thread and reach Python after the SIGCHLD. So the handler is wrapped to drop that one error;
    the loader raises it itself when a batch is fetched (within its 5 s status-check interval),
    where :class:`BatchStream` decides: an error, or, when the run is stopping, the batch loaded in
    this process. Installed once, in the main thread, after PyTorch's own handler.
    """
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        return
    torch_handler = signal.getsignal(signal.SIGCHLD)
    if not callable(torch_handler) or getattr(torch_handler, "_sagan_deferred", False):
        return

    def handler(signum, frame):
        try:
            torch_handler(signum, frame)
        except RuntimeError as e:
            if WORKER_ERROR not in str(e):
                raise

    handler._sagan_deferred = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGCHLD, handler)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def check_batch_size(batch_size: int, n: int, world: int = 1) -> None:
    """The one check of the global batch against the data and the processes: ConfigError when
    ``batch_size`` images cannot be drawn from ``n`` or split evenly over ``world`` processes."""
    if batch_size > n:
        raise ConfigError(f"train.batch_size={batch_size} is larger than the dataset ({plural(n, 'image')}); "
                          f"use at most {n}")
    if batch_size % world:
        raise ConfigError(f"train.batch_size={batch_size} (the global batch) must be divisible by the number of "
                          f"processes ({world})")


class _ShardBatchSampler(Sampler[list[int]]):
    def __init__(self, stream: "BatchStream"):
        self.stream = stream

    def __iter__(self) -> Iterator[list[int]]:
        epoch, pos = self.stream.epoch, self.stream.position
        while True:
            yield self.stream._indices(epoch, pos).tolist()
            pos += self.stream.batch_size
            if pos + self.stream.batch_size > self.stream.n:
                epoch, pos = epoch + 1, 0


class BatchStream:
    """``next()`` gives (images in [-1, 1] float, labels int64) for this process."""

    def __init__(self, data: ImageData, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 device: torch.device | str = "cpu", num_workers: int = 0):
        check_batch_size(batch_size, len(data), world)
        self.data, self.n = data, len(data)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, None
        self._loader_iter = None
        # Set when the run is stopping on a signal: a DataLoader worker that died of the same signal
        # is then no error, and the remaining batches are loaded in this process.
        self.workers_may_exit = False

    def _indices(self, epoch: int, pos: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            self._perm, self._perm_epoch = epoch_permutation(self.n, self.seed, epoch), epoch
        return self._perm[pos:pos + self.batch_size][self.rank::self.world]

    def _advance(self) -> None:
        self.position += self.batch_size
        if self.position + self.batch_size > self.n:
            self.epoch, self.position = self.epoch + 1, 0

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data.images is not None:
            idx = self._indices(self.epoch, self.position)
            x = to_model_range(self.data.images[idx])
            y = self.data.labels[idx] if self.data.labels is not None else torch.zeros(len(idx), dtype=torch.long)
        else:
            if self._loader_iter is None:
                # The loader's own generator (seeded by the stream's position) gives worker seeds
                # without drawing from torch's global RNG, so resuming does not shift it.
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 65_537 + self.position)
                loader = DataLoader(self.data.folder, batch_sampler=_ShardBatchSampler(self),
                                    num_workers=self.num_workers, persistent_workers=False, generator=gen)
                self._loader_iter = iter(loader)
                if self.num_workers:
                    _report_worker_deaths_at_fetch()
            try:
                x, y = next(self._loader_iter)
            except (RuntimeError, OSError, EOFError) as e:
                # A worker that dies while this process receives a batch's shared memory from it
                # breaks that hand-over with a connection error instead of PyTorch's own message.
                worker_gone = WORKER_ERROR in str(e) if isinstance(e, RuntimeError) else True
                if not (self.num_workers and self.workers_may_exit and worker_gone):
                    raise
                # The stop signal reached the workers too (a scheduler signals the whole process
                # group). Finish the step with this process loading the batch itself: same indices,
                # same (deterministic) transforms, so the batch is the one the workers would have made.
                self.close()
                self.num_workers = 0
                return next(self)
        self._advance()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._loader_iter = None  # the sampler restarts from the restored position

    def close(self) -> None:
        """Shut down the DataLoader workers, if any; the next batch starts a new loader."""
        it, self._loader_iter = self._loader_iter, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
