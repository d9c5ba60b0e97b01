"""Augmentation of digit strips: per digit (elastic distortion, affine, stroke width) and per strip
(blur, Gaussian and salt-and-pepper noise, paper background and contrast, occlusion).

Everything is drawn from the caller's :class:`numpy.random.Generator` and vectorised over every
digit of a batch with numpy alone (no OpenCV or SciPy): the benchmark in
``benchmarks/bench_number_generator.py`` compares it with albumentations in the same run.

Per-digit geometry is applied to each MNIST glyph in its 28 x 28 frame before the strip is laid
out, so the spacing is still the gap between the (augmented) ink and each digit's box is the box
of its augmented ink. Strip effects change pixels, not geometry: the boxes stay those of the ink
as drawn (an occlusion may hide part of a digit inside its box).

>>> from number_generator import generate_numbers_sequence
>>> image = generate_numbers_sequence([0, 9, 0], (2, 6), 100, rng=0, augment="medium")
>>> image.dtype, float(image.min()) >= 0.0, float(image.max()) <= 1.0
(dtype('float32'), True, True)
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from number_generator._source import HEIGHT, DigitSource

__all__ = [
    "PRESETS",
    "Affine",
    "Augment",
    "AugmentLike",
    "Background",
    "Blur",
    "Elastic",
    "GaussianNoise",
    "Occlusion",
    "PresetName",
    "SaltPepper",
    "Stroke",
    "augment_strips",
    "resolve",
]

Range = tuple[float, float]
F32 = npt.NDArray[np.float32]
#: An alpha value (ink coverage, 0-1) at or above this counts as ink, for the crop and the boxes.
INK: Final = np.float32(1.0 / 255.0)


def _check_range(name: str, value: Range, lo: float, hi: float) -> None:
    a, b = value
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{name} must be a range (min, max) with {lo} <= min <= max <= {hi}; "
                         f"got {value}")  # fmt: skip


def _check_p(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}.p must be a probability in [0, 1], got {p}")


class _Op(ABC):
    """An augmentation: its ranges are checked when it is made."""

    @abstractmethod
    def check(self) -> None:
        """Implemented by every subclass."""

    def __post_init__(self) -> None:
        self.check()


@dataclass(frozen=True)
class Elastic(_Op):
    """Simard et al. (2003) elastic distortion, per digit: a random displacement field, smoothed
    with a Gaussian of ``sigma`` pixels and scaled by ``alpha`` (drawn from the range)."""

    p: float = 0.5
    alpha: Range = (0.0, 34.0)  # 0 - 60
    sigma: float = 4.0  # 2 - 8 pixels

    def check(self) -> None:
        _check_p("elastic", self.p)
        _check_range("elastic.alpha", self.alpha, 0.0, 60.0)
        if not 2.0 <= self.sigma <= 8.0:
            raise ValueError(f"elastic.sigma must be within 2-8 pixels, got {self.sigma}")


@dataclass(frozen=True)
class Affine(_Op):
    """Per digit: rotation (degrees), shear/slant (degrees from vertical), scale (factor)."""

    p: float = 0.7
    rotation: Range = (-10.0, 10.0)  # within -45 - 45
    shear: Range = (-15.0, 15.0)  # within -45 - 45
    scale: Range = (0.85, 1.1)  # within 0.5 - 1.4

    def check(self) -> None:
        _check_p("affine", self.p)
        _check_range("affine.rotation", self.rotation, -45.0, 45.0)
        _check_range("affine.shear", self.shear, -45.0, 45.0)
        _check_range("affine.scale", self.scale, 0.5, 1.4)


@dataclass(frozen=True)
class Stroke(_Op):
    """Per digit: stroke width, ``-1`` a full 3 x 3 erosion (thinner) to ``+1`` a full 3 x 3
    dilation (bolder), fractions blending linearly."""

    p: float = 0.5
    amount: Range = (-0.6, 0.8)  # within -1 - 1

    def check(self) -> None:
        _check_p("stroke", self.p)
        _check_range("stroke.amount", self.amount, -1.0, 1.0)


@dataclass(frozen=True)
class Blur(_Op):
    """Per strip: Gaussian blur of ``sigma`` pixels."""

    p: float = 0.3
    sigma: Range = (0.3, 1.0)  # within 0.1 - 2

    def check(self) -> None:
        _check_p("blur", self.p)
        _check_range("blur.sigma", self.sigma, 0.1, 2.0)


@dataclass(frozen=True)
class GaussianNoise(_Op):
    """Per strip: additive Gaussian noise of standard deviation ``sigma`` (image units)."""

    p: float = 0.5
    sigma: Range = (0.02, 0.08)  # within 0 - 0.3

    def check(self) -> None:
        _check_p("noise", self.p)
        _check_range("noise.sigma", self.sigma, 0.0, 0.3)


@dataclass(frozen=True)
class SaltPepper(_Op):
    """Per strip: this fraction of pixels set to black or white (half each)."""

    p: float = 0.2
    amount: Range = (0.002, 0.01)  # within 0 - 0.1

    def check(self) -> None:
        _check_p("salt_pepper", self.p)
        _check_range("salt_pepper.amount", self.amount, 0.0, 0.1)


@dataclass(frozen=True)
class Background(_Op):
    """Per strip: paper shade (white level), low-frequency paper texture (amplitude) and ink
    level (contrast: 0 is black ink)."""

    p: float = 0.6
    paper: Range = (0.85, 1.0)  # within 0.5 - 1
    texture: Range = (0.0, 0.06)  # within 0 - 0.2
    ink: Range = (0.0, 0.3)  # within 0 - 0.6

    def check(self) -> None:
        _check_p("background", self.p)
        _check_range("background.paper", self.paper, 0.5, 1.0)
        _check_range("background.texture", self.texture, 0.0, 0.2)
        _check_range("background.ink", self.ink, 0.0, 0.6)


@dataclass(frozen=True)
class Occlusion(_Op):
    """Per strip: one paper-coloured rectangle, ``height`` rows by ``width`` columns (pixels)."""

    p: float = 0.15
    height: Range = (2.0, 8.0)  # within 1 - 28
    width: Range = (4.0, 20.0)  # within 1 - 100

    def check(self) -> None:
        _check_p("occlusion", self.p)
        _check_range("occlusion.height", self.height, 1.0, 28.0)
        _check_range("occlusion.width", self.width, 1.0, 100.0)


@dataclass(frozen=True)
class Augment:
    """The augmentations and their probabilities. ``Augment()`` is the ``medium`` preset; set an
    entry to ``None`` to switch it off, or start from :data:`PRESETS`."""

    elastic: Elastic | None = field(default_factory=Elastic)
    affine: Affine | None = field(default_factory=Affine)
    stroke: Stroke | None = field(default_factory=Stroke)
    blur: Blur | None = field(default_factory=Blur)
    noise: GaussianNoise | None = field(default_factory=GaussianNoise)
    salt_pepper: SaltPepper | None = field(default_factory=SaltPepper)
    background: Background | None = field(default_factory=Background)
    occlusion: Occlusion | None = field(default_factory=Occlusion)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                value.check()

    @property
    def geometric(self) -> bool:
        return any(x is not None for x in (self.elastic, self.affine, self.stroke))


PresetName = Literal["light", "medium", "heavy"]
PRESETS: Final[dict[str, Augment]] = {
    "light": Augment(
        elastic=Elastic(p=0.3, alpha=(0.0, 20.0)),
        affine=Affine(p=0.5, rotation=(-5.0, 5.0), shear=(-8.0, 8.0), scale=(0.92, 1.05)),
        stroke=Stroke(p=0.3, amount=(-0.4, 0.5)),
        blur=Blur(p=0.15, sigma=(0.3, 0.6)),
        noise=GaussianNoise(p=0.3, sigma=(0.01, 0.04)),
        salt_pepper=None,
        background=Background(p=0.4, paper=(0.92, 1.0), texture=(0.0, 0.03), ink=(0.0, 0.15)),
        occlusion=None,
    ),
    "medium": Augment(),
    "heavy": Augment(
        elastic=Elastic(p=0.8, alpha=(10.0, 45.0)),
        affine=Affine(p=0.9, rotation=(-15.0, 15.0), shear=(-25.0, 25.0), scale=(0.75, 1.15)),
        stroke=Stroke(p=0.7, amount=(-0.8, 1.0)),
        blur=Blur(p=0.5, sigma=(0.4, 1.4)),
        noise=GaussianNoise(p=0.7, sigma=(0.03, 0.15)),
        salt_pepper=SaltPepper(p=0.4, amount=(0.005, 0.03)),
        background=Background(p=0.8, paper=(0.7, 1.0), texture=(0.02, 0.12), ink=(0.0, 0.45)),
        occlusion=Occlusion(p=0.35, height=(3.0, 12.0), width=(6.0, 30.0)),
    ),
}
AugmentLike = Augment | PresetName | None


def resolve(augment: AugmentLike | str) -> Augment | None:
    """An :class:`Augment` from a preset name, an Augment, or ``None`` (no augmentation)."""
    if augment is None or isinstance(augment, Augment):
        return augment
    if isinstance(augment, str) and augment in PRESETS:
        return PRESETS[augment]
    raise ValueError(
        f"augment must be one of {', '.join(PRESETS)}, an Augment or None; got {augment!r}"
    )


# --- per digit ---------------------------------------------------------------------------------

_GRID: Final = 7  # control points per axis of the elastic field (step 4.5 px)
_COORDS = np.arange(HEIGHT, dtype=np.float32)


def _field_basis(sigma: float) -> F32:
    """(28, 7): maps a 7 x 7 grid of white noise to a 28-pixel axis, smoothed by a Gaussian of
    ``sigma`` pixels (the Gaussian is wider than the grid step, so the field is as smooth as
    Simard's per-pixel one at a fraction of the cost)."""
    nodes = np.linspace(0, HEIGHT - 1, _GRID, dtype=np.float32)
    kernel = np.exp(-0.5 * ((_COORDS[:, None] - nodes[None, :]) / sigma) ** 2)
    # Simard's field: uniform(-1, 1) per pixel smoothed by a normalised 2-D Gaussian; its
    # variance is (1/3) / (4 pi sigma^2). B N B^T with 7 x 7 uniform(-1, 1) nodes N has variance
    # (1/3) |B_y|^2 |B_x|^2: scale each row of B to |B_y|^2 = 1 / (2 sqrt(pi) sigma).
    norm = np.sqrt((kernel**2).sum(axis=1, keepdims=True))
    out: F32 = (kernel / norm / np.sqrt(2.0 * np.sqrt(np.pi) * sigma)).astype(np.float32)
    return out


def augment_glyphs(alpha: F32, aug: Augment, gen: np.random.Generator) -> F32:
    """Per-digit augmentation of ink coverage images ``alpha`` (m, 28, 28), 1.0 = ink."""
    m = alpha.shape[0]
    if m == 0 or not aug.geometric:
        return alpha
    # Source coordinates of every output pixel, around the frame's centre.
    c = np.float32((HEIGHT - 1) / 2)
    ys = np.ascontiguousarray(np.broadcast_to(_COORDS[:, None] - c, (HEIGHT, HEIGHT)))
    xs = np.ascontiguousarray(np.broadcast_to(_COORDS[None, :] - c, (HEIGHT, HEIGHT)))
    if aug.affine is None:
        src_y = np.broadcast_to(ys, (m, HEIGHT, HEIGHT)).astype(np.float32)
        src_x = np.broadcast_to(xs, (m, HEIGHT, HEIGHT)).astype(np.float32)
    else:
        a = aug.affine
        chosen = gen.random(m) < a.p
        rot = np.radians(gen.uniform(*a.rotation, m)) * chosen
        shear = np.tan(np.radians(gen.uniform(*a.shear, m))) * chosen
        scale = np.where(chosen, gen.uniform(*a.scale, m), 1.0)
        # Output = S R H * source (H: slant x += shear * y); invert for the sampling map.
        cos, sin = np.cos(rot), np.sin(rot)
        m00, m01 = cos * scale, (cos * shear - sin) * scale
        m10, m11 = sin * scale, (sin * shear + cos) * scale
        det = m00 * m11 - m01 * m10
        i00, i01, i10, i11 = (v.astype(np.float32)[:, None, None]
                              for v in (m11 / det, -m01 / det, -m10 / det, m00 / det))  # fmt: skip
        src_x = i00 * xs + i01 * ys
        src_y = i10 * xs + i11 * ys
    if aug.elastic is not None:
        e = aug.elastic
        on = np.flatnonzero(gen.random(m) < e.p)
        if on.size:
            basis = _field_basis(e.sigma)
            noise = gen.uniform(-1.0, 1.0, (2, on.size, _GRID, _GRID)).astype(np.float32)
            fields = basis @ noise @ basis.T  # (2, k, 28, 28)
            strength = gen.uniform(*e.alpha, on.size).astype(np.float32)[:, None, None]
            src_x[on] += fields[0] * strength
            src_y[on] += fields[1] * strength
    out = _bilinear(alpha, src_y + c, src_x + c)
    if aug.stroke is not None:
        s = aug.stroke
        on = np.flatnonzero(gen.random(m) < s.p)
        if on.size:
            amount = gen.uniform(*s.amount, on.size).astype(np.float32)[:, None, None]
            part = out[on]
            grown = _filter3(part, np.maximum)
            shrunk = _filter3(part, np.minimum)
            out[on] = np.where(amount > 0, part + amount * (grown - part),
                               part + amount * (part - shrunk))  # fmt: skip
    return out


def _bilinear(images: F32, y: F32, x: F32) -> F32:
    """Sample (m, h, w) ``images`` at float coordinates, zero outside."""
    m, h, w = images.shape
    stride = (h + 2) * (w + 2)
    padded = np.zeros((m, h + 2, w + 2), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(-1)
    y = np.clip(y + np.float32(1), 0, np.float32(h + 0.999))
    x = np.clip(x + np.float32(1), 0, np.float32(w + 0.999))
    y0 = y.astype(np.int32)
    x0 = x.astype(np.int32)
    fy = y - y0
    fx = x - x0
    idx = y0 * (w + 2) + x0
    idx += (np.arange(m, dtype=np.int32) * stride)[:, None, None]
    tl = flat.take(idx)
    tr = flat.take(idx + 1)
    top = tl + fx * (tr - tl)
    idx += w + 2
    bl = flat.take(idx)
    br = flat.take(idx + 1)
    bottom = bl + fx * (br - bl)
    out: F32 = top + fy * (bottom - top)
    return out


def _filter3(images: F32, op: np.ufunc) -> F32:
    """3 x 3 max or min filter (zero outside), separable."""
    p = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    rows = op(op(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
    out: F32 = op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    return out


def crop_glyphs(
    alpha: F32,
) -> tuple[F32, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Shift each (m, 28, 28) glyph to start at its first ink column; its ink width, top, bottom.

    Values below the ink threshold are cleared, so the ink is exactly what the box covers.
    """
    alpha = np.where(alpha >= INK, np.clip(alpha, 0.0, 1.0), np.float32(0.0))
    cols = alpha.max(axis=1) > 0  # (m, 28)
    rows = alpha.max(axis=2) > 0
    empty = ~cols.any(axis=1)
    left = cols.argmax(axis=1)
    right = HEIGHT - cols[:, ::-1].argmax(axis=1)
    top = rows.argmax(axis=1)
    bottom = HEIGHT - rows[:, ::-1].argmax(axis=1)
    width = np.where(empty, 1, right - left).astype(np.int64)
    index = np.minimum(left[:, None] + np.arange(HEIGHT), HEIGHT - 1)
    shifted = np.take_along_axis(alpha, index[:, None, :], axis=2)
    shifted[np.broadcast_to(np.arange(HEIGHT)[None, None, :] >= width[:, None, None],
                            shifted.shape)] = 0  # fmt: skip
    return shifted, width, np.where(empty, 0, top), np.where(empty, 1, bottom)


def source_alpha(src: DigitSource, glyphs: npt.NDArray[np.int64]) -> F32:
    """The full 28 x 28 MNIST frames of ``glyphs`` (indices in digit-sorted order) as ink
    coverage, 1.0 = ink."""
    frames = src.images[src.order[glyphs]]
    out: F32 = frames.astype(np.float32) * np.float32(1.0 / 255.0)
    return out


# --- per strip ---------------------------------------------------------------------------------


def augment_strips(alpha: F32, aug: Augment, gen: np.random.Generator) -> F32:
    """Strip effects on ink coverage ``alpha`` (rows, 28, width): returns float32 images in
    [0, 1], dark ink on light paper."""
    rows, h, w = alpha.shape
    if aug.blur is not None:
        on = np.flatnonzero(gen.random(rows) < aug.blur.p)
        if on.size:
            alpha[on] = _gaussian_blur(alpha[on], gen.uniform(*aug.blur.sigma, on.size))
    if aug.background is not None:
        b = aug.background
        shaded = np.flatnonzero(gen.random(rows) < b.p)
        paper = np.ones((rows, 1, 1), dtype=np.float32)
        ink = np.zeros((rows, 1, 1), dtype=np.float32)
        paper[shaded, 0, 0] = gen.uniform(*b.paper, shaded.size)
        ink[shaded, 0, 0] = np.minimum(gen.uniform(*b.ink, shaded.size), paper[shaded, 0, 0] - 0.2)
        base = np.broadcast_to(paper, (rows, h, w)).copy()
        if shaded.size and b.texture[1] > 0:
            coarse = gen.uniform(-1.0, 1.0, (shaded.size, 4, max(2, w // 16 + 1)))
            amp = gen.uniform(*b.texture, shaded.size)[:, None, None]
            up_y = _interp_matrix(4, h)
            up_x = _interp_matrix(coarse.shape[2], w)
            base[shaded] += up_y @ (coarse * amp).astype(np.float32) @ up_x.T
        # paper where alpha is 0, the ink level where alpha is 1
        image = base - alpha * (base - ink)
    else:
        paper = np.ones((rows, 1, 1), dtype=np.float32)
        image = 1.0 - alpha
    image = image.astype(np.float32, copy=False)
    if aug.noise is not None:
        on = np.flatnonzero(gen.random(rows) < aug.noise.p)
        if on.size:
            sigma = gen.uniform(*aug.noise.sigma, on.size).astype(np.float32)[:, None, None]
            image[on] += gen.standard_normal((on.size, h, w), dtype=np.float32) * sigma
    if aug.salt_pepper is not None:
        on = np.flatnonzero(gen.random(rows) < aug.salt_pepper.p)
        if on.size:
            amount = gen.uniform(*aug.salt_pepper.amount, on.size)[:, None, None]
            u = gen.random((on.size, h, w), dtype=np.float32)
            part = image[on]
            part[u < amount / 2] = 0.0
            part[(u >= amount / 2) & (u < amount)] = 1.0
            image[on] = part
    if aug.occlusion is not None:
        o = aug.occlusion
        for r in np.flatnonzero(gen.random(rows) < o.p).tolist():
            oh = min(h, round(gen.uniform(*o.height)))
            ow = min(w, round(gen.uniform(*o.width)))
            y0 = int(gen.integers(0, h - oh + 1))
            x0 = int(gen.integers(0, w - ow + 1))
            image[r, y0 : y0 + oh, x0 : x0 + ow] = paper[r, 0, 0]
    np.clip(image, 0.0, 1.0, out=image)
    return image


def _interp_matrix(n: int, size: int) -> F32:
    """(size, n) linear interpolation from ``n`` evenly spaced nodes to ``size`` pixels."""
    pos = np.linspace(0, n - 1, size)
    lo = np.minimum(pos.astype(np.int64), n - 2)
    frac = pos - lo
    out = np.zeros((size, n), dtype=np.float32)
    out[np.arange(size), lo] = 1 - frac
    out[np.arange(size), lo + 1] = frac
    return out


def _gaussian_blur(images: F32, sigma: npt.NDArray[np.float64]) -> F32:
    """Separable Gaussian blur, one sigma per image (radius 3 sigma, at most 6 px)."""
    radius = int(min(6, np.ceil(3 * sigma.max())))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    _, h, w = images.shape
    p = np.pad(images, ((0, 0), (0, 0), (radius, radius)))
    out = np.zeros_like(images)
    for k in range(offsets.size):
        out += weights[:, k, None, None] * p[:, :, k : k + w]
    p = np.pad(out, ((0, 0), (radius, radius), (0, 0)))
    out = np.zeros_like(images)
    for k in range(offsets.size):
        out += weights[:, k, None, None] * p[:, k : k + h, :]
    return out
