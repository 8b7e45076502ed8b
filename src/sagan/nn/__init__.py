"""Building blocks: self-attention, conditional BN, residual blocks, spectral-norm helpers."""
from sagan.nn.attention import SelfAttention2d, double_backward_mode, recording_attention
from sagan.nn.blocks import DBlock, GBlock
from sagan.nn.norm import ConditionalBatchNorm2d

__all__ = [
    "SelfAttention2d",
    "double_backward_mode",
    "recording_attention",
    "GBlock",
    "DBlock",
    "ConditionalBatchNorm2d",
]
