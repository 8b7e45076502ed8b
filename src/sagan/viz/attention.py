"""Attention-map figures in the paper's style.

An attention layer at feature size s holds a (N, N_key) map per image: row j is a distribution
over key positions for query position j (row-major over the s x s feature map; for the biggan
variant the keys lie on an (s/2) x (s/2) grid). For an image pixel (x, y) of an R x R image the
query row is the one at feature cell (floor(y*s/R), floor(x*s/R)) (``query_index``). The row is
reshaped to the key grid and upsampled to the image with nearest-neighbour sampling
(``key_map``), so every key cell shows as a block and the heat map's peak is exactly the map's
largest entry. ``overlay`` draws it over the image: colour and opacity grow with the weight
above uniform, so keys the query ignores leave the image visible.

Each heat map runs from the uniform weight 1/N_key (transparent) to its own maximum (opaque
red); the panels state the peak weight as a multiple of uniform, so a nearly flat map (an
untrained layer) is not mistaken for a sharp one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sagan.data import DataError, load_data
from sagan.data.datasets import to_model_range
from sagan.extras import requires
from sagan.fileio import atomic_path
from sagan.models import attention_layers
from sagan.nn.attention import SelfAttention2d, recording_attention
from sagan.sampling import image_classes

HEAT_CMAP = "turbo"
HEAT_MAX_ALPHA = 0.85
HEAT_GAMMA = 0.7
POINT_COLORS = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#00c7be", "#ff2d55"]


# --------------------------------------------------------------------------- maths

def query_index(x: int, y: int, image_size: int, feat_size: int) -> int:
    """Row of the attention map for image pixel (x, y) at a feature map of side ``feat_size``."""
    fx = min(int(x * feat_size / image_size), feat_size - 1)
    fy = min(int(y * feat_size / image_size), feat_size - 1)
    return fy * feat_size + fx


def grid_side(n: int, what: str = "attention row") -> int:
    """Side of a square grid with ``n`` cells; raises ValueError if ``n`` is not a square."""
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"{what} of length {n} is not a square grid")
    return side


def key_map(attn_row: torch.Tensor, image_size: int) -> torch.Tensor:
    """One attention row (N_key,) -> (image_size, image_size) heat map.

    Nearest-neighbour upsampling keeps each key cell's value visible as a block, so the peak of
    the heat map is exactly where the map's largest entry is.
    """
    side = grid_side(attn_row.numel())
    grid = attn_row.reshape(1, 1, side, side).float()
    return F.interpolate(grid, size=(image_size, image_size), mode="nearest")[0, 0]


def heat_colors(n: int = 256) -> np.ndarray:
    """The heat map's colour table, (n, 3) uint8 (shared by the figures and the HTML explorer)."""
    with requires("figures"):
        from matplotlib import colormaps
    return (colormaps[HEAT_CMAP](np.linspace(0.0, 1.0, n))[:, :3] * 255).round().astype(np.uint8)


def heat_alpha(v: np.ndarray) -> np.ndarray:
    """Opacity of the overlay for heat values ``v`` in [0, 1]."""
    return HEAT_MAX_ALPHA * np.clip(v, 0.0, 1.0) ** HEAT_GAMMA


def heat_values(heat: np.ndarray, uniform: float) -> np.ndarray:
    """Heat map weights -> [0, 1]: 0 at or below the uniform weight ``1/N_key``, 1 at the peak.

    Keys that get no more than their fair share stay transparent; the rest are scaled to the
    map's own peak (the figures print the peak as a multiple of uniform next to each panel).
    """
    peak = float(heat.max())
    if peak <= uniform:
        return np.zeros_like(heat, dtype=np.float64)
    return np.clip((heat - uniform) / (peak - uniform), 0.0, 1.0)


