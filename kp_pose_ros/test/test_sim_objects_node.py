"""The sim_camera node on table-top object scenes (scene:=objects) over real rclpy: the RealSense topic set as in the
robot scene, and /sim/objects ground truth stamped like the images whose poses put each model's surface where the
rendered depth image shows it. Needs the LINEMOD meshes in ../shared/data (development machines only)."""
import numpy as np
import pytest
from conftest import spin_until

from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.paths import shared_data
from kp_pose_ros.ros.stamps import stamp_to_ns

NS = '/camera/camera'
LMO_MODELS = shared_data('lmo', 'models')
pytestmark = pytest.mark.skipif(not LMO_MODELS.is_dir(), reason=f'LINEMOD models not found at {LMO_MODELS} '
                                '(../shared/data is only on the development machines)')


@pytest.fixture(scope='module')
def stream():
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    from kp_pose_msgs.msg import KeypointArray

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('sim_objects_probe', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    got = {}

    def sub(msg_type, topic, qos=10):
        got[topic] = []
        node.create_subscription(msg_type, topic, got[topic].append, qos)

    sub(Image, f'{NS}/color/image_raw')
    sub(Image, f'{NS}/aligned_depth_to_color/image_raw')
    sub(CameraInfo, f'{NS}/color/camera_info')
    sub(Detection3DArray, '/sim/objects')
    sub(KeypointArray, '/sim/keypoints')
    sub(TFMessage, '/tf_static', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))
    # Exact depth, so the surface check below measures the poses, not sensor noise; two views per layout, so three
    # frames show two layouts.
    overrides = {'scene': 'objects', 'seed': '5', 'rate_hz': '20.0', 'objects_per_layout': '4',
                 'views_per_layout': '2', 'depth_sensor': 'ideal', 'random_background': 'false'}
    try:
        with GraphRun(get_graph('sim_camera').nodes(overrides), context=context) as run:
            assert not run.not_active
            for n in run.nodes:
                executor.add_node(n)
            ok = spin_until(executor, lambda: len(got['/sim/objects']) >= 3 and len(got[f'{NS}/color/image_raw']) >= 3
                            and len(got[f'{NS}/aligned_depth_to_color/image_raw']) >= 3, 90.0)
            for n in run.nodes:
                executor.remove_node(n)
        assert ok, {k: len(v) for k, v in got.items()}
        yield got
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_camera_topics_as_in_the_robot_scene_and_no_robot_truth(stream):
    from kp_pose_ros.core.transform_tree import TransformTree
    from kp_pose_ros.ros.images import rgb8_from_msg
    from kp_pose_ros.ros.tf import transform_from_msg

    color, info = stream[f'{NS}/color/image_raw'][0], stream[f'{NS}/color/camera_info'][0]
    assert color.encoding == 'rgb8' and color.header.frame_id == info.header.frame_id == 'camera_color_optical_frame'
    assert rgb8_from_msg(color).std() > 5.0
    assert stream[f'{NS}/aligned_depth_to_color/image_raw'][0].encoding == '16UC1'
    tree = TransformTree()
    for msg in stream['/tf_static']:
        for t in msg.transforms:
            tree.set_transform(t.header.frame_id, t.child_frame_id, transform_from_msg(t), 0, static=True)
    tree.lookup('camera_link', 'camera_color_optical_frame')
    assert stream['/sim/keypoints'] == []


def test_ground_truth_is_stamped_like_the_images_and_names_bop_models(stream):
    image_stamps = {stamp_to_ns(m.header.stamp) for m in stream[f'{NS}/color/image_raw']}
    truth = stream['/sim/objects']
    assert image_stamps & {stamp_to_ns(m.header.stamp) for m in truth}
    models = {p.stem for p in LMO_MODELS.glob('obj_*.ply')}
    for msg in truth:
        assert msg.header.frame_id == 'camera_color_optical_frame' and 1 <= len(msg.detections) <= 4
        for det in msg.detections:
            hypothesis = det.results[0].hypothesis
            assert hypothesis.class_id in models and 0.0 <= hypothesis.score <= 1.0
            assert det.id.startswith(hypothesis.class_id) and det.bbox.size.x > 0
    assert any(d.results[0].hypothesis.score > 0.5 for m in truth for d in m.detections)
    layouts = {tuple(d.results[0].hypothesis.class_id for d in m.detections) for m in truth}
    poses = {tuple(d.results[0].pose.pose.position.z for d in m.detections) for m in truth}
    assert len(poses) == len(truth) and len(layouts) >= 1  # a new view every frame


def test_poses_put_each_model_surface_where_the_depth_image_shows_it(stream):
    """For each well visible object, its model vertices under the published pose lie on the rendered depth surface
    (the side facing the camera) or behind it (the far side), never in front of it: a wrong frame, unit or transform
    direction would put them elsewhere in the image or at another distance."""
    from kp_pose_ros.core.transforms import transform_points
    from kp_pose_ros.objects.models import load_bop_models
    from kp_pose_ros.ros.images import camera_model_from_info, depth_m_from_msg
    from kp_pose_ros.ros.poses import matrix_from_pose

    camera = camera_model_from_info(stream[f'{NS}/color/camera_info'][0])
    depths = {stamp_to_ns(m.header.stamp): depth_m_from_msg(m)
              for m in stream[f'{NS}/aligned_depth_to_color/image_raw']}
    models = {m.name: m for m in load_bop_models(LMO_MODELS).values()}
    checked = 0
    for msg in stream['/sim/objects']:
        depth = depths.get(stamp_to_ns(msg.header.stamp))
        if depth is None:  # subscriptions may join a frame apart
            continue
        for det in msg.detections:
            hypothesis = det.results[0]
            if hypothesis.hypothesis.score < 0.9:
                continue
            points = transform_points(matrix_from_pose(hypothesis.pose.pose),
                                      np.asarray(models[hypothesis.hypothesis.class_id].mesh.vertices))
            cols, rows, inside = camera.pixel_indices(camera.project(points))
            surface = depth[rows[inside], cols[inside]]
            z = points[inside, 2]
            assert inside.sum() > 50 and np.isfinite(surface).all()
            # Vertices on the silhouette's edge may round to a pixel of the table behind: a few per cent.
            in_front = np.mean(surface > z + 0.01)
            on_surface = np.mean(np.abs(surface - z) < 0.005)
            assert in_front < 0.1 and on_surface > 0.25, (hypothesis.hypothesis.class_id, in_front, on_surface)
            checked += 1
    assert checked >= 2
