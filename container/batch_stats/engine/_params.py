"""Parameters of a batch statistics run, validated once when they are built."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

__all__ = ["MAX_SIDE", "EngineParams", "check_square_room"]

#: Largest image side accepted anywhere in the engine (generation and decoding). It keeps every
#: intermediate integer (placement weights, byte offsets) far inside int64.
MAX_SIDE = 16384


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineParams:
    """What a run draws, crops and generates, and the limits applied to uploaded images.

    ``image_height``, ``image_width``, ``images_per_batch`` and ``batches`` describe generated
    runs; uploaded images may have any size from the crop size up to ``max_image_pixels``.

    Raises:
        ValueError: a value is not a positive integer, or the shapes cannot work together (crop
            larger than the image, no room for two non-overlapping squares, image over the limit).
    """

    square_size: int = 50
    crop_height: int = 200
    crop_width: int = 200
    image_height: int = 256
    image_width: int = 512
    images_per_batch: int = 20
    batches: int = 5
    max_image_pixels: int = 4096 * 4096
    max_file_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field.name} must be a positive integer, got {value!r}")
        if self.batches > 999_999 or self.images_per_batch > 999_999:
            raise ValueError("batches and images_per_batch must be at most 999999")
        if self.max_image_pixels > MAX_SIDE * MAX_SIDE:
            raise ValueError(
                f"max_image_pixels must be at most {MAX_SIDE * MAX_SIDE} ({MAX_SIDE}x{MAX_SIDE}), "
                f"got {self.max_image_pixels}"
            )
        for name in ("image_height", "image_width"):
            if getattr(self, name) > MAX_SIDE:
                raise ValueError(f"{name} must be at most {MAX_SIDE}, got {getattr(self, name)}")
        if self.image_height * self.image_width > self.max_image_pixels:
            raise ValueError(
                f"a {self.image_height}x{self.image_width} image has more pixels than "
                f"max_image_pixels={self.max_image_pixels}"
            )
        if self.crop_height > self.image_height or self.crop_width > self.image_width:
            raise ValueError(
                f"the {self.crop_height}x{self.crop_width} crop does not fit in a "
                f"{self.image_height}x{self.image_width} image (height x width)"
            )
        check_square_room(self.image_height, self.image_width, self.square_size)

    def to_json(self) -> str:
        """The parameters as a compact JSON object (stored in the Parquet metadata)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EngineParams:
        """Inverse of :meth:`to_json`; unknown keys are an error."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"engine parameters must be a JSON object, got {text!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown engine parameters {unknown}; allowed: {sorted(known)}")
        return cls(**data)


def check_square_room(height: int, width: int, size: int) -> None:
    """Raise ValueError unless two non-overlapping ``size`` squares fit in the image."""
    if size > height or size > width:
        raise ValueError(
            f"a {size}x{size} square does not fit in a {height}x{width} image (height x width)"
        )
    if height < 2 * size and width < 2 * size:
        raise ValueError(
            f"no valid placement: two non-overlapping {size}x{size} squares need a height or a "
            f"width of at least {2 * size}, the image is {height}x{width} (height x width)"
        )
