"""Subcommands beyond train/sample, one module each, registered into the ``sagan`` parser.

Each module defines ``add_parser(subparsers)`` which registers its subcommand and sets
``func`` to a callable taking the parsed args and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib

MODULES: list[str] = ["train_evaluator", "evaluate", "attention", "report", "bench"]


def register_all(sub: argparse._SubParsersAction) -> None:
    for name in MODULES:
        importlib.import_module(f"sagan.commands.{name}").add_parser(sub)
