"""Evaluate the synthesized template's policies for a request, the way IAM documents it.

The tests use this as the stand-in for IAM, which cannot run here: a request (principal,
action, resource, condition context) is allowed when a statement allows it and no statement
denies it; an explicit deny wins; anything not allowed is denied. Only the parts of the policy
language this stack uses are implemented, and anything else raises :class:`UnsupportedPolicyError`
instead of guessing, so a new kind of statement cannot pass unnoticed.

CloudFormation references (``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``, pseudo
parameters) are resolved to the physical names and ARNs AWS gives each resource type, for a
fixed account and region: :class:`TemplateResolver`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Request",
    "TemplateResolver",
    "UnsupportedPolicyError",
    "evaluate",
    "identity_statements",
    "is_allowed",
]


class UnsupportedPolicyError(ValueError):
    """The policy uses an element or operator this evaluator does not implement."""


@dataclass(frozen=True)
class Request:
    """One API request as IAM sees it.

    ``principal``: ``{"Service": "cloudwatch.amazonaws.com"}`` or ``{"AWS": "<arn>"}``;
    ``context``: condition keys (``aws:SourceArn``, ``aws:SourceAccount``, ...).
    """

    action: str
    resource: str
    principal: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


# --- CloudFormation references ------------------------------------------------------------------

#: How AWS names a resource: (Ref, Arn) templates per type; {name} is the physical name.
_PHYSICAL: dict[str, tuple[str, str]] = {
    "AWS::SNS::Topic": ("arn:{p}:sns:{r}:{a}:{name}", "arn:{p}:sns:{r}:{a}:{name}"),
    "AWS::SQS::Queue": (
        "https://sqs.{r}.amazonaws.com/{a}/{name}",
        "arn:{p}:sqs:{r}:{a}:{name}",
    ),
    "AWS::S3::Bucket": ("{name}", "arn:{p}:s3:::{name}"),
    "AWS::DynamoDB::Table": ("{name}", "arn:{p}:dynamodb:{r}:{a}:table/{name}"),
    "AWS::KMS::Key": ("{name}", "arn:{p}:kms:{r}:{a}:key/{name}"),
    "AWS::CloudWatch::Alarm": ("{name}", "arn:{p}:cloudwatch:{r}:{a}:alarm:{name}"),
    "AWS::ECS::Cluster": ("{name}", "arn:{p}:ecs:{r}:{a}:cluster/{name}"),
    "AWS::Logs::LogGroup": ("{name}", "arn:{p}:logs:{r}:{a}:log-group:{name}:*"),
    "AWS::Lambda::Function": ("{name}", "arn:{p}:lambda:{r}:{a}:function:{name}"),
    "AWS::IAM::Role": ("{name}", "arn:{p}:iam::{a}:role/{name}"),
    "AWS::SecretsManager::Secret": (
        "arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf",
        "arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf",
    ),
    "AWS::SecretsManager::SecretTargetAttachment": (
        "arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf",
        "arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf",
    ),
}
_NAME_PROPERTY = {
    "AWS::SNS::Topic": "TopicName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::ECS::Cluster": "ClusterName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::IAM::Role": "RoleName",
    "AWS::SecretsManager::Secret": "Name",
}


@dataclass(frozen=True)
class TemplateResolver:
    """Resolves references in a synthesized template for one account and region."""

    template: Mapping[str, Any]
    account: str
    region: str
    partition: str = "aws"

    @property
    def resources(self) -> Mapping[str, Any]:
        resources: Mapping[str, Any] = self.template["Resources"]
        return resources

    def physical_name(self, logical_id: str) -> str:
        """The resource's name property when the template sets a plain string, else the
        logical id (CloudFormation generates a name from it)."""
        resource = self.resources[logical_id]
        if resource["Type"] == "AWS::SecretsManager::SecretTargetAttachment":
            return self.physical_name(resource["Properties"]["SecretId"]["Ref"])
        prop = _NAME_PROPERTY.get(resource["Type"])
        value = resource.get("Properties", {}).get(prop) if prop else None
        if isinstance(value, str):
            return value
        if value is not None:
            resolved = self.resolve(value)
            if isinstance(resolved, str):
                return resolved
        return logical_id

    def _physical(self, logical_id: str, which: int) -> str:
        type_name: str = self.resources[logical_id]["Type"]
        fallback = (
            "{name}",
            "arn:{p}:" + type_name.split("::")[1].lower() + ":{r}:{a}:{name}",
        )
        pattern = _PHYSICAL.get(type_name, fallback)[which]
        return pattern.format(
            p=self.partition, r=self.region, a=self.account, name=self.physical_name(logical_id)
        )

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "stack",
        }
        if name in pseudo:
            return pseudo[name]
        return self._physical(name, 0)

    def get_att(self, logical_id: str, attribute: str) -> str:
        if attribute == "Arn":
            return self._physical(logical_id, 1)
        if attribute == "QueueName":
            return self.physical_name(logical_id)
        raise UnsupportedPolicyError(f"Fn::GetAtt {logical_id}.{attribute} is not implemented")

    def resolve(self, value: Any) -> Any:
        """``value`` with every reference replaced by its physical value."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Join":
                separator, parts = arg
                return separator.join(str(self.resolve(part)) for part in parts)
            if key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                extra = {} if isinstance(arg, str) else self.resolve(arg[1])
                return re.sub(
                    r"\$\{([^}]+)\}",
                    lambda m: str(
                        extra[m.group(1)]
                        if m.group(1) in extra
                        else (
                            self.get_att(*m.group(1).split(".", 1))
                            if "." in m.group(1)
                            else self.ref(m.group(1))
                        )
                    ),
                    text,
                )
            if key.startswith("Fn::"):
                raise UnsupportedPolicyError(f"{key} is not implemented")
        return {k: self.resolve(v) for k, v in value.items()}


