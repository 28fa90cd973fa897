#!/usr/bin/env bash
# The GPU measurements in one prepared run, for a machine lent for minutes (the `device` tool): no
# venv and no ROS there, only python3 with torch, torchvision and transformers, so only the ROS-free
# benchmarks run, from the source tree. Each benchmark has its own time limit and a failure does not
# stop the others; JSON results and logs go to $OUT (the device tool's folder) or benchmarks/results.
#
#   bash benchmarks/gpu_suite.sh                 # on the GPU machine (~6 min)
#   QUICK=1 DEVICE=cpu bash benchmarks/gpu_suite.sh   # check the script itself on a CPU (~2 min)
#
# Targets it measures (docs/PERFORMANCE.md): engine >= 2000 frames/s batched from 1920x1080 uint8 and
# <= 3 ms p50 for one 1920x1080 frame (fp16); Qwen2.5-VL-3B 48-token caption of a 448x448 frame <= 1.0 s
# (bf16). The engine runs with both image-tower backends (torch; onnxruntime needs onnxruntime-gpu there).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/av_scene_vlm${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
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
try:
    import onnxruntime
    print("onnxruntime", onnxruntime.__version__, "providers", ",".join(onnxruntime.get_available_providers()))
except ImportError:
    print("onnxruntime none (the engine's onnxruntime column reports an error)")
EOF

failed=0
run() {  # run NAME LIMIT_S CMD...: one benchmark, its log kept, its failure counted
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$DEST/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

if [ "$QUICK" = 1 ]; then
    run engine 300 "$PY" benchmarks/bench_engine.py --device "$DEVICE" --sizes 120x160 --batches 1 2 \
        --iters 3 --warmup 1 --systems torch onnxruntime --json "$DEST/engine_$suffix.json"
    run heatmap 120 "$PY" benchmarks/bench_heatmap.py --device "$DEVICE" --sizes 120x160 --iters 3 \
        --warmup 1 --json "$DEST/heatmap_$suffix.json"
    run caption 300 "$PY" benchmarks/bench_caption.py --device "$DEVICE" --configs tiny --repeats 2 \
        --warmup 1 --json "$DEST/caption_$suffix.json"
else
    # Backend column: torch, and onnxruntime where onnxruntime-gpu is installed (else reported as failed).
    run engine 300 "$PY" benchmarks/bench_engine.py --device "$DEVICE" --sizes 1080x1920 480x640 \
        --batches 1 64 --iters 64 --warmup 5 --systems torch onnxruntime --json "$DEST/engine_$suffix.json"
    if "$PY" -c "import cv2" 2>/dev/null; then
        run heatmap 90 "$PY" benchmarks/bench_heatmap.py --device "$DEVICE" --iters 50 --warmup 5 \
            --json "$DEST/heatmap_$suffix.json"
    else
        echo "=== heatmap: skipped, no OpenCV in this python (the heatmap is drawn with it)"
    fi
    run caption 240 "$PY" benchmarks/bench_caption.py --device "$DEVICE" --configs small,3b \
        --json "$DEST/caption_$suffix.json"
fi
echo "gpu_suite: $failed benchmark(s) failed; results in $DEST"
exit "$failed"
