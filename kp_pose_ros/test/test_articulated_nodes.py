"""articulated_pose nodes over real rclpy, real messages and the shipped voting network
(models/articulated/page_voting.onnx): a rendered RGB-D frame of a procedural laptop goes through articulated_voting
(keypoints_3d, part_points) and articulated_fitting (detections_3d, overlay), stamped with the image's time; exact
part keypoints of a known laptop give its part poses and hinge angle as TF, JointState, Detection3DArray and markers;
bad input (encodings, missing camera_info, NaN depth, empty and mismatched arrays, unknown categories, stamps that do
not pair) is counted while the nodes keep running; the reset service starts new instance ids; a missing or corrupt
model fails configure; the graph wires the camera topics.

Tests that need the network are skipped, saying so, while the model file is missing. KP_POSE_ARTICULATED_TEST_MODEL
points them at another network (e.g. a development one) with its manifest and category models beside it."""
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import call_service, spin_until
from scipy.spatial.transform import Rotation
from test_object_nodes import FRAME, collect, drops, header, image
from test_part_fit import observe

from kp_pose_ros.articulated.categories import ArticulatedInstance
from kp_pose_ros.core.transforms import make_transform, rotation_error_deg
from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.graphs.spec import NodeSpec
from kp_pose_ros.paths import model_file
from kp_pose_ros.ros.part_points import part_points_cloud, part_points_from_cloud, split_part_points
from kp_pose_ros.sim.procedural import articulated_instance

MODEL = Path(os.environ.get('KP_POSE_ARTICULATED_TEST_MODEL') or model_file('articulated/page_voting.onnx'))
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason=f'the articulated voting network {MODEL} is not there '
                                 'yet (it is trained separately and lands in kp_pose_ros/models/articulated/)')
NS = '/articulated'
VOTING = 'kp_pose_ros.nodes.articulated_voting:ArticulatedVotingNode'
FITTING = 'kp_pose_ros.nodes.articulated_fitting:ArticulatedFittingNode'
SEED = 4242


def spec(name, node_class, **parameters):
    remap = [('image', '/camera/image'), ('camera_info', '/camera/camera_info'), ('depth', '/camera/depth')]
    return NodeSpec(name=name, namespace=NS, executable=name, node_class=node_class,
                    parameters={'model': str(MODEL), **parameters}, remappings=remap)


@pytest.fixture(scope='module')
def rendered():
    """One PBR frame of a procedural laptop (its instance seed drawn by the scene) with ideal depth."""
    from kp_pose_ros.sim.procedural_scene import ProceduralScene, ProceduralSceneConfig

    config = ProceduralSceneConfig(articulated_categories=('laptop',), rigid_per_layout=(0, 0),
                                   articulated_per_layout=(1, 1))
    with ProceduralScene(config, seed=SEED) as scene:
        scene.new_view()
        return scene.render()


def frame_messages(rendered, h, depth_encoding='16UC1'):
    from kp_pose_ros.ros.images import array_to_image, camera_info_from_model

    frame = rendered.frame
    depth = frame.depth_m
    if depth_encoding == '16UC1':
        depth = np.round(np.nan_to_num(depth) * 1000.0).astype(np.uint16)
    return (array_to_image(frame.rgb, 'rgb8', h), array_to_image(depth, depth_encoding, h),
            camera_info_from_model(frame.camera, h))


