"""``sagan train``: start a run (preset, config file, overrides), fine-tune a trained model
(``--init-from``) or continue a run (``--resume``)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path

import yaml

from sagan import distributed as dist_utils
from sagan.config import (
    PRESETS,
    Config,
    config_from_dict,
    explicit_model_keys,
    load_config,
    parse_override,
    set_value,
    validate,
)
from sagan.data import load_data
from sagan.errors import CheckpointError, UsageError, plural
from sagan.extras import check_extras
from sagan.machine import describe
from sagan.models import count_parameters
from sagan.runs.checkpoints import Checkpoints
from sagan.runs.folder import (
    RunDir,
    lock_run,
    open_run_folder,
    write_run_info,
)
from sagan.train.finetune import (
    InitWeights,
    check_data_fits,
    fine_tune_model,
    read_init_weights,
)
from sagan.train.resolve import resolve_for_data
from sagan.train.trainer import Trainer

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a SAGAN (default: class-conditional Fashion-MNIST 32x32)",
                       description="Train a SAGAN. Config = preset, then --config FILE, then --set overrides.")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="preset to start from (default fmnist32)")
    p.add_argument("--config", metavar="FILE", help="YAML file with sections model/data/optim/loss/train")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one value, e.g. --set optim.lr_d=2e-4 (repeatable)")
    p.add_argument("--data", metavar="PATH", help="dataset location (same as --set data.root=PATH)")
    p.add_argument("--resolution", type=int, metavar="N",
                   help="image size, 32, 64, 128 or 256 (same as --set model.resolution=N); attention you did not "
                        "set moves with it, keeping the preset's placement relative to the image")
    p.add_argument("--steps", type=int, help="number of generator steps (same as --set train.steps=N)")
    p.add_argument("--device", help="auto (the preset's default: CUDA when available, else CPU), cpu, cuda, cuda:N "
                                    "(same as --set train.device=NAME)")
    p.add_argument("--out", default="runs", metavar="DIR", help="parent folder of run directories (default runs/)")
    p.add_argument("--name", help="run directory name (default PRESET-DATE-TIME; never overwritten)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--init-from", metavar="SOURCE",
                   help="fine-tune: start a new run from a trained model's weights (run directory, checkpoint file, "
                        "folder written by 'sagan export', Hugging Face Hub id (user/repo) of one, or shipped model "
                        "name; same as --set train.init_from=SOURCE; "
                        "docs/finetuning.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _train_config(args: argparse.Namespace, notes: list[str] | None = None) -> tuple[Config, InitWeights | None]:
    """The run's config, and the weights it starts from when it fine-tunes a trained model; lines
    worth telling the user (attention placed for another resolution) are appended to ``notes``."""
    overrides = list(args.overrides)
    if getattr(args, "resolution", None) is not None:
        if args.resume:
            raise UsageError("--resolution: a resumed run keeps its resolution (the checkpoint was made for it)")
        overrides.append(f"model.resolution={args.resolution}")
    if args.data is not None:
        overrides.append(f"data.root={args.data}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    if args.resume:
        if args.init_from is not None:
            raise UsageError(f"--init-from starts a new run from a trained model and --resume {args.resume} continues "
                             "a run from its own checkpoints; give one of them")
        run_dir = Path(args.resume)
        cfg_file = RunDir(run_dir).config
        if not run_dir.is_dir():
            raise UsageError(f"--resume {run_dir}: no such run directory")
        if args.preset or args.config:
            raise UsageError("--resume takes its config from the run directory; drop --preset/--config")
        try:
            resolved = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        except Exception as e:  # noqa: BLE001 - missing, damaged or not YAML: fall back to the checkpoint
            resolved = _config_from_newest_checkpoint(run_dir, f"{cfg_file} cannot be read ({type(e).__name__})")
        cfg = config_from_dict(resolved)
        if cfg.data.dataset == "image_folder" and cfg.data.channels is None:
            cfg.data.channels = 3  # stored before a folder's channels were detected (and stored): RGB then
        for text in overrides:
            key, value = parse_override(text)
            if not (key.startswith("train.") or key in ("data.root", "data.num_workers", "data.download")):
                raise UsageError(f"--set {key}: on resume only train.* and data.root/num_workers/download may "
                                "change (the checkpoint was made for the rest)")
            if key == "train.init_from":
                raise UsageError(f"--set {key}: a resumed run continues from its own checkpoints; "
                                 "start a new run to fine-tune from another model")
            set_value(cfg, key, value)
        validate(cfg)
        return cfg, None
    # Validated once, before any weights or data are read: the user's choices as given.
    cfg = load_config(args.preset, args.config, overrides, notes, name=args.name, init_from=args.init_from)
    if cfg.train.init_from is None:
        return cfg, None
    init = read_init_weights(cfg.train.init_from)
    cfg.model = fine_tune_model(cfg.model, explicit_model_keys(args.preset, args.config, overrides), init)
    cfg.train.init_from = init.source  # the checkpoint file / exported folder it resolved to, for config.yaml
    validate(cfg)  # the model section now comes from the trained model
    return cfg, init


def _config_from_newest_checkpoint(run_dir: Path, why: str) -> dict:
    """The resolved config stored inside the run's newest readable checkpoint."""
    try:
        state, path = Checkpoints(RunDir(run_dir).checkpoints).newest_loadable()
    except CheckpointError:
        state = None
    if state is not None:
        log.warning(f"note: {why}; using the config stored in {path}")
        return state["config"]
    raise UsageError(f"--resume {run_dir}: {why} and no readable checkpoint holds a config; "
                    "is it a run directory?")


