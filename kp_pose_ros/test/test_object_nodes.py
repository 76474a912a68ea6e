"""object_pose nodes over real rclpy, on small fake models: the detector, keypoint and pose nodes chained recover a
known pose, stamped with the image's time, as Detection2DArray, KeypointArray, Detection3DArray, TF, markers and an
overlay; bad input (encodings, stale images, missing camera_info, empty detections, NaN depth, unknown classes,
missing models) is logged and counted while the nodes keep running; the reset service starts new instance ids."""
import json

import numpy as np
import onnx
import pytest
import trimesh
import yaml
from conftest import call_service, spin_until
from onnx import TensorProto, helper, numpy_helper
from scipy.spatial.transform import Rotation
from test_object_detector import fake_yolov10

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.heatmaps import input_to_heatmap
from kp_pose_ros.core.transforms import make_transform, rotation_error_deg, transform_points
from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.graphs.spec import NodeSpec
from kp_pose_ros.objects.crops import square_crop
from kp_pose_ros.objects.keypoints import ObjectKeypoints
from kp_pose_ros.ros.poses import matrix_from_pose
from kp_pose_ros.ros.tf import transform_from_msg

NS = '/objects'
FRAME = 'camera_color_optical_frame'
CAMERA = CameraModel.pinhole(320, 256, 300.0, 300.0, 159.5, 127.5)  # the fake detector's input size: no letterbox
# The corners of an 8 x 6 x 5 cm box, off centre, and where it is.
POINTS = np.array([[x, y, z] for x in (-0.03, 0.05) for y in (-0.02, 0.04) for z in (-0.025, 0.025)])
T_TRUE = make_transform(Rotation.from_euler('xyz', [25, -20, 10], degrees=True).as_matrix(), [0.01, -0.005, 0.45])
PIXELS = CAMERA.project(transform_points(T_TRUE, POINTS))
BOX = np.concatenate([np.floor(PIXELS.min(axis=0)) - 8, np.ceil(PIXELS.max(axis=0)) + 8])
# Detections of the fake detector: the object, and one of a class the keypoint model does not know (obj_000006).
ROWS = [[*BOX, 0.9, 0], [10, 10, 60, 50, 0.8, 2], [100, 100, 120, 120, 0.1, 1]]
CROP, STRIDE, PADDING = 128, 4, 0.2
DETECTOR = 'kp_pose_ros.nodes.object_detector:ObjectDetectorNode'
KEYPOINTS = 'kp_pose_ros.nodes.object_keypoints:ObjectKeypointsNode'
POSE = 'kp_pose_ros.nodes.object_pose:ObjectPoseNode'


