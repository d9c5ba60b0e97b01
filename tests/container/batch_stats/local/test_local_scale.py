"""20,000 crop-size images in one run through the whole local flow, fanned out in shards.

The path is the real one: uploads to moto's S3, its notifications on the ingest queue, the
Lambda handler polled from that queue while the uploads go on (as the event source mapping does),
the counter's DynamoDB transactions, the FIFO runs queue, the worker paging the run's objects
with Query and downloading them, the embedded PostgreSQL and the webhook. The manifest comes
last, so the run passes the stack's default size long before it closes. The messages are
references, so their size does not depend on the run's (``test_bc_flow.py`` checks the body).
"""

from __future__ import annotations

import io
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from batch_counter.aws import DynamoTrackingStore
from batch_stats.engine import (
    EngineParams,
    decode_image,
    image_rng,
    process_image,
    read_batch_stats,
    run_seed,
    summarize_batch,
)
from batch_stats.local.pipeline import local_pipeline
from batch_stats.worker.status import run_status
from batch_stats.worker.tracking import DynamoRunTracking
from batch_stats.worker.upload import encode_png, manifest_document

#: The crop size: every image is its own crop; the squares still land anywhere in it.
CROP = EngineParams(image_height=200, image_width=200)
BATCHES, PER_BATCH, SHARDS = 400, 50, 4
TOTAL = BATCHES * PER_BATCH
SHARD_IMAGES = TOTAL // SHARDS
RUN = "big"


def variants() -> list[bytes]:
    """A few small, compressible 200 x 200 PNGs (mid-grey with white and black blocks)."""
    found = []
    rng = np.random.default_rng(11)
    for _ in range(8):
        pixels = np.full((200, 200, 3), 128, np.uint8)
        for value in (255, 0):
            y, x = rng.integers(0, 150, 2)
            pixels[y : y + 50, x : x + 50] = value
        found.append(encode_png(pixels, compress_level=9))
    return found


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_twenty_thousand_crop_size_images_in_one_run() -> None:
    bodies = variants()
    keys = [
        (f"batch_{b:03d}", f"img_{i:05d}.png", (b * PER_BATCH + i) % len(bodies))
        for b in range(1, BATCHES + 1)
        for i in range(PER_BATCH)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="imgpipe-test-scale-") as work_dir,
        local_pipeline(
            Path(work_dir),
            params=CROP,
            stage="scale",
            runs_visibility_timeout=300,
            shard_images=SHARD_IMAGES,
        ) as p,
    ):
        s3 = p.session.client("s3")
        raw = p.resources.names.raw_bucket

        def put(item: tuple[str, str, int]) -> None:
            batch_id, name, variant = item
            s3.put_object(Bucket=raw, Key=f"uploads/{RUN}/{batch_id}/{name}", Body=bodies[variant])

        with p.lambda_running(drain_timeout=1800), ThreadPoolExecutor(4) as pool:
            list(pool.map(put, keys))
        manifest = {b: [] for b, _, _ in keys}  # type: dict[str, list[tuple[str, str | None]]]
        for batch_id, name, _ in keys:
            manifest[batch_id].append((name, None))
        s3.put_object(
            Bucket=raw,
            Key=f"uploads/{RUN}/_manifest.json",
            Body=manifest_document(RUN, manifest, names=False),
        )
        p.pump_lambda(timeout=300)

        # Every object recorded exactly once, and nothing else.
        store = DynamoTrackingStore(
            client=p.session.client("dynamodb"), table_name=p.resources.names.tracking_table
        )
        recorded = store.run_objects(RUN)
        assert sum(len(found) for found in recorded.values()) == TOTAL
        assert {k for found in recorded.values() for k in found} == {
            f"uploads/{RUN}/{b}/{n}" for b, n, _ in keys
        }
        batch_ids = [f"batch_{b:03d}" for b in range(1, BATCHES + 1)]
        assert store.batch_counts(RUN) == dict.fromkeys(batch_ids, PER_BATCH)
        run = store.get_run(RUN)
        assert run is not None
        assert (run.image_count, len(run.plan)) == (TOTAL, SHARDS)
        # No record failed for good:
        dlq = p.session.client("sqs").get_queue_attributes(
            QueueUrl=p.resources.ingest_dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        assert dlq["ApproximateNumberOfMessages"] == "0"

        (final,) = p.run_worker(runs=1, timeout=1800)
        assert (final.status, final.images_processed, final.shards) == ("finished", TOTAL, SHARDS)
        note = p.webhook.get(timeout=60)["Message"]
        assert (note["status"], note["images_processed"], note["shards"]) == (
            "finished",
            TOTAL,
            SHARDS,
        )
        assert (note["batch_count"], note["rejected_count"], note["late_upload_count"]) == (
            BATCHES,
            0,
            0,
        )
        assert p.webhook.pending() == []

        # The Parquet file: one row per batch, sorted, each counting its 50 images; two batches
        # computed independently from the bytes that were uploaded.
        uri = note["parquet_uri"].removeprefix(f"s3://{p.resources.names.results_bucket}/")
        body = s3.get_object(Bucket=p.resources.names.results_bucket, Key=uri)["Body"].read()
        stats, _ = read_batch_stats(io.BytesIO(body))
        assert [s.batch_id for s in stats] == batch_ids
        seed = run_seed(RUN)
        for batch_id in (batch_ids[0], batch_ids[BATCHES // 2], batch_ids[-1]):
            counts = [
                process_image(
                    decode_image(bodies[v], name=n, params=CROP),
                    rng=image_rng(seed, b, n),
                    params=CROP,
                )
                for b, n, v in keys
                if b == batch_id
            ]
            assert next(s for s in stats if s.batch_id == batch_id) == summarize_batch(
                batch_id, counts
            )

        # PostgreSQL: a row per batch with its 50 images, the run finished, all shards done.
        rows = p.database.batch_rows(RUN)
        assert [(r["batch_id"], r["image_count"]) for r in rows] == [
            (b, PER_BATCH) for b in batch_ids
        ]
        status = run_status(
            RUN,
            tracking=DynamoRunTracking(
                client=p.session.client("dynamodb"),
                table_name=p.resources.names.tracking_table,
            ),
            objects=None,
            raw_bucket=None,
            database=p.database,
        )
        assert status["state"] == "DISPATCHED"
        assert status["results"]["shards_done"] == status["results"]["shards"] == SHARDS
        assert status["results"]["images_processed"] == TOTAL
