"""Message types of bags: the standard ROS 2 definitions plus ours, read from the .msg files.

Why from the .msg files: `rosbags` (de)serializes CDR without ROS, but needs the definitions of
`av_scene_vlm_msgs`; they are located (source tree, ament index, venv share), never copied, so they
cannot drift from what the nodes publish.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BagError

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

MSG_PACKAGE = "av_scene_vlm_msgs"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
CLASSIFICATION = f"{MSG_PACKAGE}/msg/Classification"
CLASSIFICATION_ARRAY = f"{MSG_PACKAGE}/msg/ClassificationArray"
SIMILARITY = f"{MSG_PACKAGE}/msg/Similarity"
CAPTION = f"{MSG_PACKAGE}/msg/Caption"
LABEL_INFO = f"{MSG_PACKAGE}/msg/LabelInfo"
TASK_INFO = f"{MSG_PACKAGE}/msg/TaskInfo"

# Leaf names under `<ns>/scene/`, as the live node publishes them.
LEAVES = {"classification": CLASSIFICATION_ARRAY, "similarity": SIMILARITY, "caption": CAPTION}
LABELS_LEAF = "labels"

MSGS_DIR_ENV = "AV_SCENE_VLM_MSGS_DIR"
"""Environment variable naming the directory with our .msg files (overrides the search)."""

BAG_VERSION = 8
STORAGES = ("sqlite3", "mcap")
# Preference for the base typestore (standard message definitions and RIHS01 hashes): the project's
# distro first; rosbags versions without it fall back to older ones.
_STORE_PREFERENCE = ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE")


def find_msg_dir(explicit: str | Path | None = None) -> Path:
    """Locate the `av_scene_vlm_msgs/msg` directory holding our .msg files.

    Order: `explicit`, `$AV_SCENE_VLM_MSGS_DIR`, the source tree (`<repo>/av_scene_vlm_msgs/msg`
    next to this package), the ament index (an installed workspace), `<sys.prefix>/share/...`
    (the venv build). The .msg files are located, never copied, so they cannot drift.
    """
    tried: list[str] = []

    def ok(p: Path) -> bool:
        tried.append(str(p))
        return p.is_dir() and (p / "ClassificationArray.msg").is_file()

    if explicit is not None:
        p = Path(explicit)
        if ok(p):
            return p
        raise BagError(f"message directory '{p}' does not contain {MSG_PACKAGE}'s .msg files")
    env = os.environ.get(MSGS_DIR_ENV)
    if env and ok(Path(env)):
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if ok(parent / MSG_PACKAGE / "msg"):
            return parent / MSG_PACKAGE / "msg"
    try:  # an installed ROS workspace; optional, so imported lazily
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory(MSG_PACKAGE)) / "msg"
        if ok(share):
            return share
    except Exception:  # not installed, not on AMENT_PREFIX_PATH, or no ament_index_python
        pass
    for prefix in dict.fromkeys([sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]):
        if prefix and ok(Path(prefix) / "share" / MSG_PACKAGE / "msg"):
            return Path(prefix) / "share" / MSG_PACKAGE / "msg"
    raise BagError(
        f"cannot find the {MSG_PACKAGE} message definitions (looked in: {', '.join(tried)}); "
        f"build/install {MSG_PACKAGE} or set {MSGS_DIR_ENV} to its msg/ directory"
    )


@lru_cache(maxsize=4)
def _typestore_for(msg_dir: str) -> Typestore:
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    name = next((n for n in _STORE_PREFERENCE if hasattr(Stores, n)), "LATEST")
    store = get_typestore(getattr(Stores, name))
    types: dict = {}
    for path in sorted(Path(msg_dir).glob("*.msg")):
        try:
            types.update(get_types_from_msg(path.read_text(), f"{MSG_PACKAGE}/msg/{path.stem}"))
        except Exception as exc:
            raise BagError(f"cannot parse message definition '{path}': {exc}") from None
    store.register(types)
    return store


def bag_typestore(msg_dir: str | Path | None = None) -> Typestore:
    """A rosbags typestore with the standard ROS 2 types plus ours (cached per msg directory)."""
    return _typestore_for(str(find_msg_dir(msg_dir).resolve()))
