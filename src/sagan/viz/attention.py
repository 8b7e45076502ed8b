"""Attention-map figures in the paper's style.

For a generated image and a query pixel (x, y), the generator's attention layer at feature size
s holds one row of its (N, N_key) map for the query position (y * s / R, x * s / R): a
distribution over key positions. We reshape it to the key grid, upsample it to the image and
overlay it as a heat map.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sagan.nn.attention import SelfAttention2d, recording_attention


def query_index(x: int, y: int, image_size: int, feat_size: int) -> int:
    """Row of the attention map for image pixel (x, y) at a feature map of side ``feat_size``."""
    fx = min(int(x * feat_size / image_size), feat_size - 1)
    fy = min(int(y * feat_size / image_size), feat_size - 1)
    return fy * feat_size + fx


def key_map(attn_row: torch.Tensor, image_size: int) -> torch.Tensor:
    """One attention row (N_key,) -> (image_size, image_size) heat map, mass-preserving shape.

    Nearest-neighbour upsampling keeps each key cell's value visible as a block, so the peak of
    the heat map is exactly where the map's largest entry is.
    """
    side = int(round(attn_row.numel() ** 0.5))
    if side * side != attn_row.numel():
        raise ValueError(f"attention row of length {attn_row.numel()} is not a square grid")
    grid = attn_row.reshape(1, 1, side, side).float()
    return F.interpolate(grid, size=(image_size, image_size), mode="nearest")[0, 0]


def auto_points(image: torch.Tensor, k: int = 3, seed: int = 0) -> list[tuple[int, int]]:
    """``k`` query points spread over the object of an image in [-1, 1] (C, H, W).

    The object is where pixels differ most from the border's median colour; points are chosen
    by farthest-point sampling from the object pixel nearest its centroid.
    """
    img = image.float()
    c, h, w = img.shape
    border = torch.cat([img[:, 0, :], img[:, -1, :], img[:, :, 0], img[:, :, -1]], dim=1)
    bg = border.median(dim=1).values[:, None, None]
    dist = (img - bg).abs().sum(0)
    thr = dist.max() * 0.35
    ys, xs = torch.nonzero(dist > thr, as_tuple=True)
    if len(ys) < k:
        step = max(h // (k + 1), 1)
        return [(step * (i + 1), h // 2) for i in range(k)]
    pts = torch.stack([xs, ys], 1).float()
    centroid = pts.mean(0)
    chosen = [int(torch.argmin(((pts - centroid) ** 2).sum(1)))]
    d = ((pts - pts[chosen[0]]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(torch.argmax(d))
        chosen.append(nxt)
        d = torch.minimum(d, ((pts - pts[nxt]) ** 2).sum(1))
    return [(int(pts[i, 0]), int(pts[i, 1])) for i in chosen]


@torch.no_grad()
def generator_attention(g: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images and the attention maps of every attention layer of ``g`` for them.

    Returns (images (B, C, R, R) in [-1, 1], {label: (B, N, N_key)}), labels like ``G.attn16``.
    """
    from sagan.train.loop import attention_layers
    labels = {id(m): name for name, m in attention_layers(g, "G").items()}
    with recording_attention(g) as layers:
        images = g(z, y)
        maps = {labels.get(id(m), name): m.last_attention.cpu() for name, m in layers.items()
                if m.last_attention is not None}
    return images.float().cpu(), maps


def _to_display(image: torch.Tensor) -> np.ndarray:
    img = ((image.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[2] == 1 else img


def attention_figure(images: torch.Tensor, maps: dict[str, torch.Tensor],
                     points: list[list[tuple[int, int]]], out_path: str | Path,
                     titles: list[str] | None = None, dpi: int = 110) -> Path:
    """Paper-style figure: each row an image with its query points, then one heat map per
    (layer, query point), overlaid on the image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500"]
    n_img = len(images)
    layers = list(maps)
    n_pts = max(len(p) for p in points) if points else 0
    cols = 1 + len(layers) * n_pts
    fig, axes = plt.subplots(n_img, cols, figsize=(1.9 * cols, 1.9 * n_img + 0.3), squeeze=False)
    res = images.shape[-1]
    for r in range(n_img):
        disp = _to_display(images[r])
        cmap_img = "gray" if disp.ndim == 2 else None
        ax = axes[r, 0]
        ax.imshow(disp, cmap=cmap_img, vmin=0, vmax=1)
        for i, (x, y) in enumerate(points[r]):
            ax.scatter([x], [y], s=40, c=colors[i % len(colors)], edgecolors="white", linewidths=1.0)
        ax.set_title(titles[r] if titles else "sample", fontsize=8)
        c = 1
        for layer in layers:
            a = maps[layer][r]
            feat = int(round(a.shape[0] ** 0.5))
            for i, (x, y) in enumerate(points[r]):
                row = a[query_index(x, y, res, feat)]
                heat = key_map(row, res).numpy()
                ax = axes[r, c]
                ax.imshow(disp, cmap=cmap_img, vmin=0, vmax=1)
                ax.imshow(heat, cmap="jet", alpha=0.55, vmin=0, vmax=float(heat.max()) or 1.0)
                ax.scatter([x], [y], s=40, c=colors[i % len(colors)], edgecolors="white", linewidths=1.0)
                ax.set_title(f"{layer} query {i + 1}", fontsize=7)
                c += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return out_path


def generator_attention_figure(g: torch.nn.Module, out_path: str | Path, classes: list[int] | None = None,
                               class_names: list[str] | None = None, n_images: int = 4, n_points: int = 3,
                               points: list[tuple[int, int]] | None = None, seed: int = 0,
                               layer: str | None = None, device: str | torch.device = "cpu") -> Path | None:
    """Generate ``n_images`` images (one per class in ``classes`` when conditional) and draw
    the attention of the chosen points for every attention layer of G. Returns None when G
    has no attention layer."""
    if not any(isinstance(m, SelfAttention2d) for m in g.modules()):
        return None
    gen = torch.Generator().manual_seed(seed)
    y = None
    if getattr(g, "num_classes", 0) > 0:
        pool = classes or list(np.linspace(0, g.num_classes - 1, n_images).round().astype(int))
        y = torch.tensor(pool[:n_images] if len(pool) >= n_images else
                         [pool[i % len(pool)] for i in range(n_images)]).to(device)
        n_images = len(y)
    z = torch.randn(n_images, g.z_dim, generator=gen).to(device)
    was_training = g.training
    g.eval()
    images, maps = generator_attention(g, z, y)
    g.train(was_training)
    if layer is not None:
        if layer not in maps:
            raise ValueError(f"layer {layer!r} not found; G has {sorted(maps)}")
        maps = {layer: maps[layer]}
    pts = [points if points else auto_points(images[i], n_points) for i in range(n_images)]
    titles = None
    if y is not None:
        names = class_names or []
        titles = [names[int(c)] if int(c) < len(names) else f"class {int(c)}" for c in y.cpu()]
    return attention_figure(images, maps, pts, out_path, titles)
