"""The sim_camera node on articulated scenes (scene:=articulated) over real rclpy: the RealSense topic set as in the
other scenes, and /sim/articulated/parts and /sim/articulated/joint_states stamped like the images, equal to the
truth of a ProceduralScene rendered again from the same seed (the node is deterministic per seed), with box poses
that project into the rendered instance; unknown categories fail configure; and `kp-pose demo articulated`'s scoring
on synthetic poses."""
import numpy as np
import pytest
from conftest import spin_until

from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.graphs.runner import GraphRun, run_graph
from kp_pose_ros.ros.stamps import stamp_to_ns

NS = '/camera/camera'
SEED = 2  # layouts of eyeglasses + laptop, then drawer + scissors
# Exact depth and plain backdrops; two views per layout, so four frames show two layouts.
OVERRIDES = {'scene': 'articulated', 'seed': str(SEED), 'rate_hz': '20.0', 'views_per_layout': '2',
             'depth_sensor': 'ideal', 'random_background': 'false'}
FRAMES = 4


@pytest.fixture(scope='module')
def stream():
    """Every message on the camera's topics, the articulated truth and the other scenes' truth (none expected), from
    the sim_camera graph run in this process, and the node's scene config."""
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    from kp_pose_msgs.msg import KeypointArray

    topics = {f'{NS}/color/image_raw': Image, f'{NS}/aligned_depth_to_color/image_raw': Image,
              f'{NS}/color/camera_info': CameraInfo, '/sim/articulated/parts': Detection3DArray,
              '/sim/articulated/joint_states': JointState, '/sim/objects': Detection3DArray,
              '/sim/keypoints': KeypointArray, '/tf_static': TFMessage}
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    got = {topic: [] for topic in topics}
    with run_graph('sim_camera', OVERRIDES) as run:
        assert not run.not_active
        probe = Node('sim_articulated_probe', context=run.context)
        for topic, msg_type in topics.items():
            probe.create_subscription(msg_type, topic, got[topic].append, latched if topic == '/tf_static' else 20)
        run.executor.add_node(probe)
        # Subscriptions may join a frame late: wait for the frames after the first too.
        ok = spin_until(run.executor, lambda: all(len(got[t]) >= FRAMES for t in list(topics)[:2] + [
            '/sim/articulated/parts', '/sim/articulated/joint_states']), 60.0)
        config = run.nodes[0].scene.config
        run.executor.remove_node(probe)
        probe.destroy_node()
    assert ok, {k: len(v) for k, v in got.items()}
    return got, config


@pytest.fixture(scope='module')
def rerendered(stream):
    """The first frames of the node's scene rendered again here, from its config and seed, with their part boxes."""
    from kp_pose_ros.articulated.categories import ArticulatedInstance
    from kp_pose_ros.nodes.sim_camera import next_object_frame, part_boxes
    from kp_pose_ros.sim.procedural_scene import ProceduralScene

    _, config = stream
    frames = []
    with ProceduralScene(config, seed=SEED) as scene:
        for index in range(FRAMES + 3):
            frame = next_object_frame(scene, index, int(OVERRIDES['views_per_layout']))
            boxes = [part_boxes(inst, ArticulatedInstance(scene.articulated[inst.body].urdf, inst.category,
                                                          points_per_part=64)) for inst in frame.instances]
            frames.append((frame, boxes))
    return frames


def _by_stamp(messages):
    return {stamp_to_ns(m.header.stamp): m for m in messages}


def _published_frames(stream, rerendered):
    """(published parts, published joints, rerendered frame, its boxes) per frame, matched by order of stamps: the
    node publishes frame k with the k-th stamp (parts and joints of a frame share it)."""
    got, _ = stream
    parts, joints = _by_stamp(got['/sim/articulated/parts']), _by_stamp(got['/sim/articulated/joint_states'])
    out = []
    for stamp in sorted(parts):
        # Which frame: the rerendered frame with the same part poses (subscriptions may miss the first frames).
        first = parts[stamp].detections[0].bbox.center.position
        index = next(k for k, (_, boxes) in enumerate(rerendered)
                     if np.allclose(boxes[0][0][1][:3, 3], [first.x, first.y, first.z], atol=1e-6))
        out.append((parts[stamp], joints.get(stamp), *rerendered[index]))
    return out


