"""``sagan interpolate SOURCE``: a walk between seeds' latents (one class) or between classes (one
latent), as a grid PNG, an animated GIF, an MP4 (with imageio-ffmpeg) and a JSON record. Argument
handling only; the maths and the files are ``sagan.viz.interpolation``'s. See docs/interpolation.md."""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import sagan
from sagan.commands.common import (MAX_BATCH, add_device_argument, add_progress_argument, add_source_arguments,
                                   check_memory, check_seed, check_size, check_writable, device_from_args,
                                   parse_seeds, partial_write_error, resolve_class, resolve_classes)
from sagan.errors import UsageError, plural
from sagan.extras import check_extras

log = logging.getLogger(__name__)

DEFAULT_SEEDS = "0,1"
MAX_STEPS = 1000  # frames per segment
MAX_FRAMES = 10_000  # frames per walk (segments x steps)
MAX_FRAME_SIDE = 2048  # px, an animation frame's width after --scale
MAX_GIF_FPS = 50.0  # GIF frame times are whole centiseconds; browsers slow shorter ones down to 10 fps


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate", help="animate a walk between seeds' latents or between classes (grid PNG, GIF, MP4)",
        description="Walk between the latents of consecutive seeds for one class (--seeds, spherical "
                    "interpolation), or between consecutive classes for one latent (--classes, the class "
                    "weights go from one-hot to one-hot). Writes a grid PNG (one row per segment), an "
                    "animated GIF, an MP4 when imageio-ffmpeg is installed, and a JSON record of the "
                    "weights and settings. See docs/interpolation.md.")
    add_source_arguments(p)
    p.add_argument("--seeds", metavar="A,B[,...]",
                   help=f"walk between these seeds' latents, in order (default {DEFAULT_SEEDS})")
    p.add_argument("--class", dest="cls", metavar="C",
                   help="with --seeds: the class, index or name (default 0; none for unconditional models)")
    p.add_argument("--classes", metavar="A,B[,...]|all",
                   help="instead: morph between these classes (indices or names; all: every class in order) "
                        "for the latent of --seed")
    p.add_argument("--seed", type=int, help="with --classes: the seed of the latent (default 0)")
    p.add_argument("--steps", type=int, default=16, help="frames per segment, both ends included (default 16)")
    p.add_argument("--truncation", type=float, metavar="PSI",
                   help="draw the latents from the normal truncated to [-PSI, PSI] (default: not truncated)")
    p.add_argument("--out", metavar="DIR", help="folder to write into (default SOURCE/interpolations)")
    p.add_argument("--fps", type=float, default=12.0, help=f"animation frames per second (default 12, at most "
                                                            f"{MAX_GIF_FPS:g})")
    p.add_argument("--boomerang", action="store_true", help="the animation plays forward, then back")
    p.add_argument("--scale", type=int, metavar="N",
                   help="enlarge GIF/MP4 frames N times, nearest neighbour (default: to at least 128 px)")
    p.add_argument("--batch-size", type=int, default=64, help="frames generated at once (default 64)")
    add_device_argument(p)
    add_progress_argument(p)
    p.set_defaults(func=cmd_interpolate)


