"""The GPU path's first-run fixes (issue 26), on a CPU, with stand-ins where CUDA is needed.

- one capture lock per device: captures from two threads never overlap, a batch that finds the lock
  taken (the captioner compiling) runs eagerly and disables nothing;
- out of memory during a capture reaches the caller (the worker halves its batches) with the graphs
  dropped, and the graphs are captured again at the smaller size; a memory budget drops the least
  recently used graphs;
- flash_attention_2 and compiled decoding: auto resolves to sdpa, explicit both is refused;
- one static cache per batch size, reused across captions, with the eager tokens; the prompt-token
  budget; warm-up on the configured prompt and a small image, under the device lock;
- padding never past the batch limit; the host sync waits on a blocking event.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from av_scene_vlm.core import results
from av_scene_vlm.core.caption_cache import batch_plan, check_attn_for_compile, warm_up_side
from av_scene_vlm.core.captioner import Captioner, PromptTooLong, resolve_attn_implementation, resolve_compile
from av_scene_vlm.core.cuda_graphs import EagerCapture, GraphSet
from av_scene_vlm.core.device_lock import device_lock, is_sticky_cuda_error
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.tasks import parse_tasks

TASKS = parse_tasks({"road_user": ["car", "truck", "pedestrian"], "weather": ["clear", "rain"]})


def _double(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x.float() * 2 + bias


class OverlapCapture(EagerCapture):
    """Records how many captures run at once (a real capture is broken by another's synchronize)."""

    def __init__(self) -> None:
        self.active = self.most = self.count = 0
        self._guard = threading.Lock()

    def __call__(self, fn, static_inputs):
        with self._guard:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.02)  # long enough for the other thread to try
        try:
            self.count += 1
            return super().__call__(fn, static_inputs)
        finally:
            with self._guard:
                self.active -= 1


# ---- point 1: the lock and the retries -------------------------------------------------------------
def test_two_threads_never_capture_at_once_and_nothing_is_disabled() -> None:
    capture, lock = OverlapCapture(), threading.Lock()  # one device lock shared by both graph sets
    sets = [GraphSet(capture, lambda a, b, k: float(np.abs(a - b).max()), lock=lock) for _ in range(2)]
    inside, release = threading.Event(), threading.Event()

    def held(x, bias):  # the first capture waits inside until the other thread has tried
        inside.set()
        assert release.wait(30)
        return _double(x, bias)

    first = threading.Thread(target=sets[0].run, args=("held", 1, torch.ones(1, 1), [torch.zeros(1)], held))
    first.start()
    assert inside.wait(30)
    assert sets[1].run("other", 1, torch.ones(1, 1), [torch.zeros(1)], _double) is None  # eager, now
    assert sets[1].deferred == 1 and sets[1].enabled and len(sets[1]) == 0
    release.set()
    first.join()

    def work(i: int) -> None:  # both threads capture 8 keys each, as fast as they can
        deadline = time.monotonic() + 60
        while len(sets[i]) < 9 - i and time.monotonic() < deadline:
            for k in range(8):
                out = sets[i].run((i, k), 1, torch.ones(1, 1), [torch.zeros(1)], _double)
                assert out is None or float(out[0, 0]) == 2.0

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert capture.most == 1, "two captures overlapped"
    assert all(s.enabled and s.retries == 0 for s in sets)
    assert [len(s) for s in sets] == [9, 8]  # every key captured in the end


