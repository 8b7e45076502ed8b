"""Benchmarks behind ``sagan bench``: ``measure`` (attention layer, training step, sampling,
precision; returns one JSON-ready dict) and ``render`` (that JSON as docs/benchmarks.md).

What ``sagan bench``'s parser shows is here, so that ``sagan bench --help`` imports no torch."""

SECTIONS = ("matmul", "precision", "attention", "train", "data", "profile")  # data: only with a dataset (--data)
DEFAULT_OFF = ("data", "profile")  # sections that run only when named in --only (data also needs --data)
PRESETS = ("fmnist32", "cifar32", "imagefolder64", "imagenet128")
DEFAULT_SIZES = (16, 32, 64, 128)
