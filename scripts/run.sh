#!/usr/bin/env bash
# Runs a command inside the development venv (KP_POSE_STACK selects the stack, see stack.sh) with the ROS environment the suite expects:
# ament index on the venv, discovery kept on this host, Fast DDS with a large shared-memory segment for images.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/stack.sh"
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE || true
export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH
export AMENT_PREFIX_PATH=$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/kp_pose_ros/config/fastdds_shm.xml}
export PYTHONUNBUFFERED=1
exec "$@"
