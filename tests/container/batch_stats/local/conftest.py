"""One local pipeline (moto server, pgserver, webhook, Lambda handler, worker) per module."""

from __future__ import annotations

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
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPipeline]:
    work_dir: Path = tmp_path_factory.mktemp("local")
    with local_pipeline(work_dir, params=SMALL, stage="test", runs_visibility_timeout=5) as running:
        yield running


@pytest.fixture
def small() -> EngineParams:
    return SMALL
