"""Every error a user can see, one type per exit code of the ``sagan`` command.

``sagan.cli.main`` has one handler: it prints ``sagan COMMAND: <message>`` (one line, no
traceback) and returns the error's ``exit_code``. The exit codes are documented in
docs/robustness.md. This module imports nothing from the package: every layer may raise these.
:func:`plural` words the counts in these messages (and in what the commands print).
"""
from __future__ import annotations

import signal
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2  # bad config, arguments, data or checkpoint; nothing was trained
EXIT_DIVERGED = 3  # the divergence guard stopped the run; the last good checkpoint is intact
EXIT_CHECKPOINT_WRITE = 4  # a checkpoint could not be written; the previous one is intact
EXIT_ABORTED = 5  # a second signal aborted at once; resume from the last checkpoint
EXIT_SIGNAL_BASE = 128  # 128 + signum: stopped by a signal after writing a checkpoint


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """A count and its noun for a message: ``plural(1, "image")`` -> ``"1 image"``, ``plural(2, "image")``
    -> ``"2 images"``; ``many`` where adding "s" is wrong (``plural(n, "class", "classes")``)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def exit_code_for_signal(signum: int) -> int:
    return EXIT_SIGNAL_BASE + int(signum)


class SaganError(Exception):
    """Base of the errors the CLI reports as one message; ``exit_code`` is what the command returns."""

    exit_code = 1

    def user_message(self) -> str:
        return f"error: {self}"


# --------------------------------------------------------------------------- exit 2: bad input

class UsageError(SaganError):
    """Input the command cannot use (arguments, config, data, checkpoint, weights); nothing was trained."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError, ValueError):
    """An invalid or unknown configuration value; the message names the key and the valid choices."""


class DataError(UsageError, RuntimeError):
    """The data cannot be loaded or used; the message says why and what to do."""


class CheckpointError(UsageError, RuntimeError):
    """A checkpoint cannot be read or is not one this code can load (another architecture, newer format)."""


class WeightsError(UsageError, FileNotFoundError):
    """Weights a feature extractor needs are missing or not the expected ones; the message says how to get them."""


class InceptionWeightsError(DataError):
    """The Inception weights file is not available; the message names the file and where to put it."""


class MetricsError(UsageError, ValueError):
    """Metrics asked for something impossible; the message says what to change."""


# --------------------------------------------------------------------------- exits 3, 4, 5, 128+n

class TrainingDiverged(SaganError, RuntimeError):
    """Training produced non-finite values and the guard stopped it."""

    exit_code = EXIT_DIVERGED

    def __init__(self, message: str, step: int):
        self.step = step
        super().__init__(message)


class CheckpointWriteError(SaganError, RuntimeError):
    """Writing a checkpoint failed (disk full, permissions...); the previous checkpoint is intact."""

    exit_code = EXIT_CHECKPOINT_WRITE

    def user_message(self) -> str:
        return (f"error: {self}\nTraining stopped: without a checkpoint it could not go on safely. The previous "
                "checkpoint is intact; free disk space (or fix permissions) and resume with "
                "sagan train --resume RUN_DIR")


class TrainingInterrupted(SaganError):
    """Training stopped on a signal after writing a checkpoint at ``step``."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = exit_code_for_signal(signum)
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (not the main process)"
        super().__init__(f"stopped by {signal_name(signum)} at step {step}; wrote {where}; "
                         f"continue with: sagan train --resume {checkpoint.parent.parent if checkpoint else 'RUN_DIR'}")

    def user_message(self) -> str:
        return str(self)


class TrainingAborted(BaseException):
    """A second signal arrived while stopping: abort at once, write nothing.

    A ``BaseException`` (like ``KeyboardInterrupt``) so ordinary ``except Exception`` blocks do
    not swallow it; the CLI's handler catches it with :class:`SaganError`.
    """

    exit_code = EXIT_ABORTED

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"aborted by a second signal ({signal_name(signum)}) without writing a checkpoint; "
                         "the previous checkpoint is intact: continue with sagan train --resume RUN_DIR")

    def user_message(self) -> str:
        return str(self)
