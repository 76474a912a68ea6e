"""The `main()` every node module exposes for `ros2 run kp_pose_ros <node>`."""
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def spin_node(node_cls, args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = node_cls()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