def _main_process_by_env() -> bool:
    """Rank 0 (or not under torchrun), known before the process group is set up."""
    return not dist_utils.launched_by_torchrun() or os.environ.get("RANK", "0") == "0"


def cmd_train(args: argparse.Namespace) -> int:
    # A run folder has one writer: rank 0 holds its lock (RUN/.lock) until the command ends, however
    # it ends (the kernel releases it when the process dies). Readers never take it.
    with contextlib.ExitStack() as held:
        return _train(args, held)


def _train(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    """``sagan train`` in three steps: the config (resolved and checked once), the run folder (new,
    resumed or an elastic restart's), the training."""
    check_extras("train", needed_for="sagan train")  # TensorBoard, training-time FID, the attention figure
    from sagan.metrics.tracking import TrainingFID
    from sagan.viz.attention import generator_attention_figure

    # 1. The config: from the arguments (on --resume, the run's own), then for the data and this machine.
    notes: list[str] = []
    cfg, init = _train_config(args, notes)  # checks the arguments; validated once
    if args.resume and _main_process_by_env():
        lock_run(args.resume, held, log.info)  # before the data is read or anything in the run folder is written
    dist = dist_utils.init_from_env(cfg.train.device)
    device = dist_utils.resolve_device(cfg.train.device, dist)
    dist_utils.quiet_non_main(dist)
    say = dist_utils.rank0_info(dist, log)
    data = load_data(cfg.data, cfg.model.resolution, cfg.model.conditional, progress=not args.no_progress)
    say(f"data: {data.source}; {plural(len(data), 'image')}, "
        f"{data.num_classes or 'no'} classes, {plural(data.channels, 'channel')}, {cfg.model.resolution}x{cfg.model.resolution}")
    m = cfg.model
    say(f"model: {m.resolution}x{m.resolution}, attention in G at {m.g_attn or 'none'}, in D at {m.d_attn or 'none'}"
        + (f"; residual bottlenecks in G at {m.g_resblock}, in D at {m.d_resblock}" if m.g_resblock or m.d_resblock
           else ""))
    if init is not None:
        check_data_fits(init, data.num_classes, data.channels)  # before the precision probe and the run folder
    cfg, lines = resolve_for_data(cfg, data, device, dist.world)  # DiffAugment, precision, channels; batch checked
    for line in [f"note: {n}" for n in notes] + lines:
        say(line)

    # 2. The run folder: the one resumed, an elastic restart's own, or a new one.
    run_dir, resuming, new_folder = open_run_folder(args.out, cfg, args.resume, dist, held, say)
    if dist.is_main:
        write_run_info(run_dir, cfg, ["sagan", *getattr(args, "argv", [])], machine=describe(device))

    # 3. Training.
    fid = TrainingFID.from_config(cfg, data, device, say=say, dist=dist)
    trainer = Trainer(cfg, run_dir, data, dist, progress=not args.no_progress, fid=fid)
    if resuming:
        step = trainer.resume()
        if trainer.restored_from is None and cfg.train.init_from:  # stopped before its first checkpoint
            init = init or read_init_weights(cfg.train.init_from)
            check_data_fits(init, data.num_classes, data.channels)
            say(trainer.initialise_from(init))
        if step >= cfg.train.steps:
            say(f"run {run_dir} is already at step {step} >= train.steps={cfg.train.steps}; "
                "raise it with --steps N to train longer")
        else:
            say(f"resuming {run_dir} from step {step}")
    elif init is not None:
        say(trainer.initialise_from(init))
    init = None  # the source's weights are in the models now; free the copies
    if trainer.frozen_d:
        say(f"FreezeD: the first {cfg.train.freeze_d_blocks} of {len(trainer.gan.D.blocks)} discriminator blocks "
            "are frozen (train.freeze_d_blocks)")
    per_proc = f" = {trainer.local_batch} per process x {dist.world} process{'es' if dist.world > 1 else ''}"
    if dist.world > 1:
        per_proc += f" ({dist_utils.backend_name()}, sync_bn={'on' if cfg.train.sync_bn else 'off'})"
    say(f"run directory: {run_dir}\ndevice: {trainer.device}; global batch {cfg.train.batch_size}{per_proc}; "
        f"G {count_parameters(trainer.gan.G) / 1e6:.2f}M params, D {count_parameters(trainer.gan.D) / 1e6:.2f}M params")
    if new_folder is not None:
        new_folder.training = True  # from here on the folder holds a run
    trainer.fit()
    if dist.is_main:
        final = trainer.sample_grid("final.png")
        fig = generator_attention_figure(trainer.gan.ema.shadow, RunDir(run_dir).attention / "attention_G.png",
                                         class_names=data.class_names, device=trainer.device, seed=cfg.train.seed)
        say(f"done at step {trainer.step}: samples {final}" + (f", attention maps {fig}" if fig else ""))
    dist_utils.shutdown()
    return 0
