"""`scene_vlm`: clip_node and caption_node in one process, for machines without the launch system.

    ros2 run av_scene_vlm scene_vlm --ros-args --params-file \
        $(ros2 pkg prefix av_scene_vlm)/share/av_scene_vlm/config/scene_vlm.yaml
    python -m av_scene_vlm.ros.scene_vlm --ros-args -p enable_caption:=false ...

Both nodes (named `clip_node` and `caption_node`) read the same parameters: `/**` entries of a params
file and `-p name:=value` apply to both, each takes the ones it declares; node-name sections target
one. `enable_caption` (default true) is read by a short-lived bootstrap node named `scene_vlm`, so it
is set like any parameter (`-p enable_caption:=false`, or under `/**` or `scene_vlm:` in a params
file); false runs the classifier alone. Do not remap `__node` here: a process-wide remap would give
every node the same name. Both are lifecycle nodes: with `-p autostart:=false` both wait unconfigured
for `ros2 lifecycle set /clip_node configure` (and /caption_node), and the process ends once both are
shut down.

Threads: one executor serves both nodes' callbacks, which only store frames (a SingleThreadedExecutor;
see `run_nodes` for why not rclpy's MultiThreadedExecutor), and each node runs its model on its own
worker thread. How the classifier keeps its speed next to the captioner:
- torch's intra-op thread count is per calling thread once set, so each worker pins its own
  (`pin_torch_threads`); `caption_num_threads` can give the captioner fewer;
- the caption worker runs at a higher nice value (`caption_nice`, default 10; Linux applies it per
  thread and torch's OpenMP threads inherit it), so on a saturated CPU the scheduler favours the
  classifier;
- on CUDA the captioner queues its kernels on a stream of its own instead of in front of the
  classifier's.
On a CPU that the classifier alone saturates, every caption still costs classifier frames in
proportion to its compute; benchmarks/bench_scene_vlm.py measures how much and which
`caption_period` / `caption_max_pixels` / `caption_max_new_tokens` keep the loss under 10 %.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.node import Node

from av_scene_vlm.ros import caption_node, clip_node
from av_scene_vlm.ros.caption_node import CaptionNode
from av_scene_vlm.ros.clip_node import ClipNode
from av_scene_vlm.ros.node_utils import AUTOSTART, INPUT_EXAMPLES, ParamSpec, run_nodes
from av_scene_vlm.ros.parameters import ParameterTypeError, ParameterTypeErrors, declare_parameters

# scene_vlm's own parameters (read by the bootstrap node); the README's table is generated from it.
PARAMETERS: dict[str, ParamSpec] = {
    "enable_caption": (True, "Run caption_node next to clip_node (false = classifier only).", True),
}
_BOOTSTRAP = {**PARAMETERS, "autostart": AUTOSTART}
# Every parameter this process reads: `-p` values are quoted by these types before rclpy.init.
ALL_PARAMETERS: dict[str, ParamSpec] = {**clip_node.PARAMETERS, **caption_node.PARAMETERS, **PARAMETERS}


def _bootstrap(name: str, **node_kwargs: Any) -> bool:
    """Read one of scene_vlm's own bools (`enable_caption`, `autostart`) from the command line / params
    file through a short-lived bootstrap node named `scene_vlm`."""
    node = Node("scene_vlm", start_parameter_services=False, enable_rosout=False, **node_kwargs)
    try:
        declare_parameters(node, {name: _BOOTSTRAP[name]})
        return bool(node.get_parameter(name).value)
    finally:
        node.destroy_node()


def caption_enabled(**node_kwargs: Any) -> bool:
    """`enable_caption`, read through a bootstrap node."""
    return _bootstrap("enable_caption", **node_kwargs)


def check_parameter_types(**node_kwargs: Any) -> None:
    """Type-check both nodes' parameters before either loads a model; ParameterTypeErrors lists all.

    Why: the classifier loads its model before the captioner is built, so without this a mistyped
    caption parameter would fail only after seconds of loading, and alone. Short-lived nodes under the
    real names see exactly the overrides (`/**`, `clip_node:`, `caption_node:`, `-p`) the nodes will.
    """
    errors: list[ParameterTypeError] = []
    try:
        tables = [("clip_node", clip_node.PARAMETERS)]
        if caption_enabled(**node_kwargs):
            tables.append(("caption_node", caption_node.PARAMETERS))
    except ParameterTypeErrors as exc:  # enable_caption itself: check the captioner's too
        errors += exc.errors
        tables.append(("caption_node", caption_node.PARAMETERS))
    examples = {**INPUT_EXAMPLES, **clip_node.EXAMPLES, **caption_node.EXAMPLES}
    for name, table in tables:
        node = Node(name, start_parameter_services=False, enable_rosout=False, **node_kwargs)
        try:
            declare_parameters(node, table, examples)
        except ParameterTypeErrors as exc:
            errors += exc.errors
        finally:
            node.destroy_node()
    if errors:
        raise ParameterTypeErrors(errors)


def _checked() -> None:
    """A factory that builds no node: with autostart, every type error before either model loads
    (without, each node reports its own when it is configured)."""
    try:
        autostart = _bootstrap("autostart")
    except ParameterTypeErrors:
        autostart = True  # the nodes take it as their default, and report it
    if autostart:
        check_parameter_types()


def _caption_node() -> CaptionNode | None:
    return CaptionNode() if caption_enabled() else None


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run av_scene_vlm scene_vlm`: classifier first, then the captioner."""
    return run_nodes([_checked, ClipNode, _caption_node], args, ALL_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
