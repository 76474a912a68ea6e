"""QoS profiles chosen by a node parameter, so users can match their driver (RealSense publishes reliable)."""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

QOS_CHOICES = ('sensor_data', 'reliable')


def qos_from_name(name: str, depth: int = 5) -> QoSProfile:
    """'sensor_data': best effort, keep last `depth` (subscribes to reliable and best-effort publishers alike).
    'reliable': reliable, keep last `depth` (what camera drivers publish by default)."""
    if name == 'sensor_data':
        profile = QoSProfile(depth=depth)
        profile.reliability = qos_profile_sensor_data.reliability
        profile.durability = qos_profile_sensor_data.durability
        return profile
    if name == 'reliable':
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    raise ValueError(f"unknown QoS '{name}', expected one of: {', '.join(QOS_CHOICES)}")


# Latched topics such as /robot_description (robot_state_publisher uses this).
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
