"""The nodes' life cycle (ros/worker_node.py) over real DDS: node processes driven through their
lifecycle services, as `ros2 lifecycle set` and a lifecycle manager drive them.

- cleanup gives the model's memory back: the resident memory after cleanup is within 10 % of the level
  before configure (measured from the second configure on: the first one also imports torch and
  transformers, which no process gives back), with a model large enough that forgetting it would
  show; on CUDA, `torch.cuda.memory_allocated` returns to its pre-configure level;
- 20 configure/activate/deactivate/cleanup cycles, a frame classified in each: no thread, file
  descriptor or memory growth;
- /diagnostics says the lifecycle state; a bad parameter fails configure with its one line, and the
  node, alive, configures once the parameter is fixed.
The README's walk-through (`ros2 lifecycle` verbatim, sentinel frames in every state) is run by
test_readme_ros2_commands.py, launch's lifecycle events by the launch tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import NodeProcess, Probe, header, image_msg, wait_for  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from av_scene_vlm_msgs.msg import ClassificationArray  # noqa: E402

CLIP = "av_scene_vlm.ros.clip_node"


@pytest.fixture(scope="module")
def medium_clip(tmp_path_factory) -> Path:
    """A random CLIP whose image tower is ViT-B/32's (88 M parameters, ~350 MB in float32)."""
    from av_scene_vlm.random_weights.clip import build_clip

    vision = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
    }
    return build_clip("clip-tiny", tmp_path_factory.mktemp("models") / "medium-clip", **vision)


def _start(tmp_path: Path, model: Path, topic: str, *extra: str) -> NodeProcess:
    args = ["-p", "autostart:=false", "-p", f"model:={model}", "-p", "labels:=[car, bus]"]
    args += ["-p", f"image_topics:=[{topic}]", "-p", "heatmap:=false", *extra]
    return NodeProcess(CLIP, ["clip_node"], args, tmp_path / "clip_node.log")


def _in_process(ros, model: Path, **params):  # -> ClipNode
    """clip_node in this process, not started (autostart false), spun by the test's executor."""
    from av_scene_vlm.ros.clip_node import ClipNode

    ctx, spinner = ros
    values = {"autostart": False, "model": str(model), "labels": ["car", "bus"], **params}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    return spinner.add(ClipNode("clip_node", context=ctx, parameter_overrides=overrides))


def _classify_one(probe: Probe, pub, results: str, tag: str) -> None:
    """Publish frames tagged `tag` until one comes back classified (the node is active and works)."""
    frame = np.full((24, 32, 3), 80, np.uint8)

    def answered() -> bool:
        return any(m.header.frame_id == tag for m in probe.messages(results))

    def send() -> bool:
        pub.publish(image_msg(frame, "rgb8", header(0, tag)))
        return wait_for(answered, timeout=1.0)

    assert wait_for(send, timeout=60, interval=0.0), f"no result for {tag}"


def test_cleanup_gives_the_memory_back(ros, medium_clip, tmp_path) -> None:
    """The weights become resident as the model runs (transformers maps the safetensors file), so
    each cycle classifies a frame; the first cycle also loads torch and transformers for good."""
    ctx, spinner = ros
    node = _start(tmp_path, medium_clip, "/mem/image_raw", "-p", "backend:=torch")
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/mem/scene/classification")
    pub = probe.camera_publisher(Image, "/mem/image_raw")
    spinner.start()
    try:
        life = node.lifecycle("clip_node")
        rss = {}
        for cycle in ("warm-up", "measured"):
            rss["before"] = node.resources()["rss"]
            assert life.set("configure") and life.set("activate"), node.output()[-2000:]
            _classify_one(probe, pub, "/mem/scene/classification", cycle)
            rss["loaded"] = node.resources()["rss"]
            assert life.set("deactivate") and life.set("cleanup")
            rss["after"] = node.resources()["rss"]
        mb = {k: round(v / 2**20) for k, v in rss.items()}
        assert rss["loaded"] - rss["before"] > 0.3 * rss["before"], f"the model did not show in memory: {mb}"
        assert rss["after"] <= 1.10 * rss["before"], f"cleanup kept the model's memory: {mb}"
        assert life.state() == "unconfigured"
    finally:
        out = node.stop()
    assert "Traceback" not in out, out


