"""The subcommands of ``sagan``, one module each, listed here in the order of ``sagan --help``.

Each module defines ``add_parser(subparsers)``, which registers its subcommand and sets ``func`` to a
callable taking the parsed args and returning an exit code. ``COMMANDS`` holds each command's module
and its line in ``sagan --help``, so that the CLI imports a command's module only when that command
runs or shows its help (tests/test_cli.py checks that these lines are the ones the modules register).
"""
from __future__ import annotations

import argparse
import importlib

COMMANDS: dict[str, tuple[str, str]] = {  # name -> (module, the line in `sagan --help`)
    "train": ("train", "train a SAGAN (default: class-conditional Fashion-MNIST 32x32)"),
    "sample": ("sample", "write generated images: a grid PNG, an NPZ, one PNG per image"),
    "interpolate": ("interpolate", "animate a walk between seeds' latents or between classes (grid PNG, GIF, MP4)"),
    "export": ("export", "write a run's generator as a folder that loads without the training code (or as ONNX)"),
    "push": ("push", "publish a run's generator (or an export) on the Hugging Face Hub"),
    "train-evaluator": ("train_evaluator", "train the Fashion-MNIST classifier behind --features fmnist"),
    "evaluate": ("evaluate", "IS / FID / KID / precision-recall / iFID of a generator or of images against real data"),
    "attention": ("attention", "draw where the attention layers look (paper-style PNG figure)"),
    "report": ("report", "write a self-contained HTML report of a run or model (samples, curves, metrics, attention)"),
    "study": ("study", "paired experiments: the paper's stabilisation, attention and reduction studies, and augment"),
    "bench": ("bench", "benchmark attention, training steps, sampling and precision; write JSON"),
}


def command_module(name: str):
    return importlib.import_module(f"sagan.commands.{COMMANDS[name][0]}")


def register(sub: argparse._SubParsersAction, only: str | None = None) -> None:
    """Every command's parser; with ``only``, that command's parser and, for the others, only their line
    in ``sagan --help`` (their modules are not imported)."""
    for name, (_, help_line) in COMMANDS.items():
        if only is None or name == only:
            command_module(name).add_parser(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
