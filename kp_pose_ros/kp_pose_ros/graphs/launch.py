"""Turns a graph definition into a ROS 2 launch description. Every .launch.py file is one call to this, so
`ros2 launch` starts exactly the nodes, parameters and remappings the in-process runner (and so CI) runs.

Every node is a lifecycle node. With `autostart:=true` (the default) each one is configured as soon as its process
has started and activated once configuring succeeded (configuring -> inactive); a node whose configure fails (say, a
bad model) stays unconfigured and says why in its log. Only launch_ros API that Humble (launch_ros 0.19) already has
is used: LifecycleNode (namespace required there), ChangeState events, OnProcessStart and OnStateTransition.
`rviz:=true` adds RViz 2 with config/rviz/<graph>.rviz."""
from kp_pose_ros.graphs.registry import get_graph
from kp_pose_ros.graphs.spec import as_bool

PACKAGE = 'kp_pose_ros'


def rviz_config(graph_name: str):
    """The RViz 2 config of a graph (config/rviz/<graph>.rviz, installed to share/kp_pose_ros/config/rviz)."""
    from kp_pose_ros.paths import data_dir

    return data_dir('config') / 'rviz' / f'{graph_name}.rviz'


def graph_actions(graph, values):
    """The launch actions for a graph with resolved argument `values`: per node, the autostart event handlers (when
    autostart is on) before the LifecycleNode itself, then RViz when asked for."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessStart
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    autostart = as_bool(values['autostart'])
    actions = []
    for spec in graph.nodes(values):
        node = LifecycleNode(package=PACKAGE, executable=spec.executable, name=spec.name, namespace=spec.namespace,
                             parameters=[dict(spec.parameters)], remappings=[tuple(r) for r in spec.remappings],
                             output='screen', emulate_tty=True)
        if autostart:
            # Registered before the node starts, so neither event can be missed.
            configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                    transition_id=Transition.TRANSITION_CONFIGURE))
            activate = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                   transition_id=Transition.TRANSITION_ACTIVATE))
            actions.append(RegisterEventHandler(OnProcessStart(target_action=node, on_start=[configure])))
            # Only after configuring: a later deactivate (active -> inactive) must not re-activate the node.
            actions.append(RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state='configuring', goal_state='inactive', entities=[activate])))
        actions.append(node)
    if as_bool(values['rviz']):
        config = rviz_config(graph.name)
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2',
                            arguments=['-d', str(config)] if config.is_file() else [], output='screen'))
    return actions


def generate_graph_launch_description(graph_name: str):
    # launch / launch_ros exist on a real ROS 2 install only; imported here so the rest of the package never needs them.
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    graph = get_graph(graph_name)

    def launch_nodes(context, *args, **kwargs):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.arguments}
        return graph_actions(graph, values)

    declared = []
    for a in graph.arguments:
        extra = {'choices': list(a.choices)} if a.choices else {}
        declared.append(DeclareLaunchArgument(a.name, default_value=a.default, description=a.description, **extra))
    return LaunchDescription(declared + [OpaqueFunction(function=launch_nodes)])
