"""The generic SAGAN generator, built from the architecture table."""
from __future__ import annotations

import torch
from torch import nn

from sagan.models.arch import BOTTOM_WIDTH, G_ARCH, checked_specs
from sagan.nn.attention import SelfAttention2d
from sagan.nn.blocks import GBlock
from sagan.nn.spectral import DEFAULT_INIT, init_weights, sn_conv3x3, sn_linear


class Generator(nn.Module):
    """z (and class y) -> image in [-1, 1].

    SN-linear z -> 4x4 x (ch * mult0), residual up-blocks with conditional BN (plain BN when
    ``num_classes == 0``), attention after the blocks whose output size is in ``attn``,
    then BN-ReLU-conv3x3-tanh.

    ``attn_bias`` gives the attention layers' 1x1 convs biases (the paper has none); ``init`` is
    the weight initialisation, one of ``sagan.nn.spectral.INIT_SCHEMES`` (see ``init_weights``).
    """

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 64,
        z_dim: int = 128,
        num_classes: int = 1000,
        img_channels: int = 3,
        attn: list[int] | tuple[int, ...] = (64,),
        attn_variant: str = "paper",
        use_sn: bool = True,
        attn_bias: bool = False,
        init: str = DEFAULT_INIT,
    ):
        super().__init__()
        specs = checked_specs(G_ARCH, resolution, attn, "generator")
        self.resolution, self.ch, self.z_dim = resolution, ch, z_dim
        self.num_classes, self.img_channels = num_classes, img_channels
        self.first_channels = specs[0].in_mult * ch
        self.linear = sn_linear(z_dim, self.first_channels * BOTTOM_WIDTH ** 2, enabled=use_sn)
        self.blocks = nn.ModuleList()
        for s in specs:
            stage = nn.ModuleList([GBlock(s.in_mult * ch, s.out_mult * ch, num_classes, s.resample, use_sn)])
            if s.resolution in attn:
                stage.append(SelfAttention2d(s.out_mult * ch, attn_variant, spectral_norm=use_sn, bias=attn_bias))
            self.blocks.append(stage)
        out_ch = specs[-1].out_mult * ch
        # The output BN is unconditional in the lineage (BigGAN's output_layer).
        self.out_bn = nn.BatchNorm2d(out_ch)
        self.out_conv = sn_conv3x3(out_ch, img_channels, use_sn)
        init_weights(self, init)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional and y is None:
            raise ValueError("this generator is class-conditional: pass class labels y")
        h = self.linear(z).view(z.shape[0], self.first_channels, BOTTOM_WIDTH, BOTTOM_WIDTH)
        for stage in self.blocks:
            h = stage[0](h, y)
            for layer in stage[1:]:
                h = layer(h)
        h = torch.relu(self.out_bn(h))
        return torch.tanh(self.out_conv(h))

    def sample_latent(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, device=device, generator=generator)
