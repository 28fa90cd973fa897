"""core.naming: where a camera's results go (`<camera ns>/scene/...`)."""

from __future__ import annotations

import pytest
from av_scene_vlm.core.naming import output_namespace, output_topic


@pytest.mark.parametrize(
    ("topic", "ns"),
    [
        ("/front/image_raw", "/front/scene"),
        ("/front/image_raw/compressed", "/front/scene"),
        ("/cam/left/image_rect_color", "/cam/left/scene"),
        ("/cam/image", "/cam/scene"),
        ("/image_raw", "/scene"),
        ("/image_raw/compressed", "/scene"),
        ("camera/image", "camera/scene"),
    ],
)
def test_output_namespace(topic: str, ns: str) -> None:
    assert output_namespace(topic) == ns
    assert output_topic(topic, "similarity") == ns + "/similarity"


def test_output_namespace_rejects_empty() -> None:
    with pytest.raises(ValueError):
        output_namespace("/")