def check_endpoints(items: list, flag: str, what: str) -> None:
    """At least two endpoints, and no two consecutive ones the same (a segment that stands still)."""
    if len(items) < 2:
        raise UsageError(f"{flag}: give at least two {what} to walk between, e.g. {flag} 0,1 (got {len(items)})")
    same = [a for a, b in zip(items, items[1:]) if a == b]
    if same:
        raise UsageError(f"{flag}: {what} {same[0]} follows itself; consecutive {what} must differ")


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model is loaded."""
    from sagan.models.arch import RESOLUTIONS

    if args.seeds is not None and args.classes is not None:
        raise UsageError("give either --seeds (walk between latents) or --classes (morph between classes), not both")
    if args.classes is not None and args.cls is not None:
        raise UsageError(f"--class {args.cls} picks the class of a --seeds walk; with --classes the classes "
                         "are the walk (use --seed for the latent)")
    if args.classes is None and args.seed is not None:
        raise UsageError(f"--seed {args.seed} picks the latent of a --classes morph; to walk between latents "
                         f"give --seeds A,B")
    if args.steps < 2:
        raise UsageError(f"--steps {args.steps}: a segment needs at least 2 frames (its two ends)")
    check_size(args.steps, "--steps", MAX_STEPS, minimum=2, hint=" frames per segment")
    if not 0 < args.fps <= MAX_GIF_FPS:
        raise UsageError(f"--fps {args.fps:g}: must be above 0 and at most {MAX_GIF_FPS:g} (GIF frame times are "
                         "whole centiseconds and browsers slow faster ones down)")
    if args.scale is not None and args.scale < 1:
        raise UsageError(f"--scale {args.scale}: must be a whole number >= 1")
    if args.scale is not None:
        check_size(args.scale, "--scale", MAX_FRAME_SIDE // min(RESOLUTIONS),
                   hint=f" (animation frames are at most {MAX_FRAME_SIDE} px wide)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be >= 1")
    check_size(args.batch_size, "--batch-size", MAX_BATCH)
    if args.truncation is not None and math.isnan(args.truncation):
        raise UsageError("--truncation nan: not a number; give a PSI above 0 (1 is mild, 0.5 strong)")
    if args.truncation is not None and args.truncation <= 0:
        raise UsageError(f"--truncation {args.truncation:g}: must be above 0 (1 is mild, 0.5 strong)")
    check_seed(args.seed)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder to write the interpolation into")
    if args.seeds is not None or args.classes is None:
        seeds = parse_seeds(args.seeds or DEFAULT_SEEDS, unique=False)
        check_endpoints(seeds, "--seeds", "seeds")
        check_frames(len(seeds) - 1, args.steps, "--seeds")


def check_frames(segments: int, steps: int, flag: str) -> None:
    """At most MAX_FRAMES frames in one walk (segments x --steps)."""
    if segments * steps > MAX_FRAMES:
        raise UsageError(f"{flag}: {segments} segments of {steps} frames (--steps) are {segments * steps} frames; "
                         f"at most {MAX_FRAMES} per call: walk fewer endpoints or use fewer --steps")


def check_output_size(plan, channels: int, resolution: int, scale: int, boomerang: bool) -> None:
    """Before rendering: frames at most MAX_FRAME_SIDE px wide, file names the file system takes, and
    the frames (float) and the animation (uint8, scaled) within the memory this process can use."""
    side = resolution * scale
    if side > MAX_FRAME_SIDE:
        raise UsageError(f"--scale {scale}: {resolution}-px frames would be {side} px wide; at most {MAX_FRAME_SIDE} "
                         f"px (--scale {MAX_FRAME_SIDE // resolution} or less for this model)")
    name = f"{plan.stem}.json"
    if len(name.encode()) > 255:
        flag = "--classes" if plan.settings.get("mode") == "classes" else "--seeds"
        raise UsageError(f"{flag}: the files are named after every endpoint, which makes a name of "
                         f"{len(name.encode())} bytes, and file names take at most 255: walk fewer or smaller "
                         "endpoints per call")
    frames = plan.rows * plan.steps
    animated = frames * (2 if boomerang else 1)
    check_memory(frames * channels * resolution ** 2 * 8 + animated * side * side * 3 * 2,
                 f"{frames} frames of {resolution}x{resolution} px and a {side}x{side} px animation",
                 "walk fewer endpoints, use fewer --steps, or a smaller --scale")


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, modification time) of a file, None when there is none: a file written since differs."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _class_label(c: int | None, names: list[str]) -> str:
    if c is None:
        return ""
    return f"{c} ({names[c]})" if c < len(names) else str(c)


def cmd_interpolate(args: argparse.Namespace) -> int:
    check_arguments(args)
    check_extras("figures", needed_for="the GIF of sagan interpolate")
    from sagan.commands.loading import load_from_args
    from sagan.models.standing import statistics_for_truncation
    from sagan.viz.interpolation import (MP4_HINT, class_interpolation, default_scale, render, seed_interpolation,
                                         write_interpolation)

    device = device_from_args(args)
    run = load_from_args(args, device=device)
    z_dim = run.G.z_dim
    if args.classes is not None:
        if run.num_classes == 0:
            raise UsageError(f"--classes {args.classes}: this model is unconditional (it has no classes); "
                             "walk between latents with --seeds instead")
        classes = resolve_classes(args.classes, run.num_classes, run.class_names) or list(range(run.num_classes))
        check_endpoints(classes, "--classes", "classes")
        check_frames(len(classes) - 1, args.steps, "--classes")
        seed = 0 if args.seed is None else args.seed
        plan = class_interpolation(classes, run.num_classes, seed, z_dim, args.steps, args.truncation)
        plan.settings["class_names"] = [run.class_names[c] if c < len(run.class_names) else str(c) for c in classes]
        what = f"classes {', '.join(_class_label(c, run.class_names) for c in classes)} for seed {seed}"
    else:
        seeds = parse_seeds(args.seeds or DEFAULT_SEEDS, unique=False)
        cls = resolve_class(args.cls, run.num_classes, run.class_names)
        if cls is None and run.num_classes > 0:
            cls = 0
        plan = seed_interpolation(seeds, z_dim, cls, args.steps, args.truncation)
        if cls is not None:
            plan.settings["class_name"] = run.class_names[cls] if cls < len(run.class_names) else str(cls)
        what = f"seeds {', '.join(map(str, seeds))}" + (f" for class {_class_label(cls, run.class_names)}"
                                                        if cls is not None else "")
    out = Path(args.out) if args.out else run.output_base / "interpolations"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; choose a folder with --out")
    check_writable(out)
    scale = args.scale or default_scale(run.cfg.model.resolution)
    check_output_size(plan, run.channels, run.G.resolution, scale, args.boomerang)
    log.info(f"interpolating {what}, {args.steps} frames per segment\nfrom {run.describe()}")
    with statistics_for_truncation(run.G, args.truncation):  # BN statistics measured under this psi
        images = render(run.G, plan, args.batch_size, device, progress=not args.no_progress)
    record = {"model": run.provenance(), "resolution": int(images.shape[-1]), "sagan_version": sagan.__version__}
    files = [out / f"{plan.stem}{suffix}" for suffix in (".png", ".gif", ".mp4", ".json")]
    before = {p: _identity(p) for p in files}
    try:
        written = write_interpolation(out, plan, images, fps=args.fps, scale=scale, boomerang=args.boomerang,
                                      record=record)
    except OSError as e:  # a full disk part-way: the record says which files are this call's, or they go
        done = [(p, before[p] is not None) for p in files if _identity(p) not in (None, before[p])]
        raise partial_write_error(out / f"{plan.stem}.json", dict(record, **plan.settings, steps=plan.steps), done,
                                  e, "the interpolation") from None
    size = images.shape[-1] * scale
    log.info(f"wrote {written.grid} ({plural(plan.rows, 'row')} of {plan.steps} frames)")
    log.info(f"wrote {written.gif} ({written.gif_frames} frames of {size}x{size} px at {args.fps:g} fps"
             f"{', forward and back' if args.boomerang else ''})")
    if written.mp4 is not None:
        log.info(f"wrote {written.mp4}")
    else:
        log.info(f"no MP4: writing one needs imageio-ffmpeg ({MP4_HINT}); the GIF has the same frames")
    log.info(f"wrote {written.record} (which weights, settings)")
    return 0
