"""The generic SAGAN (projection) discriminator, built from the architecture table."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sagan.models.arch import D_ARCH, add_extra_layers, checked_specs
from sagan.nn.blocks import DBlock
from sagan.nn.spectral import DEFAULT_INIT, init_weights, sn_embedding, sn_linear
from sagan.schema import ModelConfig


class Discriminator(nn.Module):
    """image (and class y) -> one unbounded score per image.

    Optimised first block, residual down-blocks, attention after the blocks whose output
    size is in ``attn``, ReLU, global sum pooling, SN-linear plus the projection term
    <embed(y), h> when class-conditional (Miyato & Koyama, 2018).

    ``attn_bias``, ``attn_reduction``, ``resblock`` and ``init`` as for the generator; ``init`` covers the projection embedding too.
    Several blocks can output the same size here (the blocks after the last downsampling): a layer at
    that size follows the first of them (``extra_placement="first"``), or each (``"every"``, how versions
    before 0.2 built D; see ``sagan.models.arch.extra_layer_blocks``).
    """

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 64,
        num_classes: int = 1000,
        img_channels: int = 3,
        attn: list[int] | tuple[int, ...] = (64,),
        attn_variant: str = "paper",
        use_sn: bool = True,
        attn_bias: bool = False,
        init: str = DEFAULT_INIT,
        attn_reduction: int = 8,
        resblock: list[int] | tuple[int, ...] = (),
        extra_placement: str = "first",
    ):
        super().__init__()
        specs = checked_specs(D_ARCH, resolution, attn, "discriminator")
        checked_specs(D_ARCH, resolution, resblock, "discriminator", what="residual block")
        self.resolution, self.ch = resolution, ch
        self.num_classes, self.img_channels = num_classes, img_channels
        self.blocks = nn.ModuleList(
            nn.ModuleList([DBlock(img_channels if i == 0 else s.in_mult * ch, s.out_mult * ch, s.resample,
                                  preactivation=i > 0, use_sn=use_sn)]) for i, s in enumerate(specs))
        feat = specs[-1].out_mult * ch
        self.linear = sn_linear(feat, 1, enabled=use_sn)
        self.embed = sn_embedding(num_classes, feat, enabled=use_sn) if num_classes > 0 else None
        init_weights(self, init)  # the backbone; then the attention / bottleneck layers, each on its own stream
        add_extra_layers(self.blocks, specs, [s.out_mult * ch for s in specs], attn, resblock, attn_variant, use_sn,
                         attn_bias, attn_reduction, init, "D", extra_placement)

    @classmethod
    def from_config(cls, m: ModelConfig, num_classes: int, img_channels: int) -> "Discriminator":
        """The discriminator a config's ``model`` section describes: its ``d_*`` keys and the shared ones
        (checked by ``sagan.models.arch.check_model_config``)."""
        return cls(m.resolution, m.d_ch, num_classes, img_channels, list(m.d_attn), m.attn_variant, m.d_sn,
                   attn_bias=m.attn_bias, init=m.init, attn_reduction=m.attn_reduction, resblock=list(m.d_resblock),
                   extra_placement=m.d_extra_layers)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for stage in self.blocks:
            for layer in stage:
                h = layer(h)
        return torch.sum(F.relu(h), dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional and y is None:
            raise ValueError("this discriminator is class-conditional: pass class labels y")
        h = self.features(x)
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + torch.sum(self.embed(y) * h, dim=1)
        return out
