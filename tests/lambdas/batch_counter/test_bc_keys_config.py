from __future__ import annotations

import json

import pytest
from batch_counter.config import ENV_VARS, ConfigError, load_settings
from batch_counter.counter import MalformedEventError, parse_s3_notifications
from batch_counter.keys import InvalidKeyError, parse_upload_key


def test_valid_key_is_split() -> None:
    upload = parse_upload_key("uploads/run-2024_01/batch_001/img_0001.png")
    assert (upload.run_id, upload.batch_id, upload.name) == (
        "run-2024_01",
        "batch_001",
        "img_0001.png",
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("rejected/run/batch_001/img.png", "outside_prefix"),
        ("uploads/run/img.png", "wrong_depth"),
        ("uploads/run/batch_001/sub/img.png", "wrong_depth"),
        ("uploads/run/batch_001/", "bad_name"),
        ("uploads/run/batch_001/img.jpg", "bad_name"),
        ("uploads/run/batch 1/img.png", "bad_batch_id"),
        ("uploads/../batch_001/img.png", "bad_run_id"),
        ("uploads/-run/batch_001/img.png", "bad_run_id"),
        ("uploads/" + "r" * 65 + "/batch_001/img.png", "bad_run_id"),
        ("uploads/run/batch_001/" + "a" * 400 + ".png", "too_long"),
    ],
)
def test_bad_keys_are_rejected_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        parse_upload_key(key)
    assert info.value.reason == reason
    assert "expected uploads/<run_id>/<batch_id>/<name>.png" in str(info.value)


def test_settings_name_every_missing_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"IMAGES_PER_BATCH": "0"})
    message = str(info.value)
    for name in (
        "TRACKING_TABLE_NAME",
        "RUNS_QUEUE_URL",
        "BATCHES_PER_RUN",
        "SCHEDULE_GROUP_NAME",
        "SCHEDULER_ROLE_ARN",
        "NOTIFICATIONS_TOPIC_ARN",
    ):
        assert name in message
    assert "IMAGES_PER_BATCH='0' is too small" in message


COMPLETE_ENV = {
    "TRACKING_TABLE_NAME": "t",
    "RUNS_QUEUE_URL": "https://q",
    "IMAGES_PER_BATCH": "20",
    "BATCHES_PER_RUN": "5",
    "SCHEDULE_GROUP_NAME": "g",
    "SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/r",
    "NOTIFICATIONS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:t",
}


def test_settings_are_parsed() -> None:
    settings = load_settings(COMPLETE_ENV)
    assert (settings.images_per_batch, settings.batches_per_run) == (20, 5)
    assert settings.run_timeout == 3600
    assert load_settings({**COMPLETE_ENV, "RUN_TIMEOUT": "90"}).run_timeout == 90
    assert {"TRACKING_TABLE_NAME", "POWERTOOLS_METRICS_NAMESPACE"} <= set(ENV_VARS)


def test_keys_in_events_are_url_decoded() -> None:
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "b"},
                        "object": {"key": "uploads/r%C3%A9+1/batch_001/img.png", "size": 3},
                    },
                },
                {"eventName": "ObjectRemoved:Delete", "s3": {}},
            ]
        }
    )
    (created,) = parse_s3_notifications(body) or []
    assert created.key == "uploads/ré 1/batch_001/img.png"


def test_s3_test_event_is_ignored_and_garbage_is_malformed() -> None:
    assert parse_s3_notifications(json.dumps({"Event": "s3:TestEvent"})) is None
    with pytest.raises(MalformedEventError):
        parse_s3_notifications("not json")
    with pytest.raises(MalformedEventError):
        parse_s3_notifications(json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}))


@pytest.mark.parametrize("raw", ["0", "-5", "1h", "604801"])
def test_a_bad_run_timeout_says_what_is_allowed(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"RUN_TIMEOUT=.* an integer from 1 to 604800"):
        load_settings({**COMPLETE_ENV, "RUN_TIMEOUT": raw})
