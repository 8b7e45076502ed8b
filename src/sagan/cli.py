"""The ``sagan`` command: argument parsing, dispatch and where messages go (each command lives in ``sagan.commands``).

Only the command that runs is imported (``sagan --help`` and ``--version`` import none), and the command
modules import what they compute with inside their functions, so help and version answer without
importing torch (``train`` and ``study`` excepted: their options list the presets; and ``evaluate``).

Messages go through :mod:`logging` (the ``sagan`` logger and its children, ``logging.getLogger(__name__)``
in each module): information to stdout, warnings and errors to stderr, as pip does; ``-q`` keeps only
warnings and errors (and turns the progress bars off), ``-v`` adds debug messages. What a command
produces for a reader or a pipe (a table of scores, ``sagan study --list``) is printed, whatever the level.
"""
from __future__ import annotations

import argparse
import logging
import sys

from sagan import __version__
from sagan.commands import COMMANDS, register
from sagan.errors import EXIT_USAGE, SaganError, TrainingAborted

log = logging.getLogger("sagan")


# --------------------------------------------------------------------------- messages

class ConsoleHandler(logging.Handler):
    """Info and debug messages to stdout, warnings and errors to stderr: the streams ``sys.stdout`` and
    ``sys.stderr`` are when the message is logged, written with ``tqdm.write`` so a progress bar on
    the terminal is not torn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=sys.stderr if record.levelno >= logging.WARNING else sys.stdout)
        except Exception:  # noqa: BLE001 - logging.Handler's contract: report, never raise
            self.handleError(record)


def configure_logging(verbosity: int = 0) -> None:
    """The ``sagan`` logger's level from ``-q`` (verbosity -1: warnings and errors) and ``-v`` (1: debug);
    one ConsoleHandler however often this is called (tests run many commands in one process)."""
    for handler in [h for h in log.handlers if isinstance(h, ConsoleHandler)]:
        log.removeHandler(handler)
    log.addHandler(ConsoleHandler())
    log.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)


def add_verbosity_arguments(p: argparse.ArgumentParser, default=0) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                       help="only warnings, errors and the command's results (no progress bars either)")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                       help="also debug messages")


# --------------------------------------------------------------------------- main

def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, the parser of that command alone (``""``: none), the others present
    only as their lines in ``sagan --help`` (their modules, and torch, are not imported)."""
    parser = argparse.ArgumentParser(prog="sagan", description="Self-Attention GAN: train, sample, inspect.")
    parser.add_argument("--version", action="version", version=f"sagan-torch {__version__}")
    add_verbosity_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub, only)
    for name, command in sub.choices.items():  # also after the command: sagan sample -q ...
        if only is None or name == only:
            _add_verbosity_everywhere(command)
    return parser


def _add_verbosity_everywhere(p: argparse.ArgumentParser) -> None:
    """-q / -v on a command's parser and on those of its own subcommands (sagan study collect DIR -q)."""
    add_verbosity_arguments(p, default=argparse.SUPPRESS)
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbosity_everywhere(child)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns its exit code (documented in docs/robustness.md)."""
    given = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in given if not a.startswith("-")), "")  # the options before it take no value
    configure_logging()
    try:
        parser = build_parser(command if command in COMMANDS else "")
    except SaganError as e:  # its module needs an extra that is not installed (sagan evaluate without [eval])
        log.error(f"sagan {command}: {e.user_message()}")
        return e.exit_code
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage and the error (or --help / --version)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    configure_logging(args.verbosity)
    if args.verbosity < 0 and hasattr(args, "no_progress"):
        args.no_progress = True
    args.argv = given
    try:
        return int(args.func(args) or 0)
    except (SaganError, TrainingAborted) as e:  # one message, no traceback; the exit codes are in sagan.errors
        log.error(f"sagan {args.command}: {e.user_message()}")
        return e.exit_code
    except KeyboardInterrupt:
        log.error(f"sagan {args.command}: interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (`sagan study ... --list | head`): stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
