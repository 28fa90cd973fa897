#!/usr/bin/env bash
# The GPU measurements in one prepared run, for a machine lent for minutes (the `device` tool): no
# venv and no ROS there, only python3 with torch, torchvision, transformers and opencv, so only the
# ROS-free core runs, from the source tree. Each step has its own time limit and writes its JSON as it
# goes (a step cut short loses only what it had not finished); results and logs go to $OUT (the device
# tool's folder) or benchmarks/results. Prints one table (benchmarks/gpu_report.py) and exits non-zero
# when a parity check failed or a step crashed.
#
#   bash benchmarks/gpu_suite.sh                      # on the GPU machine (≤ 6 min on an H200)
#   QUICK=1 DEVICE=cpu bash benchmarks/gpu_suite.sh   # check the script itself on a CPU (~2 min)
#
# Targets (issue "The GPU path at its floor", one H200): engine ≥ 3,000 frames/s for batches of 64
# 1920×1080 uint8 frames; one such frame ≤ 2.0 ms p50 (≤ 3.0 ms with heatmap); Qwen2.5-VL-3B 48 tokens
# of a 448×448 frame ≤ 0.5 s p50 after warm-up; parity GPU fp16 vs CPU fp32 and graphs vs eager ≤ 1e-3.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/av_scene_vlm${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
suffix=$([ "$DEVICE" = cpu ] && echo cpu_check || echo gpu)

"$PY" - <<'EOF' | tee "$DEST/gpu_suite_env.txt"
import platform, torch, torchvision, transformers
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "transformers", transformers.__version__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", "cuda", torch.version.cuda)
else:
    print("gpu none")
import os
print("cpus", os.cpu_count())
EOF

failed=0
run() {  # run NAME LIMIT_S CMD...: one step, its log kept, its failure counted
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$DEST/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

engine_json="$DEST/engine_$suffix.json"
tiny_json="$DEST/caption_tiny_$suffix.json"
caption_json="$DEST/caption_$suffix.json"
if [ "$QUICK" = 1 ]; then
    run engine 300 "$PY" benchmarks/bench_gpu.py --device "$DEVICE" --quick --json "$engine_json"
    run caption_tiny 300 "$PY" benchmarks/bench_caption.py --device "$DEVICE" --configs tiny \
        --compare-compile --repeats 2 --batch 2 --new-tokens 8 --json "$tiny_json"
    captions=("$tiny_json")
else
    # Parity first (the check that fails the suite), then speed; the torch.compile comparison last.
    run engine 130 "$PY" benchmarks/bench_gpu.py --device "$DEVICE" --json "$engine_json"
    # Compiled decoding: exact tokens on the fp32 tiny model, then the 3B architecture in bf16 (eager vs
    # static cache + compile, and 4 cameras in one generate; that second compile is the last thing run).
    run caption_tiny 45 "$PY" benchmarks/bench_caption.py --device "$DEVICE" --configs tiny \
        --compare-compile --repeats 3 --batch 2 --no-batch-compile --json "$tiny_json"
    run caption_3b 190 "$PY" benchmarks/bench_caption.py --device "$DEVICE" --configs 3b \
        --compare-compile --repeats 5 --batch 4 --json "$caption_json"
    captions=("$tiny_json" "$caption_json")
fi
# Ask the scene (issue 27): first streamed token and a 32-token answer of Qwen2.5-VL-3B (compiled),
# alone and with captions every second beside it; own table and JSON (targets: <= 150 ms, <= 0.5 s).
ask_json="$DEST/ask_core_$suffix.json"
if [ "$QUICK" = 1 ]; then
    run ask 120 "$PY" benchmarks/bench_ask.py --mode core --config tiny --device "$DEVICE" --repeats 3 \
        --new-tokens 8 --size 112 --period 0.3 --json "$ask_json"
else
    run ask 200 "$PY" benchmarks/bench_ask.py --mode core --config 3b --device "$DEVICE" --repeats 10 \
        --new-tokens 32 --period 1 --json "$ask_json"
fi
run report 30 "$PY" benchmarks/gpu_report.py "$engine_json" "${captions[@]}"
"$PY" benchmarks/gpu_report.py "$engine_json" "${captions[@]}" --markdown >"$DEST/gpu_table_$suffix.md" 2>&1
echo "gpu_suite: $failed step(s) failed; results in $DEST"
exit "$failed"
