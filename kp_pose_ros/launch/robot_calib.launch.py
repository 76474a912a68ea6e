"""ros2 launch kp_pose_ros robot_calib.launch.py [name:=value ...]
(arguments: `ros2 launch kp_pose_ros robot_calib.launch.py -s`)

The nodes, parameters and remappings come from kp_pose_ros.graphs.robot_calib, the same definition the in-process
runner (`kp-pose run robot_calib`) uses."""
from kp_pose_ros.graphs.launch import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description('robot_calib')
