"""Graph `calibration_publisher`: publish a saved calibration on /tf_static (include it in a robot's bringup)."""
from kp_pose_ros.graphs.spec import Argument, Graph, NodeSpec


def build(args):
    return [NodeSpec(name='calibration_publisher', executable='calibration_manager',
                     node_class='kp_pose_ros.nodes.calibration_manager:CalibrationManagerNode',
                     parameters={'mode': 'static', 'calibration_dir': args['calibration_dir'],
                                 'calibration_name': args['calibration_name']})]


GRAPH = Graph(
    name='calibration_publisher',
    description='Publishes a calibration saved by robot_calib as a static transform.',
    arguments=(
        Argument('calibration_name', 'default', 'Name of the saved calibration.'),
        Argument('calibration_dir', '~/.ros/kp_pose_ros/calibrations', 'Directory it was saved in.'),
    ),
    build=build,
)
