"""QoS profiles from node parameters, so users can match their driver (RealSense publishes reliable)."""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from kp_pose_ros.ros.params import Param

QOS_CHOICES = ('sensor_data', 'reliable')
RELIABILITY_CHOICES = ('best_effort', 'reliable')


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    """Keep-last `depth`, volatile. 'best_effort' is the sensor-data profile: it receives from reliable and
    best-effort publishers alike and never stalls a publisher; 'reliable' is what camera drivers publish by default."""
    if reliability not in RELIABILITY_CHOICES:
        raise ValueError(f"unknown reliability '{reliability}', expected one of: {', '.join(RELIABILITY_CHOICES)}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                      else ReliabilityPolicy.BEST_EFFORT)


def qos_from_name(name: str, depth: int = 5) -> QoSProfile:
    """'sensor_data' (best effort) or 'reliable', keep last `depth` (the CLI's --qos)."""
    if name not in QOS_CHOICES:
        raise ValueError(f"unknown QoS '{name}', expected one of: {', '.join(QOS_CHOICES)}")
    return qos_profile('reliable' if name == 'reliable' else 'best_effort', depth)


def sensor_qos_params(default_reliability: str = 'best_effort', default_depth: int = 5,
                      what: str = 'image, depth and camera_info subscriptions') -> tuple[Param, Param]:
    """The two parameters every node with camera streams declares: `qos.reliability` and `qos.depth`."""
    return (Param('qos.reliability', default_reliability, f'Reliability of the {what}: best_effort (sensor data, '
                  'matches any publisher) or reliable.', choices=RELIABILITY_CHOICES),
            Param('qos.depth', default_depth, f'History depth (keep last) of the {what}.', min_value=1,
                  max_value=100))


# Keypoints between the pipeline's own stages: reliable, keep last 2. A stage slower than its input then works on
# the newest frames instead of a backlog that adds a frame time of latency per queued message (measured with 10:
# about 1 s through robot_calib on a loaded 2-core CPU, bench/throughput.py).
KEYPOINT_QUEUE = 2

# Latched topics such as /robot_description (robot_state_publisher uses this).
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
