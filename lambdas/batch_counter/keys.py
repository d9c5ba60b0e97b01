"""Validation of upload keys: ``uploads/<run_id>/<batch_id>/<name>.png`` and the run's manifest
``uploads/<run_id>/_manifest.json``."""

from __future__ import annotations

import re
from dataclasses import dataclass

UPLOAD_PREFIX = "uploads/"
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,123}\.png")
MAX_KEY_LENGTH = 300
MANIFEST_NAME = "_manifest.json"

KEY_RULES = (
    "expected uploads/<run_id>/<batch_id>/<name>.png where run_id and batch_id are 1-64 "
    "characters of letters, digits, '_' and '-' starting with a letter or digit, and name is "
    "1-128 characters of letters, digits, '_', '-' and '.' ending in '.png'"
)


class InvalidKeyError(ValueError):
    """An object key that is not an upload of the pipeline.

    ``reason`` is a short code (``outside_prefix``, ``wrong_depth``, ``bad_run_id``,
    ``bad_batch_id``, ``bad_name``, ``too_long``) for metrics and the operator's table.
    """

    def __init__(self, key: str, reason: str, detail: str) -> None:
        super().__init__(f"object key {key!r} rejected ({reason}): {detail}; {KEY_RULES}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class UploadKey:
    """A validated upload key."""

    key: str
    run_id: str
    batch_id: str
    name: str


@dataclass(frozen=True)
class ManifestKey:
    """The key of a run's manifest, ``uploads/<run_id>/_manifest.json``."""

    key: str
    run_id: str


def manifest_key(run_id: str) -> str:
    return f"{UPLOAD_PREFIX}{run_id}/{MANIFEST_NAME}"


def run_id_of(key: str) -> str | None:
    """The run id of a key under ``uploads/<run_id>/``, if that segment is a valid id."""
    if not key.startswith(UPLOAD_PREFIX):
        return None
    candidate = key[len(UPLOAD_PREFIX) :].split("/", 1)[0]
    return candidate if _ID_RE.fullmatch(candidate) else None


JOBS_PREFIX = "jobs/"
JOB_KEY_RULES = (
    "expected jobs/<job_id>.json where job_id is 1-64 characters of letters, digits, '_' and "
    "'-' starting with a letter or digit"
)


def is_job_key(key: str) -> bool:
    """Whether the key is under ``jobs/`` (a job document, or a badly named one)."""
    return key.startswith(JOBS_PREFIX)


def parse_job_key(key: str) -> str:
    """The job id of ``jobs/<job_id>.json``; raise InvalidKeyError (``bad_job_key``) otherwise."""
    name = key[len(JOBS_PREFIX) :] if key.startswith(JOBS_PREFIX) else ""
    if len(key) <= MAX_KEY_LENGTH and name.endswith(".json"):
        job_id = name[: -len(".json")]
        if _ID_RE.fullmatch(job_id):
            return job_id
    error = InvalidKeyError(key, "bad_job_key", "not a job document key")
    error.args = (f"object key {key!r} rejected (bad_job_key): {JOB_KEY_RULES}",)
    raise error


def is_run_id(text: object) -> bool:
    """Whether ``text`` is an allowed run id (1-64 letters, digits, '_', '-', starting with a
    letter or digit)."""
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


def parse_key(key: str) -> UploadKey | ManifestKey:
    """An image upload or a run manifest; raise InvalidKeyError for anything else."""
    if len(key) <= MAX_KEY_LENGTH and key.startswith(UPLOAD_PREFIX):
        parts = key[len(UPLOAD_PREFIX) :].split("/")
        if len(parts) == 2 and parts[1] == MANIFEST_NAME and _ID_RE.fullmatch(parts[0]):
            return ManifestKey(key=key, run_id=parts[0])
    return parse_upload_key(key)


def parse_upload_key(key: str) -> UploadKey:
    """Split a decoded S3 key into run, batch and image name; raise InvalidKeyError if malformed."""
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(key, "too_long", f"{len(key)} characters, at most {MAX_KEY_LENGTH}")
    if not key.startswith(UPLOAD_PREFIX):
        raise InvalidKeyError(
            key, "outside_prefix", f"the key does not start with {UPLOAD_PREFIX!r}"
        )
    parts = key[len(UPLOAD_PREFIX) :].split("/")
    if len(parts) != 3:
        raise InvalidKeyError(
            key, "wrong_depth", f"{len(parts)} path segments after 'uploads/', expected 3"
        )
    run_id, batch_id, name = parts
    if not _ID_RE.fullmatch(run_id):
        raise InvalidKeyError(key, "bad_run_id", f"run_id {run_id!r} is not allowed")
    if not _ID_RE.fullmatch(batch_id):
        raise InvalidKeyError(key, "bad_batch_id", f"batch_id {batch_id!r} is not allowed")
    if not _NAME_RE.fullmatch(name):
        raise InvalidKeyError(key, "bad_name", f"image name {name!r} is not allowed")
    return UploadKey(key=key, run_id=run_id, batch_id=batch_id, name=name)
