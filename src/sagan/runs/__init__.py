"""Run folders on disk: the folder and its lock (``folder``), its checkpoints (``checkpoints``) and
the folder of an elastic torchrun job (``elastic``)."""
