"""cfn-lint on the synthesized templates: no errors, and only the known CDK warnings."""

from __future__ import annotations

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
