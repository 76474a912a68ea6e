"""Graph `articulated_pose`: per-part poses and joint states of articulated objects (PAGE) on a RealSense, an Azure
Kinect or the synthetic camera: articulated_voting (depth segmentation, voting network, radius voting: 3D part
keypoints and labelled part points) -> articulated_fitting (joint-consistent part boxes, joint values, stable ids),
under one namespace; camera:=sim renders articulated objects (scene `articulated`) with their true part poses and
joint states under /sim/."""
from kp_pose_ros.graphs.cameras import CAMERA_PRESETS, camera_preset
from kp_pose_ros.graphs.sim_camera import GRAPH as SIM_CAMERA_GRAPH
from kp_pose_ros.graphs.spec import Argument, Graph, NodeSpec, as_bool


def build(args):
    camera = camera_preset(args['camera'])
    ns = '/' + args['namespace'].strip('/') if args['namespace'].strip('/') else ''
    model, method = args['model'], args['method']
    nodes = [
        NodeSpec(name='articulated_voting', namespace=ns, executable='articulated_voting',
                 node_class='kp_pose_ros.nodes.articulated_voting:ArticulatedVotingNode',
                 parameters={'model': model, 'method': method, 'providers': args['providers']},
                 remappings=[('image', camera.color_topic), ('depth', camera.depth_topic),
                             ('camera_info', camera.camera_info_topic)]),
        NodeSpec(name='articulated_fitting', namespace=ns, executable='articulated_fitting',
                 node_class='kp_pose_ros.nodes.articulated_fitting:ArticulatedFittingNode',
                 parameters={'model': model, 'method': method, 'publish_overlay': as_bool(args['overlay'])},
                 remappings=[('image', camera.color_topic), ('camera_info', camera.camera_info_topic)]),
    ]
    if args['camera'] == 'sim':
        # Articulated objects on the floor and tables, sim_camera's own defaults for everything this graph does not set.
        nodes += SIM_CAMERA_GRAPH.nodes({'camera_model': args['sim_camera_model'], 'rate_hz': args['sim_rate_hz'],
                                         'seed': args['seed'], 'scene': 'articulated',
                                         'articulated_categories': args['sim_categories']})
    return nodes


GRAPH = Graph(
    name='articulated_pose',
    description='Articulated objects: a TF frame per part, JointState per object, Detection3DArray per part, markers, '
                'a debug overlay and a reset service for the instance ids.',
    arguments=(
        Argument('camera', 'realsense', 'Camera preset (topics and frames, config/camera_<name>.yaml); sim also '
                 'starts the synthetic camera.', choices=CAMERA_PRESETS),
        Argument('namespace', 'articulated_pose', 'Namespace of the pipeline\'s nodes and topics.'),
        Argument('model', 'articulated/page_voting.onnx', 'PAGE voting network (path relative to the package '
                 'models/, or any path); its manifest names the categories, whose models lie beside it.'),
        Argument('method', 'learned', 'Part keypoints voted for and fitted: learned, fps or box.',
                 choices=('learned', 'fps', 'box')),
        Argument('providers', 'auto', 'ONNX Runtime provider: auto, tensorrt, cuda or cpu.',
                 choices=('auto', 'tensorrt', 'cuda', 'cpu')),
        Argument('overlay', 'true', 'Publish the debug overlay (regions, keypoints, projected part boxes).',
                 choices=('true', 'false')),
        Argument('sim_camera_model', 'realsense_d435', 'camera:=sim only: intrinsics preset.'),
        Argument('sim_rate_hz', '10.0', 'camera:=sim only: frame rate.'),
        Argument('seed', '0', 'camera:=sim only: scene seed.'),
        Argument('sim_categories', '', 'camera:=sim only: articulated categories in the scene (comma-separated); '
                 'empty: the synthetic camera\'s default.'),
    ),
    build=build,
)
