"""A run of crop-size images through the whole local flow, fanned out in shards.

The flow moves about 7 images a second through moto's server on the shared 2-core machine
(upload, S3 notification, queue, Lambda, worker): 20,000 images would take about 50 minutes, so
the run here has 1,000 images in 4 shards (2.4 minutes). The messages are references, so their
size does not depend on the run's (``test_bc_flow.py`` checks the message body).
"""

from __future__ import annotations

import io
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
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
from batch_stats.worker.upload import encode_png, manifest_document

#: The crop size: every image is its own crop; the squares still land anywhere in it.
CROP = EngineParams(image_height=200, image_width=200)
BATCHES, PER_BATCH, SHARD_IMAGES = 20, 50, 250
TOTAL = BATCHES * PER_BATCH


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
def test_a_thousand_crop_size_images_in_four_shards() -> None:
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
            runs_visibility_timeout=60,
            shard_images=SHARD_IMAGES,
        ) as p,
    ):
        s3 = p.session.client("s3")
        raw = p.resources.names.raw_bucket

        def put(item: tuple[str, str, int]) -> None:
            batch_id, name, variant = item
            s3.put_object(Bucket=raw, Key=f"uploads/big/{batch_id}/{name}", Body=bodies[variant])

        # Uploads and the Lambda take turns by thousands, as in AWS where both run at once
        # (moto's queue operations slow down with the number of messages waiting).
        with ThreadPoolExecutor(8) as pool:
            for start in range(0, len(keys), 250):
                list(pool.map(put, keys[start : start + 250]))
                p.pump_lambda(timeout=900)
        manifest = {b: [] for b, _, _ in keys}  # type: dict[str, list[tuple[str, str | None]]]
        for batch_id, name, _ in keys:
            manifest[batch_id].append((name, None))
        s3.put_object(
            Bucket=raw,
            Key="uploads/big/_manifest.json",
            Body=manifest_document("big", manifest, names=False),
        )
        p.pump_lambda(timeout=900)
        (final,) = p.run_worker(runs=1, timeout=900)
        assert (final.status, final.images_processed, final.shards) == ("finished", TOTAL, 4)
        note = p.webhook.get(timeout=30)["Message"]
        assert (note["images_processed"], note["shards"], note["batch_count"]) == (TOTAL, 4, 20)
        assert p.webhook.pending() == []

        # An independent computation of two batches from the bytes that were uploaded.
        uri = note["parquet_uri"].removeprefix(f"s3://{p.resources.names.results_bucket}/")
        body = s3.get_object(Bucket=p.resources.names.results_bucket, Key=uri)["Body"].read()
        stats, _ = read_batch_stats(io.BytesIO(body))
        assert len(stats) == BATCHES
        seed = run_seed("big")
        for batch_id in ("batch_001", f"batch_{BATCHES:03d}"):
            counts = [
                process_image(
                    decode_image(bodies[v], name=n, params=CROP),
                    rng=image_rng(seed, b, n),
                    params=CROP,
                )
                for b, n, v in keys
                if b == batch_id
            ]
            expected = summarize_batch(batch_id, counts)
            assert next(s for s in stats if s.batch_id == batch_id) == expected
        rows = p.database.batch_rows("big")
        assert sum(int(str(r["image_count"])) for r in rows) == TOTAL
