"""The venv the setup script builds: interfaces import, rclpy talks to itself."""
from conftest import spin_until


def test_interfaces_import():
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    from kp_pose_msgs.msg import KeypointArray, KeypointInstance
    from kp_pose_msgs.srv import CaptureSample, ComputeCalibration, LoadCalibration, ResetCalibration, SaveCalibration

    inst = KeypointInstance()
    assert inst.bbox.center.position.x == 0.0
    assert KeypointArray().instances == []
    for srv in (CaptureSample, ComputeCalibration, SaveCalibration, LoadCalibration, ResetCalibration):
        assert srv.Request() is not None and hasattr(srv.Response(), 'success')
    assert TFMessage().transforms == [] and Detection2DArray().detections == [] and Detection3DArray().detections == []


def test_pub_sub_in_process(ros_node):
    from std_msgs.msg import String

    node, executor = ros_node
    got = []
    node.create_subscription(String, 'smoke', lambda m: got.append(m.data), 10)
    pub = node.create_publisher(String, 'smoke', 10)

    def ping():
        pub.publish(String(data='hello'))
        return bool(got)

    assert spin_until(executor, ping, 5.0)
    assert got[0] == 'hello'
