"""The suite's pipeline graphs by name; each lives in kp_pose_ros.graphs.<name> as `GRAPH`."""
from importlib import import_module

from kp_pose_ros.graphs.spec import Graph

GRAPH_NAMES = ('sim_camera', 'robot_calib', 'calibration_publisher', 'object_pose', 'articulated_pose')


def get_graph(name: str) -> Graph:
    if name not in GRAPH_NAMES:
        raise ValueError(f"unknown graph '{name}', expected one of: {', '.join(GRAPH_NAMES)}")
    return import_module(f'kp_pose_ros.graphs.{name}').GRAPH
