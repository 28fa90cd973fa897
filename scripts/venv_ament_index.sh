#!/usr/bin/env bash
# Make a venv an ament prefix for av_scene_vlm, as `colcon build --symlink-install` makes install/:
# the package marker in share/ament_index, share/av_scene_vlm/{package.xml,launch,config,rviz}/* as links
# into the source tree and lib/av_scene_vlm/<console script>, and activating the venv adds it to
# AMENT_PREFIX_PATH (as sourcing install/setup.bash does).
# Why: `pip install -e` installs neither data files nor lib/<pkg> executables, and without them
# `ros2 run`, `ros2 launch`, `ros2 pkg prefix` and launch_ros' FindPackageShare cannot find the package.
#   scripts/venv_ament_index.sh VENV        (after `pip install -e av_scene_vlm` into VENV)
set -euo pipefail
venv=$(cd "${1:?usage: venv_ament_index.sh VENV}" && pwd)
pkg_dir=$(cd "$(dirname "$0")/../av_scene_vlm" && pwd)
pkg=av_scene_vlm

mkdir -p "$venv/share/ament_index/resource_index/packages" "$venv/share/$pkg" "$venv/lib/$pkg"
cp "$pkg_dir/resource/$pkg" "$venv/share/ament_index/resource_index/packages/$pkg"
ln -sfn "$pkg_dir/package.xml" "$venv/share/$pkg/package.xml"
# File by file, as colcon --symlink-install does (`ros2 launch` does not look into linked directories).
for dir in launch config rviz; do
  target=$venv/share/$pkg/$dir
  if [ -L "$target" ]; then rm "$target"; fi
  mkdir -p "$target"
  find "$target" -maxdepth 1 -xtype l -delete  # files removed from the source tree
  for f in "$pkg_dir/$dir"/*; do
    if [ -f "$f" ]; then ln -sfn "$f" "$target/"; fi
  done
done
# The executables are the installed distribution's console scripts (setup.py), which pip put in bin/.
scripts=$("$venv/bin/python" -c '
import importlib.metadata as md
print(" ".join(e.name for e in md.distribution("av_scene_vlm").entry_points if e.group == "console_scripts"))')
[ -n "$scripts" ] || { echo "venv_ament_index.sh: $pkg has no console scripts in $venv" >&2; exit 1; }
find "$venv/lib/$pkg" -maxdepth 1 -type l -delete  # executables that setup.py no longer declares
for exe in $scripts; do
  [ -x "$venv/bin/$exe" ] || { echo "venv_ament_index.sh: $venv/bin/$exe missing" >&2; exit 1; }
  ln -sfn "../../bin/$exe" "$venv/lib/$pkg/$exe"
done

# Activating the venv puts it last on AMENT_PREFIX_PATH (after a sourced ROS install or workspace), in
# place of a venv activated before (a stale one there would shadow this venv's packages). POSIX sh: make
# sources activate with /bin/sh. The block is rewritten on every run (it is the end of the file).
marker="# av_scene_vlm: the venv is an ament prefix (scripts/venv_ament_index.sh)"
sed -i "/^# av_scene_vlm: the venv is an ament prefix/,\$d" "$venv/bin/activate"
cat >>"$venv/bin/activate" <<'EOF'
# av_scene_vlm: the venv is an ament prefix (scripts/venv_ament_index.sh)
AMENT_PREFIX_PATH=$(printf '%s\n' "${AMENT_PREFIX_PATH:-}" | tr ':' '\n' \
  | grep -vxF -e "$VIRTUAL_ENV" -e "${AV_SCENE_VLM_AMENT_VENV:-$VIRTUAL_ENV}" | grep -v '^$' | paste -sd: -)
AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:+$AMENT_PREFIX_PATH:}$VIRTUAL_ENV"
AV_SCENE_VLM_AMENT_VENV=$VIRTUAL_ENV
export AMENT_PREFIX_PATH AV_SCENE_VLM_AMENT_VENV
EOF
grep -qF "$marker" "$venv/bin/activate"
echo "ament index: $pkg registered in $venv ($(echo "$scripts" | wc -w) executables)"
