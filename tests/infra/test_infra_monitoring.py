"""Monitoring: the dashboard shows the whole flow and every alarm notifies the topic."""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture(scope="module")
def dashboard_body(dev: Any) -> str:
    (dashboard,) = dev.resources("AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == "imgpipe-dev-pipeline"
    # The body is a Fn::Join of JSON text and references, which sit inside JSON strings.
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "REF" for p in parts)


@pytest.mark.parametrize(
    "needle",
    [
        '"ImagesRecorded"',
        '"RunsDispatched"',
        '"RunsFinished"',
        '"RunsFailed"',
        '"ImagesProcessed"',
        '"RunDurationSeconds"',
        '"ApproximateAgeOfOldestMessage"',
        '"ApproximateNumberOfMessagesVisible"',
        '"NumberOfMessagesSent"',
        '"Errors"',
        '"Duration"',
        '"CPUUtilization"',
        '"MemoryUtilization"',
        '"RunningTaskCount"',
    ],
)
def test_dashboard_shows(dashboard_body: str, needle: str) -> None:
    assert needle in dashboard_body


def test_custom_metrics_use_the_contract_namespace_and_dimensions(dashboard_body: str) -> None:
    body = json.loads(dashboard_body)
    custom = [
        metric
        for widget in body["widgets"]
        for metric in widget.get("properties", {}).get("metrics", [])
        if metric[0] == "ImagePipeline"
    ]
    services = {(m[1], _dimensions(m)["service"]) for m in custom}
    assert ("ImagesRecorded", "batch-counter") in services
    assert ("RunsDispatched", "batch-counter") in services
    assert ("RunsFinished", "worker") in services
    # Every metric has the service dimension; job metrics also their kind.
    assert all(set(_dimensions(m)) in ({"service"}, {"service", "Kind"}) for m in custom)


def _dimensions(metric: list[Any]) -> dict[str, str]:
    """The dimensions of a dashboard metric ``[namespace, name, dim, value, ..., {options}]``."""
    pairs = [part for part in metric[2:] if isinstance(part, str)]
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def _pipeline_alarms(synth: Any) -> dict[str, dict[str, Any]]:
    """Alarms on one metric, by ``<metric>:<first dimension value>``."""
    (topic_id,) = synth.resources("AWS::SNS::Topic")
    return {
        a["Properties"]["MetricName"]
        + ":"
        + str(a["Properties"].get("Dimensions", [{}])[0].get("Value")): a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmActions"] == [{"Ref": topic_id}]
        and "MetricName" in a["Properties"]
    }


def _expression_alarms(synth: Any) -> list[dict[str, Any]]:
    """Alarms on a metric math expression."""
    (topic_id,) = synth.resources("AWS::SNS::Topic")
    return [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmActions"] == [{"Ref": topic_id}] and "Metrics" in a["Properties"]
    ]


def test_failed_jobs_of_every_kind_alarm(dev: Any) -> None:
    from batch_stats.jobs.registry import KINDS

    (alarm,) = _expression_alarms(dev)
    (expression,) = [m for m in alarm["Metrics"] if "Expression" in m]
    assert expression["ReturnData"] is True
    watched = {
        (
            m["MetricStat"]["Metric"]["MetricName"],
            frozenset((d["Name"], d["Value"]) for d in m["MetricStat"]["Metric"]["Dimensions"]),
        )
        for m in alarm["Metrics"]
        if "MetricStat" in m
    }
    # Every kind the worker knows, by the dimensions the worker's EMF gives them.
    assert watched == {
        ("JobsFailed", frozenset({("service", "worker"), ("Kind", kind)})) for kind in KINDS
    }
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
    )
    assert alarm["OKActions"] == alarm["AlarmActions"]