@needs_model
def test_rendered_frame_through_voting_and_fitting_stamped_with_the_image(ros_node, rendered):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from vision_msgs.msg import Detection3DArray

    from kp_pose_msgs.msg import KeypointArray

    node, executor = ros_node
    keypoints = collect(node, KeypointArray, f'{NS}/keypoints_3d')
    clouds = collect(node, PointCloud2, f'{NS}/part_points')
    detections = collect(node, Detection3DArray, f'{NS}/detections_3d')
    overlays = collect(node, Image, f'{NS}/overlay')
    pub_image = node.create_publisher(Image, '/camera/image', 10)
    pub_depth = node.create_publisher(Image, '/camera/depth', 10)
    pub_info = node.create_publisher(CameraInfo, '/camera/camera_info', 10)
    specs = [spec('articulated_voting', VOTING, providers='cpu'), spec('articulated_fitting', FITTING)]
    with GraphRun(specs, context=node.context) as run:
        assert not run.not_active
        voting = run.node('articulated_voting')
        assert 'laptop' in voting.voter.network.categories
        part_names = {name: slot.model.part_names for name, slot in voting.voter.network.categories.items()}
        for n in run.nodes:
            executor.add_node(n)
        h = header(node)
        rgb, depth, info = frame_messages(rendered, h)
        for _ in range(40):
            if detections and overlays:
                break
            pub_info.publish(info)
            pub_image.publish(rgb)
            pub_depth.publish(depth)
            spin_until(executor, lambda: bool(detections and overlays), 0.5)
        for n in run.nodes:
            executor.remove_node(n)
    assert keypoints and clouds and detections and overlays
    for msg in (keypoints[0], clouds[0], detections[0], overlays[0]):
        assert msg.header.stamp == h.stamp and msg.header.frame_id == FRAME
    # The laptop is found; every object's keypoints stay aligned with its category model (score 0 where none was
    # voted), its labelled points lie on the laptop in the image.
    instances = keypoints[0].instances
    assert 'laptop' in [i.class_id for i in instances]
    for inst in instances:
        parts = part_names[inst.class_id]
        assert [k.name for k in inst.keypoints_3d] == [f'{p}/k{k}' for p in parts for k in range(3)]
        assert inst.instance_id == -1 and 0 < inst.score <= 1 and inst.bbox.size_x > 0
    points, instance, part = part_points_from_cloud(clouds[0])
    laptop = [i.class_id for i in instances].index('laptop')
    assert set(instance.tolist()) <= set(range(len(instances))) and np.sum(instance == laptop)
    assert set(part[instance == laptop].tolist()) <= set(range(len(part_names['laptop'])))
    region = rendered.instance_mask(0)
    pixels = np.round(rendered.frame.camera.project(points[instance == laptop])).astype(int)
    assert np.mean(region[pixels[:, 1].clip(0, 479), pixels[:, 0].clip(0, 639)]) > 0.5
    for det in detections[0].detections:
        category, _, part_name = det.results[0].hypothesis.class_id.partition('/')
        assert det.header.stamp == h.stamp and part_name in part_names[category]


@pytest.fixture(scope='module')
def laptop(tmp_path_factory):
    """A procedural laptop, its category's model from the network's manifest, and part keypoints of it at a known
    pose and hinge angle (the category's box keypoints on the instance's parts: exact)."""
    from kp_pose_ros.nodes.articulated_fitting import load_category_models

    if not MODEL.is_file():
        pytest.skip(f'the articulated voting network {MODEL} is not there yet')
    model = load_category_models(MODEL)['laptop']
    instance = ArticulatedInstance(articulated_instance('laptop', 7, tmp_path_factory.mktemp('laptop')).urdf, 'laptop')
    T_cam = make_transform(Rotation.from_euler('xyz', [110, 10, 30], degrees=True).as_matrix(), [0.05, 0.1, 0.9])
    q = np.array([1.4])
    keypoints, T_boxes = observe(instance, model, q, T_cam)
    return model, instance, q, keypoints, T_boxes


def keypoint_array(h, model, keypoints, scores=None, class_id='laptop'):
    from kp_pose_msgs.msg import KeypointArray, KeypointInstance
    from kp_pose_ros.ros.detections import bbox_2d
    from kp_pose_ros.ros.keypoint_msgs import keypoints_3d

    names = [f'{p}/k{k}' for p in model.part_names for k in range(3)]
    pts = keypoints.reshape(-1, 3)
    scores = np.ones(len(pts)) if scores is None else scores
    return KeypointArray(header=h, instances=[KeypointInstance(
        class_id=class_id, instance_id=-1, score=0.9, bbox=bbox_2d([100, 100, 300, 260]),
        keypoints_3d=keypoints_3d(names, pts, scores))])