def test_engine_runs_eagerly_while_the_captioner_holds_the_device_lock(tiny_clip) -> None:
    """What the captioner's compile does (core/captioner.warm_up holds device_lock): the engine's
    batches meanwhile are eager and correct, nothing is disabled, and graphs come once it is free."""
    eager = ZeroShotEngine(str(tiny_clip), tasks=TASKS, backend="torch", cuda_graphs="off")
    capture = OverlapCapture()
    graphed = ZeroShotEngine(
        eager.clip, tasks=TASKS, backend="torch", cuda_graphs="on", graph_capture=capture
    )
    frames = [np.random.default_rng(i).integers(0, 256, (60, 80, 3), dtype=np.uint8) for i in range(2)]
    want = eager.classify(frames)
    with device_lock(graphed.device):
        got = graphed.classify(frames)
    assert capture.count == 0 and graphed.graphs.deferred == 1 and graphed.graphs.enabled
    got_after = graphed.classify(frames)
    assert capture.count == 1 and len(graphed.graphs) == 1
    for a, b, c in zip(want, got, got_after, strict=True):
        for ta, tb, tc in zip(a.tasks, b.tasks, c.tasks, strict=True):
            np.testing.assert_allclose(tb.probabilities, ta.probabilities, atol=1e-5)
            np.testing.assert_allclose(tc.probabilities, ta.probabilities, atol=1e-5)
    stats = graphed.graph_stats()
    assert stats["graph_captures_deferred"] == 1 and stats["graph_capture_retries"] == 0


def test_warm_up_holds_the_device_lock_with_the_configured_prompt(tiny_qwen: Path) -> None:
    """The captioner's compile runs under the device lock, captions the configured prompt (not the
    default) and a small image (caption_max_pixels 0 must not warm up at the checkpoint's 3584²)."""
    captioner = Captioner(
        str(tiny_qwen), max_new_tokens=2, max_pixels=None, compile="off", prompt="What is on the road?"
    )
    captioner.compiled = True  # the compiled path's bookkeeping, without paying for inductor here
    seen = []
    real = captioner.model.generate

    def watched(**kwargs):
        seen.append((device_lock(captioner.device).locked(), tuple(kwargs["image_grid_thw"][0].tolist())))
        return real(**kwargs)

    captioner.model.generate = watched
    text = captioner._chat_text("What is on the road?")
    captioner.warm_up([1, 2])
    assert [locked for locked, _ in seen] == [True] * 4
    side = warm_up_side(captioner._size["shortest_edge"], captioner._factor)
    assert side < 600 and all(grid[1] * 14 <= side for _, grid in seen)
    assert captioner.batch_sizes == (1, 2) and text in captioner._templates.values()
    assert captioner._size["longest_edge"] >= 3584 * 3584 // 2  # the checkpoint's bound is in force


# ---- point 4: out of memory during a capture, the memory budget -------------------------------------
def test_out_of_memory_in_a_capture_reaches_the_caller_and_drops_the_graphs() -> None:
    class OomAtFour(EagerCapture):
        def __call__(self, fn, static_inputs):
            if static_inputs[0].shape[0] >= 4:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
            return super().__call__(fn, static_inputs)

    graphs = GraphSet(OomAtFour(), lambda a, b, k: 0.0)
    assert graphs.run("one", 1, torch.ones(1, 1), [torch.zeros(1)], _double) is not None
    with pytest.raises(torch.OutOfMemoryError):
        graphs.run("four", 4, torch.ones(3, 1), [torch.zeros(1)], _double)
    assert len(graphs) == 0 and graphs.enabled and graphs.retries == 0
    out = graphs.run("two", 2, torch.ones(2, 1), [torch.zeros(1)], _double)  # the halved batch
    assert out is not None and len(graphs) == 1


