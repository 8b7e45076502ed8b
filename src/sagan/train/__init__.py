"""Training: the loop, EMA, checkpoints, run directories and distributed helpers."""
