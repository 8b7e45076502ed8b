"""Studies: the paper's experiments as families of ordinary runs (docs/experiments.md).

``arms`` says what each study varies and the ``sagan train`` command of every arm x seed;
``runner`` trains and evaluates them (skipping finished runs, resuming unfinished ones);
``results`` reads finished run directories into tables with bootstrap intervals and figures.
"""
