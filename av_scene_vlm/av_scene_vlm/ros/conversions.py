"""Message <-> array conversions for rclpy: images in and out, and the builder that turns the core's
result-to-message mapping (`core.result_messages`, shared with the bag writer) into rclpy messages.

The data path reads straight through: Image/CompressedImage -> RGB array -> engine -> FrameResult ->
ClassificationArray / Similarity / heatmap Image, each output carrying the source header unchanged.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

import av_scene_vlm_msgs.msg as msgs
from av_scene_vlm.core.image_codec import (
    DEFAULT_MAX_FRAME_PIXELS,
    ImageDecodeError,
    check_compressed,
    check_raw_fields,
    decode_compressed,
    decode_raw,
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


# numpy dtype -> the array.array typecode rclpy keeps a numeric sequence field in.
_TYPECODES = {np.dtype(np.float64): "d", np.dtype(np.float32): "f", np.dtype(np.uint32): "I"}


def ros_message(name: str, /, **fields: Any) -> Any:
    """The builder of `core.result_messages` for rclpy: `av_scene_vlm_msgs/msg/<name>`, numpy arrays
    handed over as the `array.array` rclpy stores such fields in (no per-element Python objects)."""
    for key, value in fields.items():
        if isinstance(value, np.ndarray):
            code = _TYPECODES[value.dtype]
            fields[key] = array.array(code, np.ascontiguousarray(value).tobytes())
    return getattr(msgs, name)(**fields)
