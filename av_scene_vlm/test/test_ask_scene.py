"""The AskScene action (`<node>/ask_scene`) over real DDS with the tiny random Qwen2.5-VL.

The tiny model's answers are nonsense; its tokens are restricted to ASCII letters (`suppress_tokens`)
so the streamed text is visible and grows token by token. Slow decoding (for cancel, queue and
shutdown cases) is a forward hook that sleeps; a fault mid-generation is one that raises.
"""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from action_msgs.msg import GoalStatus  # noqa: E402
from av_scene_vlm.core.captioner import Captioner  # noqa: E402
from av_scene_vlm.ros.ask_client import AskClient  # noqa: E402
from av_scene_vlm.ros.caption_node import CaptionNode  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import Probe, header, image_msg, wait_for, wait_matched  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from av_scene_vlm_msgs.msg import Caption, SceneAnswer  # noqa: E402

ACTION = "/caption_node/ask_scene"
FEEDBACK, STATUS = f"{ACTION}/_action/feedback", f"{ACTION}/_action/status"
TOPIC = "/cam/image_raw"
FAST = {"caption_max_new_tokens": 3, "caption_max_pixels": 112 * 112, "caption_device": "cpu"}


def letters_only(tokenizer, vocab_size: int) -> list[int]:
    keep = {i for i in range(len(tokenizer)) if (t := tokenizer.decode([i])).isascii() and t.isalpha()}
    return [i for i in range(vocab_size) if i not in keep]


@pytest.fixture(scope="module")
def letters_captioner(tiny_qwen) -> Captioner:
    """The tiny model, answering in ASCII letters only (one module-wide load; hooks are per test)."""
    cap = Captioner(str(tiny_qwen), device="cpu", max_new_tokens=3, max_pixels=112 * 112)
    suppress = letters_only(cap.processor.tokenizer, cap.model.config.text_config.vocab_size)
    cap.generation_config.suppress_tokens = suppress
    return cap


class Hook:
    """A forward hook on the language model: sleeps `delay` s per forward pass (slow decoding) and
    raises after `fail_after` passes when set (a fault mid-generation)."""

    def __init__(self, captioner: Captioner, delay: float = 0.0, fail_after: int | None = None) -> None:
        self.delay, self.fail_after, self.calls = delay, fail_after, 0
        lm = captioner.model.model.language_model
        self._handle = lm.register_forward_pre_hook(self._pre)

    def _pre(self, module, args) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("injected fault\nsecond line")
        if self.delay:
            time.sleep(self.delay)

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def hook(letters_captioner):
    hooks: list[Hook] = []

    def make(**kwargs) -> Hook:
        hooks.append(Hook(letters_captioner, **kwargs))
        return hooks[-1]

    yield make
    for h in hooks:
        h.remove()


def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def start(ros, captioner, topics=(TOPIC,), **params):
    """caption_node with `captioner`, a probe (camera publishers, answer/caption listeners) and an
    AskClient; returns (node, probe, client, publishers)."""
    ctx, spinner = ros
    values = {
        "caption_model": "tiny",
        **FAST,
        "image_topics": list(topics),
        "caption_period": 1000.0,
        "ask_max_frame_age": 60.0,  # a loaded machine must not turn a test's frame stale
    }
    values.update(params)
    node = CaptionNode(
        "caption_node",
        context=ctx,
        captioner=captioner,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
    )
    spinner.add(node)
    probe = spinner.add(Probe(ctx))
    for cam in node.cameras:
        probe.listen(SceneAnswer, f"{cam.namespace}/answer")
        probe.listen(Caption, f"{cam.namespace}/caption")
    probe.listen(DiagnosticArray, "/diagnostics")
    pubs = [probe.camera_publisher(Image, t) for t in topics]
    client = AskClient(probe, ACTION)
    spinner.start()
    assert wait_matched(node, *pubs)
    assert client.wait_for_server(30)
    # The server must see the client's feedback subscription too (discovery is not symmetric; a
    # reliable volatile writer drops what it publishes before matching): seen on Jazzy.
    assert wait_for(lambda: node.count_subscribers(FEEDBACK) > 0 and node.count_subscribers(STATUS) > 0)
    time.sleep(0.3)
    return node, probe, client, pubs


