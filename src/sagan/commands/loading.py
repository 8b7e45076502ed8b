"""Loading the model that a command's source arguments name (``sagan.commands.common.add_source_arguments``):
a run directory, checkpoint, export, shipped name or Hugging Face Hub id, with the one-line errors for
each. Apart from ``common`` because it imports torch: the commands import it when they run, not when
``sagan --help`` builds their parsers.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sagan.commands.common import device_from_args, source_of
from sagan.errors import CheckpointError
from sagan.models.export import pretrained_names
from sagan.models.hub import download_export, is_hub_id
from sagan.runs.checkpoints import Checkpoints, load_checkpoint
from sagan.runs.folder import RunDir
from sagan.sampling import LoadedRun, load_run

MAX_FALLBACK_TRIES = 5  # older checkpoints tried when the one asked for cannot be read


def load_from_args(args: argparse.Namespace, device=None) -> LoadedRun:
    """The model the arguments name, on ``device`` (default: ``--device``)."""
    if device is None:
        device = device_from_args(args)
    source = source_of(args)
    local, hub_id = resolve_source(source)
    try:
        run = load_run(local, ema=not getattr(args, "no_ema", False), device=device, checkpoint=args.checkpoint)
    except CheckpointError as e:
        hint = intact_checkpoint_hint(e, local)
        if not hint:
            raise
        raise CheckpointError(f"{e}{hint}") from None
    return HubRun.of(run, hub_id) if hub_id else run


def resolve_source(source: str) -> tuple[str, str | None]:
    """A model source as a local path or shipped name, and the Hub id it was downloaded for (None when
    it is local). A path that exists and a shipped name win over a Hub id of the same spelling."""
    if Path(source).expanduser().exists() or source in pretrained_names() or not is_hub_id(source):
        return source, None
    return str(download_export(source)), source


@dataclasses.dataclass
class HubRun(LoadedRun):
    """An exported model downloaded from the Hugging Face Hub: named by its Hub id, and written next to
    the current folder (``./hub-USER--REPO``), never into huggingface_hub's cache."""
    hub_id: str = ""

    @classmethod
    def of(cls, run: LoadedRun, hub_id: str) -> HubRun:
        return cls(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)}, hub_id=hub_id)

    @property
    def output_base(self) -> Path:
        return Path.cwd() / f"hub-{self.hub_id.split('@')[0].replace('/', '--')}"

    def describe(self) -> str:
        return super().describe().replace(str(self.checkpoint), f"{self.hub_id} from the Hugging Face Hub "
                                                                f"(revision {self.checkpoint.name[:12]})", 1)

    def provenance(self) -> dict:
        return dict(super().provenance(), source=self.hub_id, hub_revision=self.checkpoint.name)


def intact_checkpoint_hint(error: CheckpointError, source: str) -> str:
    """When ``error`` names a run's checkpoint file that cannot be used (damaged, refused, newer), the
    newest older checkpoint of that run that loads, as the ``--checkpoint`` to give; "" when none does."""
    p = Path(source)
    folder = RunDir(p).checkpoints if p.is_dir() else p.parent
    ckpts = Checkpoints(folder).list() if folder.is_dir() else []
    failed = next((c for c in [*ckpts, folder / "best.pt"] if str(c) in str(error)), None)
    if failed is None:
        return ""
    older = [c for c in ckpts if c.name < failed.name or failed.name == "best.pt"]
    for cand in reversed(older[-MAX_FALLBACK_TRIES:]):
        try:
            load_checkpoint(cand)
        except CheckpointError:
            continue
        if p.is_dir():
            return f"; an older checkpoint is intact: use it with --checkpoint {cand.name}"
        return f"; an older checkpoint is intact: {cand}"
    return ""
