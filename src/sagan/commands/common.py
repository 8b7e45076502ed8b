"""Arguments every command that loads a trained generator shares, and the checks of what a user types.

A model source is a run directory, a checkpoint file, a folder written by ``sagan export``, a
Hugging Face Hub id of one (``user/repo``, downloaded into huggingface_hub's cache; a local path
that exists wins), or (with ``--pretrained NAME``) a model shipped with the package or a Hub id.
``--checkpoint latest|best|PATH`` picks among a run directory's checkpoints. See
``sagan.commands.loading`` (which loads it), ``sagan.sampling.load_run`` and ``sagan.models.hub``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from pathlib import Path

from sagan.errors import UsageError, plural
from sagan.fileio import atomic_write_text
from sagan.models.classes import resolve_class, resolve_classes  # noqa: F401 (the commands' class flags)
from sagan.schema import MAX_SAMPLE_SEED

MAX_SEEDS_PER_CALL = 1_000_000  # seeds per call (a typo like 0-10000000000 fails at once)
MAX_IMAGES = 1_000_000  # images per call of -n (sample, evaluate); more: several calls (sample --seeds ranges)
MAX_BATCH = 65_536  # --batch-size (the ONNX export's batch axis has the same bound)
SOURCE_METAVAR = "SOURCE"
SOURCE_HELP = "run directory, checkpoint file, folder written by 'sagan export', or Hugging Face Hub id (user/repo)"


def add_source_arguments(p: argparse.ArgumentParser, ema: bool = True) -> None:
    """SOURCE (optional when --pretrained is given), --pretrained, --checkpoint, --no-ema."""
    p.add_argument("source", metavar=SOURCE_METAVAR, nargs="?", help=SOURCE_HELP)
    p.add_argument("--pretrained", metavar="NAME",
                   help="use a model shipped with sagan-torch (a name it does not ship lists those it does) "
                        "or a Hugging Face Hub id (user/repo) instead of SOURCE")
    p.add_argument("--checkpoint", default="latest", metavar="latest|best|PATH",
                   help="which checkpoint of a run directory: the newest (default), best.pt (lowest tracked FID), "
                        "or a checkpoint file")
    if ema:
        p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of the EMA one")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available, else CPU), cpu, cuda, cuda:N")


def add_progress_argument(p: argparse.ArgumentParser, has_bars: bool = True) -> None:
    """``--no-progress`` on every command, so scripts can pass it to all of them."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars" if has_bars else
                   "accepted for scripts that pass it to every command; this one draws no progress bars")


def source_of(args: argparse.Namespace) -> str:
    """The model source named on the command line (SOURCE or --pretrained NAME, exactly one)."""
    if args.pretrained and args.source:
        raise UsageError(f"give either SOURCE ({args.source}) or --pretrained {args.pretrained}, not both")
    if args.pretrained:
        from sagan.models.export import pretrained_names
        from sagan.models.hub import is_hub_id
        names = pretrained_names()
        if args.pretrained not in names and not is_hub_id(args.pretrained):
            raise UsageError(f"--pretrained {args.pretrained}: no such shipped model; available: "
                             f"{', '.join(names) or 'none (this installation has no pretrained models)'}, "
                             "or a Hugging Face Hub id (user/repo)")
        return args.pretrained
    if not args.source:
        raise UsageError(f"give a {SOURCE_METAVAR} ({SOURCE_HELP}) or --pretrained NAME")
    return args.source


def device_from_args(args: argparse.Namespace):
    from sagan.distributed import resolve_device
    try:
        return resolve_device(getattr(args, "device", "auto"))
    except RuntimeError as e:  # torch.device() of a name it does not know
        raise UsageError(f"--device {args.device}: {e}") from None


def parse_seeds(text: str, flag: str = "--seeds", unique: bool = True) -> list[int]:
    """``"0-99"``, ``"3,7,10-12"`` -> the seeds in the order given; one-line UsageError otherwise.
    ``unique``: a seed given twice is an error (one image per seed); a walk may come back to one."""
    def bad(why: str) -> UsageError:
        return UsageError(f"{flag} {text!r}: {why}; give seeds and inclusive ranges, e.g. 0-99 or 3,7,10-12")

    spans: list[tuple[int, int]] = []
    for item in text.split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
        if not m:
            raise bad(f"{item!r} is not a seed (a whole number >= 0) or a range A-B" if item else "an empty item")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise bad(f"the range {item} runs backwards")
        if hi > MAX_SAMPLE_SEED:
            raise bad(f"{hi} is larger than the largest seed, {MAX_SAMPLE_SEED}")
        spans.append((lo, hi))
    count = sum(hi - lo + 1 for lo, hi in spans)
    if count > MAX_SEEDS_PER_CALL:
        raise bad(f"{count} seeds; at most {MAX_SEEDS_PER_CALL} per call")
    seeds = [s for lo, hi in spans for s in range(lo, hi + 1)]
    seen: set[int] = set()
    for s in seeds if unique else ():
        if s in seen:
            raise bad(f"seed {s} is given twice")
        seen.add(s)
    return seeds


