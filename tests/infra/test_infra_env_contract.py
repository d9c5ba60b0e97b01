"""The environment the stack sets is exactly what the runtime code reads."""

from __future__ import annotations

from typing import Any

from batch_counter import config as counter_config
from batch_stats.worker import config as worker_config

from infra.constructs.batch_counter import HANDLER


def _lambda_env(synth: Any) -> set[str]:
    (function,) = [
        f["Properties"]
        for f in synth.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == HANDLER
    ]
    return set(function["Environment"]["Variables"])


def _worker_env(synth: Any) -> set[str]:
    (task,) = synth.resources("AWS::ECS::TaskDefinition").values()
    (container,) = [c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "worker"]
    return {item["Name"] for item in container["Environment"]}


def test_lambda_environment_equals_batch_counter_env_vars(dev: Any, prod: Any) -> None:
    assert _lambda_env(dev) == set(counter_config.ENV_VARS)
    assert _lambda_env(prod) == set(counter_config.ENV_VARS)


def test_worker_environment_equals_worker_env_vars_less_local_mode_ones(
    dev: Any, prod: Any
) -> None:
    expected = set(worker_config.ENV_VARS) - set(worker_config.LOCAL_ONLY_ENV_VARS)
    assert _worker_env(dev) == expected
    assert _worker_env(prod) == expected
    # The platform variables come from ECS / Fargate itself, never from the stack.
    assert not _worker_env(dev) & set(worker_config.PLATFORM_ENV_VARS)


def test_stack_environment_passes_the_runtime_validation(dev: Any) -> None:
    (task,) = dev.resources("AWS::ECS::TaskDefinition").values()
    (container,) = [c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "worker"]
    # References resolve to names/URLs/ARNs at deploy time; any non-empty string stands in.
    environ = {
        item["Name"]: item["Value"] if isinstance(item["Value"], str) else "resolved"
        for item in container["Environment"]
    }
    settings = worker_config.load_settings(environ)
    assert settings.visibility_timeout_seconds == 900
    assert settings.download_concurrency == 16
    assert settings.db_secret_arn == "resolved"
