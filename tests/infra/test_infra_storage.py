"""Storage: raw and results buckets (and their access log bucket)."""

from __future__ import annotations

from typing import Any

from infra.naming import resource_names


def _bucket(synth: Any, name: str) -> dict[str, Any]:
    found = synth.template.find_resources("AWS::S3::Bucket", {"Properties": {"BucketName": name}})
    assert len(found) == 1, f"expected one bucket named {name}, found {sorted(found)}"
    (bucket,) = found.values()
    return dict(bucket["Properties"])


def test_bucket_names_come_from_the_shared_naming_module(dev: Any, prod: Any) -> None:
    names = resource_names(stage="dev", account="123456789012", region="us-east-1")
    _bucket(dev, names.raw_bucket)
    _bucket(dev, names.results_bucket)
    prod_names = resource_names(stage="prod", account="210987654321", region="eu-west-1")
    _bucket(prod, prod_names.raw_bucket)


def test_every_bucket_is_encrypted_private_and_owner_enforced(dev: Any) -> None:
    buckets = dev.resources("AWS::S3::Bucket")
    assert len(buckets) == 3  # raw, results, access logs
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", logical_id
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_every_bucket_policy_denies_plain_http(dev: Any) -> None:
    policies = dev.resources("AWS::S3::BucketPolicy")
    assert len(policies) == 3
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny"
            and s["Action"] == "s3:*"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        ), statements


def test_raw_bucket_is_versioned_logged_and_expires_rejected_copies(dev: Any) -> None:
    names = resource_names(stage="dev", account="123456789012", region="us-east-1")
    raw = _bucket(dev, names.raw_bucket)
    assert raw["VersioningConfiguration"] == {"Status": "Enabled"}
    assert raw["LoggingConfiguration"]["LogFilePrefix"] == "raw/"
    rules = {rule["Id"]: rule for rule in raw["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-rejected"]["Prefix"] == "rejected/"
    assert rules["expire-rejected"]["ExpirationInDays"] == 30
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 30
    }
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }


def test_raw_and_results_buckets_log_to_the_access_log_bucket(dev: Any) -> None:
    names = resource_names(stage="dev", account="123456789012", region="us-east-1")
    unnamed = [
        logical_id
        for logical_id, bucket in dev.resources("AWS::S3::Bucket").items()
        if "BucketName" not in bucket["Properties"]
    ]
    assert len(unnamed) == 1  # the access log bucket
    for name, prefix in ((names.raw_bucket, "raw/"), (names.results_bucket, "results/")):
        logging = _bucket(dev, name)["LoggingConfiguration"]
        assert logging == {"DestinationBucketName": {"Ref": unnamed[0]}, "LogFilePrefix": prefix}
    results = _bucket(dev, names.results_bucket)
    assert "VersioningConfiguration" not in results  # deterministic keys: re-runs overwrite


def test_dev_buckets_are_emptied_on_destroy_and_prod_buckets_retained(dev: Any, prod: Any) -> None:
    dev_buckets = dev.template.find_resources("AWS::S3::Bucket")
    assert {b["DeletionPolicy"] for b in dev_buckets.values()} == {"Delete"}
    dev.template.resource_count_is("Custom::S3AutoDeleteObjects", 3)
    prod_buckets = prod.template.find_resources("AWS::S3::Bucket")
    assert {b["DeletionPolicy"] for b in prod_buckets.values()} == {"Retain"}
    prod.template.resource_count_is("Custom::S3AutoDeleteObjects", 0)
    rules = {
        rule["Id"]: rule
        for bucket in prod_buckets.values()
        for rule in bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    }
    assert rules["expire-rejected"]["ExpirationInDays"] == 90
