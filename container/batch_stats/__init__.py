"""Batch statistics of random image runs.

``batch_stats.engine`` is the pure processing core (numpy, Pillow, pyarrow); ``batch_stats.cli``
is the ``batch-stats`` command line; the worker that runs the engine on uploaded runs lives beside
them.
"""
