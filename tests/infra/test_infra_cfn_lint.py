"""cfn-lint on the synthesized templates: no errors, and only the known CDK warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_file
from cfnlint.config import ManualArgs

#: Warnings CDK output always has: explicit DependsOn next to a GetAtt (W3005) and the AZ
#: names cdk.json gives for offline synthesis (W3010). The Makefile's cfn-lint step ignores the
#: same two.
ALLOWED_WARNINGS = {"W3005", "W3010"}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_template_passes_cfn_lint(stage: str, request: pytest.FixtureRequest) -> None:
    synth: Any = request.getfixturevalue(stage)
    matches = lint_file(synth.template_path, config=ManualArgs(regions=[synth.stack.region]))
    problems = [
        f"{m.rule.id} {m.message} ({m.path_string})"
        for m in matches
        if m.rule.id not in ALLOWED_WARNINGS
    ]
    assert problems == []


def test_cfn_lint_reports_a_deprecated_engine_version(dev: Any, tmp_path: Path) -> None:
    template = json.loads(dev.template_path.read_text(encoding="utf-8"))
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::RDS::DBInstance":
            resource["Properties"]["EngineVersion"] = "16.6"
    broken = tmp_path / "broken.template.json"
    broken.write_text(json.dumps(template), encoding="utf-8")
    matches = lint_file(broken, config=ManualArgs(regions=[dev.stack.region]))
    assert "W3691" in {m.rule.id for m in matches}