def test_cuda_memory_allocated_returns_to_the_pre_configure_level(ros, tiny_clip) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(
            "no CUDA device here: the CPU part (resident memory) is test_cleanup_gives_the_memory_back"
        )
    from rclpy.lifecycle import TransitionCallbackReturn

    node = _in_process(ros, tiny_clip, device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert torch.cuda.memory_allocated() > before
    node.trigger_cleanup()
    torch.cuda.synchronize()
    assert node.state == "unconfigured" and torch.cuda.memory_allocated() == before


def test_twenty_cycles_leave_no_threads_files_or_memory_behind(ros, tiny_clip, tmp_path) -> None:
    ctx, spinner = ros
    node = _start(tmp_path, tiny_clip, "/cycle/image_raw", "-p", "diagnostics_period:=0.1")
    probe = spinner.add(Probe(ctx))
    probe.listen(ClassificationArray, "/cycle/scene/classification")
    probe.listen(DiagnosticArray, "/diagnostics", 50)
    pub = probe.camera_publisher(Image, "/cycle/image_raw")
    spinner.start()

    def states() -> set[str]:
        return {
            kv.value
            for arr in probe.messages("/diagnostics")
            for status in arr.status
            if status.name.startswith("/clip_node")
            for kv in status.values
            if kv.key == "lifecycle_state"
        }

    try:
        life = node.lifecycle("clip_node")
        assert wait_for(lambda: "unconfigured" in states()), states()
        seen = []
        for cycle in range(20):
            assert life.set("configure"), node.output()[-2000:]
            assert life.set("activate")
            if cycle == 0:
                assert wait_for(lambda: {"inactive", "active"} <= states()), states()  # /diagnostics
            _classify_one(probe, pub, "/cycle/scene/classification", f"cycle{cycle}")
            assert life.set("deactivate") and life.set("cleanup")
            seen.append(node.resources())
        first, last = seen[1], seen[-1]  # after the first cycle: libraries loaded, the graph cached
        assert last["threads"] <= first["threads"], seen
        assert last["fds"] <= first["fds"], seen
        rss_mb = [round(s["rss"] / 2**20) for s in seen]
        assert last["rss"] <= 1.05 * first["rss"], rss_mb
        assert last["rss"] - seen[9]["rss"] <= 0.02 * seen[9]["rss"], rss_mb  # no steady growth
        assert life.set("shutdown") and wait_for(lambda: node.proc.poll() is not None, 30)
        assert node.proc.returncode == 0  # finalized: the process ends by itself
    finally:
        out = node.stop()
    assert "Traceback" not in out, out


def test_a_bad_parameter_fails_configure_and_can_be_fixed(ros, tiny_clip) -> None:
    """In-process, fast: the one-line reason, the node alive and unconfigured; fixed, it configures."""
    from rclpy.lifecycle import TransitionCallbackReturn

    node = _in_process(ros, tiny_clip, max_batch="abc")
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE and node.state == "unconfigured"
    assert str(node.transition_error).startswith("parameter 'max_batch' expects an integer, got string 'abc'")
    assert node.set_parameters([Parameter("model", value="/no/such/model")])[0].successful  # unconfigured
    assert node.set_parameters([Parameter("max_batch", value=4)])[0].successful
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert "cannot load model '/no/such/model'" in str(node.transition_error)
    assert node.set_parameters([Parameter("model", value=str(tiny_clip))])[0].successful
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.state == "inactive"
    result = node.set_parameters([Parameter("model", value="/no/such/model")])[0]
    assert not result.successful and "read-only" in result.reason  # read at configure: locked until cleanup
    assert node.settings.max_batch == 4 and node.engine is not None
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS and node.engine is None
    assert node.set_parameters([Parameter("model", value=str(tiny_clip))])[0].successful
