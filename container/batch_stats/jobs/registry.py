"""The job kinds the worker knows, by the ``kind`` value of a job document."""

from __future__ import annotations

import importlib
from typing import Any

from batch_stats.jobs.base import JobKind, JobSpecError

#: kind -> "module:attribute" of its JobKind instance (imported when first used, so that a
#: worker processing uploaded runs never imports number_generator or photo_mosaic).
KINDS: dict[str, str] = {
    "synthetic-stats": "batch_stats.jobs.synthetic:KIND",
    "digits": "batch_stats.jobs.digits:KIND",
    "mosaic": "batch_stats.jobs.mosaic:KIND",
}


def get_kind(name: object) -> JobKind[Any]:
    """The kind called ``name``; JobSpecError naming the allowed kinds otherwise."""
    if not isinstance(name, str) or name not in KINDS:
        allowed = ", ".join(sorted(KINDS))
        raise JobSpecError([f"kind {name!r} is not a known job kind (allowed: {allowed})"])
    module_name, attribute = KINDS[name].split(":")
    kind: JobKind[Any] = getattr(importlib.import_module(module_name), attribute)
    return kind
