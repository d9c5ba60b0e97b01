"""Job documents: ``{"version": 1, "kind": "...", "params": {...}}`` at ``jobs/<job_id>.json``.

:func:`parse_job_document` checks the envelope (JSON object, size, version, kind, params object,
no other keys) and then the kind's own parameters (:meth:`JobKind.parse`), and raises ONE
:class:`~batch_stats.jobs.base.JobSpecError` naming every problem it found. The worker and
``batch-stats submit`` use the same function, so a document is judged the same way everywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from batch_stats.jobs.base import JobKind, JobSpecError
from batch_stats.jobs.registry import KINDS, get_kind

#: The only schema version so far.
JOB_SCHEMA_VERSION = 1
#: Largest job document accepted (bytes): a job is a few parameters, never data.
MAX_DOCUMENT_BYTES = 64 * 1024
#: Job ids follow the rules of run ids.
JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
JOB_ID_RULES = "1-64 letters, digits, '_' and '-', starting with a letter or digit"
JOBS_PREFIX = "jobs/"
DOCUMENT_SUFFIX = ".json"
_ENVELOPE_KEYS = ("version", "kind", "params")


def is_job_id(text: object) -> bool:
    return isinstance(text, str) and JOB_ID_RE.fullmatch(text) is not None


def job_key(job_id: str) -> str:
    """Where a job's document is uploaded in the raw bucket."""
    return f"{JOBS_PREFIX}{job_id}{DOCUMENT_SUFFIX}"


def job_id_of_key(key: str) -> str | None:
    """The job id of ``jobs/<job_id>.json`` (None for any other key)."""
    if not (key.startswith(JOBS_PREFIX) and key.endswith(DOCUMENT_SUFFIX)):
        return None
    candidate = key[len(JOBS_PREFIX) : -len(DOCUMENT_SUFFIX)]
    return candidate if is_job_id(candidate) else None


@dataclass(frozen=True)
class JobSpec:
    """A validated job document."""

    job_id: str
    kind: JobKind[Any]
    #: The document's ``params`` as written (stored with the job, parsed again by each shard).
    raw_params: dict[str, Any]
    #: What :meth:`JobKind.parse` made of them.
    params: Any

    @property
    def kind_name(self) -> str:
        return self.kind.name


def parse_job_document(data: bytes | str, *, job_id: str) -> JobSpec:
    """Validate a job document; raise JobSpecError naming every problem."""
    problems: list[str] = []
    if not is_job_id(job_id):
        problems.append(f"job id {job_id!r} is not allowed ({JOB_ID_RULES})")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise JobSpecError(
            [
                *problems,
                f"the document has {len(raw)} bytes; at most {MAX_DOCUMENT_BYTES} are allowed "
                "(a job holds parameters; its inputs go under inputs/ in the raw bucket)",
            ]
        )
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JobSpecError([*problems, f"the document is not JSON: {exc}"]) from None
    if not isinstance(document, dict):
        raise JobSpecError(
            [
                *problems,
                f"the document is a JSON {type(document).__name__}, not an object "
                '(expected {"version": 1, "kind": ..., "params": {...}})',
            ]
        )
    unknown = sorted(set(document) - set(_ENVELOPE_KEYS))
    if unknown:
        problems.append(f"unknown keys {unknown} (allowed: {list(_ENVELOPE_KEYS)})")
    version = document.get("version")
    if "version" not in document:
        problems.append(f"'version' is missing (allowed: {JOB_SCHEMA_VERSION})")
    elif isinstance(version, bool) or version != JOB_SCHEMA_VERSION:
        problems.append(f"version {version!r} is not supported (allowed: {JOB_SCHEMA_VERSION})")
    kind: JobKind[Any] | None = None
    if "kind" not in document:
        problems.append(f"'kind' is missing (allowed: {', '.join(sorted(KINDS))})")
    else:
        try:
            kind = get_kind(document["kind"])
        except JobSpecError as exc:
            problems.extend(exc.problems)
        except ImportError as exc:
            problems.append(
                f"kind {document['kind']!r} is not available in this installation ({exc})"
            )
    params = document.get("params", None)
    if "params" not in document:
        problems.append("'params' is missing (a JSON object of the kind's parameters)")
        params = None
    elif not isinstance(params, dict):
        problems.append(f"params is a JSON {type(params).__name__}, not an object")
        params = None
    parsed: Any = None
    if kind is not None and params is not None:
        try:
            parsed = kind.parse(params)
        except JobSpecError as exc:
            problems.extend(f"params: {problem}" for problem in exc.problems)
    if problems:
        raise JobSpecError(problems)
    assert kind is not None
    assert params is not None
    return JobSpec(job_id=job_id, kind=kind, raw_params=params, params=parsed)


def kind_name_of(data: bytes | str) -> str | None:
    """The ``kind`` a (possibly invalid) document names, if it names a known one."""
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    kind = document.get("kind") if isinstance(document, dict) else None
    return kind if isinstance(kind, str) and kind in KINDS else None