def overlay(image: np.ndarray, heat: np.ndarray, uniform: float = 0.0) -> np.ndarray:
    """Image (H, W) or (H, W, 3) in [0, 1] with ``heat`` (H, W) drawn over it -> (H, W, 3) in [0, 1].

    ``uniform`` is the weight of a flat map (1/N_key). The HTML explorer implements the same
    formula in JavaScript.
    """
    img = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    v = heat_values(heat, uniform)
    lut = heat_colors().astype(np.float64) / 255.0
    color = lut[np.clip((v * 255).round().astype(int), 0, 255)]
    a = heat_alpha(v)[..., None]
    return img * (1 - a) + color * a


def to_display(image: torch.Tensor) -> np.ndarray:
    """Model-range image (C, H, W) in [-1, 1] -> numpy (H, W) or (H, W, 3) in [0, 1]."""
    img = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[2] == 1 else img


# --------------------------------------------------------------------------- query points

def parse_points(text: str, image_size: int) -> list[tuple[int, int]]:
    """``"x,y;x,y"`` (pixels, origin top-left) -> [(x, y), ...]; ValueError naming a bad point."""
    points = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            xs, ys = part.split(",")
            x, y = int(xs), int(ys)
        except ValueError:
            raise ValueError(f"query point {part!r} is not 'x,y' with integer pixel coordinates "
                             "(example: --points 8,12;20,16)") from None
        if not (0 <= x < image_size and 0 <= y < image_size):
            raise ValueError(f"query point ({x}, {y}) is outside the {image_size}x{image_size} image; "
                             f"x and y must be in 0..{image_size - 1}")
        points.append((x, y))
    if not points:
        raise ValueError(f"no query points in {text!r}; give 'auto' or points like 8,12;20,16")
    return points


