"""Where a camera's results go: `/<ns>/image_raw` → `/<ns>/scene/...`.

Why one function: the live node and the offline bag tool must publish a camera's results on the same
topics, so a processed bag replays exactly like a live run and `search` finds what the node wrote.
ROS-free and pure (no rclpy, no I/O).
"""

from __future__ import annotations

__all__ = ["SCENE", "output_namespace", "output_topic"]

SCENE = "scene"


def output_namespace(topic: str) -> str:
    """The results namespace of an image topic.

    Rule: strip a trailing `/compressed` (image_transport's suffix), then drop the last path
    component (`image_raw`, `image_rect_color`, `image`, ...) and append `/scene`.
    `/cam/front/image_raw/compressed` → `/cam/front/scene`; `/image_raw` → `/scene`.
    Relative names stay relative (`camera/image` → `camera/scene`, `image` → `scene`).
    """
    if not isinstance(topic, str) or not topic.strip("/ "):
        raise ValueError(f"not an image topic name: {topic!r}")
    name = topic.strip()
    absolute = name.startswith("/")
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1 and parts[-1] == "compressed":
        parts.pop()
    parts = [*parts[:-1], SCENE]
    joined = "/".join(parts)
    return "/" + joined if absolute else joined


def output_topic(topic: str, leaf: str) -> str:
    """A result topic of an image topic: `output_topic('/cam/image_raw', 'similarity')` →
    `/cam/scene/similarity`."""
    leaf = leaf.strip("/")
    if not leaf:
        raise ValueError("result topic leaf must not be empty")
    return f"{output_namespace(topic)}/{leaf}"
