#!/usr/bin/env bash
# Build the ament_cmake interface package av_scene_vlm_msgs into the active venv with plain CMake.
# Why: no ROS install here; the ROS 2 wheels install a ROS prefix into the venv (../shared/ROS_ON_PYPI.md).
set -euo pipefail
: "${VIRTUAL_ENV:?activate the venv first}"
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$here/build/av_scene_vlm_msgs}

# Fix-up: the wheels' exported CMake targets point at the wheel builder's Python paths.
py_inc=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$(python -c 'import numpy; print(numpy.get_include())')
# (grep finds nothing once fixed: a rebuild after a requirements change must not fail on that.)
{ grep -rlZ --include='*.cmake' -e '/opt/python/cp311-cp311' "$VIRTUAL_ENV/share" 2>/dev/null || true; } \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_inc}#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#${py_inc}#g"

export AMENT_PREFIX_PATH=$VIRTUAL_ENV
mkdir -p "$build"
cmake -S "$here/av_scene_vlm_msgs" -B "$build" -DCMAKE_INSTALL_PREFIX="$VIRTUAL_ENV" \
  -DPython3_EXECUTABLE="$(command -v python)" -DBUILD_TESTING=OFF >"$build/cmake.log" 2>&1 \
  || { cat "$build/cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 || { tail -20 "$build/install.log"; exit 1; }
python -c 'import av_scene_vlm_msgs.msg as m; print("av_scene_vlm_msgs built:", ", ".join(n for n in dir(m) if n[0].isupper()))'
