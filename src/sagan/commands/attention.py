"""``sagan attention RUN_DIR``: paper-style attention-map figure for G (generated images) or D
(real images). Argument handling only; the figures are drawn by ``sagan.viz.attention``."""
from __future__ import annotations

import argparse
from pathlib import Path

from sagan.commands.common import resolve_class
from sagan.errors import UsageError
from sagan.train.distributed import resolve_device
from sagan.train.runs import load_run
from sagan.viz.attention import has_attention, layer_choice, parse_points, run_attention_figure


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention", help="draw where the attention layers look (paper-style PNG figure)",
        description="For a few query points of generated images (or, with --model d, real images) "
                    "draw each attention layer's map for that query, upsampled to the image and "
                    "overlaid as a heat map. See docs/attention.md.")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--class", dest="cls", metavar="C",
                   help="class index or name to draw (default: images spread over all classes)")
    p.add_argument("--points", default="auto", metavar="auto|x,y;x,y...",
                   help="query points in image pixels, origin top-left, e.g. '8,12;20,16' "
                        "(default auto: points spread over the object)")
    p.add_argument("--num-points", type=int, default=3, help="points per image with --points auto (default 3)")
    p.add_argument("-n", "--num-images", type=int, default=4, help="number of images (default 4)")
    p.add_argument("--layer", metavar="NAME", help="only this attention layer, e.g. G.attn16 (default all)")
    p.add_argument("--model", choices=["g", "d"], default="g",
                   help="g: the generator on generated images (default); d: the discriminator on real images")
    p.add_argument("--seed", type=int, default=0, help="seed for the latent noise / the choice of real images")
    p.add_argument("--data", metavar="PATH", help="with --model d: dataset location if it moved since training")
    p.add_argument("--out", metavar="FILE", help="PNG to write (default RUN_DIR/attention/attention_{G,D}_...png)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of the EMA one")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.set_defaults(func=cmd_attention)


def cmd_attention(args: argparse.Namespace) -> int:
    if args.num_images < 1:
        raise UsageError(f"--num-images {args.num_images}: must be >= 1")
    if args.num_points < 1:
        raise UsageError(f"--num-points {args.num_points}: must be >= 1")
    device = resolve_device(args.device)
    run = load_run(args.run, ema=not args.no_ema, device=device)
    model = run.G if args.model == "g" else run.D
    which = "G" if args.model == "g" else "D"
    if not has_attention(model):
        attn = run.cfg.model.g_attn if which == "G" else run.cfg.model.d_attn
        raise UsageError(f"{which} of this run has no attention layers (model.{which.lower()}_attn={attn}); "
                         f"nothing to draw{'; try --model d' if which == 'G' and run.cfg.model.d_attn else ''}"
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
    base = run.run_dir or run.checkpoint.parent
    out = Path(args.out) if args.out else base / "attention" / f"attention_{which}_{tag}.png"
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: the figure is a PNG; give a file name ending in .png")
    path = run_attention_figure(run, which, out, cls=cls, n_images=args.num_images, n_points=args.num_points,
                                points=points, seed=args.seed, layer=layer, device=device, data_root=args.data)
    print(f"wrote {path} ({which} attention, step {run.step}, "
          f"{'generated' if which == 'G' else 'real'} images)")
    return 0
