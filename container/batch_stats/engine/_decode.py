"""Decoding uploaded files: PNG only, checked before and while decoding.

Mode policy (the colour type and bit depth are read from the PNG header before decoding):

* 8-bit RGB: used as is.
* Grayscale (1, 2, 4 or 8 bits) and palette images: converted to RGB. Lossless and well defined:
  a gray level ``g`` becomes ``(g, g, g)`` (low bit depths are scaled to 0..255 by the PNG rules,
  so black stays 0 and white becomes 255) and a palette index becomes its palette colour.
* With an alpha channel or a transparency chunk (RGBA, gray + alpha, palette or colour-key
  transparency): accepted only when every pixel is fully opaque, then the alpha is dropped.
  Transparent pixels have no defined colour to count, so such files are rejected.
* 16-bit channels: rejected. Reducing them to 8 bits is lossy and would change which pixels count as
  white or black.
* Animated PNGs (several frames) and any other format (JPEG, GIF, ...): rejected.

Structure (see ``_png``): every chunk but the image data must match its CRC, a palette must match
the colour type, and the image data must hold exactly the rows the header declares with a valid
zlib checksum; otherwise ``truncated`` or ``corrupt``. Pillow alone would fill missing rows with
black without an error.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import numpy.typing as npt
from PIL import Image

from ._errors import ImageRejected
from ._params import MAX_SIDE, EngineParams, check_square_room
from ._png import CHANNELS, check_image_data, decode_rgb8, pixel_words, read_chunks

__all__ = ["PNG_SIGNATURE", "ImageRejected", "decode_image"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale + alpha", 6: "RGBA"}
_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ALLOWED = (
    "allowed: PNG, 8-bit RGB, or grayscale/palette/RGBA that converts to RGB without loss "
    "(fully opaque)"
)


def _header(data: bytes, name: str) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the IHDR chunk, which must come first."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        raise ImageRejected(name, "corrupt", "the PNG header (IHDR chunk) is missing or damaged")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if zlib.crc32(data[12:29]) != struct.unpack(">I", data[29:33])[0]:
        raise ImageRejected(name, "corrupt", "the PNG header (IHDR chunk) fails its checksum")
    if colour not in _COLOUR_TYPES or depth not in _BIT_DEPTHS[colour]:
        raise ImageRejected(
            name, "corrupt", f"invalid PNG colour type {colour} with bit depth {depth}"
        )
    compression, filtering, interlace = data[26:29]
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise ImageRejected(
            name,
            "corrupt",
            f"invalid PNG header: compression method {compression}, filter method {filtering}, "
            f"interlace method {interlace} (allowed: 0, 0, and 0 or 1)",
        )
    return width, height, depth, colour


def decode_image(data: bytes, *, name: str, params: EngineParams) -> npt.NDArray[np.uint8]:
    """Decode an uploaded PNG into a read-only ``(height, width, 3)`` uint8 RGB array.

    Size limits (file bytes, pixel count) are checked from the header before anything is
    decompressed. See the module docstring for the mode policy.

    Raises:
        ImageRejected: the file is not processed; ``reason`` says why.
    """
    if not data:
        raise ImageRejected(name, "empty", "the file is empty; a PNG image is expected")
    if len(data) > params.max_file_bytes:
        raise ImageRejected(
            name,
            "too_large",
            f"the file has {len(data)} bytes; at most {params.max_file_bytes} are allowed",
        )
    if not data.startswith(PNG_SIGNATURE):
        raise ImageRejected(
            name, "not_png", "not a PNG file (no PNG signature); only PNG images are accepted"
        )
    width, height, depth, colour = _header(data, name)
    if width * height > params.max_image_pixels:
        raise ImageRejected(
            name,
            "decompression_bomb",
            f"the header declares {width}x{height} = {width * height} pixels; at most "
            f"{params.max_image_pixels} are allowed",
        )
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageRejected(
            name,
            "too_large",
            f"the image is {height}x{width} (height x width); each side may be at most {MAX_SIDE}",
        )
    if depth == 16:
        raise ImageRejected(
            name,
            "unsupported_mode",
            f"16-bit {_COLOUR_TYPES[colour]} PNG; converting to 8 bits would change which pixels "
            f"are white or black ({_ALLOWED})",
        )
    if height < params.crop_height or width < params.crop_width:
        raise ImageRejected(
            name,
            "too_small",
            f"the image is {height}x{width}, smaller than the {params.crop_height}x"
            f"{params.crop_width} crop (height x width)",
        )
    try:
        check_square_room(height, width, params.square_size)
    except ValueError as error:
        raise ImageRejected(name, "too_small", str(error)) from None
    chunks = read_chunks(data, name)
    if chunks.has_palette != (colour == 3) and not (chunks.has_palette and colour in (2, 6)):
        # The palette is required for palette images, allowed (as a hint) for RGB and RGBA, and
        # forbidden for grayscale: a header that names the wrong colour type is caught here.
        raise ImageRejected(
            name,
            "corrupt",
            f"a {_COLOUR_TYPES[colour]} PNG "
            + ("without a palette (PLTE chunk)" if colour == 3 else "with a palette (PLTE chunk)"),
        )
    interlaced = data[28] == 1
    if colour == 2 and depth == 8 and not interlaced and not chunks.full_reader_kinds:
        return decode_rgb8(chunks.image_data, name=name, width=width, height=height)
    # Other modes, interlaced images and the rare cases the fast path leaves open: the whole
    # stream is inflated once here to check its length and checksum, then Pillow decodes it.
    check_image_data(
        chunks.image_data,
        name=name,
        width=width,
        height=height,
        bits_per_pixel=depth * CHANNELS[colour],
        interlaced=interlaced,
    )
    return _decode_pixels(data, name, colour)


def _decode_pixels(data: bytes, name: str, colour: int) -> npt.NDArray[np.uint8]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                if getattr(image, "n_frames", 1) > 1:
                    raise ImageRejected(
                        name, "animated", f"animated PNGs are not accepted ({_ALLOWED})"
                    )
                image.load()
                return _to_rgb(image, name, colour)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(name, "decompression_bomb", str(error)) from None
    except (OSError, SyntaxError, ValueError, zlib.error, EOFError) as error:
        message = str(error) or type(error).__name__
        reason = "truncated" if "truncated" in message else "corrupt"
        raise ImageRejected(name, reason, f"the PNG data cannot be decoded ({message})") from None


def _to_rgb(image: Image.Image, name: str, colour: int) -> npt.NDArray[np.uint8]:
    has_transparency = colour in (4, 6) or "transparency" in image.info
    if has_transparency:
        rgba = np.asarray(image.convert("RGBA"))
        if not (rgba[..., 3] == 255).all():
            raise ImageRejected(
                name,
                "transparent",
                f"the {_COLOUR_TYPES[colour]} image has transparent pixels, whose colour is "
                f"undefined ({_ALLOWED})",
            )
        return rgba[..., :3]
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = _rgb_pixels(image)
    if array.dtype != np.uint8 or array.shape[2:] != (3,):  # pragma: no cover - defensive
        raise ImageRejected(name, "unsupported_mode", f"unexpected decoded mode {image.mode}")
    return array


def _rgb_pixels(image: Image.Image) -> npt.NDArray[np.uint8]:
    """A read-only ``(height, width, 3)`` view of a loaded RGB image's pixels, without a copy.

    Pillow stores an RGB pixel in 4 bytes (R, G, B, padding); the view skips the padding byte.
    Images too large to export as one array are copied out with ``np.asarray`` instead.
    """
    words = pixel_words(image)
    if words is None:
        return np.asarray(image)
    pixels = words[..., :3]
    pixels.flags.writeable = False
    return pixels
