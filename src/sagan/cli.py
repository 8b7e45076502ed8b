"""The ``sagan`` command: train | sample (and more subcommands registered in ``sagan.commands``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sagan.config import PRESETS, ConfigError
from sagan.data.datasets import DataError
from sagan.models import count_parameters
from sagan.train.guard import TrainingDiverged
from sagan.train.checkpoint import CheckpointError, CheckpointWriteError
from sagan.train.signals import (EXIT_ABORTED, EXIT_CHECKPOINT_WRITE, EXIT_DIVERGED, EXIT_USAGE,  # noqa: F401
                                 TrainingAborted, TrainingInterrupted)


class UserError(Exception):
    """An error caused by input; printed as one message, no traceback."""


def _parse_classes(text: str | None) -> list[int] | None:
    if text is None or text == "all":
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--classes {text!r}: give comma-separated class indices, e.g. 0,3,7") from None


# --------------------------------------------------------------------------- train

def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a SAGAN (default: class-conditional Fashion-MNIST 32x32)",
                       description="Train a SAGAN. Config = preset, then --config FILE, then --set overrides.")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="preset to start from (default fmnist32)")
    p.add_argument("--config", metavar="FILE", help="YAML file with sections model/data/optim/loss/train")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one value, e.g. --set optim.lr_d=2e-4 (repeatable)")
    p.add_argument("--data", metavar="PATH", help="dataset location (same as --set data.root=PATH)")
    p.add_argument("--steps", type=int, help="number of generator steps (same as --set train.steps=N)")
    p.add_argument("--out", default="runs", metavar="DIR", help="parent folder of run directories (default runs/)")
    p.add_argument("--name", help="run directory name (default PRESET-DATE-TIME; never overwritten)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _train_config(args: argparse.Namespace):
    from sagan.config import config_from_dict, load_config, set_value, validate, parse_override
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.root={args.data}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.resume:
        import yaml
        run_dir = Path(args.resume)
        cfg_file = run_dir / "config.yaml"
        if not run_dir.is_dir():
            raise UserError(f"--resume {run_dir}: no such run directory")
        if args.preset or args.config:
            raise UserError("--resume takes its config from the run directory; drop --preset/--config")
        try:
            resolved = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        except Exception as e:  # noqa: BLE001 - missing, damaged or not YAML: fall back to the checkpoint
            resolved = _config_from_newest_checkpoint(run_dir, f"{cfg_file} cannot be read ({type(e).__name__})")
        cfg = config_from_dict(resolved)
        for text in overrides:
            key, value = parse_override(text)
            if not (key.startswith("train.") or key in ("data.root", "data.num_workers", "data.download")):
                raise UserError(f"--set {key}: on resume only train.* and data.root/num_workers/download may "
                                "change (the checkpoint was made for the rest)")
            set_value(cfg, key, value)
        validate(cfg)
        return cfg
    return load_config(args.preset, args.config, overrides)


def _config_from_newest_checkpoint(run_dir: Path, why: str) -> dict:
    """The resolved config stored inside the run's newest readable checkpoint."""
    from sagan.train.checkpoint import list_checkpoints, load_checkpoint
    for path in reversed(list_checkpoints(run_dir / "checkpoints")):
        try:
            config = load_checkpoint(path)["config"]
        except CheckpointError:
            continue
        print(f"note: {why}; using the config stored in {path}", file=sys.stderr)
        return config
    raise UserError(f"--resume {run_dir}: {why} and no readable checkpoint holds a config; "
                    "is it a run directory?")


