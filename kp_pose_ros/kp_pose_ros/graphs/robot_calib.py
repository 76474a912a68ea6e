"""Graph `robot_calib`: markerless camera-to-robot calibration (RoboKeyGen) on a RealSense, an Azure Kinect or the
synthetic camera: keypoints -> lifter -> pose fitting -> calibration manager, all under one namespace. With
known_joints:=on the lifter is left out (its 3D keypoints would only be discarded)."""
from kp_pose_ros.graphs.cameras import CAMERA_PRESETS, camera_preset
from kp_pose_ros.graphs.sim_camera import GRAPH as SIM_CAMERA_GRAPH
from kp_pose_ros.graphs.spec import Argument, Graph, NodeSpec, as_bool

KNOWN_JOINTS = {'auto': 'auto', 'on': 'known', 'off': 'unknown'}


def build(args):
    camera = camera_preset(args['camera'])
    ns = '/' + args['namespace'].strip('/') if args['namespace'].strip('/') else ''
    providers = args['providers']
    nodes = [
        NodeSpec(name='robot_keypoints', namespace=ns, executable='robot_keypoints',
                 node_class='kp_pose_ros.nodes.robot_keypoints:RobotKeypointsNode',
                 parameters={'model': args['keypoints_model'], 'providers': providers},
                 remappings=[('image', camera.color_topic)]),
        NodeSpec(name='robot_pose_fitting', namespace=ns, executable='robot_pose_fitting',
                 node_class='kp_pose_ros.nodes.robot_pose_fitting:RobotPoseFittingNode',
                 parameters={'joints_model': args['joints_model'], 'providers': providers,
                             'joints_mode': KNOWN_JOINTS[args['known_joints']], 'urdf_path': args['urdf_path'],
                             'base_link': args['base_link'],
                             'publish_debug_image': as_bool(args['debug_image']),
                             'depth_alignment': as_bool(args['depth_alignment'])},
                 remappings=[('camera_info', camera.camera_info_topic), ('image', camera.color_topic),
                             ('depth', camera.depth_topic)]
                 # Joints always measured: no lifter; the fit takes the 2D keypoints straight from the detector.
                 + ([('keypoints_3d', 'keypoints_2d')] if args['known_joints'] == 'on' else [])),
        NodeSpec(name='calibration_manager', namespace=ns, executable='calibration_manager',
                 node_class='kp_pose_ros.nodes.calibration_manager:CalibrationManagerNode',
                 parameters={'root_frame': camera.root_frame, 'calibration_dir': args['calibration_dir'],
                             'calibration_name': args['calibration_name']}),
    ]
    if args['known_joints'] != 'on':
        nodes.insert(1, NodeSpec(name='robot_lifter', namespace=ns, executable='robot_lifter',
                                 node_class='kp_pose_ros.nodes.robot_lifter:RobotLifterNode',
                                 parameters={'model': args['lifter_model'], 'providers': providers,
                                             'online': as_bool(args['online'])},
                                 remappings=[('camera_info', camera.camera_info_topic)]))
    if args['camera'] == 'sim':
        # sim_camera's own defaults for everything this graph does not set.
        nodes += SIM_CAMERA_GRAPH.nodes({'camera_model': args['sim_camera_model'], 'rate_hz': args['sim_rate_hz'],
                                         'seed': args['seed'], 'trajectory': 'random', 'num_distractors': '2',
                                         'random_background': 'true', 'publish_robot_state': 'true'})
    return nodes


GRAPH = Graph(
    name='robot_calib',
    description='Markerless camera-to-robot calibration: live TF base -> camera, estimated joint states, markers, '
                'capture/compute/save/load services.',
    arguments=(
        Argument('camera', 'realsense', 'Camera preset (topics and frames, config/camera_<name>.yaml); sim also '
                 'starts the synthetic camera.', choices=CAMERA_PRESETS),
        Argument('namespace', 'robot_calib', 'Namespace of the pipeline\'s nodes and topics.'),
        Argument('urdf_path', '', 'Robot URDF; empty: use the /robot_description topic.'),
        Argument('base_link', 'panda_link0', 'Robot base frame (parent of the calibration).'),
        Argument('known_joints', 'auto', 'Use the robot\'s /joint_states: on, off, or auto (when fresh).',
                 choices=tuple(KNOWN_JOINTS)),
        Argument('depth_alignment', 'true', 'Known joints: align the robot\'s surface with the aligned depth image.',
                 choices=('true', 'false')),
        Argument('online', 'true', 'Initialise the diffusion lifter from the previous frame.',
                 choices=('true', 'false')),
        Argument('keypoints_model', 'robot_keypoints_panda.onnx', '2D keypoint model (models/ file or path).'),
        Argument('lifter_model', 'robot_lifter_panda.onnx', 'Diffusion lifting model (models/ file or path).'),
        Argument('joints_model', 'robot_joints_panda.onnx', 'Joint-angle model (models/ file or path).'),
        Argument('providers', 'auto', 'ONNX Runtime provider: auto, tensorrt, cuda or cpu.',
                 choices=('auto', 'tensorrt', 'cuda', 'cpu')),
        Argument('debug_image', 'false', 'Publish the image with the estimated skeleton.', choices=('true', 'false')),
        Argument('calibration_dir', '~/.ros/kp_pose_ros/calibrations', 'Where calibrations are saved.'),
        Argument('calibration_name', 'default', 'Default name for save/load.'),
        Argument('sim_camera_model', 'realsense_d435', 'camera:=sim only: intrinsics preset.'),
        Argument('sim_rate_hz', '10.0', 'camera:=sim only: frame rate.'),
        Argument('seed', '0', 'camera:=sim only: scene seed.'),
    ),
    build=build,
)