def auto_points(image: torch.Tensor, k: int = 3, seed: int = 0) -> list[tuple[int, int]]:
    """``k`` query points spread over the object of an image in [-1, 1] (C, H, W).

    The object is where pixels differ most from the border's median colour, kept a margin of
    H/8 away from the border. The object pixels are split into ``k`` clusters (k-means,
    farthest-point initialisation from the pixel nearest the centroid) and each point is the
    object pixel nearest its cluster's centre: representative points, not extreme ones.
    ``seed`` breaks ties when choosing among equally good pixels.
    """
    img = image.detach().float().cpu()
    _, h, w = img.shape
    border = torch.cat([img[:, 0, :], img[:, -1, :], img[:, :, 0], img[:, :, -1]], dim=1)
    bg = border.median(dim=1).values[:, None, None]
    dist = (img - bg).abs().sum(0)
    margin = max(h // 8, 1)
    inner = torch.zeros_like(dist, dtype=torch.bool)
    inner[margin:h - margin, margin:w - margin] = True
    mask = (dist > dist[inner].max() * 0.35) & inner if dist[inner].max() > 0 else inner & False
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) < k:  # no clear object: a diagonal through the inner image
        return [(margin + (w - 2 * margin) * (i + 1) // (k + 1), margin + (h - 2 * margin) * (i + 1) // (k + 1))
                for i in range(k)]
    pts = torch.stack([xs, ys], 1).float()
    gen = torch.Generator().manual_seed(seed)
    pts_j = pts + 1e-3 * torch.rand(pts.shape, generator=gen)  # deterministic tie-breaking
    centroid = pts.mean(0)
    chosen = [int(torch.argmin(((pts_j - centroid) ** 2).sum(1)))]
    d = ((pts_j - pts_j[chosen[0]]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(torch.argmax(d))
        chosen.append(nxt)
        d = torch.minimum(d, ((pts_j - pts_j[nxt]) ** 2).sum(1))
    centres = pts[chosen].clone()
    for _ in range(10):
        assign = torch.cdist(pts, centres).argmin(1)
        for c in range(k):
            members = pts[assign == c]
            if len(members):
                centres[c] = members.mean(0)
    out: list[tuple[int, int]] = []
    for c in range(k):
        order = ((pts_j - centres[c]) ** 2).sum(1).argsort()
        for i in order.tolist():  # nearest object pixel not already taken
            p = (int(pts[i, 0]), int(pts[i, 1]))
            if p not in out:
                out.append(p)
                break
    return out


# --------------------------------------------------------------------------- maps from models

def has_attention(model: nn.Module | None) -> bool:
    """Whether ``model`` has an attention layer (False for None: a source without a discriminator)."""
    return model is not None and any(isinstance(m, SelfAttention2d) for m in model.modules())


def attention_labels(model: nn.Module, prefix: str) -> dict[int, str]:
    """id(layer) -> label like ``G.attn16`` (falls back to module names for custom models)."""
    try:
        return {id(m): name for name, m in attention_layers(model, prefix).items()}
    except (AttributeError, KeyError, TypeError, IndexError):
        return {id(m): f"{prefix}.{name}" for name, m in model.named_modules() if isinstance(m, SelfAttention2d)}


def _recorded(model: nn.Module, prefix: str, run) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    labels = attention_labels(model, prefix)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recording_attention(model) as layers:
            out = run()
            maps = {labels.get(id(m), f"{prefix}.{name}"): m.last_attention.float().cpu()
                    for name, m in layers.items() if m.last_attention is not None}
    finally:
        model.train(was_training)
    return out, maps


def generator_attention(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images and the attention maps of every attention layer of ``g`` for them (eval mode).

    Returns (images (B, C, R, R) in [-1, 1] on the CPU, {label: (B, N, N_key)}), labels like
    ``G.attn16``.
    """
    images, maps = _recorded(g, "G", lambda: g(z, y))
    return images.float().cpu(), maps


def discriminator_attention(d: nn.Module, images: torch.Tensor, y: torch.Tensor | None
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D's scores for ``images`` (in [-1, 1]) and its attention maps, labels like ``D.attn16``."""
    dev = next(d.parameters()).device
    scores, maps = _recorded(d, "D", lambda: d(images.to(dev), None if y is None else y.to(dev)))
    return scores.float().cpu(), maps


def select_layer(maps: dict[str, torch.Tensor], layer: str | None) -> dict[str, torch.Tensor]:
    """Keep only ``layer`` (``G.attn16``, or just ``attn16``); ValueError listing the choices."""
    if layer is None:
        return maps
    if layer in maps:
        return {layer: maps[layer]}
    matches = [k for k in maps if k.split(".", 1)[-1] == layer]
    if len(matches) == 1:
        return {matches[0]: maps[matches[0]]}
    raise ValueError(f"attention layer {layer!r} not found; this model has {', '.join(sorted(maps)) or 'none'}")


# --------------------------------------------------------------------------- the figure

@dataclass
class HeatPanel:
    """One heat-map panel: image ``row``'s query ``point`` at ``layer``."""
    row: int
    layer: str
    point_index: int
    point: tuple[int, int]
    heat: np.ndarray  # (R, R): the key map upsampled to the image
    peak_over_uniform: float  # largest weight x N_key (1.0 = flat)
    rgb: np.ndarray  # (R, R, 3) overlay in [0, 1]


def figure_panels(images: torch.Tensor, maps: dict[str, torch.Tensor],
                  points: list[list[tuple[int, int]]]) -> list[HeatPanel]:
    """The heat-map panels of the figure, row by row, then layer by layer, then point by point."""
    res = images.shape[-1]
    panels = []
    for r in range(len(images)):
        disp = to_display(images[r])
        for layer, a in maps.items():
            feat = grid_side(a.shape[1], f"{layer} query count")
            for i, (x, y) in enumerate(points[r]):
                row = a[r, query_index(x, y, res, feat)]
                heat = key_map(row, res).numpy()
                panels.append(HeatPanel(r, layer, i, (x, y), heat, float(row.max()) * row.numel(),
                                        overlay(disp, heat, 1.0 / row.numel())))
    return panels


def attention_figure(images: torch.Tensor, maps: dict[str, torch.Tensor],
                     points: list[list[tuple[int, int]]], out_path: str | Path,
                     titles: list[str] | None = None, dpi: int = 110, suptitle: str | None = None) -> Path:
    """Paper-style figure: each row an image with its query points marked, then one heat map
    per (layer, query point) overlaid on the image. Writes a PNG and returns its path."""
    with requires("figures"):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    if not maps:
        raise ValueError("no attention maps to draw")
    n_img = len(images)
    layers = list(maps)
    n_pts = max(len(p) for p in points)
    cols = 1 + len(layers) * n_pts
    panels = figure_panels(images, maps, points)
    size = 1.75
    fig, axes = plt.subplots(n_img, cols, figsize=(size * cols, size * n_img + (0.45 if suptitle else 0.1)),
                             squeeze=False, layout="constrained")

    def mark(ax, x, y, i):
        ax.scatter([x], [y], s=46, c=POINT_COLORS[i % len(POINT_COLORS)], edgecolors="white",
                   linewidths=1.2, clip_on=False, zorder=3)

    for r in range(n_img):
        disp = to_display(images[r])
        ax = axes[r, 0]
        ax.imshow(disp, cmap="gray" if disp.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        for i, (x, y) in enumerate(points[r]):
            mark(ax, x, y, i)
        title = titles[r] if titles else "image"
        ax.set_title(title if len(title) <= 24 else title[:23] + "\u2026", fontsize=8, fontweight="bold")
    for p in panels:
        c = 1 + layers.index(p.layer) * n_pts + p.point_index
        ax = axes[p.row, c]
        ax.imshow(p.rgb, vmin=0, vmax=1, interpolation="nearest")
        mark(ax, p.point[0], p.point[1], p.point_index)
        ax.set_title(f"{p.layer} q{p.point_index + 1}\npeak {p.peak_over_uniform:.1f}x uniform", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    out_path = Path(out_path)
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return out_path


def _class_titles(y: torch.Tensor | None, class_names: list[str] | None, prefix: str = "") -> list[str] | None:
    if y is None:
        return None
    names = class_names or []
    return [prefix + (names[int(c)] if int(c) < len(names) else f"class {int(c)}") for c in y.cpu()]


def spread_classes(num_classes: int, n: int) -> list[int]:
    """``n`` class indices spread evenly over 0..num_classes-1 (distinct while n <= num_classes)."""
    if n <= num_classes:
        return [int(c) for c in np.linspace(0, num_classes - 1, n).round().astype(int)]
    return [i % num_classes for i in range(n)]


def generator_samples(g: nn.Module, n_images: int, classes: list[int] | None, seed: int,
                      device: str | torch.device = "cpu"
                      ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """``n_images`` generated images (cycling through ``classes``, default spread over all
    classes), their labels and G's attention maps."""
    gen = torch.Generator().manual_seed(seed)
    y = None
    if getattr(g, "num_classes", 0) > 0:
        wanted = classes or spread_classes(g.num_classes, n_images)
        y = image_classes(g.num_classes, wanted, n_images).to(device)
    z = torch.randn(n_images, g.z_dim, generator=gen).to(device)
    images, maps = generator_attention(g, z, y)
    return images, None if y is None else y.cpu(), maps


def generator_attention_figure(g: nn.Module, out_path: str | Path, classes: list[int] | None = None,
                               class_names: list[str] | None = None, n_images: int = 4, n_points: int = 3,
                               points: list[tuple[int, int]] | None = None, seed: int = 0,
                               layer: str | None = None, device: str | torch.device = "cpu") -> Path | None:
    """Generate ``n_images`` images (one per class in ``classes``, or spread over all classes,
    when conditional) and draw the attention of the query points for every attention layer of
    G (or just ``layer``). Returns None when G has no attention layer."""
    if not has_attention(g):
        return None
    images, y, maps = generator_samples(g, n_images, classes, seed, device)
    maps = select_layer(maps, layer)
    pts = [points if points else auto_points(images[i], n_points, seed) for i in range(len(images))]
    titles = _class_titles(y, class_names)
    return attention_figure(images, maps, pts, out_path, titles,
                            suptitle="Generator attention: where each query point looks (generated images)")


def discriminator_attention_figure(d: nn.Module, images: torch.Tensor, y: torch.Tensor | None,
                                   out_path: str | Path, class_names: list[str] | None = None,
                                   n_points: int = 3, points: list[tuple[int, int]] | None = None,
                                   seed: int = 0, layer: str | None = None) -> Path | None:
    """The discriminator's attention on ``images`` (real ones, in [-1, 1]) in the same style.
    Returns None when D has no attention layer."""
    if not has_attention(d):
        return None
    _, maps = discriminator_attention(d, images, y)
    maps = select_layer(maps, layer)
    pts = [points if points else auto_points(images[i], n_points, seed) for i in range(len(images))]
    return attention_figure(images, maps, pts, out_path, _class_titles(y, class_names, "real: "),
                            suptitle="Discriminator attention: where each query point looks (real images)")


# --------------------------------------------------------------------------- figures for a loaded run

def layer_choice(model: nn.Module, prefix: str, layer: str | None) -> str | None:
    """The full label (``G.attn16``) of ``layer`` (``G.attn16`` or ``attn16``) in ``model``;
    None for all layers. ValueError listing the layers the model has."""
    if layer is None:
        return None
    return next(iter(select_layer({k: None for k in attention_labels(model, prefix).values()}, layer)))


def real_images(run, n: int, cls: int | None, seed: int, data_root: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` real training images of a loaded run (``sagan.sampling.LoadedRun``) in [-1, 1]
    (of class ``cls`` when given) and their labels, chosen at random with ``seed``.

    Without ``cls``, a conditional run's images are spread over the classes like
    ``generator_samples`` does. ``data_root`` overrides where the run's data is (it is stored in
    ``run.cfg``). DataError when the data cannot be loaded or has no image of ``cls``.
    """
    cfg = run.cfg
    data_cfg = dataclasses.replace(cfg.data, root=data_root) if data_root is not None else cfg.data
    try:
        data = load_data(data_cfg, cfg.model.resolution, cfg.model.conditional)
    except DataError as e:
        raise DataError(f"--model d needs the real images the run was trained on: {e} "
                        "(pass --data PATH if they moved)") from None
    if data.images is not None:
        labels_all = data.labels
    else:
        labels_all = torch.tensor([t for _, t in data.folder.samples])  # type: ignore[union-attr]
    idx = torch.arange(len(data))
    if cls is not None and labels_all is not None:
        idx = idx[labels_all == cls]
        if len(idx) == 0:
            raise DataError(f"--class {cls}: the dataset has no images of this class")
    gen = torch.Generator().manual_seed(seed)
    if cls is None and labels_all is not None and run.num_classes > 0:
        # images spread over the classes like the generator figure, distinct within a class
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


def run_attention_figure(run, which: str, out_path: str | Path, cls: int | None = None, n_images: int = 4,
                         n_points: int = 3, points: list[tuple[int, int]] | None = None, seed: int = 0,
                         layer: str | None = None, device: str | torch.device = "cpu",
                         data_root: str | None = None) -> Path | None:
    """The attention figure of a loaded run: ``which="G"`` draws the generator on generated
    images (of class ``cls``, or spread over all classes), ``"D"`` the discriminator on real
    training images. Returns the PNG's path, or None when that model has no attention layer (or,
    for ``"D"``, when the run has no discriminator: an exported or shipped generator)."""
    if which == "G":
        return generator_attention_figure(
            run.G, out_path, classes=[cls] if cls is not None else None, class_names=run.class_names,
            n_images=n_images, n_points=n_points, points=points, seed=seed, layer=layer, device=device)
    if which != "D":
        raise ValueError(f"which={which!r}: choose 'G' or 'D'")
    if not has_attention(run.D):
        return None
    images, labels = real_images(run, n_images, cls, seed, data_root)
    return discriminator_attention_figure(run.D, images, labels, out_path, class_names=run.class_names,
                                          n_points=n_points, points=points, seed=seed, layer=layer)
