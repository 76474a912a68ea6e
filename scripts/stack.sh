# Sourced by setup.sh and run.sh: which ROS stack (KP_POSE_STACK) and so which requirements file and venv.
#   main  (default): the current ROS wheels (rclpy 9.1), numpy 2   -> scripts/requirements.txt,       .venv
#   jazzy:           Jazzy's wheels (rclpy 7.1), numpy 1.26        -> scripts/requirements-jazzy.txt, .venv-jazzy
# KP_POSE_VENV still overrides the venv path.
STACK=${KP_POSE_STACK:-main}
case $STACK in
  main) REQUIREMENTS=$ROOT/scripts/requirements.txt; VENV=${KP_POSE_VENV:-$ROOT/.venv} ;;
  jazzy) REQUIREMENTS=$ROOT/scripts/requirements-jazzy.txt; VENV=${KP_POSE_VENV:-$ROOT/.venv-jazzy} ;;
  *) echo "KP_POSE_STACK=$STACK: unknown stack (main or jazzy)" >&2; exit 2 ;;
esac