@needs_model
def test_fitting_node_publishes_parts_joints_and_markers_and_survives_bad_input(ros_node, laptop):
    from sensor_msgs.msg import JointState, PointCloud2, PointField
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray
    from visualization_msgs.msg import Marker, MarkerArray

    from kp_pose_msgs.msg import KeypointArray
    from kp_pose_msgs.srv import ResetCalibration
    from kp_pose_ros.ros.poses import matrix_from_pose
    from kp_pose_ros.ros.tf import transform_from_msg

    model, instance, q, keypoints, T_boxes = laptop
    node, executor = ros_node
    detections = collect(node, Detection3DArray, f'{NS}/detections_3d')
    joints = collect(node, JointState, f'{NS}/joint_states')
    markers = collect(node, MarkerArray, f'{NS}/markers')
    tf = collect(node, TFMessage, '/tf')
    pub_keypoints = node.create_publisher(KeypointArray, f'{NS}/keypoints_3d', 10)
    pub_points = node.create_publisher(PointCloud2, f'{NS}/part_points', 10)
    with GraphRun([spec('articulated_fitting', FITTING, method='box', publish_overlay=False)],
                  context=node.context) as run:
        fitting = run.nodes[0]
        executor.add_node(fitting)

        def frame(keypoint_msg=None, cloud=None, **kwargs):
            h = header(node)
            msg = keypoint_msg or keypoint_array(h, model, keypoints, **kwargs)
            msg.header = h
            count = len(detections)
            cloud = cloud or part_points_cloud(h, [()] * len(msg.instances))
            cloud.header = h
            pub_points.publish(cloud)
            pub_keypoints.publish(msg)
            assert spin_until(executor, lambda: len(detections) > count, 5.0), drops(fitting)
            return h, detections[-1]

        # Exact keypoints: both parts where they are, the hinge angle, all stamped with the keypoints' stamp.
        h, first = frame()
        assert first.header.stamp == h.stamp and first.header.frame_id == FRAME
        assert [d.results[0].hypothesis.class_id for d in first.detections] == ['laptop/base', 'laptop/lid']
        base_id, lid_id = (d.id for d in first.detections)
        assert base_id.startswith('laptop_') and base_id.endswith('/base') and lid_id == base_id[:-4] + 'lid'
        for det, T_true in zip(first.detections, T_boxes):
            T = matrix_from_pose(det.bbox.center)
            assert np.linalg.norm(T[:3, 3] - T_true[:3, 3]) < 2e-3 and rotation_error_deg(T, T_true) < 0.5
            assert min(det.bbox.size.x, det.bbox.size.y, det.bbox.size.z) > 0
            assert 0.5 < det.results[0].hypothesis.score <= 1
        assert spin_until(executor, lambda: bool(joints and markers and tf), 5.0)
        (joint,) = joints
        assert joint.header.stamp == h.stamp and joint.name == [f'{base_id[:-5]}/{model.joint_names[0]}']
        assert abs(joint.position[0] - q[0]) < np.radians(0.5)
        frames = {t.child_frame_id: t for m in tf for t in m.transforms}
        assert set(frames) >= {base_id, lid_id}
        assert all(frames[c].header.stamp == h.stamp and frames[c].header.frame_id == FRAME for c in (base_id, lid_id))
        lid_pose = matrix_from_pose(first.detections[1].bbox.center)
        np.testing.assert_allclose(transform_from_msg(frames[lid_id]), lid_pose, atol=1e-6)
        kinds = {(m.ns, m.type) for m in markers[0].markers}
        assert kinds == {('part_boxes', Marker.LINE_LIST), ('part_axes', Marker.LINE_LIST),
                         ('joint_axes', Marker.LINE_LIST)}
        assert all(m.header.stamp == h.stamp for m in markers[0].markers)

        # Part points of the base (its box) are used; the same object keeps its id.
        base_points = T_boxes[0][:3, :3] @ (np.random.default_rng(1).uniform(-0.4, 0.4, (200, 3)) * 0.1).T
        cloud = part_points_cloud(h, [(base_points.T + T_boxes[0][:3, 3], None)])
        assert frame(cloud=cloud)[1].detections[0].id == base_id
        # After a reset the object gets a new id.
        assert call_service(node, executor, ResetCalibration, f'{NS}/articulated_fitting/reset').success
        renewed = frame()[1].detections[0].id
        assert renewed != base_id

        # Bad input: every frame still gives a (possibly empty) array, each problem is counted.
        assert not frame(keypoint_msg=KeypointArray())[1].detections  # nothing found upstream
        assert not frame(class_id='toaster')[1].detections
        assert not frame(scores=np.zeros(6))[1].detections  # no keypoint voted
        nan = keypoints.copy()
        nan[:] = np.nan
        assert not frame(keypoint_msg=keypoint_array(h, model, nan))[1].detections
        stray = part_points_cloud(h, [(), (), (np.zeros((5, 3)),)])  # points of an instance that is not there
        assert len(frame(cloud=stray)[1].detections) == 2
        xyz_only = PointCloud2(header=h, height=1, width=1, point_step=12, row_step=12, data=bytes(12), fields=[
            PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate('xyz')])
        assert len(frame(cloud=xyz_only)[1].detections) == 2
        seen = drops(fitting)
        assert int(seen['unknown_category']) >= 1 and int(seen['rejected']) >= 2 and int(seen['bad_part_points']) >= 2
        # Keypoints and part points of different stamps never pair: nothing published, counted.
        count = len(detections)
        h1, h2 = header(node), header(node, age_s=0.5)
        pub_points.publish(part_points_cloud(h2, [()]))
        pub_keypoints.publish(keypoint_array(h1, model, keypoints))
        assert spin_until(executor, lambda: 'sync' in drops(fitting), 5.0)
        assert len(detections) == count and fitting.state == 'active'
        executor.remove_node(fitting)


