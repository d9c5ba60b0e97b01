"""Network: two AZs, isolated database subnets, rejected traffic logged, S3 through an endpoint."""

from __future__ import annotations

from typing import Any


def test_vpc_spans_two_azs_without_nat_in_dev(dev: Any) -> None:
    dev.template.resource_count_is("AWS::EC2::VPC", 1)
    subnets = dev.resources("AWS::EC2::Subnet")
    kinds = sorted(
        next(t["Value"] for t in s["Properties"]["Tags"] if t["Key"] == "aws-cdk:subnet-type")
        for s in subnets.values()
    )
    assert kinds == ["Isolated", "Isolated", "Public", "Public"]
    assert len({s["Properties"]["AvailabilityZone"] for s in subnets.values()}) == 2
    dev.template.resource_count_is("AWS::EC2::NatGateway", 0)


def test_rejected_traffic_is_logged(dev: Any) -> None:
    (flow_log,) = dev.resources("AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "REJECT"
    assert flow_log["Properties"]["LogDestinationType"] == "cloud-watch-logs"


def test_s3_traffic_uses_a_gateway_endpoint(dev: Any) -> None:
    (endpoint,) = dev.resources("AWS::EC2::VPCEndpoint").values()
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
    assert "s3" in str(endpoint["Properties"]["ServiceName"])


def test_log_groups_have_a_retention(dev: Any, prod: Any) -> None:
    assert {
        g["Properties"]["RetentionInDays"] for g in dev.resources("AWS::Logs::LogGroup").values()
    } == {30}
    assert {
        g["Properties"]["RetentionInDays"] for g in prod.resources("AWS::Logs::LogGroup").values()
    } == {90}
