"""Training: the trainer (the run around the step), the step (the maths), EMA, the divergence guard,
the scalar logger, precision and fine-tuning. Only ``sagan.commands`` and ``sagan.bench`` import it."""
