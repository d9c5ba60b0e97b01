"""One local pipeline (moto server, pgserver, webhook, Lambda handler, worker) per module."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_stats.engine import EngineParams
from batch_stats.local.pipeline import LocalPipeline, local_pipeline

SMALL = EngineParams(
    square_size=8,
    crop_height=32,
    crop_width=32,
    image_height=48,
    image_width=64,
    images_per_batch=3,
    batches=2,
)


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    # Not under pytest's basetemp (see work_dir): PostgreSQL runs as another user when root.
    with (
        tempfile.TemporaryDirectory(prefix="imgpipe-test-local-") as work_dir,
        local_pipeline(
            Path(work_dir), params=SMALL, stage="test", runs_visibility_timeout=5
        ) as running,
    ):
        yield running


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A scratch folder outside pytest's basetemp.

    As root, pgserver runs PostgreSQL as the user "pgserver", which must traverse the parent
    folders; pytest resets the permissions of its basetemp root to 0700 whenever a session starts.
    """
    with tempfile.TemporaryDirectory(prefix="imgpipe-test-demo-") as path:
        yield Path(path)


@pytest.fixture
def small() -> EngineParams:
    return SMALL
