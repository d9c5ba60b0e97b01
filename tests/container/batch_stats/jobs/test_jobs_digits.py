"""The ``digits`` job kind on moto's S3 server, with real MNIST digits (the packaged test set)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from batch_stats.jobs.base import JobContext, JobSpecError
from batch_stats.jobs.digits import KIND, DigitsKind, DigitsParams
from batch_stats.jobs.registry import get_kind
from batch_stats.local.services import MotoEndpoint, moto_server
from batch_stats.worker.adapters import S3ObjectStore
from PIL import Image

from number_generator import clear_source_cache
from number_generator.cli import phone_main

from .conftest import RecordingStore

_ids = itertools.count()
#: 90 phone numbers in 6 tar shards and 3 parts: wide enough that no draw is redrawn for the
#: widest numbers.
PHONE: dict[str, Any] = {
    "mode": "phone",
    "count": 90,
    "shard_images": 15,
    "part_images": 30,
    "spacing_min": 2,
    "spacing_max": 5,
    "image_width": 300,
    "seed": 11,
}


@pytest.fixture(autouse=True)
def _packaged_mnist(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The digits come from the MNIST test set shipped in the package, as in the container."""
    monkeypatch.delenv("NUMBER_GENERATOR_MNIST_DIR", raising=False)
    monkeypatch.setenv("NUMBER_GENERATOR_CACHE_DIR", str(tmp_path_factory.mktemp("empty-cache")))
    clear_source_cache()
    yield
    clear_source_cache()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[MotoEndpoint]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(moto_endpoint: MotoEndpoint) -> Any:
    env = moto_endpoint.environ()
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def store(s3: Any) -> S3ObjectStore:
    return S3ObjectStore(s3)


@pytest.fixture
def new_context(s3: Any, tmp_path: Path) -> Callable[..., JobContext]:
    """A job's context: fresh buckets (or those of ``like``) and a fresh scratch folder."""

    def make(store: Any, *, like: JobContext | None = None) -> JobContext:
        number = next(_ids)
        scratch = tmp_path / f"scratch-{number}"
        scratch.mkdir()
        if like is not None:
            return dataclasses.replace(like, scratch=scratch)
        buckets = (f"digits-raw-{number}", f"digits-results-{number}")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        return JobContext(f"job-{number}", buckets[0], buckets[1], store, scratch)

    return make


@pytest.fixture
def recording(store: S3ObjectStore) -> RecordingStore:
    return RecordingStore(store)


