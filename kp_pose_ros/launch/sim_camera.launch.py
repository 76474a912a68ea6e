"""ros2 launch kp_pose_ros sim_camera.launch.py [camera_model:=realsense_d435] [rate_hz:=10.0] [seed:=0] ...

The nodes, parameters and remappings come from kp_pose_ros.graphs.sim_camera, the same definition the in-process
runner (`kp-pose run sim_camera`) uses."""
from kp_pose_ros.graphs.launch import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description('sim_camera')
