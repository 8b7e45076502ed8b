"""Batch normalisation: class-conditional (gain and bias per class) and synchronised over ranks.

:class:`SyncBatchNorm2d` normalises with the statistics of the *global* batch under torchrun
(``train.sync_bn``). PyTorch's own ``nn.SyncBatchNorm`` refuses CPU tensors, and the label-ignoring
BN of unconditional generators takes an extra argument, so this one is ours: a differentiable
all-reduce of per-channel sums, with the state-dict keys of ``nn.BatchNorm2d`` so checkpoints stay
interchangeable.
"""
from __future__ import annotations

import torch
import torch.distributed as tdist
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


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's input is the sum of all ranks' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        out = x.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return _AllReduceSum.apply(grad)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the batch summed over all ranks.

    Works on every device and backend (gloo included). In eval mode, or without an initialised
    process group of more than one rank, it is exactly ``nn.BatchNorm2d``. ``forward(x, y=None)``
    accepts (and ignores) a label so it can replace the label-ignoring BN of unconditional
    generators. Gradients flow through the all-reduce, so the
    gradient is that of the global-batch statistics, as with ``nn.SyncBatchNorm``.
    """

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG002
        if not (self.training and tdist.is_available() and tdist.is_initialized()
                and tdist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        acc = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(acc)
        n_local = torch.tensor([float(x.numel() // x.shape[1])], dtype=acc, device=x.device)
        s = torch.cat([xf.sum(dim=(0, 2, 3)), n_local])
        s = all_reduce(s)  # differentiable sum over ranks
        count = s[-1]
        mean = s[:-1] / count
        centred = xf - mean[None, :, None, None]
        var = all_reduce(centred.square().sum(dim=(0, 2, 3))) / count  # biased, as BN normalises
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (count / torch.clamp(count - 1, min=1.0))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        return out.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every 2-D batch norm in ``module`` by :class:`SyncBatchNorm2d` (state preserved)."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNorm2d):
        new = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        p = next(iter(module.state_dict().values()), None)
        return new.to(p.device) if p is not None else new
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
