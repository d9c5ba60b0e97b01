"""Network: the VPC the worker and the database share."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StageConfig
from infra.constructs._common import log_retention


class Network(Construct):
    """Two availability zones: public subnets, isolated subnets for the database and, when the
    stage asks for private worker subnets, private subnets behind one NAT gateway.

    S3 traffic goes through a gateway endpoint (free) and rejected traffic is logged.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        subnets = [
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
            ec2.SubnetConfiguration(
                name="database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
            ),
        ]
        if config.private_worker_subnets:
            subnets.append(
                ec2.SubnetConfiguration(
                    name="worker", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=24
                )
            )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=2,
            nat_gateways=1 if config.private_worker_subnets else 0,
            subnet_configuration=subnets,
            # Nothing is attached to the default security group; restricting it would need a
            # custom-resource Lambda for no gain.
            restrict_default_security_group=False,
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
        )
        self.worker_subnets = ec2.SubnetSelection(
            subnet_type=(
                ec2.SubnetType.PRIVATE_WITH_EGRESS
                if config.private_worker_subnets
                else ec2.SubnetType.PUBLIC
            )
        )
        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=log_retention(config.log_retention_days),
            removal_policy=(
                RemovalPolicy.DESTROY if config.destroy_on_removal else RemovalPolicy.RETAIN
            ),
        )
        self.vpc.add_flow_log(
            "RejectedTraffic",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
