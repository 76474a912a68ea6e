"""The robot model a node needs: from a URDF file parameter, or else from the latched /robot_description topic that
robot_state_publisher (or the sim camera) publishes. Until it arrives the node logs what it waits for."""
from __future__ import annotations

import os
from typing import Callable, Sequence

from rclpy.node import Node
from std_msgs.msg import String

from kp_pose_ros.robot.kinematics import RobotKinematics
from kp_pose_ros.robot.urdf import URDFError, parse_urdf
from kp_pose_ros.ros.qos import LATCHED_QOS


class RobotModelSource:
    def __init__(self, node: Node, urdf_path: str, base_link: str, keypoint_links: Sequence[str],
                 on_ready: Callable[['RobotModelSource'], None] | None = None,
                 description_topic: str = '/robot_description'):
        self.node = node
        self.base_link = base_link
        self.keypoint_links = tuple(keypoint_links)
        self.on_ready = on_ready
        self.kinematics: RobotKinematics | None = None
        # The description itself and the directory its relative mesh paths start from (None for the topic).
        self.urdf_text: str = ''
        self.urdf_dir: str | None = None
        self._sub = None
        if urdf_path:
            try:
                with open(urdf_path, encoding='utf-8') as stream:
                    self.urdf_text = stream.read()
                self.urdf_dir = os.path.dirname(os.path.abspath(urdf_path))
                self._build(parse_urdf(self.urdf_text), f'file {urdf_path}')
            except (URDFError, OSError, ValueError) as exc:
                node.get_logger().error(f'cannot use the robot model in {urdf_path}: {exc}')
        else:
            self._sub = node.create_subscription(String, description_topic, self._on_description, LATCHED_QOS)
            node.get_logger().info(f'waiting for the robot model on {description_topic} (or set urdf_path)')

    @staticmethod
    def package_dir(package: str) -> str | None:
        """Share directory of a ROS package, for package:// mesh URIs (None when it is not installed)."""
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return get_package_share_directory(package)
        except (PackageNotFoundError, ValueError):
            return None

    def _build(self, model, origin: str) -> None:
        self.kinematics = RobotKinematics(model, self.base_link, self.keypoint_links)
        self.node.get_logger().info(
            f'robot model from {origin}: {len(self.kinematics.joint_names)} joints, base {self.base_link}, '
            f'keypoints {", ".join(self.keypoint_links)}')
        if self.on_ready is not None:
            self.on_ready(self)

    def _on_description(self, msg: String) -> None:
        try:
            self.urdf_text, self.urdf_dir = msg.data, None
            self._build(parse_urdf(msg.data), 'the robot_description topic')
        except (URDFError, ValueError) as exc:
            self.node.get_logger().error(f'robot_description is not a usable robot model: {exc}')
