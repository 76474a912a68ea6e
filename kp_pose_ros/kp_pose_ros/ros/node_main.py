"""The `main()` every node module exposes for `ros2 run kp_pose_ros <node> [--autostart]`.

A lifecycle node starts unconfigured, for a lifecycle manager or `ros2 lifecycle set` to drive; `--autostart`
configures and activates it at once, as the launch files and `kp-pose run` do by default."""
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.utilities import remove_ros_args

from kp_pose_ros.ros.lifecycle_node import bring_up


def spin_node(node_cls, args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = node_cls()
        if '--autostart' in remove_ros_args(args):
            bring_up(node)
        else:
            node.get_logger().info(f'unconfigured; bring it up with: ros2 lifecycle set '
                                   f'{node.get_fully_qualified_name()} configure (then activate)')
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
