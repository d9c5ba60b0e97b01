"""Scale-in protection: the task role allows it, and the worker notices when ECS refuses it.

The ECS agent stand-in (conftest ``ecs_agent``) answers as the real agent does, from the task
role's policies in the synthesized template: without ``ecs:UpdateTaskProtection`` it refuses.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from typing import Any

import pytest
from batch_stats.worker.adapters import TaskProtection
from batch_stats.worker.metrics import EmfMetrics


def _metrics(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _without_protection_grant(template: dict[str, Any]) -> dict[str, Any]:
    """The template as it was before the task role got the permission."""
    changed = copy.deepcopy(template)
    for resource in changed["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        statements = resource["Properties"]["PolicyDocument"]["Statement"]
        statements[:] = [
            s for s in statements if "ecs:UpdateTaskProtection" not in json.dumps(s["Action"])
        ]
    return changed


def test_the_synthesized_task_role_gets_protection(dev: Any, ecs_agent_for: Any) -> None:
    stream = io.StringIO()
    with ecs_agent_for(dev.raw) as agent:
        protection = TaskProtection(agent.uri, metrics=EmfMetrics(stream))
        assert protection.set(True) is True
        assert protection.set(False) is True
    assert [body for _, body in agent.calls] == [
        {"ProtectionEnabled": True, "ExpiresInMinutes": 60},
        {"ProtectionEnabled": False},
    ]
    assert _metrics(stream) == []


def test_a_task_role_without_the_permission_is_refused_logged_and_counted(
    dev: Any, caplog: pytest.LogCaptureFixture, ecs_agent_for: Any
) -> None:
    stream = io.StringIO()
    with ecs_agent_for(_without_protection_grant(dev.raw)) as agent:
        protection = TaskProtection(agent.uri, metrics=EmfMetrics(stream))
        with caplog.at_level(logging.WARNING):
            assert protection.set(True) is False
    assert "AccessDeniedException" in caplog.text
    (metric,) = _metrics(stream)
    assert metric["TaskProtectionFailures"] == 1
    assert metric["service"] == "worker"


def test_a_failure_in_a_200_answer_is_a_refusal(
    dev: Any, caplog: pytest.LogCaptureFixture, ecs_agent_for: Any
) -> None:
    stream = io.StringIO()
    with ecs_agent_for(dev.raw, failure="TASK_NOT_VALID") as agent:
        protection = TaskProtection(agent.uri, metrics=EmfMetrics(stream))
        with caplog.at_level(logging.WARNING):
            assert protection.set(True) is False
    assert "TASK_NOT_VALID" in caplog.text
    assert [m["TaskProtectionFailures"] for m in _metrics(stream)] == [1]


def test_an_unreachable_agent_is_a_refusal_not_a_crash() -> None:
    stream = io.StringIO()
    protection = TaskProtection("http://127.0.0.1:9", metrics=EmfMetrics(stream), timeout_seconds=1)
    assert protection.set(True) is False
    assert [m["TaskProtectionFailures"] for m in _metrics(stream)] == [1]


def test_outside_ecs_there_is_nothing_to_protect() -> None:
    stream = io.StringIO()
    assert TaskProtection(None, metrics=EmfMetrics(stream)).set(True) is True
    assert stream.getvalue() == ""


@pytest.mark.parametrize("minutes", [0, 2881])
def test_expiry_outside_the_ecs_limits_is_rejected(minutes: int) -> None:
    with pytest.raises(ValueError, match="1-2880"):
        TaskProtection("http://127.0.0.1:9", expires_in_minutes=minutes)
