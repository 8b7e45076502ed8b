"""Graceful handling of SIGTERM / SIGINT (preemption); the exit codes are in :mod:`sagan.errors`.

The first SIGTERM or SIGINT asks the training loop to stop: it finishes the current step, writes
a checkpoint and raises ``TrainingInterrupted``; the command exits with 128 + the signal number
(143 for SIGTERM, 130 for SIGINT), which is what schedulers expect from a job that ended on a
signal. A second signal while the first is being handled aborts at once (``TrainingAborted``,
exit code ``EXIT_ABORTED``) without writing anything; the previous checkpoint stays intact
because checkpoints are written atomically. See docs/robustness.md.

Under torchrun one stop request often arrives twice: SLURM signals every process of the job step,
and torchrun's agent, signalled too, forwards the same signal to its workers a few milliseconds
later. So the trainer gives StopRequest a ``duplicate_window`` there: the same signal again within
that many seconds is the same request, not a second one.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable, Iterable

from sagan.errors import TrainingAborted, signal_name

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Installs handlers for SIGTERM/SIGINT for the duration of a ``with`` block.

    ``signum`` is the first signal received (None until then). Handlers are only installed in
    the main thread (Python delivers signals there); elsewhere this is a no-op that never stops.
    """

    def __init__(self, signals: Iterable[int] = HANDLED_SIGNALS, announce: bool = True,
                 on_stop: Callable[[], None] | None = None, duplicate_window: float = 0.0):
        self.signals = tuple(signals)
        self.announce = announce
        self.on_stop = on_stop  # called (in the main thread) on the first signal
        self.duplicate_window = duplicate_window  # seconds in which the same signal again is ignored
        self._first_at = 0.0
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handler(self, signum: int, frame) -> None:  # noqa: ARG002 - signal API
        if os.getpid() != self._pid:
            # A forked DataLoader worker inherited this handler. A Ctrl-C or a scheduler's SIGTERM to the
            # whole process group must not kill it mid-step: the main process decides, and its workers
            # exit with it.
            return
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()
            if self.announce:
                log.warning(f"received {signal_name(signum)}: finishing the current step and writing a checkpoint "
                            "(send another signal to abort at once without one)")
            if self.on_stop is not None:
                self.on_stop()
            return
        if signum == self.signum and time.monotonic() - self._first_at < self.duplicate_window:
            return  # the same request delivered twice (scheduler and launcher), not a second one
        self.restore()  # a third signal gets the default behaviour
        raise TrainingAborted(signum)

    def install(self) -> "StopRequest":
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
