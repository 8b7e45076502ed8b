"""Interpolations through a generator's inputs, and the files that show them (grid PNG, GIF, MP4).

Two kinds of walk, each made of segments between consecutive endpoints:

- seeds: for one class, from the latent of one seed (``seed_latents``) to the next's, by spherical
  interpolation (:func:`slerp`). A Gaussian latent of dimension d lies close to the sphere of
  radius sqrt(d); the straight line between two of them dips to about sqrt(d/2) halfway, among
  latents the generator hardly saw in training, so its middle frames fade. The arc keeps the norm
  (White 2016, "Sampling Generative Networks"). Parallel or opposite latents have no single arc:
  there it falls back to the straight line (:func:`lerp`).
- classes: for one latent, the class weights go linearly from one-hot A to one-hot B; the
  generator's conditional batch norm mixes the class embeddings by those weights (a one-hot row
  is exactly that class).

A segment has ``steps`` frames at t = i / (steps - 1), both ends included: its first frame is
exactly endpoint A's sample and its last exactly endpoint B's. The grid shows one row per segment;
the animation plays the segments in order, each shared endpoint once (and, with ``boomerang``,
back again to the start).
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sagan.data.datasets import to_uint8
from sagan.data.grid import save_grid
from sagan.extras import install_hint, requires
from sagan.fileio import atomic_path, atomic_write_text
from sagan.sampling import run_generator, seed_latents

PARALLEL_SIN = 1e-6  # below this sin(angle), two latents count as (anti)parallel: lerp instead of slerp
MIN_ANIMATION_SIDE = 128  # the default --scale makes GIF/MP4 frames at least this many pixels wide
MP4_HINT = install_hint("video")


# --------------------------------------------------------------------------- maths

def fractions(steps: int) -> torch.Tensor:
    """``steps`` fractions i / (steps - 1) in float64, exactly 0 first and exactly 1 last."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    return torch.tensor([i / (steps - 1) for i in range(steps)], dtype=torch.float64)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points ``(1 - t) a + t b`` for each fraction in ``t``: ``(len(t), *a.shape)``; exactly a at
    t = 0 and b at t = 1. Computed in float64, returned in ``a``'s dtype."""
    t64 = t.to(torch.float64).reshape(-1, *([1] * a.dim()))
    return ((1 - t64) * a.to(torch.float64) + t64 * b.to(torch.float64)).to(a.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between vectors ``a`` and ``b`` (D,) at fractions ``t``: (len(t), D).

    ``sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b`` with w the angle between a and b: the
    direction turns at constant speed through the plane of a and b, and for vectors of equal norm
    the norm stays that. Exactly a at t = 0 and b at t = 1. Falls back to :func:`lerp` when a or
    b is zero or they are (anti)parallel (sin w < ``PARALLEL_SIN``), where the arc is undefined.
    Computed in float64, returned in ``a``'s dtype.
    """
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    omega = torch.arccos((a64 @ b64 / (na * nb)).clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    if sin_omega < PARALLEL_SIN:
        return lerp(a, b, t)
    t64 = t.to(torch.float64)[:, None]
    return (torch.sin((1 - t64) * omega) / sin_omega * a64 + torch.sin(t64 * omega) / sin_omega * b64).to(a.dtype)


def seed_path(latents: torch.Tensor, steps: int) -> torch.Tensor:
    """Latents ``(S, D)`` -> ``(S - 1, steps, D)``: row i is the slerp from latent i to latent i + 1."""
    t = fractions(steps)
    return torch.stack([slerp(latents[i], latents[i + 1], t) for i in range(len(latents) - 1)])


def class_path(classes: list[int], num_classes: int, steps: int) -> torch.Tensor:
    """Classes ``[c0, c1, ...]`` -> class weights ``(S - 1, steps, num_classes)`` (float32): row i goes
    linearly from one-hot c_i to one-hot c_{i+1}."""
    t, eye = fractions(steps), torch.eye(num_classes, dtype=torch.float32)
    return torch.stack([lerp(eye[a], eye[b], t) for a, b in zip(classes, classes[1:])])


# --------------------------------------------------------------------------- what to generate

@dataclass
class Interpolation:
    """The generator inputs of an interpolation, laid out as the grid: ``rows`` segments of ``steps`` frames."""
    z: torch.Tensor  # (rows, steps, z_dim)
    y: torch.Tensor | None  # (rows, steps) class indices, (rows, steps, num_classes) class weights, or None
    stem: str  # file name stem, e.g. seeds_0-1_class3, classes_0-7_seed0
    settings: dict = field(default_factory=dict)  # what the JSON record says about the walk

    @property
    def rows(self) -> int:
        return self.z.shape[0]

    @property
    def steps(self) -> int:
        return self.z.shape[1]


def _psi_tag(truncation: float | None) -> str:
    return "" if truncation is None else f"_psi{truncation:g}"


def seed_interpolation(seeds: list[int], z_dim: int, cls: int | None, steps: int,
                       truncation: float | None = None) -> Interpolation:
    """Slerp between consecutive seeds' latents for class ``cls`` (None: an unconditional model)."""
    if len(seeds) < 2:
        raise ValueError(f"a seed interpolation needs at least 2 seeds, got {seeds}")
    z = seed_path(seed_latents(seeds, z_dim, truncation), steps)
    y = None if cls is None else torch.full(z.shape[:2], cls, dtype=torch.long)
    stem = "seeds_" + "-".join(map(str, seeds)) + ("" if cls is None else f"_class{cls}") + _psi_tag(truncation)
    return Interpolation(z, y, stem, {"mode": "seeds", "seeds": list(seeds), "class": cls,
                                           "truncation": truncation})


def class_interpolation(classes: list[int], num_classes: int, seed: int, z_dim: int, steps: int,
                        truncation: float | None = None) -> Interpolation:
    """Class weights from one-hot to one-hot between consecutive ``classes``, for the latent of ``seed``."""
    if len(classes) < 2:
        raise ValueError(f"a class interpolation needs at least 2 classes, got {classes}")
    y = class_path(classes, num_classes, steps)
    z = seed_latents([seed], z_dim, truncation).expand(*y.shape[:2], z_dim).contiguous()
    stem = "classes_" + "-".join(map(str, classes)) + f"_seed{seed}" + _psi_tag(truncation)
    return Interpolation(z, y, stem, {"mode": "classes", "classes": list(classes), "seed": seed,
                                           "truncation": truncation})


@torch.no_grad()
def render(g: nn.Module, plan: Interpolation, batch_size: int = 64, device: str | torch.device = "cpu",
           progress: bool = False) -> torch.Tensor:
    """The frames ``(rows, steps, C, H, W)`` in [-1, 1] (float, CPU), ``batch_size`` at a time."""
    y = None if plan.y is None else plan.y.flatten(0, 1)
    images = run_generator(g, plan.z.flatten(0, 1), y, batch_size, device, progress, desc="interpolate", unit="frame")
    return images.view(plan.rows, plan.steps, *images.shape[1:])


# --------------------------------------------------------------------------- animation frames

def animation_sequence(images: torch.Tensor, boomerang: bool = False) -> torch.Tensor:
    """Grid frames ``(rows, steps, ...)`` -> the animation's frames: the segments in order with each
    shared endpoint once; ``boomerang`` appends the way back (without repeating either end)."""
    seq = torch.cat([images[0]] + [images[r, 1:] for r in range(1, images.shape[0])])
    if boomerang:
        seq = torch.cat([seq, seq[1:-1].flip(0)])
    return seq


def default_scale(resolution: int, min_side: int = MIN_ANIMATION_SIDE) -> int:
    """The smallest whole factor that makes a ``resolution``-pixel frame at least ``min_side`` wide."""
    return max(1, math.ceil(min_side / resolution))


def animation_pixels(images: torch.Tensor, scale: int = 1) -> np.ndarray:
    """Images ``(N, C, H, W)`` in [-1, 1] -> uint8 ``(N, H*scale, W*scale)`` (one channel) or
    ``(N, H*scale, W*scale, 3)``, each pixel a scale x scale block (nearest neighbour)."""
    arr = to_uint8(images).permute(0, 2, 3, 1).numpy()
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


# --------------------------------------------------------------------------- files

def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """An animated GIF that loops forever (written atomically). ``frames``: uint8 (N, H, W) for a
    grayscale GIF or (N, H, W, 3). GIF frame times are whole centiseconds (12 fps plays at 12.5).
    Identical consecutive frames are stored once, shown for their summed time."""
    with requires("figures", "writing a GIF"):
        import imageio.v3 as iio
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", plugin="pillow", is_batch=True,
                    duration=round(1000 / fps), loop=0)
    return Path(path)