@needs_model
def test_voting_node_survives_bad_input_and_validates_live_parameters(ros_node, rendered):
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from kp_pose_msgs.msg import KeypointArray

    node, executor = ros_node
    keypoints = collect(node, KeypointArray, f'{NS}/keypoints_3d')
    clouds = collect(node, PointCloud2, f'{NS}/part_points')
    pub_image = node.create_publisher(Image, '/camera/image', 10)
    pub_depth = node.create_publisher(Image, '/camera/depth', 10)
    pub_info = node.create_publisher(CameraInfo, '/camera/camera_info', 10)
    with GraphRun([spec('articulated_voting', VOTING, providers='cpu')], context=node.context) as run:
        voting = run.nodes[0]
        executor.add_node(voting)

        def send(rgb=None, depth=None, info=True, depth_encoding='32FC1', h=None):
            h = h or header(node)
            frame_rgb, frame_depth, frame_info = frame_messages(rendered, h, depth_encoding)
            if info:
                pub_info.publish(frame_info)
            pub_image.publish(rgb or frame_rgb)
            pub_depth.publish(depth or frame_depth)
            return h

        # No camera_info yet: nothing published, counted.
        send(info=False)
        assert spin_until(executor, lambda: 'no_camera_info' in drops(voting), 5.0) and not keypoints
        # An image in an encoding the suite refuses, and a depth image in a colour encoding.
        h = header(node)
        send(rgb=image(h, 'yuv422'), h=h)
        assert spin_until(executor, lambda: 'bad_image' in drops(voting), 5.0)
        h = header(node)
        send(depth=image(h), h=h)
        assert spin_until(executor, lambda: 'bad_depth' in drops(voting), 5.0)
        assert not keypoints and not clouds
        # All-NaN depth: nothing to find, both outputs still published, empty, with the image's stamp.
        h = header(node)
        nan_depth = np.full(rendered.frame.depth_m.shape, np.nan, np.float32)
        from kp_pose_ros.ros.images import array_to_image

        send(depth=array_to_image(nan_depth, '32FC1', h), h=h)
        assert spin_until(executor, lambda: bool(keypoints and clouds), 10.0)
        assert keypoints[0].header.stamp == clouds[0].header.stamp == h.stamp
        assert not keypoints[0].instances and clouds[0].width == 0
        # Colour and depth of different stamps never pair.
        h1, h2 = header(node), header(node, age_s=0.3)
        frame_rgb, _, frame_info = frame_messages(rendered, h1)
        _, frame_depth, _ = frame_messages(rendered, h2)
        pub_info.publish(frame_info)
        pub_image.publish(frame_rgb)
        pub_depth.publish(frame_depth)
        assert spin_until(executor, lambda: 'sync' in drops(voting), 5.0)
        assert len(keypoints) == 1 and voting.state == 'active'

        # Live parameters are validated; structural ones are refused while configured.
        refused = voting.set_parameters([Parameter('rho_m', value=0.0)])[0]
        assert not refused.successful and 'rho_m' in refused.reason
        assert voting.set_parameters([Parameter('rho_m', value=0.01)])[0].successful
        assert voting.voter.config.voting.rho_m == 0.01
        assert voting.set_parameters([Parameter('keypoints_from', value='direct')])[0].successful
        assert voting.voter.config.keypoints_from == 'direct'
        assert not voting.set_parameters([Parameter('keypoints_from', value='guess')])[0].successful
        refused = voting.set_parameters([Parameter('method', value='fps')])[0]
        assert not refused.successful and 'structural' in refused.reason
        executor.remove_node(voting)


