"""The run manifest, ``uploads/<run_id>/_manifest.json`` (schema version 1).

```json
{"version": 1, "run_id": "run-7",
 "batches": {"batch_001": {"images": 2,
                           "objects": [{"name": "img_0001.png", "sha256": "<64 hex>"},
                                       {"name": "img_0002.png"}]},
             "batch_002": {"images": 500}}}
```

``images`` is required (an integer >= 1). ``objects`` is optional; when present it lists exactly
``images`` distinct image names of the batch, each with an optional SHA-256 of the object's bytes
(checked by the worker). A run with a manifest is exactly the batches (and names) it announces.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from batch_counter.keys import _ID_RE, _NAME_RE

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest that cannot describe a run; the message says what is wrong and what is allowed."""


@dataclass(frozen=True)
class ManifestBatch:
    images: int
    #: Image name -> expected SHA-256 (None: not given); empty when the manifest lists no names.
    objects: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    run_id: str
    batches: dict[str, ManifestBatch]
    sha256: str

    @property
    def total_images(self) -> int:
        return sum(batch.images for batch in self.batches.values())


def parse_manifest(data: bytes, *, run_id: str) -> Manifest:
    """Parse and validate a manifest of ``run_id``; raise ManifestError saying what is wrong."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"the manifest has {len(data)} bytes, at most {MAX_MANIFEST_BYTES}")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"the manifest is not UTF-8 JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError("the manifest is not a JSON object with 'version' and 'batches'")
    if raw.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"manifest version {raw.get('version')!r} is not supported (allowed: "
            f"{MANIFEST_VERSION})"
        )
    if raw.get("run_id", run_id) != run_id:
        raise ManifestError(
            f"the manifest names run {raw.get('run_id')!r} but is stored under run {run_id!r}"
        )
    unknown = sorted(set(raw) - {"version", "run_id", "batches"})
    if unknown:
        raise ManifestError(f"unknown manifest fields {unknown}; allowed: version, run_id, batches")
    raw_batches = raw.get("batches")
    if not isinstance(raw_batches, dict) or not raw_batches:
        raise ManifestError("'batches' must be a non-empty object of batch id -> {'images': n}")
    batches: dict[str, ManifestBatch] = {}
    for batch_id, entry in raw_batches.items():
        batches[batch_id] = _batch(batch_id, entry)
    return Manifest(run_id=run_id, batches=batches, sha256=hashlib.sha256(data).hexdigest())


def _batch(batch_id: str, entry: object) -> ManifestBatch:
    if not _ID_RE.fullmatch(batch_id):
        raise ManifestError(
            f"batch id {batch_id!r} is not allowed (1-64 letters, digits, '_' and '-', starting "
            "with a letter or digit)"
        )
    if not isinstance(entry, dict):
        raise ManifestError(f"batch {batch_id!r}: expected an object with 'images'")
    unknown = sorted(set(entry) - {"images", "objects"})
    if unknown:
        raise ManifestError(
            f"batch {batch_id!r}: unknown fields {unknown}; allowed: images, objects"
        )
    images = entry.get("images")
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ManifestError(f"batch {batch_id!r}: 'images' must be an integer >= 1, got {images!r}")
    raw_objects = entry.get("objects")
    if raw_objects is None:
        return ManifestBatch(images=images)
    if not isinstance(raw_objects, list) or len(raw_objects) != images:
        got = len(raw_objects) if isinstance(raw_objects, list) else type(raw_objects).__name__
        raise ManifestError(
            f"batch {batch_id!r}: 'objects' must list exactly {images} images (its 'images'), "
            f"got {got}"
        )
    objects: dict[str, str | None] = {}
    for item in raw_objects:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ManifestError(
                f"batch {batch_id!r}: object {item!r} has no allowed 'name' (1-128 letters, "
                "digits, '_', '-' and '.', ending in '.png')"
            )
        if name in objects:
            raise ManifestError(f"batch {batch_id!r}: image {name!r} is listed twice")
        sha = item.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha)):
            raise ManifestError(
                f"batch {batch_id!r}: sha256 of {name!r} must be 64 lowercase hex digits"
            )
        objects[name] = sha
    return ManifestBatch(images=images, objects=objects)


def build_manifest(
    run_id: str, batches: dict[str, list[tuple[str, str | None]]]
) -> dict[str, object]:
    """A manifest document for ``batches``: batch id -> [(name, sha256 or None)]."""
    return {
        "version": MANIFEST_VERSION,
        "run_id": run_id,
        "batches": {
            batch_id: {
                "images": len(items),
                "objects": [
                    {"name": name, **({"sha256": sha} if sha else {})}
                    for name, sha in sorted(items)
                ],
            }
            for batch_id, items in sorted(batches.items())
        },
    }
