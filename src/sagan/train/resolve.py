"""The parts of a run's config that depend on its data and its machine, resolved once before training.

A config from a preset, a file and ``--set`` may still say ``auto`` where the answer depends on what
is only known at start-up: DiffAugment's policy (the dataset's size), the precision (a measured probe
on this machine), and a folder dataset's channel count. :func:`resolve_for_data` fills them in on a
copy, checks the batch against the data and the processes, and returns the lines worth telling the
user. The :class:`~sagan.train.trainer.Trainer` takes only a resolved config and never changes it;
``config.yaml`` and every checkpoint store the resolved values, so a resume reads them as they were.
"""
from __future__ import annotations

import copy

import torch

from sagan.config import Config
from sagan.data.augment import resolve_policy
from sagan.data.datasets import ImageData, dataset_spec
from sagan.data.stream import check_batch_size
from sagan.errors import ConfigError
from sagan.train.precision import resolve_precision


def resolve_for_data(cfg: Config, data: ImageData, device: torch.device, world: int = 1
                     ) -> tuple[Config, list[str]]:
    """``cfg`` with nothing left ``auto`` for this data and machine (a copy; ``cfg`` is left alone),
    and the start-up lines that say what was chosen: ``precision: ...`` first, then ``note: ...``."""
    out = copy.deepcopy(cfg)
    lines: list[str] = []
    check_batch_size(out.train.batch_size, len(data), world)
    if out.data.channels is None and not dataset_spec(out.data.dataset).in_memory:
        out.data.channels = data.channels  # detected from the folder; stored, so a resume reads it the same way
    out.data.diffaugment, augment_note = resolve_policy(out.data.diffaugment, out.data.dataset, len(data))
    if out.train.precision == "auto":  # measured once per machine and model (cached)
        out.train.precision, why = resolve_precision(out, data.num_classes, data.channels, device, world=world)
        lines.append(f"precision: {why}")
    if augment_note:
        lines.append(f"note: {augment_note}")
    if out.model.conditional and data.num_classes == 0:
        lines.append("note: the data has no classes (a flat folder or a single class folder), so the model is "
                     "unconditional")
    return out, lines


def check_resolved(cfg: Config) -> None:
    """ConfigError unless ``cfg`` is resolved for its data (:func:`resolve_for_data`)."""
    unresolved = [k for k, v in (("data.diffaugment", cfg.data.diffaugment), ("train.precision", cfg.train.precision))
                  if v == "auto"]
    if unresolved:
        raise ConfigError(f"{' and '.join(unresolved)} still 'auto': a Trainer takes a config resolved for its data "
                          "(sagan.train.resolve.resolve_for_data)")