def mp4_supported() -> bool:
    """Whether MP4s can be written (they need the imageio-ffmpeg package and the ffmpeg it ships)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """An H.264 MP4 of uint8 frames (N, H, W) or (N, H, W, 3), written atomically; needs imageio-ffmpeg."""
    with requires("video", "writing an MP4"):
        import imageio_ffmpeg
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    h, w = frames.shape[1:3]
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", quality=8,
                                             macro_block_size=16, output_params=["-f", "mp4"],
                                             ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return Path(path)


@dataclass
class Written:
    """What :func:`write_interpolation` wrote."""
    grid: Path
    gif: Path
    gif_frames: int
    record: Path
    mp4: Path | None = None  # None when imageio-ffmpeg is missing


def write_interpolation(out: str | Path, plan: Interpolation, images: torch.Tensor, fps: float = 12.0,
                        scale: int = 1, boomerang: bool = False, record: dict | None = None) -> Written:
    """Write ``images`` (``render``'s frames for ``plan``) into folder ``out`` as ``<stem>.png`` (the
    grid, one row per segment), ``<stem>.gif``, ``<stem>.mp4`` (when imageio-ffmpeg is installed)
    and ``<stem>.json`` (``record`` plus the walk's settings and the files)."""
    out = Path(out)
    grid = save_grid(images.flatten(0, 1), out / f"{plan.stem}.png", nrow=plan.steps)
    frames = animation_pixels(animation_sequence(images, boomerang), scale)
    gif = write_gif(out / f"{plan.stem}.gif", frames, fps)
    mp4 = write_mp4(out / f"{plan.stem}.mp4", frames, fps) if mp4_supported() else None
    info = dict(record or {})
    info.update(plan.settings)
    info.update({
        "steps": plan.steps, "fps": fps, "boomerang": boomerang, "scale": scale,
        "grid": {"file": grid.name, "rows": plan.rows, "columns": plan.steps},
        "animation": {"gif": gif.name, "mp4": mp4.name if mp4 else None, "frames": len(frames),
                      "size": [int(frames.shape[2]), int(frames.shape[1])]},
    })
    path = atomic_write_text(out / f"{plan.stem}.json", json.dumps(info, indent=2) + "\n")
    return Written(grid, gif, len(frames), path, mp4)