def send_frame(pub, i: int, frame_id: str = "cam") -> None:
    pub.publish(image_msg(rgb(i), "rgb8", header(i, frame_id)))


def diag_value(probe: Probe, key: str) -> str | None:
    for arr in reversed(probe.messages("/diagnostics")):
        for status in arr.status:
            if status.name.endswith(": captioner"):
                for kv in status.values:
                    if kv.key == key:
                        return kv.value
    return None


def test_feedback_streams_before_result_and_answer_is_published(ros, letters_captioner, hook) -> None:
    node, probe, client, (pub,) = start(ros, letters_captioner, ask_max_new_tokens=6)
    hook(delay=0.05)  # tokens at a real model's pace (a burst could reach the client after the result)
    send_frame(pub, 5, "front_cam")
    assert wait_for(lambda: node.cameras[0].latest is not None)
    asked = client.send("Is the traffic light ahead red?")
    assert asked.wait(60), "no result"
    assert asked.status == GoalStatus.STATUS_SUCCEEDED, asked.result.reason
    res = asked.result
    assert res.answer and res.answer.isalpha() and res.num_tokens == 6
    assert res.header.frame_id == "front_cam"
    assert (res.header.stamp.sec, res.header.stamp.nanosec) == (1_700_000_005, 5007)
    assert res.model_id == letters_captioner.model_id and res.latency > 0 and res.reason == ""
    # Feedback: every token, the whole text so far, all before the result; the last is the answer.
    texts = [text for _, text, _ in asked.feedback]
    assert [n for _, _, n in asked.feedback] == list(range(1, 7))
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert texts[-1] == res.answer
    assert asked.feedback[-1][0] <= asked.done_at - asked.sent
    # The answer on <ns>/answer: question, answer and the source header.
    assert wait_for(lambda: probe.messages("/cam/scene/answer"))
    (msg,) = probe.messages("/cam/scene/answer")
    assert msg.question == "Is the traffic light ahead red?" and msg.answer == res.answer
    assert msg.header == res.header and msg.num_tokens == 6 and msg.model_id == res.model_id
    assert wait_for(lambda: diag_value(probe, "asks_answered") == "1")
    assert diag_value(probe, "asks_received") == "1"


def test_camera_and_frame_problems_abort_with_a_reason(ros, letters_captioner) -> None:
    node, probe, client, (front, _rear) = start(
        ros, letters_captioner, topics=("/front/image_raw", "/rear/image_raw"), ask_max_frame_age=30.0
    )

    def aborted(**goal) -> str:
        asked = client.send("Is the road blocked?", **goal)
        assert asked.wait(30) and asked.status == GoalStatus.STATUS_ABORTED, asked.status_name
        assert asked.feedback == [] and asked.result.answer == ""
        return asked.result.reason

    reason = aborted()  # two cameras: the goal must name one
    assert "names no camera" in reason and "/front/image_raw" in reason and "/rear/image_raw" in reason
    reason = aborted(camera="/side/image_raw")
    assert "unknown camera '/side/image_raw'" in reason and "/front/scene" in reason
    assert "no frame from camera /front/image_raw" in aborted(camera="/front/image_raw")
    send_frame(front, 1)
    assert wait_for(lambda: node.cameras[0].latest is not None)
    time.sleep(0.5)
    reason = aborted(camera="front/scene", max_frame_age=0.2)  # by namespace, without leading slash
    assert "newest frame of camera /front/image_raw is" in reason and "max_frame_age 0.2 s" in reason
    asked = client.send("Is the road blocked?", camera="/front/scene")  # node's bound: 30 s
    assert asked.wait(60) and asked.status == GoalStatus.STATUS_SUCCEEDED
    assert wait_for(lambda: diag_value(probe, "asks_aborted") == "4")
    assert probe.messages("/rear/scene/answer") == []