def test_camera_topics_as_in_the_other_scenes_and_no_other_truth(stream):
    from kp_pose_ros.core.transform_tree import TransformTree
    from kp_pose_ros.ros.images import depth_m_from_msg, rgb8_from_msg
    from kp_pose_ros.ros.tf import transform_from_msg

    got, config = stream
    color, info = got[f'{NS}/color/image_raw'][0], got[f'{NS}/color/camera_info'][0]
    assert color.encoding == 'rgb8' and color.header.frame_id == info.header.frame_id == 'camera_color_optical_frame'
    assert rgb8_from_msg(color).std() > 5.0
    depth = got[f'{NS}/aligned_depth_to_color/image_raw'][0]
    assert depth.encoding == '16UC1' and np.isfinite(depth_m_from_msg(depth)).mean() > 0.5
    tree = TransformTree()
    for msg in got['/tf_static']:
        for t in msg.transforms:
            tree.set_transform(t.header.frame_id, t.child_frame_id, transform_from_msg(t), 0, static=True)
    tree.lookup('camera_link', 'camera_color_optical_frame')
    assert got['/sim/keypoints'] == [] and got['/sim/objects'] == []
    # The default categories, TEST-split instances only (never seen in training), no table.
    assert set(config.articulated_categories) <= {'laptop', 'drawer', 'eyeglasses', 'scissors'}
    assert 'laptop' in config.articulated_categories and config.split == 'test' and config.rigid_per_layout == (0, 0)


def test_ground_truth_is_stamped_like_the_images(stream):
    got, _ = stream
    images = set(_by_stamp(got[f'{NS}/color/image_raw']))
    images &= set(_by_stamp(got[f'{NS}/aligned_depth_to_color/image_raw']))
    parts, joints = set(_by_stamp(got['/sim/articulated/parts'])), set(_by_stamp(got['/sim/articulated/joint_states']))
    assert len(parts & joints & images) >= FRAMES - 1
    assert len(parts) == len(got['/sim/articulated/parts'])  # one stamp per frame
    for msg in got['/sim/articulated/parts']:
        assert msg.header.frame_id == 'camera_color_optical_frame' and msg.detections
        for det in msg.detections:
            assert det.header.stamp == msg.header.stamp and len(det.results) == 1


def test_parts_and_joints_are_the_scene_truth_with_box_frames_and_sizes(stream, rerendered):
    """Every part of every instance, named <instance>/<part> and <category>/<part>, at its box frame (link frame at
    the box centre) with the box extents; every joint's true state: those of the layout rendered again from the seed."""
    from kp_pose_ros.ros.joint_states import joint_positions
    from kp_pose_ros.ros.poses import matrix_from_pose

    matched = _published_frames(stream, rerendered)
    assert len(matched) >= FRAMES - 1
    layouts = set()
    for parts_msg, joints_msg, frame, boxes in matched:
        expected = [(inst, name, T, extents) for inst, inst_boxes in zip(frame.instances, boxes)
                    for name, T, extents in inst_boxes]
        assert len(parts_msg.detections) == len(expected)
        for det, (inst, name, T, extents) in zip(parts_msg.detections, expected):
            assert det.id == f'{inst.name}/{name}' and det.results[0].hypothesis.class_id == f'{inst.category}/{name}'
            np.testing.assert_allclose(matrix_from_pose(det.results[0].pose.pose), T, atol=1e-6)
            np.testing.assert_allclose(matrix_from_pose(det.bbox.center), T, atol=1e-6)
            np.testing.assert_allclose([det.bbox.size.x, det.bbox.size.y, det.bbox.size.z], extents, atol=1e-6)
            assert 0.0 <= det.results[0].hypothesis.score <= 1.0
        # The box frame is the link frame moved, not turned.
        link = {(inst.name, p.name): p.T_cam_part for inst in frame.instances for p in inst.parts}
        for inst, name, T, _ in expected:
            np.testing.assert_allclose(T[:3, :3], link[inst.name, name][:3, :3], atol=1e-9)
        assert joints_msg is not None
        names = [f'{inst.name}/{j.name}' for inst in frame.instances for j in inst.joints]
        assert sorted(joints_msg.name) == sorted(names) and names
        states = [j.state for inst in frame.instances for j in inst.joints]
        np.testing.assert_allclose(joint_positions(joints_msg, names), states, atol=1e-9)
        for inst in frame.instances:  # states within the URDF limits, drawn per layout
            for j in inst.joints:
                assert j.limits[0] - 1e-6 <= j.state <= j.limits[1] + 1e-6
        layouts.add(tuple(inst.name for inst in frame.instances))
    assert len(layouts) == 2  # a new layout every views_per_layout frames
    assert len({name.split('_')[0] for layout in layouts for name in layout}) >= 2


