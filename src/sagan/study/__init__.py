"""Studies: the paper's experiments as families of ordinary runs (docs/experiments.md).

``arms`` says what each study varies and the ``sagan train`` command of every arm x seed;
``runner`` trains and evaluates them (skipping finished runs, resuming unfinished ones);
``results`` reads finished run directories into tables of paired comparisons (``stats``: t intervals,
t-test and exact sign-flip p, Holm, the verdict) and figures; ``status`` says where a study stands.
"""
