"""Storage: the raw uploads bucket, the results bucket and their server access log bucket."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import StageConfig
from infra.naming import ResourceNames

#: Prefixes of the raw bucket (the S3 -> ingest notification covers ``uploads/`` only).
UPLOADS_PREFIX = "uploads/"
REJECTED_PREFIX = "rejected/"
RESULTS_PREFIX = "results/"
#: Jobs: documents and inputs in the raw bucket, outputs and caches in the results bucket.
JOBS_PREFIX = "jobs/"
INPUTS_PREFIX = "inputs/"
DATASETS_PREFIX = "datasets/"
MOSAICS_PREFIX = "mosaics/"
CACHE_PREFIX = "cache/"
#: Where jobs write in the results bucket (``jobs/`` holds the failed manifest of a job whose
#: kind is unknown).
JOB_OUTPUT_PREFIXES = (RESULTS_PREFIX, DATASETS_PREFIX, MOSAICS_PREFIX, CACHE_PREFIX, JOBS_PREFIX)


class Storage(Construct):
    """Raw and results buckets: encrypted, private, SSL-only, access-logged.

    The raw bucket is versioned (an overwritten upload can be recovered) and expires
    ``rejected/`` copies after ``rejected_expiration_days``.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, names: ResourceNames
    ) -> None:
        super().__init__(scope, construct_id)
        destroy = config.destroy_on_removal
        self.access_logs = _hardened_bucket(
            self,
            "AccessLogs",
            destroy=destroy,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(config.access_log_expiration_days),
                )
            ],
        )
        self.raw = _hardened_bucket(
            self,
            "Raw",
            destroy=destroy,
            bucket_name=names.raw_bucket,
            versioned=True,
            access_logs=self.access_logs,
            access_logs_prefix="raw/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-rejected",
                    prefix=REJECTED_PREFIX,
                    expiration=Duration.days(config.rejected_expiration_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(
                        config.raw_noncurrent_expiration_days
                    ),
                    expired_object_delete_marker=True,
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
        )

        self.results = _hardened_bucket(
            self,
            "Results",
            destroy=destroy,
            bucket_name=names.results_bucket,
            access_logs=self.access_logs,
            access_logs_prefix="results/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
        )


def _hardened_bucket(
    scope: Construct,
    construct_id: str,
    *,
    destroy: bool,
    lifecycle_rules: list[s3.LifecycleRule],
    bucket_name: str | None = None,
    versioned: bool = False,
    access_logs: s3.IBucket | None = None,
    access_logs_prefix: str | None = None,
) -> s3.Bucket:
    """A bucket with SSE-S3, all public access blocked, TLS 1.2+ only and ACLs disabled.

    ``destroy``: ``cdk destroy`` empties and deletes it; otherwise it is retained.
    """
    return s3.Bucket(
        scope,
        construct_id,
        bucket_name=bucket_name,
        versioned=versioned,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=access_logs_prefix,
        lifecycle_rules=lifecycle_rules,
        removal_policy=RemovalPolicy.DESTROY if destroy else RemovalPolicy.RETAIN,
        auto_delete_objects=destroy,
    )