def _run(
    kind: DigitsKind, params: DigitsParams, ctx: JobContext
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    shards = kind.shards(params)
    results = [kind.run_shard(params, shard=k, shards=shards, ctx=ctx) for k in range(shards)]
    return results, kind.finish(params, shard_results=results, ctx=ctx)


def _samples(data: bytes) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(name, PNG bytes, JSON record) of every sample of a tar shard, in order."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        out = []
        for png, record in zip(members[0::2], members[1::2], strict=True):
            assert png.name.endswith(".png")
            assert record.name == png.name.removesuffix(".png") + ".json"
            png_file, record_file = tar.extractfile(png), tar.extractfile(record)
            assert png_file is not None
            assert record_file is not None
            out.append((png.name, png_file.read(), json.loads(record_file.read())))
    return out


def _labels(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


# -- parameters ------------------------------------------------------------------------------


def test_the_registry_finds_the_kind() -> None:
    assert get_kind("digits") is KIND
    assert KIND.output_prefix("j1") == "datasets/j1/"


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(JobSpecError) as caught:
        KIND.parse({
            "mode": "phone", "count": "many", "spacing_min": 9, "spacing_max": 3,
            "image_width": 100_000, "shard_images": 5, "part_images": 10**8, "colour": "red",
            "format": "npz", "augment": "extreme", "seed": -1,
        })  # fmt: skip
    problems = caught.value.problems
    text = " | ".join(problems)
    assert "unknown parameter(s) colour" in text
    assert "count must be an integer from 1 to 100,000,000, got 'many'" in text
    assert "spacing_min (9) must not exceed spacing_max (3)" in text
    assert "image_width must be from 28 to 4,096, got 100,000" in text
    assert "shard_images must be from 10 to 200,000, got 5" in text
    assert "part_images must be from 10 to 10,000,000, got 100,000,000" in text
    assert "format must be one of shards, got 'npz'" in text
    assert "augment must be one of light, medium, heavy or null, got 'extreme'" in text
    assert "seed must be from 0 to" in text
    assert len(problems) == 9


def test_missing_and_wrong_types() -> None:
    with pytest.raises(JobSpecError) as caught:
        KIND.parse({"mode": "letters", "count": True, "spacing_min": 1.5})
    text = " | ".join(caught.value.problems)
    assert "missing parameter(s): spacing_max, image_width" in text
    assert "mode must be one of phone, sequence, got 'letters'" in text
    assert "count must be an integer from 1 to 100,000,000, got True" in text
    assert "spacing_min must be an integer from 0 to 100, got 1.5" in text


def test_counts_beyond_the_phone_number_space_and_absurd_sizes_are_refused() -> None:
    with pytest.raises(JobSpecError) as caught:
        KIND.parse({**PHONE, "count": 600_000_000, "shard_images": 10})
    text = " | ".join(caught.value.problems)
    assert "the formats hold 574,900,000 distinct numbers" in text
    assert "count must be from 1 to 100,000,000, got 600,000,000" in text
    with pytest.raises(JobSpecError) as caught:
        KIND.parse({**PHONE, "count": 100_000_000, "shard_images": 10, "part_images": 1_000})
    text = " | ".join(caught.value.problems)
    assert "in shards of 10 images makes 10,000,000 shards; at most 100,000" in text
    assert "in parts of 1,000 images makes 100,000 parts; at most 10,000" in text
    with pytest.raises(JobSpecError, match=r"part_images \(25,000\) must be a multiple of "
                       r"shard_images \(10,000\)"):  # fmt: skip
        KIND.parse({**PHONE, "count": 100_000, "shard_images": 10_000, "part_images": 25_000})


def test_shards_parts_and_datasets_too_large_in_pixels_are_refused() -> None:
    with pytest.raises(JobSpecError) as caught:
        KIND.parse({**PHONE, "count": 50_000_000, "shard_images": 200_000,
                    "part_images": 400_000, "image_width": 4_000})  # fmt: skip
    text = " | ".join(caught.value.problems)
    assert "a shard of 200,000 images of 28 x 4000 px holds 22,400,000,000 pixels" in text
    assert "(at this width, shard_images at most 9,586)" in text
    assert "a part of 400,000 images of 28 x 4000 px holds 44,800,000,000 pixels" in text
    assert "(at this width, part_images at most 76,695)" in text
    assert "50,000,000 images of 28 x 4000 px hold 5,600,000,000,000 pixels" in text
    assert len(caught.value.problems) == 3
    params = KIND.parse({**PHONE, "count": 200_000, "shard_images": 100_000,
                         "part_images": 200_000})  # fmt: skip
    assert (params.shard_images, params.part_images) == (100_000, 200_000)


def test_sequence_mode_needs_its_length_and_phone_mode_refuses_one() -> None:
    base = {k: v for k, v in PHONE.items() if k != "mode"}
    with pytest.raises(JobSpecError, match=r"digits \(the sequence length, 1 to 16\) is required"):
        KIND.parse({**base, "mode": "sequence"})
    with pytest.raises(JobSpecError, match="digits must be from 1 to 16, got 17"):
        KIND.parse({**base, "mode": "sequence", "digits": 17})
    with pytest.raises(JobSpecError, match="digits applies only to mode sequence"):
        KIND.parse({**PHONE, "digits": 5})
    params = KIND.parse({**base, "mode": "sequence", "digits": 5})
    assert (params.mode, params.digits) == ("sequence", 5)


def test_a_width_too_small_for_the_numbers_is_refused() -> None:
    with pytest.raises(JobSpecError, match=r"image_width 60 is too small for the 1\d digits"):
        KIND.parse({**PHONE, "image_width": 60})


def test_defaults_shards_and_parts() -> None:
    base = {k: v for k, v in PHONE.items() if k not in ("shard_images", "part_images")}
    params = KIND.parse({k: v for k, v in base.items() if k != "seed"})
    assert (params.seed, params.format, params.augment) == (0, "shards", None)
    # The CLI's default tar size, and parts of 100,000 images (one task each).
    assert (params.shard_images, params.part_images) == (10_000, 100_000)
    # Wider images get smaller default shards and parts, within the pixel limits (2**30 and
    # 2**33), parts a whole number of shards.
    wide = KIND.parse({**base, "image_width": 4_000, "count": 200_000})
    assert wide.shard_images == 2**30 // (28 * 4_000) == 9_586
    assert wide.part_images == 8 * 9_586 == 76_688  # 2**33 // (28 * 4_000) is 76,695
    assert KIND.parse({**base, "shard_images": 30_000}).part_images == 90_000
    # A part of shard_images when only shard_images is given and it exceeds 100,000.
    assert KIND.parse({**base, "shard_images": 150_000}).part_images == 150_000
    params = KIND.parse({**base, "count": 45_001, "shard_images": 15_000})
    assert (params.shard_count, KIND.shards(params)) == (4, 1)
    params = KIND.parse(PHONE)
    assert (params.shard_count, KIND.shards(params)) == (6, 3)


# -- a job run shard by shard ----------------------------------------------------------------


def test_a_three_part_job(
    recording: RecordingStore, tmp_path: Path, new_context: Callable[..., JobContext]
) -> None:
    kind = DigitsKind(workers=1)
    params = kind.parse(PHONE)
    ctx = new_context(recording)
    results, outputs = _run(kind, params, ctx)
    prefix = f"datasets/{ctx.job_id}/"
    bucket = ctx.output_bucket

    # The manifest is written last, and lists every object with its size and SHA-256.
    assert recording.written[-1] == prefix + "manifest.json"
    manifest = json.loads(recording.get(bucket, prefix + "manifest.json"))
    assert manifest["status"] == "succeeded"
    assert manifest["counts"] == {"images": 90, "shards": 6, "parts": 3}
    assert manifest["params"]["seed"] == 11
    assert manifest["reason"] is None
    assert manifest["digit_source"] == "MNIST test set (packaged)"
    stored = dict(recording.list_keys(bucket, prefix))
    assert sorted(o["key"] for o in manifest["objects"]) == sorted(
        set(stored) - {prefix + "manifest.json"}
    )
    for entry in manifest["objects"]:
        data = recording.get(bucket, entry["key"])
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()

    # Six tar shards that tarfile reads: PNG + JSON pairs whose labels match labels.csv.
    shard_keys = sorted(k for k in stored if k.endswith(".tar"))
    assert shard_keys == [f"{prefix}shard-{k:06d}.tar" for k in range(6)]
    assert sorted(k for k in stored if "/labels/" in k or "/boxes/" in k) == [
        *(f"{prefix}boxes/part-{k:06d}.jsonl" for k in range(3)),
        *(f"{prefix}labels/part-{k:06d}.csv" for k in range(3)),
    ]
    samples = [s for key in shard_keys for s in _samples(recording.get(bucket, key))]
    labels = _labels(recording.get(bucket, prefix + "labels.csv"))
    assert labels[0] == ["file", "digits", "formatted"]
    assert len(labels) == 91
    for (name, png, record), (file, digits, formatted) in zip(samples, labels[1:], strict=True):
        assert name == file == record["file"]
        assert record["digits"] == digits == name.split("_")[1].removesuffix(".png")
        assert formatted.replace("-", "") == digits
        assert len(record["boxes"]) == len(digits)
        with Image.open(io.BytesIO(png)) as image:
            pixels = np.asarray(image)
        assert pixels.shape == (28, 300)
        assert pixels.min() < 128  # ink
        for x0, y0, x1, y1 in record["boxes"]:
            assert (pixels[y0:y1, x0:x1] < 255).any()  # each digit's box holds ink
    numbers = [row[1] for row in labels[1:]]
    assert len(set(numbers)) == 90  # unique across the three parts
    assert [r["start"] for r in results] == [0, 30, 60]

    assert (outputs["images"], outputs["shards"], outputs["parts"]) == (90, 6, 3)
    assert outputs["manifest_uri"] == f"s3://{bucket}/{prefix}manifest.json"
    assert outputs["shard_urls"] == f"s3://{bucket}/{prefix}shard-{{000000..000005}}.tar"

    preview = kind.write_preview(
        outputs, store=recording, output_bucket=bucket, path=tmp_path / "preview.png"
    )
    with Image.open(preview) as sheet:
        assert sheet.size[0] > 600
        assert sheet.size[1] > 6 * 28


def test_parts_equal_one_process_writing_the_whole_dataset(
    store: S3ObjectStore, tmp_path: Path, new_context: Callable[..., JobContext]
) -> None:
    kind = DigitsKind(workers=1)
    sharded = new_context(store)
    _run(kind, kind.parse(PHONE), sharded)
    single = new_context(store)
    _run(kind, kind.parse({**PHONE, "part_images": 90}), single)

    def samples(ctx: JobContext) -> list[tuple[str, bytes, dict[str, Any]]]:
        keys = sorted(
            k for k, _ in store.list_keys(ctx.output_bucket, f"datasets/{ctx.job_id}/")
            if k.endswith(".tar")
        )  # fmt: skip
        return [s for key in keys for s in _samples(store.get(ctx.output_bucket, key))]

    assert samples(sharded) == samples(single)

    # ... and the generate-phone-numbers CLI writes the very same tar files.
    out = tmp_path / "cli"
    argv = ["2", "5", "300", "90", str(out), "--seed", "11", "--format", "shards",
            "--shard-size", "15", "--workers", "1", "--quiet"]  # fmt: skip
    assert phone_main(argv) == 0
    for k in range(6):
        key = f"datasets/{sharded.job_id}/shard-{k:06d}.tar"
        assert store.get(sharded.output_bucket, key) == (out / f"shard-{k:06d}.tar").read_bytes()
    labels = store.get(sharded.output_bucket, f"datasets/{sharded.job_id}/labels.csv")
    assert labels.decode() == (out / "labels.csv").read_text().replace("\n", "\r\n")


def test_a_part_run_twice_writes_the_same_bytes(
    store: S3ObjectStore, new_context: Callable[..., JobContext]
) -> None:
    kind = DigitsKind(workers=2)
    params = kind.parse(PHONE)
    ctx = new_context(store)
    first = kind.run_shard(params, shard=1, shards=3, ctx=ctx)
    keys = [o["key"] for o in first["objects"]]
    assert keys == [f"datasets/{ctx.job_id}/{name}" for name in (
        "shard-000002.tar", "shard-000003.tar", "labels/part-000001.csv",
        "boxes/part-000001.jsonl")]  # fmt: skip
    before = [store.get(ctx.output_bucket, key) for key in keys]
    again = new_context(store, like=ctx)
    assert kind.run_shard(params, shard=1, shards=3, ctx=again) == first
    assert [store.get(ctx.output_bucket, key) for key in keys] == before


def test_tars_are_uploaded_while_the_part_still_renders(
    recording: RecordingStore, new_context: Callable[..., JobContext]
) -> None:
    kind = DigitsKind(workers=1)
    params = kind.parse({**PHONE, "count": 600, "shard_images": 100, "part_images": 600})
    ctx = new_context(recording)
    # Whether the part is complete when each object's upload starts: its folder appears only
    # once the library has written all of it (500 more images after the first tar).
    recording.probe = (ctx.scratch / "part-000000").exists
    kind.run_shard(params, shard=0, shards=1, ctx=ctx)
    probes = dict(zip(recording.written, recording.probed, strict=True))
    prefix = f"datasets/{ctx.job_id}/"
    assert probes[prefix + "shard-000000.tar"] is False
    assert probes[prefix + "labels/part-000000.csv"] is True


class FailingStore(RecordingStore):
    """The real store, whose upload of ``fail_key`` fails as S3 can."""

    def __init__(self, inner: S3ObjectStore, fail_key: str) -> None:
        super().__init__(inner)
        self.fail_key = fail_key

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        if key == self.fail_key:
            raise ConnectionError(f"the upload of {key} was reset")
        super().put(bucket, key, data, content_type=content_type, metadata=metadata)


def test_a_failed_tar_upload_fails_the_part(
    store: S3ObjectStore, new_context: Callable[..., JobContext]
) -> None:
    kind = DigitsKind(workers=1)
    params = kind.parse({**PHONE, "count": 60, "part_images": 60})
    probe = new_context(store)
    failing = FailingStore(store, f"datasets/{probe.job_id}/shard-000001.tar")
    ctx = dataclasses.replace(probe, store=failing)
    with pytest.raises(ConnectionError, match=r"shard-000001\.tar was reset"):
        kind.run_shard(params, shard=0, shards=1, ctx=ctx)
    # The part fails (the library stops at the next tar if the failure is known by then): its
    # labels and boxes are not uploaded, so finish cannot take the part for done.
    assert failing.written[0] == f"datasets/{ctx.job_id}/shard-000000.tar"
    assert not [k for k in failing.written if "/labels/" in k or "/boxes/" in k]


def test_finish_refuses_missing_shards(
    store: S3ObjectStore, new_context: Callable[..., JobContext]
) -> None:
    kind = DigitsKind(workers=1)
    params = kind.parse(PHONE)
    ctx = new_context(store)
    results = [kind.run_shard(params, shard=k, shards=3, ctx=ctx) for k in (0, 2)]
    with pytest.raises(RuntimeError, match=r"cover \[\(0, 30\), \(60, 90\)\]"):
        kind.finish(params, shard_results=results, ctx=ctx)
    keys = [k for k, _ in store.list_keys(ctx.output_bucket, f"datasets/{ctx.job_id}/")]
    assert f"datasets/{ctx.job_id}/manifest.json" not in keys


def test_a_sequence_job(store: S3ObjectStore, new_context: Callable[..., JobContext]) -> None:
    kind = DigitsKind(workers=1)
    params = kind.parse({
        "mode": "sequence", "digits": 6, "count": 25, "shard_images": 10, "part_images": 20,
        "spacing_min": 0, "spacing_max": 4, "image_width": 200, "seed": 3, "augment": "light",
    })  # fmt: skip
    ctx = new_context(store)
    _, outputs = _run(kind, params, ctx)
    assert (outputs["images"], outputs["shards"], outputs["parts"]) == (25, 3, 2)
    labels = _labels(store.get(ctx.output_bucket, f"datasets/{ctx.job_id}/labels.csv"))[1:]
    assert len(labels) == 25
    assert all(len(digits) == 6 and digits.isdigit() for _, digits, _ in labels)
    last = _samples(store.get(ctx.output_bucket, f"datasets/{ctx.job_id}/shard-000002.tar"))
    assert [name for name, _, _ in last] == [row[0] for row in labels[20:]]


def test_the_demo_job(store: S3ObjectStore, new_context: Callable[..., JobContext]) -> None:
    ctx = new_context(store)
    params = KIND.parse(KIND.demo_params(store=store, input_bucket=ctx.input_bucket,
                                         scratch=ctx.scratch))  # fmt: skip
    assert (params.count, KIND.shards(params)) == (200, 2)


def test_finish_refuses_a_shard_whose_objects_changed(
    store: S3ObjectStore, new_context: Callable[..., JobContext]
) -> None:
    kind = DigitsKind(workers=1)
    params = kind.parse({**PHONE, "count": 40, "shard_images": 20, "part_images": 20})
    ctx = new_context(store)
    results = [kind.run_shard(params, shard=k, shards=2, ctx=ctx) for k in range(2)]
    key = f"datasets/{ctx.job_id}/shard-000001.tar"
    store.put(ctx.output_bucket, key, b"truncated", content_type="application/x-tar", metadata={})
    with pytest.raises(RuntimeError, match=r"objects missing or of the wrong size: .*shard-000001"):
        kind.finish(params, shard_results=results, ctx=ctx)
    keys = [k for k, _ in store.list_keys(ctx.output_bucket, f"datasets/{ctx.job_id}/")]
    assert f"datasets/{ctx.job_id}/manifest.json" not in keys


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("repeat", r"1 repeated numbers"),
        ("header", r"labels/part-000001\.csv starts with 'FILE,digits,formatted\\r\\n', not"),
    ],
)
def test_finish_checks_the_labels_it_joins(
    store: S3ObjectStore, new_context: Callable[..., JobContext], change: str, message: str
) -> None:
    kind = DigitsKind(workers=1)
    params = kind.parse({**PHONE, "count": 40, "shard_images": 20, "part_images": 20})
    ctx = new_context(store)
    results = [kind.run_shard(params, shard=k, shards=2, ctx=ctx) for k in range(2)]
    key = f"datasets/{ctx.job_id}/labels/part-000001.csv"
    text = store.get(ctx.output_bucket, key).decode()
    header, first, *rest = text.splitlines(keepends=True)
    if change == "repeat":
        # One number written twice, in rows of the same size (the stored size still matches).
        other = next(row for row in rest if len(row) == len(first))
        first = first.split(",")[0] + "," + ",".join(other.split(",")[1:])
    else:
        header = header.replace("file", "FILE")
    store.put(ctx.output_bucket, key, (header + first + "".join(rest)).encode(),
              content_type="text/csv", metadata={})  # fmt: skip
    with pytest.raises(RuntimeError, match=message):
        kind.finish(params, shard_results=results, ctx=ctx)
    keys = [k for k, _ in store.list_keys(ctx.output_bucket, f"datasets/{ctx.job_id}/")]
    assert f"datasets/{ctx.job_id}/manifest.json" not in keys
