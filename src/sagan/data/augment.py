"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al., NeurIPS 2020),
and random horizontal flips of real images.

With little data, D memorises the training images and training collapses. DiffAugment applies the
same random transformations to every image D sees, real and generated, inside the graph, so the
generator's gradients pass through them and G is not taught to produce augmented images. The
policy is a list of operations (``data.diffaugment``):

* ``color``: brightness + U(-0.5, 0.5); saturation x U(0, 2) around the per-pixel channel mean;
  contrast x U(0.5, 1.5) around the image mean (images in [-1, 1], as the original code has them);
* ``translation``: shift by up to 1/8 of the size in x and y, each an integer drawn uniformly, zero fill;
* ``cutout``: zero a square of half the size at a uniformly drawn centre (clipped at the border).

Every random number comes from ``draw(k)``: a (batch, k) tensor of U(0, 1) values for the local
batch. The training step draws them from its noise stream for the whole global batch and keeps
this process's rows, so runs resume exactly and do not depend on the number of processes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from sagan.errors import ConfigError, plural
from sagan.schema import DataConfig

OPS = ("color", "translation", "cutout")
NUMBERS = {"color": 3, "translation": 2, "cutout": 2}  # uniform draws per image
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5

Draw = Callable[[int], torch.Tensor]


def color(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``u``: (B, 3) uniforms for brightness, saturation, contrast."""
    b = u[:, 0].view(-1, 1, 1, 1).to(x)
    s = u[:, 1].view(-1, 1, 1, 1).to(x)
    c = u[:, 2].view(-1, 1, 1, 1).to(x)
    x = x + (b - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (s * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (c + 0.5) + mean


def _offsets(u: torch.Tensor, low: int, count: int) -> torch.Tensor:
    """Integers low, ..., low + count - 1, uniformly, from uniforms ``u`` (each value equally likely)."""
    return (u * count).floor().clamp(max=count - 1).long() + low


def translation(x: torch.Tensor, u: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by (tx, ty) in {-s, ..., s}, s = round(ratio * size), filling with zeros; ``u``: (B, 2)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = _offsets(u[:, 0].to(x.device), -sh, 2 * sh + 1).view(-1, 1, 1)
    ty = _offsets(u[:, 1].to(x.device), -sw, 2 * sw + 1).view(-1, 1, 1)
    gb, gx, gy = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    # Output pixel (i, j) reads input (i + tx, j + ty); outside the image it reads the zero padding.
    gx = (gx + tx + 1).clamp(0, h + 1)
    gy = (gy + ty + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, u: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a (ratio * size)-square centred at a uniformly drawn position, clipped at the border; ``u``: (B, 2)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = _offsets(u[:, 0].to(x.device), 0, h + (1 - ch % 2)).view(-1, 1, 1)
    oy = _offsets(u[:, 1].to(x.device), 0, w + (1 - cw % 2)).view(-1, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, -1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, -1)
    inside = ((rows >= ox - ch // 2) & (rows < ox - ch // 2 + ch) & (cols >= oy - cw // 2) & (cols < oy - cw // 2 + cw))
    return x * (~inside).unsqueeze(1).to(x.dtype)


FUNCTIONS = {"color": color, "translation": translation, "cutout": cutout}


# ``data.diffaugment: auto`` (the default): what this project's measurements support for the data.
# DiffAugment is on for image folders of fewer than AUTO_MAX_IMAGES images; None: for none. The
# small-data A/Bs (docs/experiments.md, "Small data sets") found it slowing learning on folders of
# 500 and 2000 images, so auto turns it off everywhere and tells folder users how to turn it on.
AUTO = "auto"
AUTO_POLICY = ("color", "translation", "cutout")
AUTO_MAX_IMAGES: int | None = None


def check_policy(policy: Sequence[str] | str) -> list[str]:
    """The unknown or repeated operation names in ``policy`` (empty when it is valid or ``auto``)."""
    if isinstance(policy, str):
        return [] if policy == AUTO else [policy]
    bad = [p for p in policy if p not in OPS]
    return bad + [p for i, p in enumerate(policy) if p in OPS and p in policy[:i]]


def check_augment_config(d: DataConfig) -> None:
    """ConfigError unless ``data.diffaugment`` is ``auto`` or a list of operations, each known and at most once."""
    policy = d.diffaugment
    if isinstance(policy, str) and policy != AUTO:
        raise ConfigError(f"data.diffaugment={policy!r}: give auto or a list of operations, e.g. [{policy}] "
                          f"or [color, translation, cutout] ([] turns it off)")
    bad = check_policy(policy)
    if bad:
        raise ConfigError(f"data.diffaugment={policy}: {bad[0]!r} is unknown or repeated; choose auto, or from "
                          f"{list(OPS)}, each at most once (e.g. [color, translation, cutout])")


def resolve_policy(policy: Sequence[str] | str, dataset: str, num_images: int) -> tuple[list[str], str | None]:
    """The operations ``policy`` stands for, given the data, and a line saying what ``auto`` chose
    for an image folder (None when the policy was explicit, or for a built-in dataset)."""
    if policy != AUTO:
        return list(policy), None
    if dataset != "image_folder":
        return [], None
    ops = list(AUTO_POLICY)
    if AUTO_MAX_IMAGES is not None and num_images < AUTO_MAX_IMAGES:
        return ops, (f"data.diffaugment=auto: {plural(num_images, 'image')} (fewer than {AUTO_MAX_IMAGES}), so DiffAugment "
                     f"[{', '.join(ops)}] is on against D overfitting; data.diffaugment=[] turns it off")
    return [], (f"data.diffaugment=auto: no DiffAugment for {plural(num_images, 'image')} (on folders of 500 and 2000 "
                f"images it slowed learning: docs/experiments.md); data.diffaugment=[{', '.join(ops)}] turns it "
                "on, worth it when D's margin between real and generated images keeps growing")


def diff_augment(x: torch.Tensor, policy: Sequence[str], draw: Draw) -> torch.Tensor:
    """``x`` with the operations of ``policy`` applied in order (``x`` itself when the policy is empty).
    ``auto`` must be resolved first (``resolve_policy``)."""
    if isinstance(policy, str):
        raise ValueError(f"data.diffaugment={policy!r} must be resolved to a list of operations (resolve_policy)")
    if not policy:
        return x
    u = draw(sum(NUMBERS[p] for p in policy))
    col = 0
    for p in policy:
        x = FUNCTIONS[p](x, u[:, col:col + NUMBERS[p]])
        col += NUMBERS[p]
    return x


def random_hflip(x: torch.Tensor, draw: Draw) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2."""
    flip = (draw(1)[:, 0] < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)
