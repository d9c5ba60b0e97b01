"""Shared helpers of the job kinds' tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from batch_stats.worker.adapters import S3ObjectStore


class RecordingStore:
    """The real S3 store, remembering the order of the keys written and, with each, what
    ``probe`` (if set) said at the time."""

    def __init__(self, inner: S3ObjectStore) -> None:
        self.inner = inner
        self.written: list[str] = []
        self.probe: Callable[[], object] | None = None
        self.probed: list[object] = []

    def get(self, bucket: str, key: str) -> bytes:
        return self.inner.get(bucket, key)

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        self.written.append(key)
        if self.probe is not None:
            self.probed.append(self.probe())
        self.inner.put(bucket, key, data, content_type=content_type, metadata=metadata)

    def list_keys(self, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
        return self.inner.list_keys(bucket, prefix)