def test_box_centres_project_into_the_rendered_instance(stream, rerendered):
    """Each well visible part's box centre projects inside the bounding box of its instance's pixels, at a depth
    within the box's reach of the depth the camera sees there: a wrong frame, offset or direction would not."""
    from kp_pose_ros.ros.images import camera_model_from_info, depth_m_from_msg
    from kp_pose_ros.ros.poses import matrix_from_pose

    got, _ = stream
    camera = camera_model_from_info(got[f'{NS}/color/camera_info'][0])
    depths = {s: depth_m_from_msg(m) for s, m in _by_stamp(got[f'{NS}/aligned_depth_to_color/image_raw']).items()}
    checked = 0
    for parts_msg, _, frame, _ in _published_frames(stream, rerendered):
        depth = depths.get(stamp_to_ns(parts_msg.header.stamp))
        for det in parts_msg.detections:
            k = next(i for i, inst in enumerate(frame.instances) if det.id.startswith(inst.name + '/'))
            mask = frame.instance_mask(k)
            if det.results[0].hypothesis.score < 0.8 or mask.sum() < 300:
                continue
            rows, cols = np.nonzero(mask)
            T = matrix_from_pose(det.bbox.center)
            u, v = camera.project(T[:3, 3][None])[0]
            assert cols.min() - 2 <= u <= cols.max() + 2 and rows.min() - 2 <= v <= rows.max() + 2, (det.id, u, v)
            if depth is not None:  # the instance's surface lies within the box's half diagonal of its centre
                reach = 0.5 * np.linalg.norm([det.bbox.size.x, det.bbox.size.y, det.bbox.size.z]) + 0.01
                seen = depth[mask & np.isfinite(depth)]
                assert seen.min() - reach <= T[2, 3] <= seen.max() + reach, det.id
            checked += 1
    assert checked >= 4


def test_unknown_category_fails_configure_saying_why(ros_context):
    overrides = dict(OVERRIDES, articulated_categories='laptop,teapot')
    with GraphRun(get_graph('sim_camera').nodes(overrides), context=ros_context) as run:
        assert run.not_active == ['camera']
        node = run.nodes[0]
        message = node.diagnostics.status().message
        assert node.state == 'unconfigured' and "'teapot'" in message and 'laptop' in message, message
    overrides = dict(OVERRIDES, articulated_per_layout='3,1')
    with GraphRun(get_graph('sim_camera').nodes(overrides), context=ros_context) as run:
        assert run.not_active == ['camera']
        assert 'articulated_per_layout' in run.nodes[0].diagnostics.status().message


def test_articulated_scene_needs_the_pbr_renderer(ros_context):
    with GraphRun(get_graph('sim_camera').nodes(dict(OVERRIDES, renderer='tiny')), context=ros_context) as run:
        assert run.not_active == ['camera'] and 'pbr' in run.nodes[0].diagnostics.status().message
