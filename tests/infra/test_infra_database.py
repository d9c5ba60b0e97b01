"""Database: PostgreSQL pinned, encrypted, isolated, reachable only from the worker."""

from __future__ import annotations

from typing import Any

import pytest

from infra.iam_sim import Request, TemplateResolver, evaluate, identity_statements


def _one(synth: Any, type_name: str) -> tuple[str, dict[str, Any]]:
    found = synth.resources(type_name)
    assert len(found) == 1, sorted(found)
    ((logical_id, resource),) = found.items()
    return logical_id, resource


def test_postgres_minor_version_is_pinned_and_storage_encrypted(dev: Any) -> None:
    _, instance = _one(dev, "AWS::RDS::DBInstance")
    props = instance["Properties"]
    assert props["Engine"] == "postgres"
    assert props["EngineVersion"] == "16.13"
    assert props["AutoMinorVersionUpgrade"] is False
    assert props["StorageEncrypted"] is True
    assert props["PubliclyAccessible"] is False
    assert props["DBName"] == "imgpipe"
    assert props["EnableCloudwatchLogsExports"] == ["postgresql", "upgrade"]


def test_database_lives_in_the_isolated_subnets(dev: Any) -> None:
    _, group = _one(dev, "AWS::RDS::DBSubnetGroup")
    subnet_ids = {ref["Ref"] for ref in group["Properties"]["SubnetIds"]}
    assert len(subnet_ids) == 2
    for subnet_id in subnet_ids:
        tags = {t["Key"]: t["Value"] for t in dev.raw["Resources"][subnet_id]["Properties"]["Tags"]}
        assert tags["aws-cdk:subnet-type"] == "Isolated"
    # Isolated: no route to an internet or NAT gateway from these subnets.
    routes = [
        r["Properties"]
        for r in dev.resources("AWS::EC2::Route").values()
        if any(
            a["Properties"]["SubnetId"]["Ref"] in subnet_ids
            and a["Properties"]["RouteTableId"] == r["Properties"]["RouteTableId"]
            for a in dev.resources("AWS::EC2::SubnetRouteTableAssociation").values()
        )
    ]
    assert routes == []


def test_only_the_worker_security_group_reaches_postgres(dev: Any) -> None:
    _, instance = _one(dev, "AWS::RDS::DBInstance")
    (db_sg,) = instance["Properties"]["VPCSecurityGroups"]
    db_sg_id = db_sg["Fn::GetAtt"][0]
    assert "SecurityGroupIngress" not in dev.raw["Resources"][db_sg_id]["Properties"]
    ingress = [
        rule["Properties"]
        for rule in dev.resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == db_sg
    ]
    _, service = _one(dev, "AWS::ECS::Service")
    (worker_sg,) = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"][
        "SecurityGroups"
    ]
    assert len(ingress) == 1
    assert ingress[0]["SourceSecurityGroupId"] == worker_sg
    assert ingress[0]["IpProtocol"] == "tcp"
    instance_id, _ = _one(dev, "AWS::RDS::DBInstance")
    port = {"Fn::GetAtt": [instance_id, "Endpoint.Port"]}
    assert ingress[0]["FromPort"] == port
    assert ingress[0]["ToPort"] == port


def test_credentials_are_generated_into_named_secrets(dev: Any) -> None:
    secrets = {
        s["Properties"]["Name"]: s["Properties"]
        for s in dev.resources("AWS::SecretsManager::Secret").values()
    }
    assert set(secrets) == {"imgpipe-dev/database", "imgpipe-dev/database-app"}
    master = secrets["imgpipe-dev/database"]["GenerateSecretString"]
    assert master["SecretStringTemplate"] == '{"username":"imgpipe"}'
    assert master["GenerateStringKey"] == "password"
    app = secrets["imgpipe-dev/database-app"]["GenerateSecretString"]
    template = app["SecretStringTemplate"]["Fn::Join"][1][0]
    assert template.startswith('{"username":"imgpipe_app","dbname":"imgpipe"')
    # Both get the instance's host, port and name attached.
    dev.template.resource_count_is("AWS::SecretsManager::SecretTargetAttachment", 2)


