#!/usr/bin/env bash
# Check that setup.py's minimum versions are ones the code runs with: install exactly those (each
# `name>=X` as `name==X`) into a scratch venv and run the ROS-free tests there (engine, captioner,
# image codec, visualisation, CLIs, bag processing, random-weight models).
#
#   bash scripts/check_dependency_floors.sh            # venv in $FLOOR_VENV (default /tmp/av_scene_vlm_floors)
#
# Needs the package registry (several GB: torch's CUDA wheels). Not part of `make test`.
# One test is left out: test_preprocessing_matches_the_checkpoints_processor compares with
# CLIPImageProcessorPil, a class of later transformers releases (test-only; the engine does not use it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLOOR_VENV:-/tmp/av_scene_vlm_floors}
PINS=$(python3 - <<'EOF'
import ast, pathlib
tree = ast.parse(pathlib.Path("av_scene_vlm/setup.py").read_text())
for node in ast.walk(tree):
    if isinstance(node, ast.keyword) and node.arg == "install_requires":
        print(" ".join(e.value.replace(">=", "==") for e in node.value.elts))
EOF
)
echo "floors: $PINS"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $PINS pytest
"$VENV/bin/python" -m pip list 2>/dev/null | grep -i -E "^(torch|torchvision|transformers|huggingface.hub|numpy|pillow|opencv|pyyaml|matplotlib|tqdm|rosbags) "
HF_HUB_OFFLINE=1 PYTHONPATH=av_scene_vlm:av_scene_vlm/test "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    av_scene_vlm/test/test_engine.py av_scene_vlm/test/test_captioner.py av_scene_vlm/test/test_image_codec.py \
    av_scene_vlm/test/test_visualize.py av_scene_vlm/test/test_cli_classify.py \
    av_scene_vlm/test/test_bag_process.py av_scene_vlm/test/test_bag_search.py av_scene_vlm/test/test_tasks.py \
    av_scene_vlm/test/test_smoothing.py av_scene_vlm/test/test_scene_change.py av_scene_vlm/test/test_random_weights.py \
    -k "not test_preprocessing_matches_the_checkpoints_processor"
