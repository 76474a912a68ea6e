"""ros2 launch kp_pose_ros articulated_pose.launch.py [name:=value ...]
(arguments: `ros2 launch kp_pose_ros articulated_pose.launch.py -s`)

The nodes, parameters and remappings come from kp_pose_ros.graphs.articulated_pose, the same definition the in-process
runner (`kp-pose run articulated_pose`) uses."""
from kp_pose_ros.graphs.launch import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description('articulated_pose')
