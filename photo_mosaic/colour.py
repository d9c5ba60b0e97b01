"""CIELAB colour descriptors of thumbnails and target cells (pure numpy)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["block_descriptors", "srgb_to_lab"]

# sRGB (D65) to CIE XYZ, IEC 61966-2-1.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def _linearize(c: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4))


# The sRGB transfer curve for the 256 values of an 8-bit channel (the same numbers the formula
# gives, looked up instead of one power per pixel).
_LINEAR_U8 = _linearize(np.arange(256, dtype=np.float64) / 255.0)


def srgb_to_lab(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Convert 8-bit sRGB (last axis of length 3) to CIELAB (D65 white, L* in [0, 100])."""
    arr = np.asarray(rgb)
    if arr.shape[-1:] != (3,):
        raise ValueError(f"expected RGB values in the last axis (length 3), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        linear = _LINEAR_U8[arr]
    else:
        linear = _linearize(arr.astype(np.float64) / 255.0)
    xyz = (linear @ _RGB_TO_XYZ.T) / _WHITE_D65
    delta = 6.0 / 29.0
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return np.asarray(lab, dtype=np.float64)


def block_descriptors(images: npt.NDArray[np.uint8], grid: int) -> npt.NDArray[np.float64]:
    """Mean CIELAB colour of each block of a ``grid x grid`` split of square images.

    Args:
        images: uint8 RGB images, shape ``(n, size, size, 3)`` with ``size`` divisible by ``grid``.
        grid: blocks per side (1: one mean colour per image).

    Returns:
        float64 array of shape ``(n, grid * grid * 3)``.
    """
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"expected square RGB images of shape (n, s, s, 3), got {arr.shape}")
    size = arr.shape[1]
    if grid < 1 or size % grid:
        raise ValueError(f"grid must be a positive divisor of the image size {size}, got {grid}")
    lab = srgb_to_lab(arr)
    b = size // grid
    blocks = lab.reshape(arr.shape[0], grid, b, grid, b, 3).mean(axis=(2, 4))
    return np.asarray(blocks.reshape(arr.shape[0], grid * grid * 3), dtype=np.float64)
