"""The subcommands of ``sagan``, one module each, registered into the parser in this order.

Each module defines ``add_parser(subparsers)`` which registers its subcommand and sets
``func`` to a callable taking the parsed args and returning an exit code.
"""
from __future__ import annotations

import argparse

from sagan.commands import (attention, bench, evaluate, export, interpolate, push, report, sample, study, train,
                            train_evaluator)

COMMANDS = (train, sample, interpolate, export, push, train_evaluator, evaluate, attention, report, study, bench)  # in the order of `sagan --help`


def register_all(sub: argparse._SubParsersAction) -> None:
    for module in COMMANDS:
        module.add_parser(sub)
