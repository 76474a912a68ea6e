"""The robot model a node needs: from a URDF file parameter, or else from the latched /robot_description topic that
robot_state_publisher (or the sim camera) publishes. Until it arrives the node logs what it waits for."""
from __future__ import annotations

from typing import Callable, Sequence

from rclpy.node import Node
from std_msgs.msg import String

from kp_pose_ros.core.kinematics import RobotKinematics
from kp_pose_ros.core.urdf import URDFError, load_urdf, parse_urdf
from kp_pose_ros.ros.qos import LATCHED_QOS


class RobotModelSource:
    def __init__(self, node: Node, urdf_path: str, base_link: str, keypoint_links: Sequence[str],
                 on_ready: Callable[[RobotKinematics], None] | None = None,
                 description_topic: str = '/robot_description'):
        self.node = node
        self.base_link = base_link
        self.keypoint_links = tuple(keypoint_links)
        self.on_ready = on_ready
        self.kinematics: RobotKinematics | None = None
        self._sub = None
        if urdf_path:
            try:
                self._build(load_urdf(urdf_path), f'file {urdf_path}')
            except (URDFError, OSError, ValueError) as exc:
                node.get_logger().error(f'cannot use the robot model in {urdf_path}: {exc}')
        else:
            self._sub = node.create_subscription(String, description_topic, self._on_description, LATCHED_QOS)
            node.get_logger().info(f'waiting for the robot model on {description_topic} (or set urdf_path)')

    def _build(self, model, origin: str) -> None:
        self.kinematics = RobotKinematics(model, self.base_link, self.keypoint_links)
        self.node.get_logger().info(
            f'robot model from {origin}: {len(self.kinematics.joint_names)} joints, base {self.base_link}, '
            f'keypoints {", ".join(self.keypoint_links)}')
        if self.on_ready is not None:
            self.on_ready(self.kinematics)

    def _on_description(self, msg: String) -> None:
        try:
            self._build(parse_urdf(msg.data), 'the robot_description topic')
        except (URDFError, ValueError) as exc:
            self.node.get_logger().error(f'robot_description is not a usable robot model: {exc}')
