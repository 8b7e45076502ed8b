"""The ``sagan`` command: argument parsing and dispatch only (each command lives in ``sagan.commands``)."""
from __future__ import annotations

import argparse
import sys

from sagan import __version__
from sagan.commands import register_all
from sagan.errors import EXIT_USAGE, SaganError, TrainingAborted


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagan", description="Self-Attention GAN: train, sample, inspect.")
    parser.add_argument("--version", action="version", version=f"sagan-torch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_all(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns its exit code (documented in docs/robustness.md)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage and the error (or --help / --version)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return int(args.func(args) or 0)
    except (SaganError, TrainingAborted) as e:  # one message, no traceback; the exit codes are in sagan.errors
        print(f"sagan {args.command}: {e.user_message()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"sagan {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`sagan study ... --list | head`): stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
