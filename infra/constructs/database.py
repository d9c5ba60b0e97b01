"""Database: RDS PostgreSQL in isolated subnets, reachable only from the worker."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import StageConfig
from infra.constructs._common import acknowledge, log_retention
from infra.naming import ResourceNames

#: Pinned minor version: upgrades are a reviewed change, never a surprise at deploy time.
ENGINE_VERSION = rds.PostgresEngineVersion.VER_16_13
DB_USERNAME = "imgpipe"
#: The role the worker connects as (created by the worker's set-up container).
APP_USERNAME = "imgpipe_app"


class Database(Construct):
    """PostgreSQL for the per-batch statistics (the worker upserts on ``(run_id, batch_id)``).

    Storage is encrypted, the credentials are generated into Secrets Manager (the secret is JSON
    with host, port, username, password and dbname), and the security group has no inbound rule
    until :meth:`allow_from` opens the PostgreSQL port to one peer.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        names: ResourceNames,
        vpc: ec2.IVpc,
        rotation_subnets: ec2.SubnetSelection | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="PostgreSQL: inbound from the worker service only",
            allow_all_outbound=False,
        )
        destroy = config.destroy_on_removal
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=rds.DatabaseInstanceEngine.postgres(version=ENGINE_VERSION),
            instance_type=ec2.InstanceType(config.db_instance_type),
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[self.security_group],
            database_name=names.db_name,
            credentials=rds.Credentials.from_generated_secret(
                DB_USERNAME, secret_name=names.db_secret
            ),
            storage_encrypted=True,
            storage_type=rds.StorageType.GP3,
            allocated_storage=config.db_allocated_storage_gib,
            max_allocated_storage=config.db_max_allocated_storage_gib,
            multi_az=config.db_multi_az,
            publicly_accessible=False,
            backup_retention=Duration.days(config.db_backup_retention_days),
            deletion_protection=config.db_deletion_protection,
            auto_minor_version_upgrade=False,
            enable_performance_insights=False,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            # RDS creates /aws/rds/instance/<id>/<log> itself; CDK's LogRetention custom
            # resource gives those groups a retention.
            cloudwatch_logs_retention=log_retention(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY if destroy else RemovalPolicy.SNAPSHOT,
        )
        secret = self.instance.secret
        if secret is None:  # pragma: no cover - from_generated_secret always creates one
            raise RuntimeError("the database instance was created without a secret")
        #: The master credentials (JSON: host, port, username, password, dbname, engine): read
        #: only by the worker's set-up container, never by the worker's task role.
        self.secret: secretsmanager.ISecret = secret
        #: The application role's credentials (same JSON shape), what the worker connects as.
        self.app_secret: secretsmanager.ISecret = rds.DatabaseSecret(
            self,
            "AppSecret",
            username=APP_USERNAME,
            dbname=names.db_name,
            secret_name=names.db_app_secret,
            master_secret=secret,
        ).attach(self.instance)

        acknowledge(
            self.instance,
            "AwsSolutions-RDS11",
            "The default PostgreSQL port is kept: the security group admits only the worker, "
            "and a non-standard port adds no protection on top of that.",
        )

        if config.db_secret_rotation_days is not None:
            self._rotate(config.db_secret_rotation_days, vpc=vpc, subnets=rotation_subnets)
        else:
            for secret_construct in (
                self.instance.node.find_child("Secret"),
                self.node.find_child("AppSecret"),
            ):
                acknowledge(
                    secret_construct,
                    "AwsSolutions-SMG4",
                    f"Stage {config.stage!r} has no path from the VPC to Secrets Manager (no "
                    "NAT, no interface endpoint: about 15 USD a month idle), which the rotation "
                    "function needs; prod rotates both secrets. The worker reads its secret "
                    "for every connection, so rotation needs no code change.",
                )
        if not config.db_multi_az:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS3",
                f"Stage {config.stage!r} runs a single-AZ instance to halve the idle cost; the "
                "worker retries a run (the message stays on the queue) during a failover gap.",
            )
        if not config.db_deletion_protection:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS10",
                f"Stage {config.stage!r} is disposable: `cdk destroy` must remove the database; "
                "prod enables deletion protection.",
            )

    def allow_from(self, peer: ec2.IConnectable) -> None:
        """Open the PostgreSQL port to ``peer`` (the worker service's security group)."""
        self.instance.connections.allow_default_port_from(peer, "PostgreSQL from the worker")

    def _rotate(self, days: int, *, vpc: ec2.IVpc, subnets: ec2.SubnetSelection | None) -> None:
        """Secrets Manager hosted rotation (single user) of both secrets, every ``days`` days.

        The rotation function runs in ``subnets`` (a path to Secrets Manager) and reaches the
        database through its own security group.
        """
        if subnets is None:
            raise ValueError("secret rotation needs subnets with a path to Secrets Manager")
        group = ec2.SecurityGroup(
            self,
            "RotationSecurityGroup",
            vpc=vpc,
            description="Secrets Manager rotation of the database secrets",
            allow_all_outbound=True,
        )
        self.instance.connections.allow_default_port_from(group, "PostgreSQL from rotation")
        rotated = (("MasterRotation", self.secret), ("AppRotation", self.app_secret))
        for rotation_id, secret in rotated:
            secret.add_rotation_schedule(
                rotation_id,
                automatically_after=Duration.days(days),
                hosted_rotation=secretsmanager.HostedRotation.postgre_sql_single_user(
                    vpc=vpc, vpc_subnets=subnets, security_groups=[group]
                ),
            )
