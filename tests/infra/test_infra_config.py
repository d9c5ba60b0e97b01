"""Stage configuration: typed, frozen, selected by context, with clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from infra.config import STAGES, StageConfig, stage_config


def test_dev_is_the_default_stage_with_the_contract_run_shape() -> None:
    config = stage_config({})
    assert config.stage == "dev"
    assert (config.images_per_batch, config.batches_per_run) == (20, 5)


def test_prod_is_hardened() -> None:
    prod = stage_config({"stage": "prod"})
    assert prod.db_multi_az
    assert prod.db_deletion_protection
    assert not prod.destroy_on_removal
    assert prod.private_worker_subnets


def test_context_overrides_parse_integers_and_subscriptions() -> None:
    config = stage_config(
        {
            "stage": "prod",
            "images_per_batch": "8",
            "batches_per_run": 2,
            "notify_email": "a@example.org",
            "notify_webhook": "https://example.org/hook",
        }
    )
    assert (config.images_per_batch, config.batches_per_run) == (8, 2)
    assert config.notify_email == "a@example.org"
    assert config.db_multi_az  # the rest of prod is untouched


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        STAGES["dev"].images_per_batch = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"stage": "qa"}, r"unknown stage 'qa': use one of dev, prod"),
        ({"images_per_batch": "many"}, r"images_per_batch='many' must be an integer >= 1"),
        ({"batches_per_run": "0"}, r"batches_per_run must be an integer >= 1, got 0"),
        ({"notify_webhook": "http://plain.example.org"}, r"must be an https:// URL"),
        ({"notify_email": "not-an-address"}, r"is not an email address"),
    ],
)
def test_bad_context_is_rejected_clearly(context: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stage_config(context)


@pytest.mark.parametrize("size", [20, 201, True, "50"])
def test_ephemeral_storage_outside_fargates_range_is_refused(size: object) -> None:
    with pytest.raises(
        ValueError, match=r"worker_ephemeral_storage_gib must be an integer from 21"
    ):
        StageConfig(stage="dev", worker_ephemeral_storage_gib=size)  # type: ignore[arg-type]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError, match=r"images_per_batch.*; batches_per_run"):
        StageConfig(stage="dev", images_per_batch=0, batches_per_run=-1)
