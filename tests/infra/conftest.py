"""Fixture chain: each stage's app is synthesized once per session; tests assert on the result.

Synthesis runs cdk-nag (AwsSolutions) like ``cdk synth`` does, so a session that gets a template
at all has passed the nag checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# jsii prints a banner on every import while Node 20 is past its end of life.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import pytest
from aws_cdk.assertions import Template

from infra.app import build_app
from infra.stack import PipelineStack

NOTIFY_EMAIL = "ops@example.com"
NOTIFY_WEBHOOK = "https://hooks.example.com/imgpipe"
PROD_ACCOUNT = "210987654321"


@dataclass(frozen=True)
class Synthesized:
    """One synthesized stage: the stack object, its template and the cloud assembly folder."""

    stack: PipelineStack
    template: Template
    outdir: Path

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{self.stack.stack_name}.template.json"

    @property
    def raw(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.template_path.read_text(encoding="utf-8"))
        return data

    def resources(self, type_name: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self.template.find_resources(type_name)
        return found


def synthesize(context: Mapping[str, Any], outdir: Path) -> Synthesized:
    app, stack = build_app(context, outdir=str(outdir))
    app.synth()
    return Synthesized(stack=stack, template=Template.from_stack(stack), outdir=outdir)


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """``-c stage=dev`` with both notification subscriptions."""
    return synthesize(
        {"stage": "dev", "notify_email": NOTIFY_EMAIL, "notify_webhook": NOTIFY_WEBHOOK},
        tmp_path_factory.mktemp("cdk-dev"),
    )


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """``-c stage=prod`` with no subscriptions, in an explicit account and region."""
    account, region = PROD_ACCOUNT, "eu-west-1"
    return synthesize(
        {
            "stage": "prod",
            "account": account,
            "region": region,
            # What the CDK CLI caches in cdk.context.json after its first lookup with credentials.
            f"availability-zones:account={account}:region={region}": [
                "eu-west-1a",
                "eu-west-1b",
                "eu-west-1c",
            ],
        },
        tmp_path_factory.mktemp("cdk-prod"),
    )
