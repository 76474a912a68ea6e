"""The latest usable CameraInfo, as nodes that need intrinsics keep it (cameras republish it with every frame)."""
from __future__ import annotations

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo

from kp_pose_ros.core.camera import CameraModel, CameraModelError
from kp_pose_ros.ros.images import camera_model_from_info


class CameraInfoCache:
    def __init__(self, node, topic: str = 'camera_info', qos=qos_profile_sensor_data):
        self.node = node
        self.model: CameraModel | None = None
        self.frame_id = ''
        self._last_msg: CameraInfo | None = None
        node.create_subscription(CameraInfo, topic, self._on_info, qos)

    def _on_info(self, msg: CameraInfo) -> None:
        if self._last_msg is not None and msg.k.tolist() == self._last_msg.k.tolist() \
                and msg.d.tolist() == self._last_msg.d.tolist() and msg.width == self._last_msg.width:
            self.frame_id = msg.header.frame_id
            return
        try:
            self.model = camera_model_from_info(msg)
            self.frame_id = msg.header.frame_id
            self._last_msg = msg
        except CameraModelError as exc:
            self.node.get_logger().warning(f'ignoring camera_info on {self.node.resolve_topic_name("camera_info")}: '
                                           f'{exc}', throttle_duration_sec=5.0)

    def get(self, frame_id: str) -> CameraModel | None:
        """The intrinsics for data in `frame_id`, or None (logged) when none arrived or they are for another frame."""
        if self.model is None:
            self.node.get_logger().warning('no valid camera_info received yet; waiting', throttle_duration_sec=5.0)
            return None
        if frame_id and self.frame_id and frame_id != self.frame_id:
            self.node.get_logger().warning(
                f'camera_info is for frame {self.frame_id!r} but the data is in {frame_id!r}; check the remappings',
                throttle_duration_sec=5.0)
            return None
        return self.model
