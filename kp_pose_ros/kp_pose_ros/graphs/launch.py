"""Turns a graph definition into a ROS 2 launch description. Every .launch.py file is one call to this, so
`ros2 launch` starts exactly the nodes, parameters and remappings the in-process runner (and so CI) runs."""
from kp_pose_ros.graphs.registry import get_graph

PACKAGE = 'kp_pose_ros'


def generate_graph_launch_description(graph_name: str):
    # launch / launch_ros exist on a real ROS 2 install only; imported here so the rest of the package never needs them.
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    graph = get_graph(graph_name)

    def launch_nodes(context, *args, **kwargs):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.arguments}
        return [
            Node(package=PACKAGE, executable=spec.executable, name=spec.name, namespace=spec.namespace,
                 parameters=[dict(spec.parameters)], remappings=[tuple(r) for r in spec.remappings],
                 output='screen', emulate_tty=True)
            for spec in graph.nodes(values)
        ]

    declared = []
    for a in graph.arguments:
        extra = {'choices': list(a.choices)} if a.choices else {}
        declared.append(DeclareLaunchArgument(a.name, default_value=a.default, description=a.description, **extra))
    return LaunchDescription(declared + [OpaqueFunction(function=launch_nodes)])
