"""The batch statistics engine: pure image processing (numpy, Pillow, pyarrow), no cloud I/O.

Per image: two non-overlapping squares (white, then black) placed uniformly over all valid
placements, a uniformly placed crop, and exact white/black pixel counts inside the crop. Per batch:
mean, min, max and sample standard deviation of the counts. Results go to a Parquet file with a
fixed schema and the definitions in its metadata.

Every random choice comes from a per-image numpy generator derived from the run seed, so results do
not depend on processing order or concurrency.
"""

from ._counting import (
    ImagePlan,
    count_crop,
    count_white_black,
    draw_plan,
    process_image,
    synthetic_counts,
)
from ._decode import ImageRejected, decode_image
from ._geometry import Placement, UniformIntegers, count_valid_pairs, draw_crop, draw_squares
from ._params import EngineParams
from ._parquet import (
    COLUMNS,
    DEFINITIONS,
    SCHEMA,
    SchemaError,
    read_batch_stats,
    run_metadata,
    write_batch_stats,
)
from ._report import format_table
from ._runs import (
    FolderRun,
    iter_folder_stats,
    iter_synthetic_stats,
    scan_run_folder,
    utf8_name,
    write_synthetic_run,
)
from ._seeding import image_rng, run_seed
from ._stats import BatchStats, summarize_batch
from ._synthetic import batch_ids, image_names, synthetic_image

__all__ = [
    "COLUMNS",
    "DEFINITIONS",
    "SCHEMA",
    "BatchStats",
    "EngineParams",
    "FolderRun",
    "ImagePlan",
    "ImageRejected",
    "Placement",
    "SchemaError",
    "UniformIntegers",
    "batch_ids",
    "count_crop",
    "count_valid_pairs",
    "count_white_black",
    "decode_image",
    "draw_crop",
    "draw_plan",
    "draw_squares",
    "format_table",
    "image_names",
    "image_rng",
    "iter_folder_stats",
    "iter_synthetic_stats",
    "process_image",
    "read_batch_stats",
    "run_metadata",
    "run_seed",
    "scan_run_folder",
    "summarize_batch",
    "synthetic_counts",
    "synthetic_image",
    "utf8_name",
    "write_batch_stats",
    "write_synthetic_run",
]
