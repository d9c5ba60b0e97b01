"""The local moto server keeps S3 objects in memory, as S3 keeps them off this machine."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
from batch_stats.local.services import moto_server


def _server_files(parent: int) -> list[str]:
    """Regular files the moto server process (a child of ``parent``) holds open."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid"))
        if ppid == parent and b"serve_moto" in cmdline:
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            return [t for t in targets if t.startswith("/")]
    raise AssertionError("no moto server process found")


def test_large_objects_are_kept_in_memory() -> None:
    data = os.urandom(12 << 20)  # over moto's default of 5 MB before it spills to a file
    with moto_server() as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="in-memory")
        before = _server_files(os.getpid())
        s3.put_object(Bucket="in-memory", Key="big", Body=data)
        assert s3.get_object(Bucket="in-memory", Key="big")["Body"].read() == data
        assert _server_files(os.getpid()) == before