def test_rejected_goals_say_why_in_diagnostics(ros, letters_captioner, hook) -> None:
    """Empty, over-long, too many tokens, queue full, inactive: rejected at once (ROS 2 goal
    responses carry no reason: it is in /diagnostics and the log)."""
    node, probe, client, (pub,) = start(
        ros, letters_captioner, ask_queue_size=1, ask_max_question_chars=40, ask_max_new_tokens=64
    )
    send_frame(pub, 1)
    assert wait_for(lambda: node.cameras[0].latest is not None)

    def rejected(question: str, **goal) -> str:
        asked = client.send(question, **goal)
        assert asked.wait_accepted(30) is False
        assert wait_for(lambda: diag_value(probe, "asks_rejected") == str(rejected.count + 1))
        rejected.count += 1
        return diag_value(probe, "ask_last_rejection")

    rejected.count = 0
    assert "empty" in rejected("   ")
    assert "over the limit of 40" in rejected("x" * 41)
    assert "ask_max_new_tokens (64)" in rejected("ok?", max_new_tokens=65)
    hook(delay=0.05)  # ~3 s for 64 tokens: the first goal is still running when the third comes
    send_frame(pub, 2)
    assert wait_for(lambda: node.cameras[0].received == 2)
    running = client.send("first?")
    assert wait_for(lambda: running.feedback, 30)
    waiting = client.send("second?")
    assert waiting.wait_accepted(30) is True
    assert "queue is full (ask_queue_size 1)" in rejected("third?")
    running.cancel()
    waiting.cancel()
    assert running.wait(30) and waiting.wait(30)
    assert node.trigger_deactivate() == 0 or node.state == "inactive"
    assert "the node is inactive, not active" in rejected("anyone there?")


def test_cancel_while_queued_never_runs_and_while_generating_stops_within_a_token(
    ros, letters_captioner, hook
) -> None:
    node, probe, client, (pub,) = start(ros, letters_captioner, ask_max_new_tokens=64)
    send_frame(pub, 1)
    assert wait_for(lambda: node.cameras[0].latest is not None)
    slow = hook(delay=0.05)
    running = client.send("How many pedestrians are on the crosswalk?")
    assert wait_for(lambda: len(running.feedback) >= 2, 30)
    queued = client.send("Is it raining?")
    assert queued.wait_accepted(30)
    queued.cancel()
    assert queued.wait(30) and queued.status == GoalStatus.STATUS_CANCELED
    assert queued.feedback == [] and queued.result.num_tokens == 0
    assert not running.result, "the queued goal's cancel must not wait for the running one"
    calls_at_cancel, tokens_at_cancel = slow.calls, running.feedback[-1][2]
    running.cancel()
    assert running.wait(30) and running.status == GoalStatus.STATUS_CANCELED
    res = running.result
    assert 2 <= res.num_tokens < 64 and res.answer == running.feedback[-1][1]
    # Within one token of the cancel reaching the worker (plus the tokens made while it travelled).
    assert slow.calls - calls_at_cancel <= res.num_tokens - tokens_at_cancel + 1
    assert probe.messages("/cam/scene/answer") == []
    assert wait_for(lambda: diag_value(probe, "asks_cancelled") == "2")
    assert diag_value(probe, "asks_answered") == "0"


def test_error_mid_generation_aborts_the_goal_and_the_node_keeps_serving(
    ros, letters_captioner, hook
) -> None:
    node, probe, client, (pub,) = start(ros, letters_captioner, ask_max_new_tokens=8)
    send_frame(pub, 1)
    # The first frame is captioned (never captioned: due); the fault must count the answer's passes only.
    assert wait_for(lambda: probe.messages("/cam/scene/caption"), 30)
    # Prefill + 2 decoding steps, then it raises; 0.1 s a step keeps the three feedback messages apart
    # from the result (rclpy on Jazzy drops feedback it takes after the goal's result).
    fault = hook(fail_after=3, delay=0.1)
    asked = client.send("Is the road blocked?")
    assert asked.wait(30) and asked.status == GoalStatus.STATUS_ABORTED
    assert asked.result.reason == "answering failed: RuntimeError: injected fault"
    # Mid-generation: 3 tokens streamed, the 4th forward pass raised. The client sees some of the
    # feedback (rclpy on Jazzy discards feedback it takes after the result; Kilted keeps all three).
    assert fault.calls == 4 and asked.feedback
    assert [n for _, _, n in asked.feedback] == list(range(1, len(asked.feedback) + 1))
    assert len(asked.feedback) <= 3
    fault.remove()
    again = client.send("Is the road blocked?")
    assert again.wait(60) and again.status == GoalStatus.STATUS_SUCCEEDED
    assert wait_for(lambda: diag_value(probe, "asks_aborted") == "1")
    assert diag_value(probe, "ask_last_error") == "RuntimeError: injected fault"
    assert int(diag_value(probe, "worker_errors")) >= 1 and node.state == "active"


