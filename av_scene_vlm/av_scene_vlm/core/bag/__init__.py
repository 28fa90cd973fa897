"""Offline processing of recorded drives (ROS 2 bags) and text search over them, without ROS.

Why: a vehicle records hours of camera data; labelling or searching it must not need a live graph,
nor real time. `process_bag` reads a rosbag2 bag (sqlite3 or mcap) with the pure-Python `rosbags`
library, classifies every frame as fast as the hardware allows (batched), and writes a NEW bag with
every original message plus the results the live node would have published, on the same topics
(`core.naming`) and with the source image's header — so replaying the processed bag looks exactly
like a live run. `search_bag` ranks frames by CLIP similarity with a sentence, using the stored
embeddings of a processed bag when it has them. The fleet index (`core.fleet`) reads bags with the
same modules.

Modules, one concern each: `typestore` (message definitions), `reading` (open, pick topics, decode),
`prefetch` (read ahead on a thread), `captions` (caption schedule), `writing` (output bags),
`summary` (per-frame CSV/JSON), `process` (`process_bag` as stages), `search` (`search_bag`).

Conventions:
- Output topics per camera `<ns>/scene/`: `classification` (ClassificationArray, one per frame),
  `similarity` (Similarity with `image_embedding`), `caption` (Caption, only with a captioner) and
  `labels` (LabelInfo, once per camera at its first frame, offered transient-local like the node's).
- Each result's record (bag) timestamp is its source image's record timestamp; results are written
  right after their image, so the output keeps the input's order.
- Output bags are rosbag2 version 8 (readable by Humble through Kilted; version 9 only changes the
  QoS encoding) in the input's storage format unless `storage` says otherwise.
- Nothing partial is left behind: the bag is written under a hidden temporary directory next to the
  output and renamed into place on success; on any failure the temporary directory is removed, and
  one left by a run that was killed is removed by the next run for the same output. A failure to
  write (disk full, read-only directory) is `OutputError`.
- The summary file (`summary_path`, `.csv` or `.json`) has one row per classified frame; none is
  written when `summary_path` is None (the CLI defaults it to `<OUT_BAG>.csv`).
"""

from .errors import BagError, InputError, OutputError
from .process import BagSummary, process_bag
from .search import Match, recorded_model, search_bag
from .typestore import (
    CAPTION,
    CLASSIFICATION_ARRAY,
    COMPRESSED_IMAGE,
    IMAGE,
    IMAGE_TYPES,
    LABEL_INFO,
    MSGS_DIR_ENV,
    SIMILARITY,
    bag_typestore,
    find_msg_dir,
)

# Kept importable from here for existing callers (tests of the copy rules).
from .writing import UNKNOWN_HASH as _UNKNOWN_HASH  # noqa: F401
from .writing import definition as _definition  # noqa: F401

__all__ = [
    "CAPTION",
    "CLASSIFICATION_ARRAY",
    "COMPRESSED_IMAGE",
    "IMAGE",
    "IMAGE_TYPES",
    "LABEL_INFO",
    "MSGS_DIR_ENV",
    "SIMILARITY",
    "BagError",
    "BagSummary",
    "InputError",
    "Match",
    "OutputError",
    "bag_typestore",
    "find_msg_dir",
    "process_bag",
    "recorded_model",
    "search_bag",
]