def test_sticky_cuda_errors_are_recognised_and_not_retried() -> None:
    assert is_sticky_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_sticky_cuda_error(RuntimeError("CUDA error: unspecified launch failure"))
    assert not is_sticky_cuda_error(RuntimeError("operation not permitted when stream is capturing"))

    def lost(fn, inputs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    graphs = GraphSet(lost, lambda a, b, k: 0.0)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        graphs.run("k", 1, torch.ones(1, 1), [torch.zeros(1)], _double)
    assert graphs.retries == 0


def test_memory_budget_drops_least_recently_used_graphs() -> None:
    x = torch.ones(4, 256)  # 4 KiB of float32 per static input; output as much again
    one = 2 * x.numel() * 4 + 4
    graphs = GraphSet(EagerCapture(), lambda a, b, k: 0.0, memory_budget=int(2.5 * one))
    for key in ("a", "b", "a", "c"):
        assert graphs.run(key, 4, x, [torch.zeros(1)], _double) is not None
    assert len(graphs) == 2 and graphs.dropped == 1
    assert list(graphs._graphs) == ["a", "c"]  # b was the least recently used
    assert graphs.memory_bytes == 2 * one <= graphs.memory_budget
    assert graphs.stats()["graph_memory_mb"] == f"{2 * one / 2**20:.1f}"


# ---- point 2: flash attention and compiled decoding -----------------------------------------------
def test_flash_attention_with_compiled_decoding(tiny_qwen: Path) -> None:
    cuda, bf16 = torch.device("cuda"), torch.bfloat16
    assert resolve_attn_implementation("auto", cuda, bf16, compiled=True) == "sdpa"
    assert resolve_compile("auto", cuda, "flash_attention_2") is False  # auto gives way to explicit FA2
    assert resolve_compile("auto", cuda, "sdpa") is True
    with pytest.raises(ValueError, match="flash_attention_2 does not work with compiled decoding"):
        check_attn_for_compile("flash_attention_2", "on")
    with pytest.raises(ValueError, match="flash_attention_2 does not work with compiled decoding"):
        Captioner(str(tiny_qwen), compile="on", attn_implementation="flash_attention_2")


def test_cli_refuses_flash_attention_with_compile_on(tiny_qwen, image_files, capsys) -> None:
    from av_scene_vlm.cli.main import main

    argv = [
        "caption",
        image_files[0],
        "--model",
        str(tiny_qwen),
        "--compile",
        "on",
        "--attn",
        "flash_attention_2",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flash_attention_2 does not work with compiled decoding" in err[0]


def test_the_parameter_refuses_flash_attention_with_compile_on() -> None:
    from av_scene_vlm.ros.caption_parameters import PARAMETERS
    from av_scene_vlm.ros.settings import CaptionSettings

    values = {name: spec[0] for name, spec in PARAMETERS.items()}
    values.update(
        image_topics=["/cam/image_raw"], caption_compile="on", caption_attn_implementation="flash_attention_2"
    )
    with pytest.raises(ValueError, match="flash_attention_2 does not work with compiled decoding"):
        CaptionSettings.parse(values)
    values["caption_compile"] = "auto"
    assert CaptionSettings.parse(values).captioner.attn_implementation == "flash_attention_2"


# ---- points 3 and 6: one static cache per batch size, the prompt budget -------------------------------
def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in [(90, 160, 3), (120, 120, 3)]]


def test_one_static_cache_per_batch_size_reused_with_the_eager_tokens(tiny_qwen: Path) -> None:
    """Two captions (another prompt the second time) decode in the same cache storage and give the
    eager path's tokens (compiled flag on, torch.compile itself left to the compiled test)."""
    eager = Captioner(str(tiny_qwen), max_new_tokens=4, compile="off")
    static = Captioner(str(tiny_qwen), max_new_tokens=4, compile="off")
    static.compiled, static.batch_sizes = True, (2,)
    frames = _frames()
    got, _ = static.generate_ids(frames, min_new_tokens=4)
    storage = static.caches.storage(2)
    assert storage is not None and static.caches.sizes() == (2,)
    got2, _ = static.generate_ids(frames, "Is it raining?", min_new_tokens=4)
    assert static.caches.storage(2) == storage, "a new cache: the compiled step would record again"
    assert torch.equal(got, eager.generate_ids(frames, min_new_tokens=4)[0])
    assert torch.equal(got2, eager.generate_ids(frames, "Is it raining?", min_new_tokens=4)[0])
    with torch.inference_mode():
        cache = static.caches.get(2)
    assert cache.layers[0].max_cache_len == static.cache_length


def test_the_cache_keyword_follows_the_installed_transformers(tiny_qwen: Path, monkeypatch) -> None:
    """`cache=` where transformers has the name (the venv's 5.24), `past_key_values=` before it (the GPU
    machine's 5.17 would take `cache=` as an unused model kwarg and fail every compiled caption); the
    static cache passed the old way is reused too, with the eager tokens."""
    from av_scene_vlm.core.caption_cache import generate_cache_kwarg
    from transformers.generation import utils

    assert generate_cache_kwarg() == "cache"
    monkeypatch.delattr(utils, "ALL_CACHE_NAMES")
    assert generate_cache_kwarg() == "past_key_values"
    monkeypatch.undo()
    eager = Captioner(str(tiny_qwen), max_new_tokens=4, compile="off")
    static = Captioner(str(tiny_qwen), max_new_tokens=4, compile="off")
    static.compiled, static.batch_sizes, static._cache_kwarg = True, (2,), "past_key_values"
    frames = _frames()
    got, _ = static.generate_ids(frames, min_new_tokens=4)
    storage = static.caches.storage(2)
    assert storage is not None
    assert torch.equal(static.generate_ids(frames, min_new_tokens=4)[0], got)
    assert static.caches.storage(2) == storage
    assert torch.equal(got, eager.generate_ids(frames, min_new_tokens=4)[0])


def test_cache_length_and_prompt_budget(tiny_qwen: Path) -> None:
    captioner = Captioner(
        str(tiny_qwen),
        max_new_tokens=8,
        max_pixels=112 * 112,
        prompt="Describe.",
        prompt_token_budget=40,
        compile="off",
    )
    template = len(captioner.processor.tokenizer(captioner._chat_text(""))["input_ids"])
    assert captioner.cache_length == template + 40 + (112 * 112) // 28**2 + 8
    captioner.check_prompt("short")
    long = "word " * 200
    with pytest.raises(PromptTooLong, match="budget of 40 \\(caption_prompt_token_budget\\)"):
        captioner.check_prompt(long)
    captioner.compiled = True
    with pytest.raises(PromptTooLong):
        captioner.caption(_frames()[0], long)
    with pytest.raises(PromptTooLong):
        Captioner(str(tiny_qwen), prompt=long, prompt_token_budget=40, compile="off")


# ---- point 5: padding within the batch limit ------------------------------------------------------
def test_padding_never_exceeds_the_batch_limit() -> None:
    assert batch_plan(2, (1, 4)) == [(2, 4)]  # padded up to the compiled 4
    assert batch_plan(2, (1, 4), limit=2) == [(1, 1), (1, 1)]  # halved to 2: not padded back to 4
    assert batch_plan(3, (1, 2, 4), limit=3) == [(2, 2), (1, 2)]
    assert batch_plan(4, (1, 4), limit=4) == [(4, 4)]
    assert batch_plan(3, ()) == [(3, 3)]  # not compiled: as it is
    assert batch_plan(3, (4,), limit=2) == [(3, 3)]  # nothing fits: compiles for it


def test_caption_batch_pads_within_max_batch(tiny_qwen: Path) -> None:
    captioner = Captioner(str(tiny_qwen), max_new_tokens=2, max_pixels=112 * 112, compile="off")
    sizes = []
    real = captioner.model.generate

    def watched(**kwargs):
        sizes.append(int(kwargs["input_ids"].shape[0]))
        return real(**kwargs)

    captioner.model.generate = watched
    captioner.batch_sizes = (1, 4)  # as after warm_up([1, 4])
    frames = _frames()
    assert len(captioner.caption_batch(frames)) == 2 and sizes == [4]
    sizes.clear()
    out = captioner.caption_batch(frames, max_batch=2)
    assert len(out) == 2 and sizes == [1, 1]


# ---- point 7: the host sync blocks ----------------------------------------------------------------
def test_the_host_sync_waits_on_a_blocking_event(monkeypatch) -> None:
    made = []

    class Recording:
        def __init__(self, **kwargs) -> None:
            made.append(kwargs)

    monkeypatch.setattr(torch.cuda, "Event", Recording)
    results.done_event()
    assert made == [{"blocking": True}]