def test_periodic_captions_keep_their_period_while_questions_are_asked(ros, letters_captioner) -> None:
    """Questions asked back to back for a while: captions still come about every caption_period
    (each waits for at most the question in progress), and every question is answered."""
    period = 1.0
    _, probe, client, (pub,) = start(ros, letters_captioner, caption_period=period, ask_max_new_tokens=8)
    times: list[float] = []
    probe.create_subscription(Caption, "/cam/scene/caption", lambda _: times.append(time.monotonic()), 10)
    stop = threading.Event()

    def camera() -> None:
        i = 0
        while not stop.is_set():
            send_frame(pub, i)
            i += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=camera, daemon=True)
    feeder.start()
    try:
        assert wait_for(lambda: probe.messages("/cam/scene/caption"), 30)
        begin, asked = time.monotonic(), []
        while time.monotonic() - begin < 6 * period:
            asked.append(client.send("Is the light green?"))
            assert asked[-1].wait(30) and asked[-1].status == GoalStatus.STATUS_SUCCEEDED
        end = time.monotonic()
    finally:
        stop.set()
        feeder.join()
    longest_answer = max(a.done_at - a.sent for a in asked)
    assert len(asked) >= 3
    # Captions as the probe received them, from the first question to the last answer: none of the
    # gaps (the window's ends included) is longer than the period plus the question in progress and a
    # caption (bounded by an answer) — with slack for a loaded machine. Answers slow down under load,
    # so the bound follows the longest one measured.
    inside = [t for t in times if begin <= t <= end]
    assert inside, (times, begin, end)
    gaps = np.diff([begin, *inside, end])
    assert gaps.max() <= period + 2 * longest_answer + 1.5, (gaps, longest_answer)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_answers_recorded_in_a_bag_read_back_by_the_bag_reader(
    ros, letters_captioner, tmp_path, storage
) -> None:
    """`<ns>/answer` as `ros2 bag record` stores it (the serialized CDR as received, written with
    rosbags, which writes rosbag2 bags), read back by the package's bag reader and typestore."""
    from av_scene_vlm.core.bag import reading
    from av_scene_vlm.core.bag.typestore import bag_typestore
    from av_scene_vlm.core.bag.writing import qos
    from rosbags.rosbag2 import StoragePlugin, Writer

    node, probe, client, (pub,) = start(ros, letters_captioner, ask_max_new_tokens=5)
    raw: list[tuple[int, bytes]] = []
    probe.create_subscription(
        SceneAnswer, "/cam/scene/answer", lambda b: raw.append((time.time_ns(), bytes(b))), 10, raw=True
    )
    assert wait_for(lambda: probe.count_publishers("/cam/scene/answer") > 0)
    time.sleep(0.5)  # the raw subscription has matched the node's publisher
    results = []
    for i, question in enumerate(("Is the light red?", "How many cars are there?")):
        send_frame(pub, 10 + i, f"cam{i}")
        assert wait_for(lambda i=i: node.cameras[0].received == i + 1)
        asked = client.send(question)
        assert asked.wait(60) and asked.status == GoalStatus.STATUS_SUCCEEDED
        results.append((question, asked.result))
    assert wait_for(lambda: len(raw) == 2)
    store, msgtype = bag_typestore(), "av_scene_vlm_msgs/msg/SceneAnswer"
    bag = tmp_path / "drive"
    with Writer(bag, version=9, storage_plugin=StoragePlugin[storage.upper()]) as w:
        conn = w.add_connection(
            "/cam/scene/answer", msgtype, typestore=store, offered_qos_profiles=qos("VOLATILE", 10)
        )
        for ts, data in raw:
            w.write(conn, ts, data)
    with reading.opened(bag) as reader:
        assert reading.storage_of(reader, bag) == storage
        back = [store.deserialize_cdr(data, c.msgtype) for c, _, data in reading.messages(reader, bag)]
    assert len(back) == 2
    for msg, (question, res) in zip(back, results, strict=True):
        assert msg.question == question and msg.answer == res.answer and msg.answer
        assert msg.header.frame_id == res.header.frame_id
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (
            res.header.stamp.sec,
            res.header.stamp.nanosec,
        )
        assert msg.num_tokens == res.num_tokens == 5 and msg.model_id == res.model_id
