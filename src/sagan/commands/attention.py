"""``sagan attention SOURCE``: paper-style attention-map figure for G (generated images) or D
(real images). Argument handling only; the figures are drawn by ``sagan.viz.attention``."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sagan.commands.common import (add_device_argument, add_progress_argument, add_source_arguments,
                                   device_from_args, resolve_class)
from sagan.errors import UsageError
from sagan.extras import check_extras

log = logging.getLogger(__name__)

OUT_SUBDIR = "attention"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention", help="draw where the attention layers look (paper-style PNG figure)",
        description="For a few query points of generated images (or, with --model d, real images) "
                    "draw each attention layer's map for that query, upsampled to the image and "
                    "overlaid as a heat map. See docs/attention.md.")
    add_source_arguments(p)
    p.add_argument("--class", dest="cls", metavar="C",
                   help="class index or name to draw (default: images spread over all classes)")
    p.add_argument("--points", default="auto", metavar="auto|x,y;x,y...",
                   help="query points in image pixels, origin top-left, e.g. '8,12;20,16' "
                        "(default auto: points spread over the object)")
    p.add_argument("--num-points", type=int, default=3, help="points per image with --points auto (default 3)")
    p.add_argument("-n", "--num-images", type=int, default=4, help="number of images (default 4)")
    p.add_argument("--layer", metavar="NAME", help="only this attention layer, e.g. G.attn16 (default all)")
    p.add_argument("--model", choices=["g", "d"], default="g",
                   help="g: the generator on generated images (default); d: the discriminator on real images "
                        "(needs a run directory or checkpoint: an export holds only the generator)")
    p.add_argument("--seed", type=int, default=0, help="seed for the latent noise / the choice of real images")
    p.add_argument("--data", metavar="PATH", help="with --model d: dataset location if it moved since training")
    p.add_argument("--out", metavar="DIR",
                   help=f"folder to write the PNG into, created if needed; the file name is automatic: "
                        f"attention_{{G,D}}_step<STEP>_seed<S>[_class<C>].png (default: {OUT_SUBDIR}/ in the run directory "
                        f"or exported folder; for --pretrained NAME ./pretrained-NAME/{OUT_SUBDIR})")
    add_device_argument(p)
    add_progress_argument(p, has_bars=False)
    p.set_defaults(func=cmd_attention)


def out_folder(text: str | None, default: Path) -> Path:
    """The folder ``--out`` names (default ``default``); a one-line UsageError for a file name."""
    if text is None:
        return default
    out = Path(text)
    if out.suffix.lower() == ".png":
        raise UsageError(f"--out {text}: --out is a folder (the PNG's name is automatic); give e.g. "
                         f"--out {out.parent / out.stem}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {text} is a file; --out names the folder to write the PNG into")
    return out


def cmd_attention(args: argparse.Namespace) -> int:
    if args.num_images < 1:
        raise UsageError(f"--num-images {args.num_images}: must be >= 1")
    if args.num_points < 1:
        raise UsageError(f"--num-points {args.num_points}: must be >= 1")
    check_extras("figures", needed_for="sagan attention")
    from sagan.commands.loading import load_from_args
    from sagan.viz.attention import has_attention, layer_choice, parse_points, run_attention_figure

    device = device_from_args(args)
    run = load_from_args(args, device=device)
    which = "G" if args.model == "g" else "D"
    if which == "D" and run.D is None:
        what = (f"the shipped model {run.checkpoint.name}" if run.kind == "pretrained"
                else f"the exported model {run.checkpoint}")
        raise UsageError(f"--model d: {what} holds only the generator (no discriminator); give the run directory "
                         "it was exported from, or a training checkpoint, to draw D's attention")
    out_dir = out_folder(args.out, run.output_base / OUT_SUBDIR)
    model = run.G if which == "G" else run.D
    if not has_attention(model):
        attn = run.cfg.model.g_attn if which == "G" else run.cfg.model.d_attn
        raise UsageError(f"{which} of this model has no attention layers (model.{which.lower()}_attn={attn}); "
                         f"nothing to draw"
                         f"{'; try --model d' if which == 'G' and run.D is not None and run.cfg.model.d_attn else ''}"
                         f"{'; try --model g' if which == 'D' and run.cfg.model.g_attn else ''}")
    try:
        layer = layer_choice(model, which, args.layer)
    except ValueError as e:
        raise UsageError(f"--layer: {e}") from None
    points = None
    if args.points.strip().lower() != "auto":
        try:
            points = parse_points(args.points, run.cfg.model.resolution)
        except ValueError as e:
            raise UsageError(f"--points: {e}") from None
    cls = resolve_class(args.cls, run.num_classes, run.class_names)
    tag = f"step{run.step}_seed{args.seed}" + (f"_class{cls}" if cls is not None else "")
    path = run_attention_figure(run, which, out_dir / f"attention_{which}_{tag}.png", cls=cls,
                                n_images=args.num_images, n_points=args.num_points, points=points, seed=args.seed,
                                layer=layer, device=device, data_root=args.data)
    source = run.describe() if which == "G" else f"{run.checkpoint} (step {run.step}, discriminator)"
    log.info(f"wrote {path} ({which} attention, {'generated' if which == 'G' else 'real'} images)\n"
             f"from {source}")
    return 0
