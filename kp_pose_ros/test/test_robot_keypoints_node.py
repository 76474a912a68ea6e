"""The robot_keypoints node: bad images and a missing model are logged, never a crash."""
import pytest
from conftest import spin_until

from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.graphs.spec import NodeSpec


@pytest.mark.parametrize('encoding', ['yuv422', 'rgb8-short'])
def test_keypoints_node_survives_bad_input_and_missing_model(ros_node, encoding):
    from sensor_msgs.msg import Image

    node, executor = ros_node
    spec = NodeSpec(name='robot_keypoints', executable='robot_keypoints',
                    node_class='kp_pose_ros.nodes.robot_keypoints:RobotKeypointsNode',
                    parameters={'model': '/nonexistent/model.onnx'}, remappings=[('image', '/bad/image')])
    pub = node.create_publisher(Image, '/bad/image', 10)
    img = Image(height=4, width=4, encoding=encoding.split('-')[0], step=12, data=bytes(48 if '-' not in encoding
                                                                                          else 10))
    with GraphRun([spec], context=node.context) as run:
        executor.add_node(run.nodes[0])
        for _ in range(3):
            img.header.stamp = node.get_clock().now().to_msg()
            pub.publish(img)
            spin_until(executor, lambda: False, 0.1)
        assert run.nodes[0].detector is None and node.context.ok()
        executor.remove_node(run.nodes[0])
