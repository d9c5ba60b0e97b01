"""The ``synthetic-stats`` kind: N batches x M random images generated inside the task.

What the original notebook's container did, with the engine's seeded synthetic images
(:mod:`batch_stats.engine`): no image is uploaded or stored; the statistics are exactly those
``batch-stats process --synthetic`` (``iter_synthetic_stats``) computes for the same seed and
shape. Outputs, as for an uploaded run: ``results/<job_id>/batch_stats.parquet`` and rows in the
``batch_stats`` table under the run id ``<job_id>``; then ``results/<job_id>/manifest.json``.

Parameters (``params`` of the job document):

=====================  ========  ===============================================================
``batches``            required  integer, 1-100000
``images_per_batch``   required  integer, 1-10000 (and batches x images_per_batch <= 10000000)
``seed``               optional  integer, 0 to 2**64 - 1 (default: derived from the job id)
``image_height``       optional  integer, 1-4096 (default 256)
``image_width``        optional  integer, 1-4096 (default 512)
``square_size``        optional  integer (default 50)
``crop_height``        optional  integer (default 200)
``crop_width``         optional  integer (default 200)
``batches_per_shard``  optional  integer, 1-100000 (default: about 20000 images a shard)
=====================  ========  ===============================================================

Shards are whole consecutive batches; each writes its part
(``results/<job_id>/parts/shard-NNNNN.parquet``) and the last merges them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_stats.engine import (
    BatchStats,
    EngineParams,
    batch_ids,
    image_names,
    read_batch_stats,
    run_metadata,
    run_seed,
    summarize_batch,
    write_batch_stats,
)
from batch_stats.engine._counting import synthetic_batch_counts
from batch_stats.jobs.base import JobContext, JobSpecError, JobStore
from batch_stats.jobs.manifest import present_objects, sha256_hex, write_manifest

NAME = "synthetic-stats"
MAX_BATCHES = 100_000
MAX_IMAGES_PER_BATCH = 10_000
MAX_IMAGES = 10_000_000
MAX_SIDE = 4096
MAX_SEED = 2**64 - 1
#: Default shard size (images), in whole batches.
SHARD_IMAGES = 20_000

_RANGES: dict[str, tuple[int, int]] = {
    "batches": (1, MAX_BATCHES),
    "images_per_batch": (1, MAX_IMAGES_PER_BATCH),
    "seed": (0, MAX_SEED),
    "image_height": (1, MAX_SIDE),
    "image_width": (1, MAX_SIDE),
    "square_size": (1, MAX_SIDE),
    "crop_height": (1, MAX_SIDE),
    "crop_width": (1, MAX_SIDE),
    "batches_per_shard": (1, MAX_BATCHES),
}
_REQUIRED = ("batches", "images_per_batch")
_ENGINE_KEYS = (
    "batches",
    "images_per_batch",
    "image_height",
    "image_width",
    "square_size",
    "crop_height",
    "crop_width",
)


@dataclass(frozen=True)
class SyntheticParams:
    engine: EngineParams
    #: None: derived from the job id (``run_seed(job_id)``, as for an uploaded run).
    seed: int | None
    batches_per_shard: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **{key: getattr(self.engine, key) for key in _ENGINE_KEYS},
            "seed": self.seed,
            "batches_per_shard": self.batches_per_shard,
        }


def results_key(job_id: str) -> str:
    return f"results/{job_id}/batch_stats.parquet"


def part_key(job_id: str, shard: int) -> str:
    return f"results/{job_id}/parts/shard-{shard:05d}.parquet"


class SyntheticStatsKind:
    name = NAME

    def parse(self, params: Mapping[str, Any]) -> SyntheticParams:
        problems: list[str] = []
        unknown = sorted(set(params) - set(_RANGES))
        if unknown:
            problems.append(f"unknown keys {unknown} (allowed: {sorted(_RANGES)})")
        values: dict[str, int] = {}
        for key, (low, high) in _RANGES.items():
            if key not in params:
                if key in _REQUIRED:
                    problems.append(f"{key} is missing (an integer from {low} to {high})")
                continue
            value = params[key]
            if key == "seed" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(
                    f"{key} {value!r} is a {type(value).__name__}, not an integer "
                    f"(allowed: {low}-{high})"
                )
            elif not low <= value <= high:
                problems.append(f"{key} {value} is out of range (allowed: {low}-{high})")
            else:
                values[key] = value
        if (
            "batches" in values
            and "images_per_batch" in values
            and values["batches"] * values["images_per_batch"] > MAX_IMAGES
        ):
            problems.append(
                f"batches x images_per_batch = {values['batches'] * values['images_per_batch']} "
                f"images; at most {MAX_IMAGES} are allowed in one job"
            )
        engine: EngineParams | None = None
        if not problems:
            try:
                engine = EngineParams(**{k: values[k] for k in _ENGINE_KEYS if k in values})
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise JobSpecError(problems)
        assert engine is not None
        default_shard = max(1, SHARD_IMAGES // engine.images_per_batch)
        return SyntheticParams(
            engine=engine,
            seed=values.get("seed"),
            batches_per_shard=values.get("batches_per_shard", default_shard),
        )

    def output_prefix(self, job_id: str) -> str:
        return f"results/{job_id}/"

    def shards(self, params: SyntheticParams) -> int:
        return -(-params.engine.batches // params.batches_per_shard)

    def _seed(self, params: SyntheticParams, job_id: str) -> int:
        return run_seed(job_id) if params.seed is None else params.seed

    def run_shard(
        self, params: SyntheticParams, *, shard: int, shards: int, ctx: JobContext
    ) -> dict[str, Any]:
        if shards != self.shards(params) or not 0 <= shard < shards:
            raise ValueError(f"shard {shard} of {shards} does not match the job's shards")
        seed = self._seed(params, ctx.job_id)
        first = shard * params.batches_per_shard
        mine = list(batch_ids(params.engine))[first : first + params.batches_per_shard]
        names = list(image_names(params.engine))
        stats = [
            summarize_batch(
                batch_id, synthetic_batch_counts(seed, batch_id, names, params=params.engine)
            )
            for batch_id in mine
        ]
        key = part_key(ctx.job_id, shard)
        _put_parquet(
            ctx,
            key,
            stats,
            run_metadata(
                params=params.engine, seed=seed, run_id=ctx.job_id, shard=f"{shard}/{shards}"
            ),
        )
        return {"part": key, "batches": len(stats), "images": len(stats) * len(names)}

    def finish(
        self,
        params: SyntheticParams,
        *,
        shard_results: Sequence[Mapping[str, Any]],
        ctx: JobContext,
    ) -> dict[str, Any]:
        seed = self._seed(params, ctx.job_id)
        stats: list[BatchStats] = []
        for result in shard_results:
            part, _ = read_batch_stats(io.BytesIO(ctx.store.get(ctx.output_bucket, result["part"])))
            stats.extend(part)
        stats.sort(key=lambda s: s.batch_id)
        key = results_key(ctx.job_id)
        data = _put_parquet(
            ctx,
            key,
            stats,
            run_metadata(
                params=params.engine,
                seed=seed,
                run_id=ctx.job_id,
                source=f"{NAME} job {ctx.job_id} (generated in the task, no image stored)",
            ),
        )
        uri = f"s3://{ctx.output_bucket}/{key}"
        images = params.engine.images_per_batch
        if ctx.rows is not None:
            ctx.rows.save_run_stats(
                ctx.job_id,
                stats=stats,
                image_counts={s.batch_id: images for s in stats},
                parquet_uri=uri,
            )
        counts = {
            "batches": len(stats),
            "images": len(stats) * images,
            "shards": len(shard_results),
        }
        prefix = self.output_prefix(ctx.job_id)
        objects = [
            {**entry, "sha256": sha256_hex(data)} if entry["key"] == key else entry
            for entry in present_objects(ctx.store, ctx.output_bucket, prefix)
        ]
        manifest_uri = write_manifest(
            ctx.store,
            ctx.output_bucket,
            prefix,
            job_id=ctx.job_id,
            kind=NAME,
            status="succeeded",
            params={**params.as_dict(), "seed": seed},
            counts=counts,
            objects=objects,
        )
        return {
            "parquet_uri": uri,
            "manifest_uri": manifest_uri,
            "sha256": sha256_hex(data),
            "seed": seed,
            **counts,
            "statistics": [s.as_row() for s in stats[:100]],
        }

    def demo_params(self, *, store: JobStore, input_bucket: str, scratch: Path) -> dict[str, Any]:
        del store, input_bucket, scratch  # nothing to upload: the images are generated
        return {"batches": 4, "images_per_batch": 5, "seed": 2024, "batches_per_shard": 2}

    def write_preview(
        self, outputs: Mapping[str, Any], *, store: JobStore, output_bucket: str, path: Path
    ) -> Path:
        """A chart of the batches' mean white and black counts (with min-max bars)."""
        del store, output_bucket
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = list(outputs.get("statistics", []))
        figure, axis = plt.subplots(figsize=(8, 4.5))
        positions = range(len(rows))
        for colour, offset, edge in (("white", -0.2, "black"), ("black", 0.2, "black")):
            means = [float(r[f"{colour}_avg"]) for r in rows]
            low = [m - float(r[f"{colour}_min"]) for m, r in zip(means, rows, strict=True)]
            high = [float(r[f"{colour}_max"]) - m for m, r in zip(means, rows, strict=True)]
            axis.bar(
                [p + offset for p in positions],
                means,
                width=0.4,
                color=colour,
                edgecolor=edge,
                yerr=[low, high],
                capsize=3,
                ecolor="tab:red",
                label=f"{colour} pixels (mean, min-max)",
            )
        axis.set_xticks(list(positions), [str(r["batch_id"]) for r in rows], rotation=45)
        axis.set_ylabel("pixels in the crop")
        axis.set_title(f"{NAME}: per-batch counts (seed {outputs.get('seed')})")
        axis.legend()
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path


def _put_parquet(
    ctx: JobContext, key: str, stats: Sequence[BatchStats], metadata: dict[str, str]
) -> bytes:
    buffer = io.BytesIO()
    write_batch_stats(stats, buffer, metadata=metadata)
    data = buffer.getvalue()
    ctx.store.put(
        ctx.output_bucket,
        key,
        data,
        content_type="application/vnd.apache.parquet",
        metadata={"run-id": ctx.job_id, "job-id": ctx.job_id},
    )
    return data


KIND = SyntheticStatsKind()

__all__ = ["KIND", "NAME", "SyntheticParams", "SyntheticStatsKind"]
