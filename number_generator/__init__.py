"""Images of digit sequences built from real MNIST handwritten digits.

>>> from number_generator import generate_numbers_sequence
>>> image = generate_numbers_sequence([0, 9, 0], spacing_range=(2, 6), image_width=100, rng=0)
>>> image.shape, image.dtype
((28, 100), dtype('float32'))

The MNIST database (Yann LeCun and Corinna Cortes) is used under the Creative Commons
Attribution-Share Alike 3.0 licence; its test set ships inside this package.
"""

from number_generator._dataset import (
    write_phone_dataset,
    write_phone_splits,
    write_sequence_dataset,
)
from number_generator._download import download_mnist
from number_generator._idx import IDXFormatError, read_idx
from number_generator._phone import (
    JAPANESE_FORMATS,
    MAX_LIST_COUNT,
    PhoneFormat,
    PhoneNumber,
    generate_phone_numbers,
    iter_phone_numbers,
)
from number_generator._png import save_png
from number_generator._sequence import (
    MAX_BATCH_PIXELS,
    MAX_IMAGE_WIDTH,
    ArgumentTypeError,
    LabelledBatch,
    LabelledImage,
    SpacingBiasWarning,
    generate_numbers_batch,
    generate_numbers_sequence,
)
from number_generator._source import (
    DigitSource,
    cache_dir,
    clear_source_cache,
    load_source,
    split_sources,
)

__all__ = [
    "JAPANESE_FORMATS",
    "MAX_BATCH_PIXELS",
    "MAX_IMAGE_WIDTH",
    "MAX_LIST_COUNT",
    "ArgumentTypeError",
    "DigitSource",
    "IDXFormatError",
    "LabelledBatch",
    "LabelledImage",
    "PhoneFormat",
    "PhoneNumber",
    "SpacingBiasWarning",
    "cache_dir",
    "clear_source_cache",
    "download_mnist",
    "generate_numbers_batch",
    "generate_numbers_sequence",
    "generate_phone_numbers",
    "iter_phone_numbers",
    "load_source",
    "read_idx",
    "save_png",
    "split_sources",
    "write_phone_dataset",
    "write_phone_splits",
    "write_sequence_dataset",
]
