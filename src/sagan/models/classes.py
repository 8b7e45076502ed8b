"""Classes as a user names them -> class indices: the one matcher behind the CLI's ``--class`` /
``--classes`` and the Python ``generate(G, n, classes=...)``.

A class is named by its index (``3``) or by its name, compared without case (``dress``), and also
without punctuation and with the ``NN_`` prefix of the folders ``sagan sample --format png`` writes
(``ankle_boot``, ``09_Ankle_boot`` and ``t-shirt_top`` name "Ankle boot" and "T-shirt/top"). A
list is comma-separated (``"Dress,7,sneaker"``) or a Python sequence; ``all`` (or None) is every
class. A name the model does not have is a one-line :class:`UsageError` listing its classes.
"""
from __future__ import annotations

import operator
import re
from collections.abc import Iterable

from sagan.errors import UsageError


def folded_name(name: str) -> str:
    """A class name compared without case or punctuation: "T-shirt/top", "t_shirt_top" -> "t_shirt_top"."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def resolve_class(item: str | int | None, num_classes: int, class_names: list[str],
                  flag: str = "--class") -> int | None:
    """One class, by index (an int, or its digits) or by name -> its index; None for None."""
    if item is None:
        return None
    text = item.strip() if isinstance(item, str) else str(item)
    if num_classes == 0:
        raise UsageError(f"{flag} {text}: this model is unconditional (it has no classes); drop {flag}")
    if isinstance(item, str):
        lowered = [n.lower() for n in class_names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        folded = [folded_name(n) for n in class_names]  # "ankle_boot", or sample's folder name "09_Ankle_boot"
        for key in (folded_name(text), folded_name(re.sub(r"^\d+_", "", text))):
            if key and folded.count(key) == 1:
                return folded.index(key)
    c = _as_index(item)
    if c is None or not 0 <= c < num_classes:
        names = f" ({', '.join(f'{i}={n}' for i, n in enumerate(class_names))})" if class_names else ""
        raise UsageError(f"{flag} {text}: no such class; this model has classes 0..{num_classes - 1}{names}")
    return c


def _as_index(item: object) -> int | None:
    """An int (or anything with ``__index__``: numpy or 0-d tensor ints) or a string of digits; else None."""
    if isinstance(item, bool):
        return None
    if isinstance(item, str):
        return int(item.strip()) if re.fullmatch(r"\s*[+-]?\d+\s*", item) else None
    try:
        return operator.index(item)  # type: ignore[arg-type]
    except TypeError:
        return None


def resolve_classes(spec: str | int | Iterable[str | int] | None, num_classes: int, class_names: list[str],
                    flag: str = "--classes") -> list[int] | None:
    """Classes as a comma-separated string (``"0,3,Sneaker"``), one class, or a sequence of names
    and indices -> their indices; ``"all"`` or None -> None (every class)."""
    if spec is None or isinstance(spec, str) and spec.strip().lower() == "all":
        return None
    if isinstance(spec, str):
        items: list = [t for t in spec.split(",") if t.strip()]
        if not items:
            raise UsageError(f"{flag} {spec!r}: give comma-separated class indices or names, e.g. 0,3,Sneaker")
    elif _as_index(spec) is not None:
        items = [spec]
    else:
        try:
            items = list(spec)  # type: ignore[arg-type]
        except TypeError:
            raise UsageError(f"{flag} {spec!r}: give class names or indices (a list, or comma-separated text)") from None
        if not items:
            raise UsageError(f"{flag} []: give at least one class (index or name), or None for every class")
    return [resolve_class(t, num_classes, class_names, flag) for t in items]  # type: ignore[misc]
