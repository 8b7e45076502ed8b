"""Evaluation metrics (IS, FID, KID, precision/recall) and feature extractors."""