def test_the_dashboard_shows_jobs_by_kind(dashboard_body: str) -> None:
    from batch_stats.jobs.registry import KINDS

    body = json.loads(dashboard_body)
    (jobs,) = [w for w in body["widgets"] if w["properties"].get("title") == "Jobs by kind"]
    shown = {
        (m[1], _dimensions(m)["Kind"])
        for m in jobs["properties"]["metrics"]
        if "Kind" in _dimensions(m)
    }
    assert shown == {(name, kind) for name in ("JobsSucceeded", "JobsFailed") for kind in KINDS}


def test_alarms_cover_dlqs_errors_failed_runs_and_waiting_runs(dev: Any) -> None:
    alarms = _pipeline_alarms(dev)
    assert len(alarms) == 11
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for props in alarms.values():
        by_metric.setdefault(props["MetricName"], []).append(props)
    assert len(by_metric["ApproximateNumberOfMessagesVisible"]) == 2  # both DLQs
    assert by_metric["Errors"][0]["Namespace"] == "AWS/Lambda"
    (failed,) = by_metric["RunsFailed"]
    assert (failed["Namespace"], failed["Dimensions"]) == (
        "ImagePipeline",
        [{"Name": "service", "Value": "worker"}],
    )
    # Nothing uploaded goes unreported: bad keys, uploads to closed runs and runs that stay
    # incomplete alarm.
    for name in ("RejectedKeys", "LateUploads", "RunsIncomplete"):
        (props,) = by_metric[name]
        assert (props["Namespace"], props["Dimensions"]) == (
            "ImagePipeline",
            [{"Name": "service", "Value": "batch-counter"}],
        )
    (age,) = by_metric["ApproximateAgeOfOldestMessage"]
    assert age["Threshold"] == 1800
    for props in alarms.values():
        assert props["OKActions"] == props["AlarmActions"]
        assert props["TreatMissingData"] == "notBreaching"
        assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


@pytest.mark.parametrize(
    ("metric", "service"),
    [
        ("RecordsFailed", "batch-counter"),  # per-record Lambda failures (retried by SQS)
        ("RunErrors", "worker"),  # exceptions while the worker handled a run (retried)
        ("TaskProtectionFailures", "worker"),  # scale-in protection refused
    ],
)
def test_failures_that_are_retried_alarm_before_they_reach_a_dlq(
    dev: Any, metric: str, service: str
) -> None:
    alarm = _pipeline_alarms(dev)[f"{metric}:{service}"]
    assert alarm["Namespace"] == "ImagePipeline"
    assert (alarm["Threshold"], alarm["Statistic"]) == (1, "Sum")
    assert alarm["Period"] == 300


def test_every_log_group_has_a_retention(dev: Any, prod: Any) -> None:
    for synth, days in ((dev, 30), (prod, 90)):
        groups = synth.resources("AWS::Logs::LogGroup")
        assert groups
        for logical_id, group in groups.items():
            assert group["Properties"]["RetentionInDays"] == days, logical_id
        # Every function logs to one of them: CDK's helper functions too, which would
        # otherwise create /aws/lambda/<name> without a retention.
        for logical_id, function in synth.resources("AWS::Lambda::Function").items():
            target = function["Properties"].get("LoggingConfig", {}).get("LogGroup")
            assert target is not None, logical_id
            assert target["Ref"] in groups, logical_id
        # The groups RDS creates for its log exports get one through CDK's LogRetention.
        (instance,) = synth.resources("AWS::RDS::DBInstance").values()
        exports = instance["Properties"]["EnableCloudwatchLogsExports"]
        retained = [r["Properties"] for r in synth.resources("Custom::LogRetention").values()]
        assert len(retained) == len(exports)
        assert {r["RetentionInDays"] for r in retained} == {days}
        # Container Insights' performance log group exists before the cluster, with one.
        names = {
            g["Properties"].get("LogGroupName")
            for g in groups.values()
            if isinstance(g["Properties"].get("LogGroupName"), str)
        }
        assert any(n.startswith("/aws/ecs/containerinsights/") for n in names), names
