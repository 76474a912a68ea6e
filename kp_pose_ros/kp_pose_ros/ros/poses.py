"""geometry_msgs/Pose <-> 4x4 matrices (TransformStamped has its own pair in ros/tf.py)."""
import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion

from kp_pose_ros.core.transforms import as_transform, make_transform, matrix_to_quat_xyzw, quat_xyzw_to_matrix


def pose_from_matrix(T) -> Pose:
    T = as_transform(T)
    qx, qy, qz, qw = map(float, matrix_to_quat_xyzw(T[:3, :3]))
    x, y, z = map(float, T[:3, 3])
    return Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))


def matrix_from_pose(pose: Pose) -> np.ndarray:
    o, p = pose.orientation, pose.position
    return make_transform(quat_xyzw_to_matrix([o.x, o.y, o.z, o.w]), [p.x, p.y, p.z])
