"""Helpers shared by the constructs: narrow cdk-nag acknowledgements and log retention."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnElement, Stack, Validations
from aws_cdk import aws_logs as logs
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge ``rule`` (``AwsSolutions-XX`` or ``AwsSolutions-XX[finding]``) on ``construct``.

    Acknowledgements apply to ``construct`` and its children only, never to the whole stack.
    """
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def logical_id(construct: IConstruct) -> str:
    """The CloudFormation logical id of ``construct`` (an L2 construct or a CfnElement)."""
    element = construct if isinstance(construct, CfnElement) else construct.node.default_child
    if not isinstance(element, CfnElement):
        raise ValueError(f"{construct.node.path} has no CloudFormation resource")
    return Stack.of(construct).get_logical_id(element)


def arn_finding(construct: IConstruct, suffix: str) -> str:
    """The cdk-nag IAM5 finding id for a grant on ``<ARN of construct><suffix>``."""
    return f"AwsSolutions-IAM5[Resource::<{logical_id(construct)}.Arn>{suffix}]"


_RETENTION_DAYS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def log_retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch Logs retention that keeps logs at least ``days`` days."""
    for allowed in sorted(_RETENTION_DAYS):
        if allowed >= days:
            return _RETENTION_DAYS[allowed]
    raise ValueError(f"log retention of {days} days is longer than the 3653 days CloudWatch allows")
