"""Benchmarks behind ``sagan bench``: ``measure`` (attention layer, training step, sampling,
precision; returns one JSON-ready dict) and ``render`` (that JSON as docs/benchmarks.md)."""