def check_size(value: int, flag: str, limit: int, minimum: int = 1, hint: str = "") -> int:
    """A number the user typed that sizes the work (images, frames, a scale, a batch): between
    ``minimum`` and ``limit``, or a one-line UsageError naming both, before anything is computed."""
    if not minimum <= value <= limit:
        raise UsageError(f"{flag} {value}: must be between {minimum} and {limit}{hint}")
    return value


def check_seed(value: int | None, flag: str = "--seed") -> int | None:
    """A seed ``torch.Generator.manual_seed`` takes: 0 to 2**63 - 1 (a larger one overflows it)."""
    if value is not None and not 0 <= value <= MAX_SAMPLE_SEED:
        raise UsageError(f"{flag} {value}: must be between 0 and {MAX_SAMPLE_SEED} (2**63 - 1)")
    return value


def available_memory() -> int | None:
    """Bytes this process can still allocate: the kernel's MemAvailable, lowered to what an address-space
    limit (``ulimit -v``, RLIMIT_AS) leaves; None where neither is known (not Linux)."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            limits += [int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status", encoding="ascii") as f:
                used = next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:")), 0)
            limits.append(max(0, soft - used))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return min(limits) if limits else None


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse, in one line and before computing, work whose results would not fit in memory."""
    free = available_memory()
    if free is not None and needed > free:
        raise UsageError(f"{what} would need about {needed / 2 ** 30:.1f} GiB of memory and this process can "
                         f"use about {free / 2 ** 30:.1f} GiB; {fix}")


def check_writable(folder: str | Path, flag: str = "--out") -> Path:
    """Before any compute: ``folder`` (or, while it does not exist, the nearest folder above it that
    does) is a folder this process can create files in; a one-line UsageError otherwise (read-only,
    no permission, a file in the way). Checked by creating and deleting a hidden empty file there;
    nothing else is created."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == folder else f" (on the way to {folder})"
        raise UsageError(f"cannot write into {folder}: {probe} is a file, not a folder{where}; choose another "
                         f"folder with {flag}")
    try:
        fd, name = tempfile.mkstemp(prefix=".sagan-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise UsageError(f"cannot write into {folder}: {e.strerror or e} in {probe}; choose a folder you can "
                         f"write to with {flag}") from None
    return folder


def partial_write_error(record_path: Path, record: dict, done: list[tuple[Path, bool]], error: OSError,
                        what: str) -> UsageError:
    """Writing ``what`` failed part-way (a full disk, a quota) after the files in ``done`` ((path, whether
    it existed before)): ``record`` with those files and ``"complete": false`` is written to
    ``record_path``; when even that cannot be written, the files this call created are deleted instead,
    so no partial set is left unrecorded. Returns the one-line error that says which."""
    why = error.strerror or str(error)
    folder = record_path.parent
    record = dict(record, complete=False, error=f"{type(error).__name__}: {why}",
                  written=[str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p, _ in done])
    try:
        atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
        kept = f"the {plural(len(done), 'file')} written before it (listed in {record_path}, \"complete\": false)"
    except OSError:
        for p, existed in done:
            if not existed:
                p.unlink(missing_ok=True)
        kept = f"the {plural(sum(not e for _, e in done), 'new file')} written before it: deleted (no record fitted either)"
    return UsageError(f"writing {what} into {folder} failed ({why}): {kept}; free space (or choose another "
                      "--out) and run the same command again")


def compact_seeds(seeds: list[int]) -> str:
    """The seeds written back as ranges: ``[3, 7, 10, 11, 12]`` -> ``"3,7,10-12"`` (parse_seeds' inverse)."""
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def parse_truncation(value: float | None) -> float | None:
    if value is None:
        return None
    if math.isnan(value) or value < 0:
        raise UsageError(f"--truncation {value}: must be a number >= 0 (0: every image of a class is the "
                         "mean-latent image; larger: more variety; inf: no truncation)")
    return value
