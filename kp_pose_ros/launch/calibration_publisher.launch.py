"""ros2 launch kp_pose_ros calibration_publisher.launch.py [name:=value ...]
(arguments: `ros2 launch kp_pose_ros calibration_publisher.launch.py -s`)

The nodes, parameters and remappings come from kp_pose_ros.graphs.calibration_publisher, the same definition the
in-process runner (`kp-pose run calibration_publisher`) uses."""
from kp_pose_ros.graphs.launch import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description('calibration_publisher')
