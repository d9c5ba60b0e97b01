"""Worker scaling, simulated minute by minute from the synthesized scaling policies.

Application Auto Scaling cannot run here, so this test plays its documented behaviour against
the template: each alarm evaluates its metric (metric math included) once a minute; while an
alarm is in ALARM the policy it targets runs again every minute; a step applies when the
metric's distance to the threshold falls in its interval (lower bound inclusive above the
threshold, upper bound inclusive below it); ``ChangeInCapacity`` adds to the desired count,
``ExactCapacity`` sets it; the result is kept within the scalable target's bounds. ECS starts
tasks that poll the runs queue once they have started (cold start), and on scale-in stops only
tasks without scale-in protection, which a task holds while it processes a run if the task
role in the template allows ``ecs:UpdateTaskProtection``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from infra.iam_sim import Request, TemplateResolver, evaluate, identity_statements

COLD_START_MINUTES = 3
RUN_MINUTES = 4
ACCOUNTS = {"dev": ("123456789012", "us-east-1"), "prod": ("210987654321", "eu-west-1")}


@dataclass(frozen=True)
class Step:
    lower: float | None
    upper: float | None
    adjustment: int


@dataclass(frozen=True)
class Policy:
    adjustment_type: str
    steps: tuple[Step, ...]


@dataclass
class Alarm:
    policy: Policy
    threshold: float
    comparison: str
    evaluation_periods: int
    datapoints_to_alarm: int
    metric: Any  # (visible, in_flight) -> float | None
    breaches: list[bool] = field(default_factory=list)

    def observe(self, visible: int, in_flight: int) -> bool:
        """Add a datapoint; True when the alarm is in ALARM afterwards."""
        value = self.metric(visible, in_flight)
        if value is None:
            breach = False  # missing data: notBreaching (CDK's default for these alarms)
        elif self.comparison == "GreaterThanOrEqualToThreshold":
            breach = value >= self.threshold
        elif self.comparison == "LessThanOrEqualToThreshold":
            breach = value <= self.threshold
        else:
            raise AssertionError(f"comparison {self.comparison} not simulated")
        self.breaches.append(breach)
        window = self.breaches[-self.evaluation_periods :]
        return len(window) == self.evaluation_periods and sum(window) >= self.datapoints_to_alarm

    def adjustment(self, visible: int, in_flight: int) -> int | None:
        value = self.metric(visible, in_flight)
        assert value is not None
        distance = value - self.threshold
        above = distance >= 0 if self.comparison.startswith("Greater") else False
        for step in self.policy.steps:
            low = -float("inf") if step.lower is None else step.lower
            high = float("inf") if step.upper is None else step.upper
            inside = low <= distance < high if above else low < distance <= high
            if inside:
                return step.adjustment
        return None


_QUEUE_METRICS = {
    "ApproximateNumberOfMessagesVisible": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
}


def _metric(alarm: dict[str, Any]) -> Any:
    """The alarm's metric as a function of the runs queue's visible and in-flight counts."""
    if "MetricName" in alarm:
        name = _QUEUE_METRICS[alarm["MetricName"]]
        return lambda visible, in_flight: {"visible": visible, "in_flight": in_flight}[name]
    metrics = alarm["Metrics"]
    sources = {
        m["Id"]: _QUEUE_METRICS[m["MetricStat"]["Metric"]["MetricName"]]
        for m in metrics
        if "MetricStat" in m
    }
    (expression,) = [m["Expression"] for m in metrics if "Expression" in m]
    if not re.fullmatch(r"[\w\s(),.+\-*/]+", expression):
        raise AssertionError(f"expression {expression!r} not simulated")

    def fill(value: float | None, default: float) -> float:
        return default if value is None else value

    def evaluate_expression(visible: int, in_flight: int) -> float:
        values = {"visible": visible, "in_flight": in_flight}
        names = {metric_id: values[source] for metric_id, source in sources.items()}
        return float(eval(expression, {"__builtins__": {}, "FILL": fill}, names))

    return evaluate_expression


def scaling_model(synth: Any) -> tuple[int, int, list[Alarm]]:
    (target,) = synth.resources("AWS::ApplicationAutoScaling::ScalableTarget").values()
    policies = {
        logical_id: Policy(
            adjustment_type=p["Properties"]["StepScalingPolicyConfiguration"]["AdjustmentType"],
            steps=tuple(
                Step(
                    s.get("MetricIntervalLowerBound"),
                    s.get("MetricIntervalUpperBound"),
                    s["ScalingAdjustment"],
                )
                for s in p["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
            ),
        )
        for logical_id, p in synth.resources("AWS::ApplicationAutoScaling::ScalingPolicy").items()
    }
    alarms = []
    for alarm in synth.resources("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        targets = [a["Ref"] for a in props.get("AlarmActions", []) if a.get("Ref") in policies]
        for policy_id in targets:
            alarms.append(
                Alarm(
                    policy=policies[policy_id],
                    threshold=float(props["Threshold"]),
                    comparison=props["ComparisonOperator"],
                    evaluation_periods=props["EvaluationPeriods"],
                    datapoints_to_alarm=props.get("DatapointsToAlarm", props["EvaluationPeriods"]),
                    metric=_metric(props),
                )
            )
    props = target["Properties"]
    return int(props["MinCapacity"]), int(props["MaxCapacity"]), alarms


def protection_allowed(synth: Any, stage: str) -> bool:
    """Whether the task role lets the ECS agent protect a task of the service's cluster."""
    account, region = ACCOUNTS[stage]
    resolver = TemplateResolver(synth.raw, account, region)
    (task,) = synth.resources("AWS::ECS::TaskDefinition").values()
    role_id = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    (cluster_id,) = synth.resources("AWS::ECS::Cluster")
    cluster = resolver.physical_name(cluster_id)
    request = Request(
        action="ecs:UpdateTaskProtection",
        resource=f"arn:aws:ecs:{region}:{account}:task/{cluster}/0123456789abcdef",
    )
    return evaluate(identity_statements(resolver, role_id), request) == "Allow"


