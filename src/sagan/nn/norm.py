"""Conditional batch normalisation (class-conditional gain and bias)."""
from __future__ import annotations

import torch
from torch import nn


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then per-class ``(1 + e_gain[y]) * x + e_bias[y]``.

    The gain and bias tables are plain ``nn.Embedding`` without spectral norm, as in the
    SAGAN/BigGAN lineage: they are per-class affine parameters of a normalisation, not a
    linear map whose Lipschitz constant matters, and normalising them would tie every class's
    gain to the largest one. Both start at zero, so the layer starts as plain BN.

    ``y`` is either class indices ``(B,)`` or class weights ``(B, num_classes)`` (float): the
    gain and bias are then the weighted sums of the class rows, so a one-hot row gives exactly
    that class and a mixture interpolates the class embeddings (class morphing).
    """

    def __init__(self, num_features: int, num_classes: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False, eps=eps, momentum=momentum)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        gain, bias = class_rows(self.gain, y), class_rows(self.bias, y)
        return out * (1.0 + gain[:, :, None, None]) + bias[:, :, None, None]


def class_rows(table: nn.Embedding, y: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` for class indices ``y`` (integer), or their weighted sums for class weights (float)."""
    if y.is_floating_point():
        if y.dim() != 2 or y.shape[1] != table.num_embeddings:
            raise ValueError(f"class weights must have shape (batch, {table.num_embeddings}), got {tuple(y.shape)}")
        return y.to(table.weight.dtype) @ table.weight
    return table(y)


class BatchNorm2dIgnoringLabel(nn.BatchNorm2d):
    """Plain affine BatchNorm with the same call signature as the conditional one."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG002
        return super().forward(x)


def make_bn(num_features: int, num_classes: int) -> nn.Module:
    """Conditional BN when the model is class-conditional (num_classes > 0), else plain BN."""
    if num_classes > 0:
        return ConditionalBatchNorm2d(num_features, num_classes)
    return BatchNorm2dIgnoringLabel(num_features)
