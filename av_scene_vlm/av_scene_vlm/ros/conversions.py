"""Message <-> array/result conversions: the only place that knows both ROS messages and the core.

The data path reads straight through: Image/CompressedImage -> RGB array -> engine -> FrameResult ->
ClassificationArray / Similarity / heatmap Image, each output carrying the source header unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

if TYPE_CHECKING:  # annotations only: caption_node needs no CLIP engine (torchvision) import
    from av_scene_vlm.core.engine import FrameResult
from av_scene_vlm.core.image_codec import (
    DEFAULT_MAX_FRAME_PIXELS,
    ImageDecodeError,
    check_compressed,
    check_raw_fields,
    decode_compressed,
    decode_raw,
)
from av_scene_vlm.core.tasks import Task, expand_prompts
from av_scene_vlm_msgs.msg import (
    Caption,
    Classification,
    ClassificationArray,
    LabelInfo,
    Similarity,
    TaskInfo,
)


def _ros2_cv_bridge():  # -> CvBridge | None
    """ROS 2 cv_bridge where a ROS install provides it, checked on a 2×1 frame (the PyPI 'cv-bridge'
    is the ROS 1 package and must not be used); None means the built-in codec decodes everything."""
    try:
        from cv_bridge import CvBridge

        bridge = CvBridge()
        probe = Image(height=1, width=2, encoding="bgr8", step=6, data=bytes([1, 2, 3, 4, 5, 6]))
        rgb = bridge.imgmsg_to_cv2(probe, desired_encoding="rgb8")
        if rgb.shape != (1, 2, 3) or rgb[0, 0].tolist() != [3, 2, 1]:
            return None
        return bridge
    except Exception:
        return None


_BRIDGE = _ros2_cv_bridge()


def check_frame(msg: Image | CompressedImage, max_pixels: int = DEFAULT_MAX_FRAME_PIXELS) -> None:
    """Refuse a frame whose size fields or compressed header claim more than `max_pixels`, or more
    bytes than it carries (ImageDecodeError), without decoding it: O(1) for Image, the header for
    CompressedImage, so a subscription callback can run it on every message."""
    if isinstance(msg, CompressedImage):
        check_compressed(msg.format, msg.data, max_pixels=max_pixels)
    else:
        check_raw_fields(msg.height, msg.width, msg.step, msg.data, max_pixels=max_pixels)


def image_to_rgb(
    msg: Image | CompressedImage,
    *,
    use_cv_bridge: bool = False,
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> np.ndarray:
    """Decode a sensor_msgs Image or CompressedImage into H×W×3 uint8 RGB.

    Raises ImageDecodeError for anything malformed (sizes, step, data length, encoding, corrupt JPEG)
    or larger than `max_pixels`, before any allocation of the frame's size.
    """
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.format, msg.data, max_pixels=max_pixels)
    if use_cv_bridge and _BRIDGE is not None:
        check_raw_fields(msg.height, msg.width, msg.step, msg.data, max_pixels=max_pixels)
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as exc:  # CvBridgeError, cv2.error, numpy buffer errors: all mean a bad frame
            raise ImageDecodeError(f"cv_bridge could not convert the image: {exc}") from None
    return decode_raw(
        msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data, max_pixels=max_pixels
    )


def cv_bridge_available() -> bool:
    return _BRIDGE is not None


def bgr_to_image(bgr: np.ndarray, header: Header) -> Image:
    """A bgr8 sensor_msgs/Image with the given (source) header."""
    h, w = bgr.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding="bgr8", is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(bgr).tobytes()
    return msg


def to_classification_array(
    header: Header,
    result: FrameResult,
    model_id: str,
    probabilities: Sequence[np.ndarray] | None = None,
) -> ClassificationArray:
    """One ClassificationArray for a frame; `probabilities` overrides (e.g. EMA-smoothed) per task."""
    out = ClassificationArray(header=header)
    for k, task in enumerate(result.tasks):
        probs = task.probabilities if probabilities is None else probabilities[k]
        top = int(np.argmax(probs))
        out.results.append(
            Classification(
                header=header,
                task=task.task,
                labels=list(task.labels),
                probabilities=[float(p) for p in probs],
                top_label=task.labels[top],
                top_probability=float(probs[top]),
                model_id=model_id,
                inference_latency=float(result.latency),
            )
        )
    return out


def to_similarity(
    header: Header, result: FrameResult, model_id: str, logit_scale: float, *, embedding: bool
) -> Similarity:
    """Cosines of every label of every task (flattened in task order) and optionally the embedding."""
    msg = Similarity(header=header, model_id=model_id, logit_scale=float(logit_scale))
    for task in result.tasks:
        msg.texts.extend(task.labels)
        msg.tasks.extend([task.task] * len(task.labels))
    msg.cosine = np.concatenate([t.cosine for t in result.tasks]).astype(np.float32).tolist()
    if embedding:
        msg.image_embedding = result.image_embedding.astype(np.float32).tolist()
    return msg


def to_label_info(
    header: Header, tasks: Sequence[Task], templates: Sequence[str], model_id: str
) -> LabelInfo:
    """The label map (tasks, labels, expanded prompts) for the latched `scene/labels` topic."""
    msg = LabelInfo(header=header, model_id=model_id)
    for task in tasks:
        info = TaskInfo(task=task.name, labels=task.label_names)
        for i, label in enumerate(task.labels):
            prompts = expand_prompts(label, templates)
            info.prompts.extend(prompts)
            info.prompt_label_index.extend([i] * len(prompts))
        msg.tasks.append(info)
    return msg


def to_caption(
    header: Header, text: str, prompt: str, model_id: str, latency: float, num_tokens: int
) -> Caption:
    """A Caption message with the source header."""
    return Caption(
        header=header,
        text=text,
        prompt=prompt,
        model_id=model_id,
        latency=float(latency),
        num_tokens=int(num_tokens),
    )
