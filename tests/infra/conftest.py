"""Fixture chain: each stage's app is synthesized once per session; tests assert on the result.

Synthesis runs cdk-nag (AwsSolutions) like ``cdk synth`` does, so a session that gets a template
at all has passed the nag checks.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# jsii prints a banner on every import while Node 20 is past its end of life.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import pytest
from aws_cdk.assertions import Template

from infra.app import build_app
from infra.iam_sim import Request, TemplateResolver, evaluate, identity_statements
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


# --- a stand-in for the ECS agent's task scale-in protection endpoint ---------------------------

DEV_ACCOUNT, DEV_REGION = "123456789012", "us-east-1"


@dataclass
class EcsAgent:
    """``$ECS_AGENT_URI`` of one task. Like the real agent it calls ECS with the task role's
    credentials: the answer is derived from the task role's policies in ``template``."""

    uri: str
    task_arn: str
    calls: list[tuple[str, dict[str, Any]]]


def _task_role_statements(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    resolver = TemplateResolver(template, DEV_ACCOUNT, DEV_REGION)
    (task,) = [r for r in resolver.resources.values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    return identity_statements(resolver, task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0])


@pytest.fixture
def ecs_agent_for() -> Callable[..., AbstractContextManager[EcsAgent]]:
    """``with ecs_agent_for(template) as agent:`` serves the stand-in for the block."""
    return serve_ecs_agent


@contextmanager
def serve_ecs_agent(
    template: Mapping[str, Any], *, failure: str | None = None
) -> Iterator[EcsAgent]:
    """Serve the agent endpoint. ``failure``: ECS answers with this failure reason (as for a
    task that is not part of a service) even when IAM allows the call."""
    statements = _task_role_statements(template)
    (cluster_id,) = [
        i for i, r in template["Resources"].items() if r["Type"] == "AWS::ECS::Cluster"
    ]
    cluster = TemplateResolver(template, DEV_ACCOUNT, DEV_REGION).physical_name(cluster_id)
    task_arn = f"arn:aws:ecs:{DEV_REGION}:{DEV_ACCOUNT}:task/{cluster}/5f2a9e0c41b14d35"
    calls: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append((self.path, body))
            request = Request(action="ecs:UpdateTaskProtection", resource=task_arn)
            if evaluate(statements, request) != "Allow":
                status, answer = (
                    400,
                    {
                        "error": {
                            "Arn": task_arn,
                            "Code": "AccessDeniedException",
                            "Message": "User is not authorized to perform: "
                            f"ecs:UpdateTaskProtection on resource: {task_arn}",
                        }
                    },
                )
            elif failure is not None:
                status = 200
                answer = {"failure": {"Arn": task_arn, "Reason": failure, "Detail": None}}
            else:
                status, answer = (
                    200,
                    {
                        "protection": {
                            "ProtectionEnabled": body["ProtectionEnabled"],
                            "ExpirationDate": None,
                            "TaskArn": task_arn,
                        }
                    },
                )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield EcsAgent(f"http://127.0.0.1:{server.server_port}/api/task-1", task_arn, calls)
    finally:
        server.shutdown()
        server.server_close()