def test_missing_or_corrupt_model_fails_configure_clearly(ros_context, tmp_path):
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'not an onnx file')
    corrupt.with_suffix('.yaml').write_text(yaml.safe_dump({'categories': [], 'methods': ['learned', 'fps', 'box'],
                                                            'classes': 1, 'keypoint_channels': 0}))
    specs = [NodeSpec(name='missing', namespace=NS, executable='articulated_voting', node_class=VOTING,
                      parameters={'model': str(tmp_path / 'missing.onnx')}),
             NodeSpec(name='corrupt', namespace=NS, executable='articulated_voting', node_class=VOTING,
                      parameters={'model': str(corrupt), 'providers': 'cpu'}),
             NodeSpec(name='fitting', namespace=NS, executable='articulated_fitting', node_class=FITTING,
                      parameters={'model': str(tmp_path / 'missing.onnx')})]
    with GraphRun(specs, context=ros_context) as run:
        assert run.not_active == ['missing', 'corrupt', 'fitting']
        for n in run.nodes:
            status = n.diagnostics.status()
            assert n.state == 'unconfigured' and 'configure failed' in status.message
        assert 'missing.onnx' in run.node('missing').diagnostics.status().message
        assert 'corrupt.onnx' in run.node('corrupt').diagnostics.status().message
        assert run.node('fitting').fitter is None


def test_part_points_cloud_round_trip():
    from std_msgs.msg import Header

    base, lid = np.arange(12.0).reshape(4, 3), -np.ones((2, 3))
    msg = part_points_cloud(Header(frame_id=FRAME), [(base, lid), (None, None), (None, lid[:1])])
    assert msg.width == 7 and msg.point_step == 16 and [f.name for f in msg.fields] == ['x', 'y', 'z', 'instance',
                                                                                        'part']
    points, instance, part = part_points_from_cloud(msg)
    assert instance.tolist() == [0] * 6 + [2] and part.tolist() == [0, 0, 0, 0, 1, 1, 1]
    per_part, left_out = split_part_points(points, instance, part, [2, 2])
    assert left_out == 1 and np.array_equal(per_part[0][0], base) and np.array_equal(per_part[0][1], lid)
    assert per_part[1] == (None, None)
    empty = part_points_cloud(Header(), [])
    assert empty.width == 0 and len(part_points_from_cloud(empty)[0]) == 0


def test_articulated_pose_graph_wires_the_camera_topics():
    graph = get_graph('articulated_pose')
    specs = {s.name: s for s in graph.nodes({'camera': 'azure_kinect', 'method': 'fps', 'overlay': 'false'})}
    assert list(specs) == ['articulated_voting', 'articulated_fitting']
    voting, fitting = specs['articulated_voting'], specs['articulated_fitting']
    assert voting.namespace == fitting.namespace == '/articulated_pose'
    assert voting.parameters['model'] == fitting.parameters['model'] == 'articulated/page_voting.onnx'
    assert voting.parameters['method'] == fitting.parameters['method'] == 'fps'
    assert fitting.parameters['publish_overlay'] is False
    assert dict(voting.remappings) == {'image': '/rgb/image_raw', 'depth': '/depth_to_rgb/image_raw',
                                       'camera_info': '/rgb/camera_info'}
    assert dict(fitting.remappings) == {'image': '/rgb/image_raw', 'camera_info': '/rgb/camera_info'}


def test_articulated_pose_on_the_sim_camera_renders_articulated_objects():
    specs = {s.name: s for s in get_graph('articulated_pose').nodes({'camera': 'sim', 'seed': '5'})}
    camera = specs['camera']
    assert camera.parameters['scene'] == 'articulated' and camera.parameters['seed'] == 5
    assert dict(specs['articulated_voting'].remappings)['depth'] == '/camera/camera/aligned_depth_to_color/image_raw'
