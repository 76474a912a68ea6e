"""Graph `sim_camera`: the synthetic RGB-D camera alone, publishing the RealSense topic set (make sim)."""
from kp_pose_ros.graphs.spec import Argument, Graph, NodeSpec, as_bool
from kp_pose_ros.paths import shared_data


def objects_dir(value: str = '') -> str:
    """The object folder of scene:=objects: `value`, else the LINEMOD models beside the repository
    (../shared/data/lmo/models) where they exist, else '' (the node then says what it needs)."""
    default = shared_data('lmo', 'models')
    return value or (str(default) if default.is_dir() else '')


def _words(text: str) -> list[str]:
    """A list launch argument: names separated by commas and/or spaces ('laptop,drawer' or 'laptop drawer')."""
    return text.replace(',', ' ').split()


def build(args):
    objects = args['scene'] == 'objects'
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
            'scene': args['scene'],
            'objects_dir': objects_dir(args['objects_dir']) if objects else args['objects_dir'],
            'objects_per_layout': int(args['objects_per_layout']),
            'views_per_layout': int(args['views_per_layout']),
            # Empty: the node's default (the categories articulated_pose estimates).
            **({'articulated_categories': _words(args['articulated_categories'])}
               if args['articulated_categories'].strip() else {}),
            'articulated_per_layout': [int(n) for n in _words(args['articulated_per_layout'])],
        })]


GRAPH = Graph(
    name='sim_camera',
    description='Synthetic RGB-D camera (pybullet: a Franka Panda, table-top objects or articulated objects) on the '
                'RealSense topics, ground truth under /sim/.',
    arguments=(
        Argument('scene', 'robot', 'robot: a moving Franka Panda; objects: table-top layouts of objects_dir\'s models '
                 '(ground truth /sim/objects); articulated: procedural articulated objects unseen in training (ground '
                 'truth /sim/articulated/parts and /sim/articulated/joint_states).',
                 choices=('robot', 'objects', 'articulated')),
        Argument('objects_dir', '', 'scene:=objects: BOP model folder; empty: ../shared/data/lmo/models beside the '
                 'repository where it exists.'),
        Argument('objects_per_layout', '8', 'scene:=objects: objects dropped onto each table.'),
        Argument('views_per_layout', '10', 'scene:=objects|articulated: frames (camera poses) per layout.'),
        Argument('articulated_categories', '', 'scene:=articulated: categories, comma-separated (e.g. '
                 'laptop,drawer); empty: those articulated_pose estimates.'),
        Argument('articulated_per_layout', '1,2', 'scene:=articulated: fewest,most instances per layout.'),
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