def identity_statements(resolver: TemplateResolver, role_logical_id: str) -> list[dict[str, Any]]:
    """Every statement of the identity policies attached to the role, resolved."""
    statements: list[dict[str, Any]] = []
    role = resolver.resources[role_logical_id]
    for policy in role.get("Properties", {}).get("Policies", []):
        statements.extend(policy["PolicyDocument"]["Statement"])
    if role.get("Properties", {}).get("ManagedPolicyArns"):
        raise UnsupportedPolicyError(
            f"{role_logical_id} has managed policies; their text is not here"
        )
    for resource in resolver.resources.values():
        if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            continue
        if {"Ref": role_logical_id} in resource["Properties"].get("Roles", []):
            statements.extend(resource["Properties"]["PolicyDocument"]["Statement"])
    resolved: list[dict[str, Any]] = resolver.resolve(statements)
    return resolved


# --- evaluation --------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM wildcards: ``*`` any run of characters, ``?`` one character (no ranges)."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.fullmatch(regex, value, flags) is not None


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike: the six colon-separated parts match one by one (wildcards within a part)."""
    p_parts, v_parts = pattern.split(":", 5), value.split(":", 5)
    if len(p_parts) != 6 or len(v_parts) != 6:
        return False
    return all(_glob(p, v) for p, v in zip(p_parts, v_parts, strict=True))


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda p, v: p == v,
    "StringLike": _glob,
    "ArnEquals": lambda p, v: p == v,
    "ArnLike": _arn_like,
    "Bool": lambda p, v: str(p).lower() == str(v).lower(),
    "NumericLessThan": lambda p, v: float(v) < float(p),
    "NumericLessThanEquals": lambda p, v: float(v) <= float(p),
}


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    for operator, tests in condition.items():
        base = operator.removesuffix("IfExists")
        match = _OPERATORS.get(base)
        if match is None:
            raise UnsupportedPolicyError(f"condition operator {operator} is not implemented")
        for key, patterns in tests.items():
            if key not in context:
                if operator.endswith("IfExists"):
                    continue
                return False  # a missing key never matches a positive operator
            values = _as_list(context[key])
            if not any(match(str(p), str(v)) for p in _as_list(patterns) for v in values):
                return False
    return True


def _principal_matches(statement: Mapping[str, Any], request: Request) -> bool:
    if "NotPrincipal" in statement:
        raise UnsupportedPolicyError("NotPrincipal is not implemented")
    if "Principal" not in statement:
        return True  # an identity policy: the principal is the one it is attached to
    principal = statement["Principal"]
    if principal == "*" or principal == {"AWS": "*"}:
        return True
    for kind, names in principal.items():
        if request.principal.get(kind) in _as_list(names):
            return True
        if kind == "AWS" and request.principal.get("Account") in [
            n.split(":")[4] if str(n).startswith("arn:") else n for n in _as_list(names)
        ]:
            return True
    return False


def _statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    for unsupported in ("NotAction", "NotResource"):
        if unsupported in statement:
            raise UnsupportedPolicyError(f"{unsupported} is not implemented")
    if not _principal_matches(statement, request):
        return False
    actions = _as_list(statement["Action"])
    if not any(_glob(a, request.action, case_sensitive=False) for a in actions):
        return False
    resources = _as_list(statement.get("Resource", "*"))
    if not any(_glob(str(r), request.resource) for r in resources):
        return False
    return _condition_holds(statement.get("Condition", {}), request.context)


def evaluate(statements: Iterable[Mapping[str, Any]], request: Request) -> str:
    """``"Allow"``, ``"ExplicitDeny"`` or ``"ImplicitDeny"`` for ``request``."""
    allowed = False
    for statement in statements:
        if not _statement_applies(statement, request):
            continue
        if statement["Effect"] == "Deny":
            return "ExplicitDeny"
        allowed = True
    return "Allow" if allowed else "ImplicitDeny"


def is_allowed(statements: Iterable[Mapping[str, Any]], request: Request) -> bool:
    return evaluate(statements, request) == "Allow"
