"""Job documents: the envelope and the kind's parameters give ONE error naming every problem."""

from __future__ import annotations

import json

import pytest
from batch_stats.jobs.base import JobSpecError
from batch_stats.jobs.document import (
    MAX_DOCUMENT_BYTES,
    job_id_of_key,
    job_key,
    parse_job_document,
)
from batch_stats.jobs.synthetic import KIND as SYNTHETIC
from batch_stats.jobs.synthetic import SyntheticParams


def problems(document: object, *, job_id: str = "job-1") -> tuple[str, ...]:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    with pytest.raises(JobSpecError) as caught:
        parse_job_document(data, job_id=job_id)
    return caught.value.problems


def test_a_valid_document_gives_the_kind_and_its_parsed_parameters() -> None:
    spec = parse_job_document(
        json.dumps(
            {
                "version": 1,
                "kind": "synthetic-stats",
                "params": {"batches": 3, "images_per_batch": 2},
            }
        ),
        job_id="job-1",
    )
    assert spec.kind is SYNTHETIC
    assert isinstance(spec.params, SyntheticParams)
    assert spec.params.engine.batches == 3
    assert spec.raw_params == {"batches": 3, "images_per_batch": 2}


def test_every_problem_of_envelope_and_params_is_named_at_once() -> None:
    found = problems(
        {
            "version": "1",
            "kind": "synthetic-stats",
            "params": {"batches": -1, "images_per_batch": True, "size": 3},
            "extra": 1,
        },
        job_id="bad id",
    )
    assert len(found) == 6, found
    assert any("job id 'bad id' is not allowed" in p for p in found)
    assert "unknown keys ['extra'] (allowed: ['version', 'kind', 'params'])" in found
    assert "version '1' is not supported (allowed: 1)" in found
    assert (
        "params: unknown keys ['size'] (allowed: "
        + str(
            sorted(
                [
                    "batches",
                    "images_per_batch",
                    "seed",
                    "image_height",
                    "image_width",
                    "square_size",
                    "crop_height",
                    "crop_width",
                    "batches_per_shard",
                ]
            )
        )
        + ")"
        in found
    )
    assert "params: batches -1 is out of range (allowed: 1-100000)" in found
    assert "params: images_per_batch True is a bool, not an integer (allowed: 1-10000)" in found


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"not json", "the document is not JSON"),
        (b"[1, 2]", "the document is a JSON list, not an object"),
        ({"version": 1, "params": {}}, "'kind' is missing"),
        ({"version": 1, "kind": "digitz", "params": {}}, "kind 'digitz' is not a known job kind"),
        ({"version": 1, "kind": "synthetic-stats"}, "'params' is missing"),
        ({"version": 1, "kind": "synthetic-stats", "params": [1]}, "params is a JSON list"),
        ({"kind": "synthetic-stats", "params": {}}, "'version' is missing (allowed: 1)"),
        (b" " * (MAX_DOCUMENT_BYTES + 1), f"at most {MAX_DOCUMENT_BYTES} are allowed"),
    ],
)
def test_each_envelope_problem_is_named(document: object, expected: str) -> None:
    assert any(expected in p for p in problems(document)), problems(document)


def test_engine_shape_problems_come_from_the_engine() -> None:
    found = problems(
        {
            "version": 1,
            "kind": "synthetic-stats",
            "params": {"batches": 1, "images_per_batch": 1, "image_height": 10, "crop_height": 20},
        }
    )
    assert any("does not fit" in p for p in found), found


def test_job_keys_round_trip_and_refuse_other_names() -> None:
    assert job_id_of_key(job_key("a_b-1")) == "a_b-1"
    for key in ("jobs/a b.json", "jobs/x.txt", "uploads/x.json", "jobs/sub/x.json", "jobs/.json"):
        assert job_id_of_key(key) is None


def test_synthetic_shards_are_whole_batches() -> None:
    params = SYNTHETIC.parse({"batches": 5, "images_per_batch": 3, "batches_per_shard": 2})
    assert SYNTHETIC.shards(params) == 3
    default = SYNTHETIC.parse({"batches": 100, "images_per_batch": 1000})
    assert default.batches_per_shard == 20
    assert SYNTHETIC.shards(default) == 5