@dataclass
class Task:
    ready_at: int
    busy_until: int | None = None


@dataclass
class Outcome:
    desired: list[int]
    running: list[int]
    started: int
    finished_runs: int
    interrupted_runs: int
    finished_at: int | None


def simulate(
    synth: Any,
    stage: str,
    *,
    arrivals: dict[int, int],
    minutes: int,
) -> Outcome:
    """Runs arrive (minute -> count) on the runs queue; scale, start, process, stop."""
    low, high, alarms = scaling_model(synth)
    protected = protection_allowed(synth, stage)
    desired, visible, started, finished, interrupted = 0, 0, 0, 0, 0
    total = sum(arrivals.values())
    tasks: list[Task] = []
    history_desired, history_running = [], []
    finished_at = None
    for minute in range(minutes):
        visible += arrivals.get(minute, 0)
        for task in tasks:
            if task.busy_until is not None and task.busy_until <= minute:
                task.busy_until = None  # run done, message deleted
                finished += 1
                if finished == total:
                    finished_at = minute
            if task.busy_until is None and task.ready_at <= minute and visible:
                visible -= 1
                task.busy_until = minute + RUN_MINUTES
        in_flight = sum(task.busy_until is not None for task in tasks)
        for alarm in alarms:
            if alarm.observe(visible, in_flight):
                adjustment = alarm.adjustment(visible, in_flight)
                if adjustment is None:
                    continue
                if alarm.policy.adjustment_type == "ExactCapacity":
                    desired = adjustment
                elif alarm.policy.adjustment_type == "ChangeInCapacity":
                    desired += adjustment
                else:
                    raise AssertionError(alarm.policy.adjustment_type)
                desired = max(low, min(high, desired))
        # ECS converges on the desired count.
        while len(tasks) < desired:
            tasks.append(Task(ready_at=minute + COLD_START_MINUTES))
            started += 1
        # Scale-in: idle or starting tasks first; a busy task only without protection.
        for task in sorted(tasks, key=lambda t: t.busy_until is not None):
            if len(tasks) <= desired:
                break
            if task.busy_until is not None:
                if protected:
                    continue
                interrupted += 1
                visible += 1  # its message reappears after the visibility timeout
            tasks.remove(task)
        history_desired.append(desired)
        history_running.append(len(tasks))
    return Outcome(history_desired, history_running, started, finished, interrupted, finished_at)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_one_waiting_run_starts_exactly_one_task(stage: str, dev: Any, prod: Any) -> None:
    synth = {"dev": dev, "prod": prod}[stage]
    # The message stays visible for the three minutes the task takes to start.
    outcome = simulate(synth, stage, arrivals={0: 1}, minutes=30)
    assert outcome.started == 1, outcome
    assert max(outcome.running) == 1
    assert outcome.finished_runs == 1
    assert outcome.interrupted_runs == 0


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_ten_waiting_runs_start_the_maximum_and_no_more(stage: str, dev: Any, prod: Any) -> None:
    synth = {"dev": dev, "prod": prod}[stage]
    _, high, _ = scaling_model(synth)
    outcome = simulate(synth, stage, arrivals={0: 10}, minutes=60)
    assert outcome.desired[0] == high  # at once, not one task a minute
    assert max(outcome.running) == high
    assert outcome.finished_runs == 10
    assert outcome.interrupted_runs == 0
    assert outcome.started == high  # no task stopped and replaced on the way


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_back_to_zero_after_the_cool_down_and_never_mid_run(
    stage: str, dev: Any, prod: Any
) -> None:
    synth = {"dev": dev, "prod": prod}[stage]
    # Runs arriving one after another: completed runs lower the count while others are busy.
    outcome = simulate(synth, stage, arrivals={0: 3, 2: 1, 9: 2}, minutes=60)
    assert outcome.finished_runs == 6
    assert outcome.interrupted_runs == 0
    assert outcome.finished_at is not None
    idle = outcome.finished_at
    # Nothing visible or in flight for five one-minute datapoints, then zero.
    assert outcome.desired[idle + 4] == 0
    assert outcome.running[idle + 4] == 0
    assert all(d == 0 for d in outcome.desired[idle + 4 :])
    # Before that the service was never asked to exceed the runs waiting or in progress.
    assert max(outcome.running) <= 4
