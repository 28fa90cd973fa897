"""caption_node's parameters: name -> (default, description, read_only); the README's table is
generated from it, and scene_vlm declares it beside clip_node's."""

from __future__ import annotations

from av_scene_vlm.core.ask_limits import DEFAULT_MAX_QUESTION_CHARS
from av_scene_vlm.core.caption_cache import DEFAULT_PROMPT_TOKEN_BUDGET
from av_scene_vlm.core.models import (
    DEFAULT_CAPTION_MODEL,
    DEFAULT_CLIP_MODEL,
    DEFAULT_MAX_PIXELS,
    DEFAULT_PROMPT,
)
from av_scene_vlm.ros.node_utils import (
    AUTOSTART,
    DIAGNOSTICS_PERIOD,
    INPUT_PARAMETERS,
    USE_CV_BRIDGE,
    ParamSpec,
)
from av_scene_vlm.ros.settings import AUTO_PERIOD_CPU, AUTO_PERIOD_CUDA

PARAMETERS: dict[str, ParamSpec] = {
    **INPUT_PARAMETERS,
    "caption_model": (
        DEFAULT_CAPTION_MODEL,
        "Qwen2.5-VL checkpoint: hub id (cached) or local directory.",
        True,
    ),
    "caption_prompt": (
        DEFAULT_PROMPT,
        "Instruction given with every image (at most caption_prompt_token_budget tokens).",
        False,
    ),
    "caption_prompt_token_budget": (
        DEFAULT_PROMPT_TOKEN_BUDGET,
        "Most tokens an instruction (caption_prompt, a question) may have: the static KV cache of "
        "compiled decoding is sized for it at configure, so a prompt change within it never recompiles.",
        True,
    ),
    "caption_max_new_tokens": (64, "Most tokens generated per caption.", True),
    "caption_min_pixels": (0, "Smallest resized image area in px (0 = the checkpoint's).", True),
    "caption_max_pixels": (
        DEFAULT_MAX_PIXELS,
        "Largest resized image area in px; bounds visual tokens to area/784 (0 = the checkpoint's).",
        True,
    ),
    "caption_device": ("auto", "auto, cpu, cuda or cuda:N.", True),
    "caption_dtype": (
        "auto",
        "auto (bf16 or fp16 on GPU; on a CPU the checkpoint's bf16 where the CPU has AVX512_BF16/AMX, "
        "else fp32), float32, float16 or bfloat16.",
        True,
    ),
    "caption_compile": (
        "auto",
        "Static KV cache + compiled decoding step (~2x faster captions on a GPU after a compile of about "
        "a minute, run on the caption worker before its first caption): auto (on for CUDA), on or off.",
        True,
    ),
    "caption_attn_implementation": (
        "auto",
        "auto (flash_attention_2 if installed and decoding is not compiled, else sdpa), sdpa, eager or "
        "flash_attention_2 (not with caption_compile on: it recompiles every token).",
        True,
    ),
    "caption_period": (
        -1.0,
        "Caption the newest frame at most every this many seconds per camera, monotonic wall time "
        f"(0 = as fast as the model allows; -1 = auto: {AUTO_PERIOD_CUDA:g} s on CUDA, "
        f"{AUTO_PERIOD_CPU:g} s on CPU).",
        False,
    ),
    "caption_scene_change_threshold": (
        0.0,
        "Cosine distance of the image embedding from the last captioned frame's above which a caption "
        "is made before the period ends (0 = off).",
        False,
    ),
    "caption_embedding_source": (
        "similarity_topic",
        "similarity_topic (image_embedding of clip_node's '<camera ns>/scene/similarity') or compute "
        "(caption_clip_model).",
        True,
    ),
    "caption_clip_model": (
        DEFAULT_CLIP_MODEL,
        "CLIP checkpoint for caption_embedding_source=compute (loaded only when the threshold is > 0).",
        True,
    ),
    "caption_num_threads": (
        0,
        "torch intra-op threads of the caption worker (0 = the process default, all cores).",
        True,
    ),
    "caption_nice": (
        10,
        "Nice increment of the caption worker thread and its torch threads (Linux; 0 = none): on a "
        "busy CPU the classifier and other nodes go first.",
        True,
    ),
    "publish_text": (
        False,
        "Also publish std_msgs/String on '<camera ns>/scene/caption_text' (no caption_ prefix: no other "
        "node declares it).",
        False,
    ),
    "ask_queue_size": (
        4,
        "AskScene goals that may wait for the model (beyond the one being answered); more are rejected.",
        False,
    ),
    "ask_max_frame_age": (
        1.0,
        "Oldest frame (s from its receipt to the goal's acceptance) a question is answered about, for "
        "goals with max_frame_age 0; an older or missing frame aborts the goal.",
        False,
    ),
    "ask_max_new_tokens": (
        64,
        "Most tokens per answer, for goals with max_new_tokens 0; a goal asking for more is rejected.",
        False,
    ),
    "ask_max_question_chars": (
        DEFAULT_MAX_QUESTION_CHARS,
        "Longest question in characters (kept within the compiled captioner's prompt budget); longer "
        "or empty ones are rejected.",
        False,
    ),
    "diagnostics_period": DIAGNOSTICS_PERIOD,
    "use_cv_bridge": USE_CV_BRIDGE,
    "autostart": AUTOSTART,
}

# Values shown in type errors where the default makes a poor example.
EXAMPLES = {"caption_period": 5.0}
