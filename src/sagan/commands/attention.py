"""``sagan attention RUN_DIR``: paper-style attention-map figure for G (generated images) or D
(real images)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


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


def resolve_class(text: str | None, num_classes: int, class_names: list[str]) -> int | None:
    """``--class`` value (an index or a class name) -> class index; UserError when there is none."""
    from sagan.cli import UserError
    if text is None:
        return None
    if num_classes == 0:
        raise UserError(f"--class {text}: this model is unconditional (it has no classes); drop --class")
    if text in class_names:
        return class_names.index(text)
    try:
        c = int(text)
    except ValueError:
        c = None
    if c is None or not 0 <= c < num_classes:
        names = f" ({', '.join(f'{i}={n}' for i, n in enumerate(class_names))})" if class_names else ""
        raise UserError(f"--class {text}: no such class; this model has classes 0..{num_classes - 1}{names}")
    return c


def real_images(run, n: int, cls: int | None, seed: int, data_root: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` real training images in [-1, 1] (of class ``cls`` when given) and their labels,
    chosen at random with ``seed``."""
    from sagan.cli import UserError
    from sagan.data import DataError, load_data
    from sagan.data.datasets import to_model_range
    cfg = run.cfg
    if data_root is not None:
        cfg.data.root = data_root
    try:
        data = load_data(cfg.data, cfg.model.resolution, cfg.model.conditional)
    except DataError as e:
        raise UserError(f"--model d needs the real images the run was trained on: {e} "
                        "(pass --data PATH if they moved)") from None
    if data.images is not None:
        labels_all = data.labels
    else:
        labels_all = torch.tensor([t for _, t in data.folder.samples])  # type: ignore[union-attr]
    idx = torch.arange(len(data))
    if cls is not None and labels_all is not None:
        idx = idx[labels_all == cls]
        if len(idx) == 0:
            raise UserError(f"--class {cls}: the dataset has no images of this class")
    gen = torch.Generator().manual_seed(seed)
    if cls is None and labels_all is not None and run.num_classes > 0:
        # images spread over the classes like the generator figure, distinct within a class
        from sagan.viz.attention import spread_classes
        wanted = spread_classes(run.num_classes, n)
        perms = {c: idx[labels_all == c][torch.randperm(int((labels_all == c).sum()), generator=gen)]
                 for c in set(wanted)}
        picks = []
        for i, c in enumerate(wanted):
            pool = perms[c] if len(perms[c]) else idx
            picks.append(int(pool[wanted[:i].count(c) % len(pool)]))
        chosen = torch.tensor(picks)
    else:
        chosen = idx[torch.randperm(len(idx), generator=gen)[:n]]
    if data.images is not None:
        images = to_model_range(data.images[chosen])
    else:
        images = torch.stack([data.folder[int(i)][0] for i in chosen])  # type: ignore[index]
    labels = labels_all[chosen] if labels_all is not None and run.num_classes > 0 else None
    return images, labels


def cmd_attention(args: argparse.Namespace) -> int:
    from sagan.cli import UserError
    from sagan.runs import load_run
    from sagan.train.loop import resolve_device
    from sagan.viz.attention import (attention_labels, discriminator_attention_figure, generator_attention_figure,
                                     has_attention, parse_points, select_layer)

    if args.num_images < 1:
        raise UserError(f"--num-images {args.num_images}: must be >= 1")
    if args.num_points < 1:
        raise UserError(f"--num-points {args.num_points}: must be >= 1")
    device = resolve_device(args.device)
    run = load_run(args.run, ema=not args.no_ema, device=device)
    model = run.G if args.model == "g" else run.D
    which = "G" if args.model == "g" else "D"
    if not has_attention(model):
        attn = run.cfg.model.g_attn if which == "G" else run.cfg.model.d_attn
        raise UserError(f"{which} of this run has no attention layers (model.{which.lower()}_attn={attn}); "
                        f"nothing to draw{'; try --model d' if which == 'G' and run.cfg.model.d_attn else ''}"
                        f"{'; try --model g' if which == 'D' and run.cfg.model.g_attn else ''}")
    if args.layer is not None:
        try:
            layer = next(iter(select_layer({k: None for k in attention_labels(model, which).values()}, args.layer)))
        except ValueError as e:
            raise UserError(f"--layer: {e}") from None
    else:
        layer = None
    res = run.cfg.model.resolution
    points = None
    if args.points.strip().lower() != "auto":
        try:
            points = parse_points(args.points, res)
        except ValueError as e:
            raise UserError(f"--points: {e}") from None
    cls = resolve_class(args.cls, run.num_classes, run.class_names)
    tag = f"step{run.step}_seed{args.seed}" + (f"_class{cls}" if cls is not None else "")
    base = run.run_dir or run.checkpoint.parent
    out = Path(args.out) if args.out else base / "attention" / f"attention_{which}_{tag}.png"
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: the figure is a PNG; give a file name ending in .png")
    if which == "G":
        path = generator_attention_figure(
            model, out, classes=[cls] if cls is not None else None, class_names=run.class_names,
            n_images=args.num_images, n_points=args.num_points, points=points, seed=args.seed,
            layer=layer, device=device)
    else:
        images, labels = real_images(run, args.num_images, cls, args.seed, args.data)
        path = discriminator_attention_figure(
            model, images, labels, out, class_names=run.class_names, n_points=args.num_points,
            points=points, seed=args.seed, layer=layer)
    print(f"wrote {path} ({which} attention, step {run.step}, "
          f"{'generated' if which == 'G' else 'real'} images)")
    return 0
