"""``sagan push``: publish a trained generator on the Hugging Face Hub, as ``sagan export`` writes it."""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from sagan.commands import export
from sagan.commands.common import add_progress_argument, add_source_arguments, source_of
from sagan.errors import UsageError

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push", help="publish a run's generator (or an export) on the Hugging Face Hub",
        description="Export the generator of SOURCE (as 'sagan export' does: model.safetensors, config.json with "
                    "where the weights came from, and the model card) into a temporary folder and upload it to "
                    "the Hub model repository REPO_ID in one commit; the repository is created when missing. "
                    "Needs a Hub token (hf auth login, or HF_TOKEN). Anyone can then load it with "
                    "'sagan sample REPO_ID' or sagan.Generator.from_pretrained('REPO_ID').")
    add_source_arguments(p)
    p.add_argument("repo_id", metavar="REPO_ID", help="the Hub model repository, user/name or org/name")
    p.add_argument("--private", action="store_true", help="create the repository as private (when it is new)")
    p.add_argument("--message", metavar="TEXT", help="the commit message (default: 'Upload SAGAN generator')")
    p.add_argument("--branch", metavar="NAME", help="push to this branch of the repository (default: main)")
    p.add_argument("--out", metavar="DIR",
                   help="also keep the uploaded export in this new folder (default: a temporary folder, removed "
                        "after the upload); never overwritten")
    p.add_argument("--license", metavar="ID",
                   help="the model card's licence, a Hub licence id such as mit or cc-by-4.0 (default: the "
                        "export's, else mit for Fashion-MNIST and unknown for other data)")
    add_progress_argument(p, has_bars=False)
    p.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    from sagan.models.export import CONFIG_NAME, INFO_KEY, model_card
    from sagan.models.hub import hub_offline, parse_hub_id, push_export

    parsed = parse_hub_id(args.repo_id)
    if parsed is None or parsed[1] is not None:
        raise UsageError(f"REPO_ID {args.repo_id}: not a Hugging Face Hub repository id; give user/name or "
                         "org/name (--branch picks a branch)")
    if hub_offline():
        raise UsageError("HF_HUB_OFFLINE is set: publishing needs the Hugging Face Hub; unset it to push")
    source_of(args)  # SOURCE or --pretrained, checked before anything is read
    if args.out and Path(args.out).exists():
        raise UsageError(f"--out {args.out} exists; the export is written to a new folder (nothing is overwritten)")
    with tempfile.TemporaryDirectory(prefix="sagan-push-") as tmp:
        folder = Path(args.out) if args.out else Path(tmp) / "export"
        _, run = export.export_from_args(argparse.Namespace(**dict(vars(args), out=str(folder), format="safetensors")))
        described = run.describe()
        if args.license:
            config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
            config[INFO_KEY]["license"] = args.license
            (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
            (folder / "README.md").write_text(model_card(config), encoding="utf-8")
        url = push_export(folder, args.repo_id, private=args.private or None, message=args.message,
                          branch=args.branch)
    kept = f"\nthe uploaded folder: {args.out}" if args.out else ""
    log.info(f"pushed {described}\nto https://huggingface.co/{args.repo_id} ({url}){kept}\n"
             f"load it with: sagan sample {args.repo_id}   or   sagan.Generator.from_pretrained({args.repo_id!r})")
    return 0
