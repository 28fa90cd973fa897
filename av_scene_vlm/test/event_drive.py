"""The synthetic drive of the scene-events tests: frames whose scene changes (bright dry day <-> dark
rainy night), their stamps, the event thresholds measured on the tiny CLIP, and the drive as a bag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from av_scene_vlm.core.bag.typestore import IMAGE, bag_typestore
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.synthetic import drive_frame
from av_scene_vlm.core.tasks import parse_tasks_yaml
from fleet_bags import header as bag_header
from fleet_bags import raw_image
from rosbags.rosbag2 import Writer

TASKS = "weather: [clear, rain]\ntime_of_day: [day, night]\n"
CAMERA = "/front/image_raw"
NS = "/front/scene"
T0 = 1_700_000_000
STEP_NS = 250_000_000  # 4 frames per second of stamps
# The drive: (scene, frames). Short rain (0.75 s < min_duration) starts nothing; a short dry spell
# inside the rain (0.5 s < min_gap) does not end it.
SEGMENTS = [
    ("dry", 6),
    ("wet", 8),
    ("dry", 6),
    ("wet", 3),
    ("dry", 6),
    ("wet", 8),
    ("dry", 2),
    ("wet", 4),
    ("dry", 6),
]
# The intervals every path must find: (START frame, END frame, duration s). START at the 5th frame
# (1.0 s) of rain, END at the 5th frame (1.0 s) of dry weather; the second spans the short dry spell.
INTERVALS = [(10, 18, 2.0), (33, 47, 3.5)]


def drive_frames() -> list[np.ndarray]:
    """The synthetic drive, frame by frame, exposed as a bright dry day or a dark rainy night per
    SEGMENTS: the tiny random CLIP tells those two apart (rain ~0.04 vs ~0.997), not the drive's own
    dusk and rain."""
    scenes = [s for s, n in SEGMENTS for _ in range(n)]
    out = []
    for k, scene in enumerate(scenes):
        rgb = drive_frame(k, len(scenes), 96, 128).astype(np.float32)
        out.append((rgb * 0.3 + 175 if scene == "dry" else rgb * 0.25).clip(0, 255).astype(np.uint8))
    return out


def measured_events(model: Path, frames: list[np.ndarray]) -> str:
    """The events YAML, with thresholds between what the tiny model gives the two scenes (its
    probabilities are its own, so the thresholds are measured, with a margin asserted)."""
    engine = ZeroShotEngine(str(model), tasks=parse_tasks_yaml(TASKS))
    rain = [r.tasks[0].probabilities[1] for r in engine.classify(frames)]
    scenes = [s for s, n in SEGMENTS for _ in range(n)]
    dry_max = max(p for p, s in zip(rain, scenes, strict=True) if s == "dry")
    wet_min = min(p for p, s in zip(rain, scenes, strict=True) if s == "wet")
    assert wet_min - dry_max > 0.2, (dry_max, wet_min)
    on, off = dry_max + 0.6 * (wet_min - dry_max), dry_max + 0.4 * (wet_min - dry_max)
    return (
        f"wet: {{when: {{weather: rain}}, on: {on:.6f}, off: {off:.6f}, min_duration: 1.0, min_gap: 1.0}}\n"
    )


def stamp(i: int) -> tuple[int, int]:
    ns = T0 * 1_000_000_000 + i * STEP_NS
    return ns // 1_000_000_000, ns % 1_000_000_000


def stamp_ns(i: int) -> int:
    sec, nanosec = stamp(i)
    return sec * 1_000_000_000 + nanosec


def write_drive_bag(path: Path, frames: list[np.ndarray]) -> Path:
    store = bag_typestore()
    writer = Writer(path, version=8)
    writer.open()
    conn = writer.add_connection(CAMERA, IMAGE, typestore=store)
    for i, rgb in enumerate(frames):
        sec, nanosec = stamp(i)
        msg, _ = raw_image(store, rgb, "rgb8", bag_header(store, sec, nanosec, f"f{i}"))
        writer.write(conn, sec * 1_000_000_000 + nanosec, store.serialize_cdr(msg, IMAGE))
    writer.close()
    return path


def drive_setup(root: Path, model: Path) -> tuple[list[np.ndarray], str, Path]:
    """The frames, the events YAML, and the drive as a bag under `root`/bags beside `root`/events.yaml
    and `root`/tasks.yaml."""
    frames = drive_frames()
    events = measured_events(model, frames)
    (root / "events.yaml").write_text(events)
    (root / "tasks.yaml").write_text(TASKS)
    return frames, events, write_drive_bag(root / "bags" / "drive", frames)
