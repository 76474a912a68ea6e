"""Graph `object_pose`: 6-DoF poses of known rigid objects (paper 004) on a RealSense, an Azure Kinect or the
synthetic camera: YOLOv10 detector -> keypoints on detection crops -> PnP (with the aligned depth when rgbd:=true),
all under one namespace; camera:=sim renders table-top layouts of the objects with their true poses on
/sim/objects. The models of an object set are <set>_detector.onnx and <set>_keypoints.onnx in the
package's models/ unless named explicitly."""
from kp_pose_ros.graphs.cameras import CAMERA_PRESETS, camera_preset
from kp_pose_ros.graphs.sim_camera import GRAPH as SIM_CAMERA_GRAPH
from kp_pose_ros.graphs.spec import Argument, Graph, NodeSpec, as_bool


def build(args):
    camera = camera_preset(args['camera'])
    ns = '/' + args['namespace'].strip('/') if args['namespace'].strip('/') else ''
    providers = args['providers']
    detector_model = args['detector_model'] or f"{args['object_set']}_detector.onnx"
    keypoints_model = args['keypoints_model'] or f"{args['object_set']}_keypoints.onnx"
    nodes = [
        NodeSpec(name='object_detector', namespace=ns, executable='object_detector',
                 node_class='kp_pose_ros.nodes.object_detector:ObjectDetectorNode',
                 parameters={'model': detector_model, 'providers': providers,
                             'score_threshold': float(args['score_threshold'])},
                 remappings=[('image', camera.color_topic)]),
        NodeSpec(name='object_keypoints', namespace=ns, executable='object_keypoints',
                 node_class='kp_pose_ros.nodes.object_keypoints:ObjectKeypointsNode',
                 parameters={'model': keypoints_model, 'providers': providers},
                 remappings=[('image', camera.color_topic)]),
        NodeSpec(name='object_pose', namespace=ns, executable='object_pose',
                 node_class='kp_pose_ros.nodes.object_pose:ObjectPoseNode',
                 parameters={'keypoint_model': keypoints_model, 'models_dir': args['models_dir'],
                             'use_depth': as_bool(args['rgbd']), 'publish_overlay': as_bool(args['overlay'])},
                 remappings=[('image', camera.color_topic), ('depth', camera.depth_topic),
                             ('camera_info', camera.camera_info_topic)]),
    ]
    if args['camera'] == 'sim':
        # Table-top scenes of the objects, sim_camera's own defaults for everything this graph does not set.
        nodes += SIM_CAMERA_GRAPH.nodes({'camera_model': args['sim_camera_model'], 'rate_hz': args['sim_rate_hz'],
                                         'seed': args['seed'], 'scene': 'objects',
                                         'objects_dir': args['sim_objects_dir']})
    return nodes


GRAPH = Graph(
    name='object_pose',
    description='Rigid object poses: Detection2DArray, Detection3DArray, a TF frame per instance, markers, a debug '
                'overlay and a reset service for the instance ids.',
    arguments=(
        Argument('camera', 'realsense', 'Camera preset (topics and frames, config/camera_<name>.yaml); sim also '
                 'starts the synthetic camera.', choices=CAMERA_PRESETS),
        Argument('namespace', 'object_pose', 'Namespace of the pipeline\'s nodes and topics.'),
        Argument('object_set', 'lmo', 'Object set: its models are <set>_detector.onnx and <set>_keypoints.onnx in '
                 'the package models/.'),
        Argument('detector_model', '', 'YOLOv10 ONNX model (models/ file or path); empty: the object set\'s.'),
        Argument('keypoints_model', '', 'Object keypoint model (models/ file or path); empty: the object set\'s.'),
        Argument('models_dir', '', 'BOP model folder of the objects (symmetries, boxes, depth check, mesh markers); '
                 'empty: none.'),
        Argument('rgbd', 'false', 'Use the aligned depth image to correct and score the poses.',
                 choices=('true', 'false')),
        Argument('score_threshold', '0.3', 'Detector score threshold.'),
        Argument('overlay', 'true', 'Publish the debug overlay (boxes, keypoints, projected axes).',
                 choices=('true', 'false')),
        Argument('providers', 'auto', 'ONNX Runtime provider: auto, tensorrt, cuda or cpu.',
                 choices=('auto', 'tensorrt', 'cuda', 'cpu')),
        Argument('sim_camera_model', 'realsense_d435', 'camera:=sim only: intrinsics preset.'),
        Argument('sim_rate_hz', '10.0', 'camera:=sim only: frame rate.'),
        Argument('seed', '0', 'camera:=sim only: scene seed.'),
        Argument('sim_objects_dir', '', 'camera:=sim only: BOP model folder of the objects on the table (ground truth '
                 '/sim/objects); empty: ../shared/data/lmo/models beside the repository where it exists.'),
    ),
    build=build,
)