def test_prod_database_is_multi_az_protected_and_snapshotted(prod: Any, dev: Any) -> None:
    _, instance = _one(prod, "AWS::RDS::DBInstance")
    assert instance["Properties"]["MultiAZ"] is True
    assert instance["Properties"]["DeletionProtection"] is True
    assert instance["Properties"]["BackupRetentionPeriod"] == 7
    assert instance["DeletionPolicy"] == "Snapshot"
    _, dev_instance = _one(dev, "AWS::RDS::DBInstance")
    assert dev_instance["Properties"]["MultiAZ"] is False
    assert dev_instance["DeletionPolicy"] == "Delete"


def _resolver(synth: Any, stage: str) -> TemplateResolver:
    account, region = {"dev": ("123456789012", "us-east-1"), "prod": ("210987654321", "eu-west-1")}[
        stage
    ]
    return TemplateResolver(synth.raw, account, region)


def _secret_arn(resolver: TemplateResolver, name: str) -> str:
    for logical_id, resource in resolver.resources.items():
        if (
            resource["Type"] == "AWS::SecretsManager::Secret"
            and resource["Properties"]["Name"] == name
        ):
            return resolver.ref(logical_id)
    raise AssertionError(name)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_worker_reads_only_the_application_secret(stage: str, dev: Any, prod: Any) -> None:
    synth = {"dev": dev, "prod": prod}[stage]
    resolver = _resolver(synth, stage)
    (task,) = synth.resources("AWS::ECS::TaskDefinition").values()
    props = task["Properties"]
    task_role = identity_statements(resolver, props["TaskRoleArn"]["Fn::GetAtt"][0])
    execution_role = identity_statements(resolver, props["ExecutionRoleArn"]["Fn::GetAtt"][0])
    master = _secret_arn(resolver, f"imgpipe-{stage}/database")
    app = _secret_arn(resolver, f"imgpipe-{stage}/database-app")

    def reads(statements: list[dict[str, Any]], arn: str) -> str:
        return evaluate(statements, Request(action="secretsmanager:GetSecretValue", resource=arn))

    assert reads(task_role, app) == "Allow"
    assert reads(task_role, master) == "ImplicitDeny"
    # ECS injects both into the set-up container (execution role), and only there.
    assert reads(execution_role, master) == "Allow"
    containers = {c["Name"]: c for c in props["ContainerDefinitions"]}
    assert set(containers) == {"worker", "dbsetup"}
    assert "Secrets" not in containers["worker"]
    setup = containers["dbsetup"]
    assert {s["Name"] for s in setup["Secrets"]} == {"DB_MASTER_SECRET", "DB_APP_SECRET"}
    assert setup["Essential"] is False
    assert setup["Command"] == ["python", "-m", "batch_stats.worker.dbsetup"]
    assert containers["worker"]["DependsOn"] == [
        {"ContainerName": "dbsetup", "Condition": "SUCCESS"}
    ]
    env = {e["Name"]: e["Value"] for e in containers["worker"]["Environment"]}
    assert resolver.resolve(env["DB_SECRET_ARN"]) == app


def test_prod_rotates_both_database_secrets_dev_has_no_path_to_rotate(dev: Any, prod: Any) -> None:
    schedules = prod.resources("AWS::SecretsManager::RotationSchedule")
    resolver = _resolver(prod, "prod")
    rotated = {resolver.resolve(s["Properties"]["SecretId"]) for s in schedules.values()}
    assert rotated == {
        _secret_arn(resolver, "imgpipe-prod/database"),
        _secret_arn(resolver, "imgpipe-prod/database-app"),
    }
    for schedule in schedules.values():
        props = schedule["Properties"]
        assert props["HostedRotationLambda"]["RotationType"] == "PostgreSQLSingleUser"
        assert props["RotationRules"]["ScheduleExpression"] == "rate(30 days)"
    dev.template.resource_count_is("AWS::SecretsManager::RotationSchedule", 0)
