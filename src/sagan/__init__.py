"""sagan-torch: Self-Attention GAN (Zhang et al., 2019) in PyTorch."""
__version__ = "0.1.0"
