"""Graph `sim_camera`: the synthetic RGB-D camera alone, publishing the RealSense topic set (make sim)."""
from kp_pose_ros.graphs.spec import Argument, Graph, NodeSpec, as_bool


def build(args):
    return [NodeSpec(
        name='camera', namespace='/camera', executable='sim_camera',
        node_class='kp_pose_ros.nodes.sim_camera:SimCameraNode',
        parameters={
            'camera_model': args['camera_model'],
            'rate_hz': float(args['rate_hz']),
            'seed': int(args['seed']),
            'trajectory': args['trajectory'],
            'num_distractors': int(args['num_distractors']),
            'random_background': as_bool(args['random_background']),
            'publish_robot_state': as_bool(args['publish_robot_state']),
            'renderer': args['renderer'],
            'shadows': as_bool(args['shadows']),
            'depth_sensor': args['depth_sensor'],
            'camera_effects': as_bool(args['camera_effects']),
        })]


GRAPH = Graph(
    name='sim_camera',
    description='Synthetic RGB-D camera (pybullet, Franka Panda) on the RealSense topics, ground truth under /sim/.',
    arguments=(
        Argument('camera_model', 'realsense_d435', 'Intrinsics preset of the simulated camera.'),
        Argument('rate_hz', '10.0', 'Frame rate (Hz).'),
        Argument('seed', '0', 'Scene seed; the same seed gives the same frames.'),
        Argument('trajectory', 'random', 'Arm motion: random or static.', choices=('random', 'static')),
        Argument('num_distractors', '0', 'Distractor objects around the robot.'),
        Argument('random_background', 'true', 'Random photographs and procedural textures as floor and backdrop.',
                 choices=('true', 'false')),
        Argument('renderer', 'pbr', 'pbr (OpenGL through EGL) or tiny (pybullet TinyRenderer, no OpenGL).',
                 choices=('pbr', 'tiny')),
        Argument('shadows', 'false', 'Shadow maps (pbr; 2-3x the render time on a CPU).', choices=('true', 'false')),
        Argument('depth_sensor', 'gaussian', 'Depth sensor model: gaussian, ideal, stereo, tof or a camera preset '
                 '(realsense_d435, azure_kinect_nfov, ...).'),
        Argument('camera_effects', 'false', 'Draw a colour camera per frame (exposure, white balance, blur, noise).',
                 choices=('true', 'false')),
        Argument('publish_robot_state', 'true', 'Publish /joint_states and /robot_description like a real robot.',
                 choices=('true', 'false')),
    ),
    build=build,
)
