"""The app entry point: ``python -m infra.app`` synthesizes offline from cdk.json's context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.app import build_app, default_context

ROOT = Path(__file__).resolve().parents[2]


def test_cdk_json_runs_the_app_module_and_holds_the_offline_context() -> None:
    cdk_json = json.loads((ROOT / "cdk.json").read_text(encoding="utf-8"))
    assert cdk_json["app"].endswith("python -m infra.app")
    context = default_context()
    account, region = context["synth_account"], context["synth_region"]
    assert context[f"availability-zones:account={account}:region={region}"]
    assert context["cli-telemetry"] is False


def test_plain_python_synth_writes_the_dev_template(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CDK_", "AWS_"))  # no credentials, no CLI-provided context
    }
    env["CDK_OUTDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "infra.app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "Imgpipe-dev.template.json").read_text(encoding="utf-8"))
    assert "AWS::ECS::Service" in {r["Type"] for r in template["Resources"].values()}


def test_missing_account_and_region_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)
    with pytest.raises(ValueError, match="no AWS account/region: pass -c account="):
        build_app({"synth_account": "", "synth_region": ""}, outdir=str(tmp_path))


def test_stack_outputs_are_what_the_smoke_test_reads(dev: Any) -> None:
    from batch_stats.smoke import OUTPUTS

    outputs = dev.raw["Outputs"]
    assert set(OUTPUTS) <= set(outputs)
    assert (outputs["ImagesPerBatch"]["Value"], outputs["BatchesPerRun"]["Value"]) == ("20", "5")
