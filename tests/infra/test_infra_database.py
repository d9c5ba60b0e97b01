"""Database: PostgreSQL pinned, encrypted, isolated, reachable only from the worker."""

from __future__ import annotations

from typing import Any


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


def test_credentials_are_generated_into_the_named_secret(dev: Any) -> None:
    _, secret = _one(dev, "AWS::SecretsManager::Secret")
    props = secret["Properties"]
    assert props["Name"] == "imgpipe-dev/database"
    generate = props["GenerateSecretString"]
    assert generate["SecretStringTemplate"] == '{"username":"imgpipe"}'
    assert generate["GenerateStringKey"] == "password"
    dev.template.resource_count_is("AWS::SecretsManager::SecretTargetAttachment", 1)


def test_prod_database_is_multi_az_protected_and_snapshotted(prod: Any, dev: Any) -> None:
    _, instance = _one(prod, "AWS::RDS::DBInstance")
    assert instance["Properties"]["MultiAZ"] is True
    assert instance["Properties"]["DeletionProtection"] is True
    assert instance["Properties"]["BackupRetentionPeriod"] == 7
    assert instance["DeletionPolicy"] == "Snapshot"
    _, dev_instance = _one(dev, "AWS::RDS::DBInstance")
    assert dev_instance["Properties"]["MultiAZ"] is False
    assert dev_instance["DeletionPolicy"] == "Delete"