def fake_keypoint_model(folder):
    """An ONNX keypoint model (objects 1 and 5, both with POINTS) whose heatmaps are always Gaussians at the crop
    pixels where POINTS under T_TRUE lie in the crop of BOX, with its manifest and 3D keypoint file."""
    crop = square_crop(BOX, CROP, padding=PADDING)
    peaks = input_to_heatmap(crop.to_crop(PIXELS), STRIDE)
    size = CROP // STRIDE
    rows, cols = np.mgrid[:size, :size]
    maps = np.exp(-((cols[None] - peaks[:, :1, None]) ** 2 + (rows[None] - peaks[:, 1:, None]) ** 2) / 2.0)
    maps = np.concatenate([maps, maps])[None].astype(np.float32)  # objects 1 and 5
    nodes = [helper.make_node('ReduceMean', ['input'], ['mean'], axes=[1, 2, 3], keepdims=1),
             helper.make_node('Mul', ['mean', 'zero'], ['nothing']),
             helper.make_node('Add', ['nothing', 'maps'], ['heatmaps'])]
    graph = helper.make_graph(
        nodes, 'fake_object_keypoints',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 3, CROP, CROP])],
        [helper.make_tensor_value_info('heatmaps', TensorProto.FLOAT, ['batch', maps.shape[1], size, size])],
        [numpy_helper.from_array(np.zeros(1, np.float32), 'zero'), numpy_helper.from_array(maps, 'maps')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    path = folder / 'fake_keypoints.onnx'
    onnx.save(model, str(path))
    ObjectKeypoints('box', {1: POINTS, 5: POINTS}).save(folder / 'fake_keypoints_3d.yaml')
    manifest = {'objects': {'obj_ids': [1, 5], 'names': ['obj_000001', 'obj_000005'],
                            'keypoints_file': 'fake_keypoints_3d.yaml'},
                'input': {'name': 'input', 'shape': ['batch', 3, CROP, CROP],
                          'crop': {'padding': PADDING, 'pad_value': 114},
                          'normalisation': {'mean': [0.0, 0.0, 0.0], 'std': [1.0, 1.0, 1.0]}},
                'output': {'name': 'heatmaps', 'stride': STRIDE}, 'decoding': {'smoothing_sigma': 0.0}}
    path.with_suffix('.yaml').write_text(yaml.safe_dump(manifest))
    return path


def bop_models(folder):
    """A BOP model folder with object 1: the 8 x 6 x 5 cm box of POINTS (mm), asymmetric."""
    folder.mkdir()
    mesh = trimesh.creation.box(extents=[80.0, 60.0, 50.0])
    mesh.apply_translation([10.0, 10.0, 0.0])
    mesh.export(folder / 'obj_000001.ply')
    info = {'1': {'diameter': 111.8, 'min_x': -30.0, 'min_y': -20.0, 'min_z': -25.0, 'size_x': 80.0,
                  'size_y': 60.0, 'size_z': 50.0}}
    (folder / 'models_info.json').write_text(json.dumps(info))
    return folder


@pytest.fixture
def models(tmp_path):
    return {'detector': str(fake_yolov10(tmp_path / 'fake_detector.onnx', ROWS)),
            'keypoints': str(fake_keypoint_model(tmp_path)), 'bop': str(bop_models(tmp_path / 'bop'))}


def spec(name, node_class, **parameters):
    remap = [('image', '/camera/image'), ('camera_info', '/camera/camera_info'), ('depth', '/camera/depth')]
    return NodeSpec(name=name, namespace=NS, executable=name, node_class=node_class, parameters=parameters,
                    remappings=remap)


def collect(node, msg_type, topic, qos=10):
    received = []
    node.create_subscription(msg_type, topic, received.append, qos)
    return received


def header(node, age_s=0.0):
    from std_msgs.msg import Header

    from kp_pose_ros.ros.stamps import ns_to_stamp

    return Header(stamp=ns_to_stamp(node.get_clock().now().nanoseconds - int(age_s * 1e9)), frame_id=FRAME)


def image(h, encoding='rgb8'):
    from kp_pose_ros.ros.images import array_to_image

    if encoding == 'yuv422':  # a valid message in an encoding the suite refuses
        from sensor_msgs.msg import Image

        return Image(header=h, height=256, width=320, encoding='yuv422', step=640, data=bytes(640 * 256))
    rgb = np.random.default_rng(0).integers(0, 255, (256, 320, 3), dtype=np.uint8)
    return array_to_image(rgb, encoding, h)


def camera_info(h):
    from kp_pose_ros.ros.images import camera_info_from_model

    return camera_info_from_model(CAMERA, h)


def drops(node) -> dict:
    return {kv.key[len('dropped.'):]: kv.value for kv in node.diagnostics.status().values
            if kv.key.startswith('dropped.') and kv.key != 'dropped.rate_hz'}


def test_graph_recovers_a_known_pose_stamped_with_the_image(ros_node, models):
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection2DArray, Detection3DArray
    from visualization_msgs.msg import Marker, MarkerArray

    from kp_pose_msgs.msg import KeypointArray

    node, executor = ros_node
    detections = collect(node, Detection2DArray, f'{NS}/detections')
    keypoints = collect(node, KeypointArray, f'{NS}/keypoints_2d')
    poses = collect(node, Detection3DArray, f'{NS}/detections_3d')
    markers = collect(node, MarkerArray, f'{NS}/markers')
    overlays = collect(node, Image, f'{NS}/overlay')
    tf = collect(node, TFMessage, '/tf')
    pub_image = node.create_publisher(Image, '/camera/image', 10)
    pub_info = node.create_publisher(CameraInfo, '/camera/camera_info', 10)
    specs = [spec('object_detector', DETECTOR, model=models['detector'], providers='cpu'),
             spec('object_keypoints', KEYPOINTS, model=models['keypoints'], providers='cpu'),
             spec('object_pose', POSE, keypoint_model=models['keypoints'], models_dir=models['bop'])]
    with GraphRun(specs, context=node.context) as run:
        assert not run.not_active
        for n in run.nodes:
            executor.add_node(n)
        h = header(node)
        for _ in range(40):
            if overlays:
                break
            pub_info.publish(camera_info(h))
            pub_image.publish(image(h))
            spin_until(executor, lambda: bool(overlays), 0.25)
        for n in run.nodes:
            executor.remove_node(n)
    assert detections and keypoints and poses and markers and overlays
    for msg in (detections[0], keypoints[0], poses[0], overlays[0]):
        assert msg.header.stamp == h.stamp and msg.header.frame_id == FRAME

    # Detector: score threshold 0.3 drops the third row; class names from the model's metadata.
    found = detections[0].detections
    assert [d.results[0].hypothesis.class_id for d in found] == ['obj_000001', 'obj_000006']
    assert found[0].results[0].hypothesis.score == pytest.approx(0.9)
    box = found[0].bbox
    np.testing.assert_allclose([box.center.position.x, box.center.position.y, box.size_x, box.size_y],
                               [(BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2, BOX[2] - BOX[0], BOX[3] - BOX[1]],
                               atol=1e-3)

    # Keypoints: obj_000006 is not in the keypoint model, so skipped; the rest land on the true pixels.
    (inst,) = keypoints[0].instances
    assert inst.class_id == 'obj_000001' and inst.score == pytest.approx(0.9)
    assert [k.name for k in inst.keypoints_2d] == [f'kp{k}' for k in range(8)]
    np.testing.assert_allclose([[k.x, k.y] for k in inst.keypoints_2d], PIXELS, atol=0.05)

    # Pose: the true one, with the model's box; a TF frame per instance; axes, box and mesh markers.
    (det,) = poses[0].detections
    hypothesis = det.results[0]
    assert hypothesis.hypothesis.class_id == 'obj_000001' and 0 < hypothesis.hypothesis.score <= 1
    T = matrix_from_pose(hypothesis.pose.pose)
    assert np.linalg.norm(T[:3, 3] - T_TRUE[:3, 3]) < 1e-3 and rotation_error_deg(T[:3, :3], T_TRUE[:3, :3]) < 0.2
    np.testing.assert_allclose([det.bbox.size.x, det.bbox.size.y, det.bbox.size.z], [0.08, 0.06, 0.05])
    centre = T_TRUE @ make_transform(np.eye(3), [0.01, 0.01, 0.0])
    np.testing.assert_allclose(matrix_from_pose(det.bbox.center)[:3, 3], centre[:3, 3], atol=1e-3)
    assert det.id.startswith('obj_000001_')
    frames = [t for m in tf for t in m.transforms if t.child_frame_id == det.id]
    assert frames and frames[0].header.frame_id == FRAME and frames[0].header.stamp == h.stamp
    np.testing.assert_allclose(transform_from_msg(frames[0]), T, atol=1e-6)
    types = {m.ns: m.type for m in markers[0].markers}
    assert types == {'object_axes': Marker.LINE_LIST, 'object_boxes': Marker.LINE_LIST,
                     'object_meshes': Marker.MESH_RESOURCE}
    mesh = next(m for m in markers[0].markers if m.ns == 'object_meshes')
    assert mesh.mesh_resource.startswith('file://') and mesh.mesh_resource.endswith('/bop/obj_000001.ply')
    assert all(m.header.stamp == h.stamp for m in markers[0].markers)


def test_detector_survives_bad_images_and_refuses_bad_settings(ros_node, models, tmp_path):
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    node, executor = ros_node
    detections = collect(node, Detection2DArray, f'{NS}/detections')
    pub = node.create_publisher(Image, '/camera/image', 10)
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'not an onnx file')
    specs = [spec('object_detector', DETECTOR, model=models['detector'], providers='cpu',
                  classes=['obj_000006']),
             spec('missing', DETECTOR, model='/nonexistent/detector.onnx'),
             spec('corrupt', DETECTOR, model=str(corrupt))]
    with GraphRun(specs, context=node.context) as run:
        assert run.not_active == ['missing', 'corrupt']
        assert all(n.detector is None and n.state == 'unconfigured' for n in run.nodes[1:])
        detector = run.nodes[0]
        executor.add_node(detector)
        pub.publish(image(header(node), 'yuv422'))
        pub.publish(image(header(node, age_s=10.0)))
        assert spin_until(executor, lambda: drops(detector).keys() >= {'bad_image', 'stale'}, 5.0)
        assert not detections and detector.state == 'active'
        pub.publish(image(header(node)))
        assert spin_until(executor, lambda: bool(detections), 5.0)
        # The class filter: only obj_000006 of the two boxes above the threshold.
        assert [d.results[0].hypothesis.class_id for d in detections[-1].detections] == ['obj_000006']
        refused = detector.set_parameters([Parameter('classes', value=['obj_000099'])])[0]
        assert not refused.successful and 'obj_000099' in refused.reason
        assert detector.set_parameters([Parameter('classes', value=[''])])[0].successful
        assert detector.set_parameters([Parameter('score_threshold', value=0.85)])[0].successful
        detections.clear()
        pub.publish(image(header(node)))
        assert spin_until(executor, lambda: bool(detections), 5.0)
        assert [d.results[0].hypothesis.class_id for d in detections[-1].detections] == ['obj_000001']
        executor.remove_node(detector)


def test_keypoints_node_passes_empty_frames_on_and_survives_bad_images(ros_node, models):
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from kp_pose_msgs.msg import KeypointArray
    from kp_pose_ros.ros.detections import detection_2d_array

    node, executor = ros_node
    keypoints = collect(node, KeypointArray, f'{NS}/keypoints_2d')
    pub_image = node.create_publisher(Image, '/camera/image', 10)
    pub_detections = node.create_publisher(Detection2DArray, f'{NS}/detections', 10)
    with GraphRun([spec('object_keypoints', KEYPOINTS, model=models['keypoints'], providers='cpu')],
                  context=node.context) as run:
        kp_node = run.nodes[0]
        executor.add_node(kp_node)
        h = header(node)
        pub_image.publish(image(h))
        pub_detections.publish(detection_2d_array(h, np.zeros((0, 4)), np.zeros(0), []))
        assert spin_until(executor, lambda: bool(keypoints), 5.0)
        assert keypoints[0].header.stamp == h.stamp and keypoints[0].header.frame_id == FRAME
        assert not keypoints[0].instances
        h = header(node)
        pub_image.publish(image(h, 'yuv422'))
        pub_detections.publish(detection_2d_array(h, BOX[None], [0.9], ['obj_000001']))
        assert spin_until(executor, lambda: 'bad_image' in drops(kp_node), 5.0)
        assert len(keypoints) == 1 and kp_node.state == 'active'
        h = header(node)
        pub_detections.publish(detection_2d_array(h, BOX[None], [0.9], ['obj_000005']))  # before its image
        pub_image.publish(image(h))
        assert spin_until(executor, lambda: len(keypoints) == 2, 5.0)
        assert [i.class_id for i in keypoints[1].instances] == ['obj_000005']
        executor.remove_node(kp_node)


def keypoint_array(h, class_id='obj_000001', pixels=PIXELS):
    from kp_pose_msgs.msg import KeypointArray, KeypointInstance
    from kp_pose_ros.ros.detections import bbox_2d
    from kp_pose_ros.ros.keypoint_msgs import keypoints_2d

    names = [f'kp{k}' for k in range(len(pixels))]
    return KeypointArray(header=h, instances=[KeypointInstance(
        class_id=class_id, instance_id=-1, score=0.9, bbox=bbox_2d(BOX),
        keypoints_2d=keypoints_2d(names, pixels, np.ones(len(pixels))))])


def test_pose_node_bad_input_tracking_and_reset(ros_node, models):
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection3DArray

    from kp_pose_msgs.msg import KeypointArray
    from kp_pose_msgs.srv import ResetCalibration
    from kp_pose_ros.ros.images import array_to_image

    node, executor = ros_node
    poses = collect(node, Detection3DArray, f'{NS}/detections_3d')
    pub_keypoints = node.create_publisher(KeypointArray, f'{NS}/keypoints_2d', 10)
    pub_info = node.create_publisher(CameraInfo, '/camera/camera_info', 10)
    pub_depth = node.create_publisher(Image, '/camera/depth', 10)
    nan_depth = np.full((256, 320), np.nan, np.float32)
    params = dict(keypoint_model=models['keypoints'], models_dir=models['bop'], use_depth=True,
                  publish_overlay=False)
    with GraphRun([spec('object_pose', POSE, **params)], context=node.context) as run:
        pose_node = run.nodes[0]
        executor.add_node(pose_node)

        def frame(depth=None, **kwargs):
            h = header(node)
            pub_depth.publish(depth if depth is not None else array_to_image(nan_depth, '32FC1', h))
            pub_keypoints.publish(keypoint_array(h, **kwargs))
            count = len(poses)
            assert spin_until(executor, lambda: len(poses) > count, 5.0), drops(pose_node)
            return poses[-1]

        # No camera_info yet: nothing published, counted.
        h = header(node)
        pub_depth.publish(array_to_image(nan_depth, '32FC1', h))
        pub_keypoints.publish(keypoint_array(h))
        assert spin_until(executor, lambda: 'no_camera_info' in drops(pose_node), 5.0)
        assert not poses
        pub_info.publish(camera_info(h))
        spin_until(executor, lambda: pose_node.camera_info.model is not None, 5.0)

        # All-NaN depth: keypoints alone still give the pose.
        first = frame()
        (det,) = first.detections
        T = matrix_from_pose(det.results[0].pose.pose)
        assert np.linalg.norm(T[:3, 3] - T_TRUE[:3, 3]) < 1e-3
        # A depth image in a colour encoding is refused (counted), the pose comes from the keypoints.
        h = header(node)
        assert frame(depth=image(h)).detections and 'bad_depth' in drops(pose_node)
        # The same object next frame keeps its id; after a reset it gets a new one.
        assert frame().detections[0].id == det.id
        response = call_service(node, executor, ResetCalibration, f'{NS}/object_pose/reset')
        assert response.success
        renewed = frame().detections[0].id
        assert renewed != det.id and int(renewed.rsplit('_', 1)[1]) > int(det.id.rsplit('_', 1)[1])
        # A class without model keypoints and keypoints that fit no pose: an empty array (the frame is seen).
        assert not frame(class_id='obj_000099').detections
        scattered = np.random.default_rng(3).uniform(BOX[:2], BOX[2:], (8, 2))
        assert not frame(pixels=scattered).detections
        assert int(drops(pose_node)['rejected']) >= 2 and pose_node.state == 'active'
        executor.remove_node(pose_node)


def test_pose_node_fails_configure_without_its_keypoint_set(ros_context, tmp_path):
    with GraphRun([spec('object_pose', POSE, keypoint_model=str(tmp_path / 'missing.onnx'))],
                  context=ros_context) as run:
        assert run.not_active == ['object_pose'] and run.nodes[0].solver is None


def test_object_pose_graph_wires_the_camera_topics():
    specs = {s.name: s for s in get_graph('object_pose').nodes({'camera': 'azure_kinect', 'rgbd': 'true',
                                                                'object_set': 'ycbv'})}
    assert list(specs) == ['object_detector', 'object_keypoints', 'object_pose']
    assert specs['object_detector'].parameters['model'] == 'ycbv_detector.onnx'
    assert specs['object_pose'].parameters['keypoint_model'] == specs['object_keypoints'].parameters['model'] \
        == 'ycbv_keypoints.onnx'
    assert specs['object_pose'].parameters['use_depth'] is True
    assert dict(specs['object_pose'].remappings) == {'image': '/rgb/image_raw', 'depth': '/depth_to_rgb/image_raw',
                                                     'camera_info': '/rgb/camera_info'}
    assert 'camera' in [s.name for s in get_graph('object_pose').nodes({'camera': 'sim'})]
