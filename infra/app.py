"""CDK app entry point: ``cdk synth -c stage=dev`` (cdk.json runs ``python -m infra.app``).

Account and region come from ``-c account=... -c region=...``, else from the credentials the
CDK CLI found (``CDK_DEFAULT_ACCOUNT`` / ``CDK_DEFAULT_REGION``), else from cdk.json's
``synth_account`` and ``synth_region`` placeholders, which let the stack synthesize offline with
no credentials at all (cdk.json also holds the availability zones of that placeholder account).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import StageConfig, stage_config
from infra.stack import PipelineStack

#: cdk.json at the repository root: the CLI passes its context to the app; tests and plain
#: ``python -m infra.app`` read it from here.
CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"


def default_context() -> dict[str, Any]:
    """The ``context`` block of cdk.json."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text(encoding="utf-8"))["context"]
    return context


def stack_name(config: StageConfig) -> str:
    """``Imgpipe-dev``, ``Imgpipe-prod``: one stack per stage."""
    return f"Imgpipe-{config.stage}"


def build_app(
    context: Mapping[str, Any] | None = None, *, outdir: str | None = None, nag: bool = True
) -> tuple[App, PipelineStack]:
    """Build the app and its stack, with cdk-nag AwsSolutions checks run at synthesis.

    ``context`` defaults to cdk.json's; when the CDK CLI runs the app it passes its own context
    (cdk.json, cdk.context.json and ``-c`` options). Keys missing from either are filled from
    cdk.json.
    """
    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    for key, value in default_context().items():
        if app.node.try_get_context(key) is None:
            app.node.set_context(key, value)
    ctx = _context_dict(app)
    config = stage_config(ctx)
    account = str(
        ctx["account"] or os.environ.get("CDK_DEFAULT_ACCOUNT") or ctx["synth_account"] or ""
    )
    region = str(ctx["region"] or os.environ.get("CDK_DEFAULT_REGION") or ctx["synth_region"] or "")
    if not account or not region:
        raise ValueError(
            "no AWS account/region: pass -c account=<12 digits> -c region=<name>, or run the CDK "
            "CLI with credentials"
        )
    stack = PipelineStack(
        app,
        stack_name(config),
        config=config,
        env=Environment(account=account, region=region),
        powertools_layer_arn=ctx.get("powertools_layer_arn") or None,
        description=f"imgpipe ({config.stage}): S3 uploads -> Lambda -> Fargate batch statistics",
    )
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def _context_dict(app: App) -> dict[str, Any]:
    keys = (
        "stage",
        "account",
        "region",
        "synth_account",
        "synth_region",
        "images_per_batch",
        "batches_per_run",
        "worker_max_tasks",
        "notify_email",
        "notify_webhook",
        "powertools_layer_arn",
    )
    return {key: app.node.try_get_context(key) for key in keys}


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
