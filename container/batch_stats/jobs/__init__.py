"""Jobs: work the worker runs from a JSON document instead of an uploaded run.

A job document (``jobs/<job_id>.json`` in the raw bucket, or ``batch-stats submit FILE``) names a
*kind*; each kind implements :class:`batch_stats.jobs.base.JobKind` in its own module and is
listed in :mod:`batch_stats.jobs.registry`. The kinds are pure logic over a small object-store
port (:class:`batch_stats.jobs.base.JobStore`); the worker supplies the queue, the database, the
notifications and the fan-out over shards.
"""