def cmd_train(args: argparse.Namespace) -> int:
    from sagan.data import load_data
    from sagan.train import distributed as dist_utils
    from sagan.train.loop import Trainer
    from sagan.train.rundir import default_run_name, new_run_dir, write_run_info

    cfg = _train_config(args)
    if args.name and not args.resume:
        from sagan.config import validate
        cfg.name = args.name
        validate(cfg)  # a plain directory name (no slashes, not empty), checked before any data is read
    dist = dist_utils.init_from_env(cfg.train.device)
    dist_utils.quiet_non_main(dist)
    say = print if dist.is_main else (lambda *a, **k: None)
    data = load_data(cfg.data, cfg.model.resolution, cfg.model.conditional)
    say(f"data: {data.source}; {len(data)} images, "
        f"{data.num_classes or 'no'} classes, {data.channels} channel(s), {cfg.model.resolution}x{cfg.model.resolution}")
    if cfg.train.batch_size > len(data):
        raise UserError(f"train.batch_size={cfg.train.batch_size} is larger than the dataset ({len(data)} images); "
                        f"use at most {len(data)}")
    if cfg.train.batch_size % dist.world:
        raise UserError(f"train.batch_size={cfg.train.batch_size} (the global batch) must be divisible by the "
                        f"number of processes ({dist.world})")
    if cfg.model.conditional and data.num_classes == 0:
        say("note: the data has a single class folder, so the model is unconditional")

    resuming = bool(args.resume)
    if args.resume:
        run_dir = Path(args.resume)
    else:
        run_dir = None
        if not args.name and dist.world > 1 and dist_utils.elastic_run_name(cfg.preset):
            cfg.name = dist_utils.elastic_run_name(cfg.preset)  # stable across torchrun restarts
        if dist.is_main:
            wanted = default_run_name(cfg)
            # A restarted torchrun worker group continues its own run directory (docs/distributed.md).
            run_dir = dist_utils.find_elastic_run(args.out, wanted)
            resuming = run_dir is not None
            if resuming:
                say(f"elastic restart {dist_utils.elastic_restart_count()}: continuing {run_dir}")
            else:
                run_dir, renamed = new_run_dir(args.out, wanted)
                if renamed:
                    say(f"note: {Path(args.out) / wanted} exists and is left untouched; writing to {run_dir} instead")
                dist_utils.mark_elastic_run(run_dir)
        run_dir, resuming = dist_utils.broadcast_object((run_dir, resuming), dist)
    if dist.is_main:
        write_run_info(run_dir, cfg, ["sagan", *getattr(args, "argv", [])])
    trainer = Trainer(cfg, run_dir, data, dist, progress=not args.no_progress)
    if resuming:
        step = trainer.resume()
        if step >= cfg.train.steps:
            say(f"run {run_dir} is already at step {step} >= train.steps={cfg.train.steps}; "
                "raise it with --steps N to train longer")
        else:
            say(f"resuming {run_dir} from step {step}")
    per_proc = f" = {trainer.local_batch} per process x {dist.world} process{'es' if dist.world > 1 else ''}"
    if dist.world > 1:
        per_proc += f" ({dist_utils.backend_name()}, sync_bn={'on' if cfg.train.sync_bn else 'off'})"
    say(f"run directory: {run_dir}\ndevice: {trainer.device}; global batch {cfg.train.batch_size}{per_proc}; "
        f"G {count_parameters(trainer.G) / 1e6:.2f}M params, D {count_parameters(trainer.D) / 1e6:.2f}M params")
    trainer.fit()
    if dist.is_main:
        final = trainer.sample_grid("final.png")
        from sagan.viz.attention import generator_attention_figure
        fig = generator_attention_figure(trainer.ema.shadow, run_dir / "attention" / "attention_G.png",
                                         class_names=data.class_names, device=trainer.device, seed=cfg.train.seed)
        say(f"done at step {trainer.step}: samples {final}" + (f", attention maps {fig}" if fig else ""))
    dist_utils.shutdown()
    return 0


# --------------------------------------------------------------------------- sample

def add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write generated images from a run directory or checkpoint")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("-n", "--num", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--classes", help="comma-separated class indices to cycle through (default all)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/samples_out)")
    p.add_argument("--format", choices=["png", "npz", "both"], default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of the EMA one")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from sagan.runs import generate, load_run
    from sagan.train.loop import resolve_device
    from sagan.viz.grid import save_grid

    if args.num < 1:
        raise UserError(f"--num {args.num}: must be >= 1")
    device = resolve_device(args.device)
    run = load_run(args.run, ema=not args.no_ema, device=device)
    classes = _parse_classes(args.classes)
    if classes is not None:
        if run.num_classes == 0:
            raise UserError("--classes given but this model is unconditional")
        bad = [c for c in classes if not 0 <= c < run.num_classes]
        if bad:
            raise UserError(f"--classes {bad}: this model has classes 0..{run.num_classes - 1}")
    images, labels = generate(run.G, args.num, classes, args.seed, args.batch_size, device, progress=True)
    out = Path(args.out) if args.out else (run.run_dir or run.checkpoint.parent) / "samples_out"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"samples_step{run.step}_seed{args.seed}"
    written = []
    if args.format in ("png", "both"):
        n_distinct = len(set(labels.tolist())) if labels is not None else 0
        if n_distinct and args.num % n_distinct == 0:  # one row per class
            images_png, nrow = images[torch.argsort(labels, stable=True)], args.num // n_distinct
        else:
            images_png, nrow = images, 8
        written.append(save_grid(images_png, out / f"{stem}.png", nrow))
    if args.format in ("npz", "both"):
        arr = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        path = out / f"{stem}.npz"
        np.savez_compressed(path, images=arr, labels=labels.numpy() if labels is not None else np.zeros(0))
        written.append(path)
    print(f"wrote {args.num} images from {run.checkpoint} (step {run.step}, "
          f"{'raw' if args.no_ema else 'EMA'} generator): " + ", ".join(str(w) for w in written))
    return 0


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    from sagan import __version__
    from sagan.commands import register_all
    parser = argparse.ArgumentParser(prog="sagan", description="Self-Attention GAN: train, sample, inspect.")
    parser.add_argument("--version", action="version", version=f"sagan-torch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train(sub)
    add_sample(sub)
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
    except TrainingInterrupted as e:
        print(f"sagan {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except TrainingAborted as e:
        print(f"sagan {args.command}: {e}", file=sys.stderr)
        return EXIT_ABORTED
    except CheckpointWriteError as e:
        print(f"sagan {args.command}: error: {e}\nTraining stopped: without a checkpoint it could not go on safely. "
              "The previous checkpoint is intact; free disk space (or fix permissions) and resume with "
              "sagan train --resume RUN_DIR", file=sys.stderr)
        return EXIT_CHECKPOINT_WRITE
    except TrainingDiverged as e:
        print(f"sagan {args.command}: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except (UserError, ConfigError, CheckpointError, DataError) as e:
        print(f"sagan {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"sagan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
