"""Generator, discriminator, the per-resolution architecture table, and building them from a config."""
from sagan.models.arch import D_ARCH, G_ARCH, RESOLUTIONS, d_attention_sizes, g_attention_sizes
from sagan.models.build import attention_layers, build_models, count_parameters, gamma_layers
from sagan.models.discriminator import Discriminator
from sagan.models.generator import Generator

__all__ = ["Generator", "Discriminator", "G_ARCH", "D_ARCH", "RESOLUTIONS", "g_attention_sizes", "d_attention_sizes",
           "build_models", "attention_layers", "count_parameters", "gamma_layers"]
