"""caption_node whose captioner hits a sticky CUDA error (a stand-in: torch's message for an illegal
memory access) on its first caption, run as `ros2 run` runs a node (run_nodes, autostart). Used by
test_gpu_path_nodes.py: `python sticky_node.py TINY_QWEN --ros-args -p ...`."""

from __future__ import annotations

import sys

from av_scene_vlm.core.captioner import Captioner
from av_scene_vlm.ros.caption_node import PARAMETERS, CaptionNode
from av_scene_vlm.ros.node_utils import run_nodes


def main() -> int:
    captioner = Captioner(sys.argv[1], max_new_tokens=2, max_pixels=112 * 112, device="cpu", compile="off")

    def lost(images, *args, **kwargs):
        raise RuntimeError(
            "CUDA error: an illegal memory access was encountered\n"
            "CUDA kernel errors might be asynchronously reported at some other API call"
        )

    captioner.caption_batch = lost
    return run_nodes([lambda: CaptionNode(captioner=captioner)], [sys.argv[0], *sys.argv[2:]], PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
