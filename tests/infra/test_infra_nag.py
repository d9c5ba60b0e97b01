"""cdk-nag AwsSolutions: zero unacknowledged findings, and every acknowledgement narrow and real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Stack, Validations
from aws_cdk import aws_s3 as s3

from infra.app import build_app

NAG_PREFIX = "Annotation::AwsSolutions-"


def _acknowledgements(stack: Stack) -> dict[tuple[str, str], str]:
    """``{(construct path, rule id): reason}`` of the AwsSolutions acknowledgements."""
    found: dict[tuple[str, str], str] = {}
    for construct in stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                continue
            for rule, reason in entry.data.items():
                if rule.startswith(NAG_PREFIX):
                    found[(construct.node.path, rule.removeprefix("Annotation::"))] = reason
    return found


def _violations(report_path: Path) -> set[tuple[str, str]]:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return {
        (construct["constructPath"], violation["ruleName"])
        for plugin in report["pluginReports"]
        if plugin["pluginName"] == "AwsSolutions"
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    }


@pytest.fixture(scope="module")
def unacknowledged_findings(
    tmp_path_factory: pytest.TempPathFactory,
) -> set[tuple[str, str]]:
    """What cdk-nag reports for the dev stage when no acknowledgement is recorded."""
    outdir = tmp_path_factory.mktemp("cdk-unacknowledged")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Validations, "acknowledge", lambda self, *rules: None)
        app, _ = build_app({"stage": "dev"}, outdir=str(outdir))
        with pytest.raises(RuntimeError, match="ValidationFailed"):
            app.synth()
    return _violations(outdir / "validation-report.json")


def test_both_stages_synthesize_with_zero_unacknowledged_findings(dev: Any, prod: Any) -> None:
    # The session fixtures synthesized with the AwsSolutions plugin: a finding would have
    # raised. The report, when written, lists none.
    for synth in (dev, prod):
        report = synth.outdir / "validation-report.json"
        if report.exists():
            assert _violations(report) == set()


def test_every_acknowledgement_answers_a_real_finding_on_its_own_construct(
    dev: Any, unacknowledged_findings: set[tuple[str, str]]
) -> None:
    acknowledged = _acknowledgements(dev.stack)
    assert acknowledged, "expected acknowledgements in the dev stack"
    unmatched_acks = [
        (path, rule)
        for path, rule in acknowledged
        if not any(
            rule == found_rule and (found_path == path or found_path.startswith(path + "/"))
            for found_path, found_rule in unacknowledged_findings
        )
    ]
    assert unmatched_acks == [], "acknowledgements without a finding (remove them)"
    unmatched_findings = [
        (path, rule)
        for path, rule in unacknowledged_findings
        if not any(
            rule == ack_rule and (path == ack_path or path.startswith(ack_path + "/"))
            for ack_path, ack_rule in acknowledged
        )
    ]
    assert unmatched_findings == []


def test_acknowledgements_are_narrow_and_give_a_reason(dev: Any, prod: Any) -> None:
    for synth in (dev, prod):
        for (path, rule), reason in _acknowledgements(synth.stack).items():
            # Never stack-wide: always on the construct that has the finding.
            assert path.count("/") >= 1, (path, rule)
            # Wildcard findings are acknowledged one resource pattern at a time.
            if rule.startswith("AwsSolutions-IAM5"):
                assert "[" in rule, rule
            assert len(reason) >= 60, (path, rule, reason)


def test_prod_needs_no_multi_az_deletion_protection_or_rotation_acknowledgement(
    prod: Any, dev: Any
) -> None:
    rules = {rule for _, rule in _acknowledgements(prod.stack)}
    assert "AwsSolutions-RDS3" not in rules
    assert "AwsSolutions-RDS10" not in rules
    assert "AwsSolutions-SMG4" not in rules  # prod rotates its secrets
    assert "AwsSolutions-SMG4" in {rule for _, rule in _acknowledgements(dev.stack)}


def test_nag_fails_the_synth_on_a_new_finding(tmp_path: Path) -> None:
    app, stack = build_app({"stage": "dev"}, outdir=str(tmp_path))
    s3.Bucket(stack, "Careless")  # no SSL-only policy, no access logs
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    violations = _violations(tmp_path / "validation-report.json")
    assert {rule for path, rule in violations if "/Careless/" in path} >= {
        "AwsSolutions-S1",
        "AwsSolutions-S10",
    }
