"""Graph definitions, the launch files built from them, and the in-process runner agree."""
import importlib.util
import re
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

from kp_pose_ros.graphs.registry import GRAPH_NAMES, get_graph
from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.graphs.spec import NodeSpec, as_bool

LAUNCH_DIR = Path(__file__).resolve().parents[1] / 'launch'
RVIZ_DIR = Path(__file__).resolve().parents[1] / 'config' / 'rviz'


class _Recorded:
    """Stands in for a launch action class: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


def _matches_action(target_action):
    def matcher(action):
        return action is target_action
    return matcher


class _LifecycleNode(_Recorded):
    def __init__(self, *, name, namespace, **kwargs):  # Humble's launch_ros requires the namespace
        super().__init__(name=name, namespace=namespace, **kwargs)


class _OnProcessStart(_Recorded):
    def __init__(self, *, on_start, target_action=None, **kwargs):
        super().__init__(on_start=on_start, target_action=target_action, **kwargs)


class _OnStateTransition(_Recorded):
    def __init__(self, *, entities, target_lifecycle_node=None, transition=None, start_state=None, goal_state=None,
                 matcher=None, **kwargs):
        if not isinstance(target_lifecycle_node, (_LifecycleNode, type(None))):
            raise RuntimeError("OnStateTransition requires a 'LifecycleNode' action as the target")
        super().__init__(entities=entities, target_lifecycle_node=target_lifecycle_node, transition=transition,
                         start_state=start_state, goal_state=goal_state, matcher=matcher, **kwargs)


class _EmitEvent(_Recorded):
    def __init__(self, *, event, **kwargs):
        super().__init__(event=event, **kwargs)


class _RegisterEventHandler(_Recorded):
    def __init__(self, event_handler, **kwargs):
        super().__init__(event_handler, **kwargs)


class _ChangeState(_Recorded):
    def __init__(self, *, lifecycle_node_matcher, transition_id):
        from lifecycle_msgs.msg import Transition

        valid = {v for k, v in vars(Transition).items() if k.startswith('TRANSITION_') and isinstance(v, int)}
        if transition_id not in valid:
            raise ValueError(f'given transition_id of {transition_id!r}')
        super().__init__(lifecycle_node_matcher=lifecycle_node_matcher, transition_id=transition_id)


@pytest.fixture
def launch_api(monkeypatch):
    """launch and launch_ros are not installable here (ENVIRONMENT.md): record what the launch code builds with them,
    using the same module paths, signatures and keyword names as Humble's API (launch_ros 0.19), which Jazzy keeps."""
    mods = {name: types.ModuleType(name) for name in
            ('launch', 'launch.actions', 'launch.substitutions', 'launch.event_handlers', 'launch.events',
             'launch_ros', 'launch_ros.actions', 'launch_ros.event_handlers', 'launch_ros.events',
             'launch_ros.events.lifecycle')}
    mods['launch'].LaunchDescription = type('LaunchDescription', (_Recorded,), {})
    mods['launch.actions'].DeclareLaunchArgument = type('DeclareLaunchArgument', (_Recorded,), {})
    mods['launch.actions'].OpaqueFunction = type('OpaqueFunction', (_Recorded,), {})
    mods['launch.actions'].EmitEvent = _EmitEvent
    mods['launch.actions'].RegisterEventHandler = _RegisterEventHandler
    mods['launch.event_handlers'].OnProcessStart = _OnProcessStart
    mods['launch.events'].matches_action = _matches_action
    mods['launch.substitutions'].LaunchConfiguration = _LaunchConfiguration
    mods['launch_ros.actions'].Node = type('Node', (_Recorded,), {})
    mods['launch_ros.actions'].LifecycleNode = _LifecycleNode
    mods['launch_ros.event_handlers'].OnStateTransition = _OnStateTransition
    mods['launch_ros.events.lifecycle'].ChangeState = _ChangeState
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods


def _launch(name, launch_configurations):
    ld = runpy.run_path(str(LAUNCH_DIR / f'{name}.launch.py'))['generate_launch_description']()
    entities = ld.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == 'DeclareLaunchArgument'}
    opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    assert len(opaque) == 1
    context = types.SimpleNamespace(launch_configurations=launch_configurations)
    return declared, opaque[0].kwargs['function'](context)


def _of_type(actions, name):
    return [a for a in actions if type(a).__name__ == name]


def test_every_graph_has_a_launch_file_and_back():
    launch_files = {p.name[:-len('.launch.py')] for p in LAUNCH_DIR.glob('*.launch.py')}
    assert set(GRAPH_NAMES) <= launch_files
    for name in launch_files - set(GRAPH_NAMES):  # extra launch files must at least reference a graph
        assert 'generate_graph_launch_description' in (LAUNCH_DIR / f'{name}.launch.py').read_text()


@pytest.mark.parametrize('name', GRAPH_NAMES)
def test_launch_file_matches_graph(name, launch_api):
    graph = get_graph(name)
    defaults = graph.resolve()
    declared, nodes = _launch(name, defaults)
    assert set(declared) == {a.name for a in graph.arguments}
    for a in graph.arguments:
        assert declared[a.name]['default_value'] == a.default and declared[a.name]['description']
    specs = graph.nodes(defaults)
    nodes = _of_type(nodes, '_LifecycleNode')
    assert len(nodes) == len(specs)
    for node, spec in zip(nodes, specs):
        kw = node.kwargs
        assert kw['package'] == 'kp_pose_ros' and kw['executable'] == spec.executable
        assert kw['name'] == spec.name and kw['namespace'] == spec.namespace
        assert kw['parameters'] == [dict(spec.parameters)]
        assert kw['remappings'] == [tuple(r) for r in spec.remappings]


def test_launch_arguments_reach_node_parameters(launch_api):
    graph = get_graph('sim_camera')
    values = graph.resolve({'seed': '7', 'rate_hz': '5', 'random_background': 'false'})
    _, actions = _launch('sim_camera', values)
    params = _of_type(actions, '_LifecycleNode')[0].kwargs['parameters'][0]
    assert params['seed'] == 7 and params['rate_hz'] == 5.0 and params['random_background'] is False


@pytest.mark.parametrize('name', GRAPH_NAMES)
def test_autostart_configures_then_activates_every_node(name, launch_api):
    from lifecycle_msgs.msg import Transition

    actions = _launch(name, get_graph(name).resolve({'autostart': 'true'}))[1]
    nodes = _of_type(actions, '_LifecycleNode')
    handlers = [a.args[0] for a in _of_type(actions, '_RegisterEventHandler')]
    assert nodes and len(handlers) == 2 * len(nodes)
    for node in nodes:
        on_start = [h for h in handlers if isinstance(h, _OnProcessStart) and h.kwargs['target_action'] is node]
        on_inactive = [h for h in handlers
                       if isinstance(h, _OnStateTransition) and h.kwargs['target_lifecycle_node'] is node]
        assert len(on_start) == 1 and len(on_inactive) == 1
        (configure,), (activate,) = on_start[0].kwargs['on_start'], on_inactive[0].kwargs['entities']
        assert configure.kwargs['event'].kwargs['transition_id'] == Transition.TRANSITION_CONFIGURE
        assert activate.kwargs['event'].kwargs['transition_id'] == Transition.TRANSITION_ACTIVATE
        # Activate after configuring only, so a later deactivate is not undone.
        assert on_inactive[0].kwargs['start_state'] == 'configuring'
        assert on_inactive[0].kwargs['goal_state'] == 'inactive'
        for event in (configure.kwargs['event'], activate.kwargs['event']):
            matcher = event.kwargs['lifecycle_node_matcher']
            assert [n for n in nodes if matcher(n)] == [node]
        # Handlers are registered before the node's process can start.
        index = actions.index(node)
        assert all(actions.index(a) < index for a in _of_type(actions, '_RegisterEventHandler')
                   if a.args[0] in on_start + on_inactive)


@pytest.mark.parametrize('name', GRAPH_NAMES)
def test_autostart_false_leaves_nodes_unconfigured(name, launch_api):
    actions = _launch(name, get_graph(name).resolve({'autostart': 'false'}))[1]
    assert _of_type(actions, '_LifecycleNode') and not _of_type(actions, '_RegisterEventHandler')
    assert not _of_type(actions, '_EmitEvent')


@pytest.mark.parametrize('name', GRAPH_NAMES)
def test_rviz_starts_rviz2_with_the_graph_config(name, launch_api):
    actions = _launch(name, get_graph(name).resolve({'rviz': 'true'}))[1]
    rviz = [a for a in _of_type(actions, 'Node') if a.kwargs['package'] == 'rviz2']
    assert len(rviz) == 1 and rviz[0].kwargs['executable'] == 'rviz2'
    flag, config = rviz[0].kwargs['arguments']
    assert flag == '-d' and Path(config) == RVIZ_DIR / f'{name}.rviz' and Path(config).is_file()
    actions = _launch(name, get_graph(name).resolve())[1]  # rviz:=false by default
    assert not _of_type(actions, 'Node')


@pytest.mark.parametrize('name', GRAPH_NAMES)
def test_every_graph_has_the_common_arguments(name):
    graph = get_graph(name)
    names = [a.name for a in graph.arguments]
    assert names.count('autostart') == 1 and names.count('rviz') == 1
    values = graph.resolve()
    assert values['autostart'] == 'true' and values['rviz'] == 'false'
    assert graph.resolve({'autostart': 'false'})['autostart'] == 'false'
    with pytest.raises(ValueError, match='expected one of'):
        graph.resolve({'rviz': 'maybe'})


RVIZ_DISPLAYS = {'rviz_default_plugins/Grid', 'rviz_default_plugins/TF', 'rviz_default_plugins/Image',
                 'rviz_default_plugins/MarkerArray'}


def _rviz_topics(tree):
    """Every `Topic: {Value: ...}` in an RViz config."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == 'Topic' and isinstance(value, dict) and 'Value' in value:
                yield value['Value']
            else:
                yield from _rviz_topics(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _rviz_topics(item)


_TOPIC_CALL = re.compile(r"create_(?:publisher|subscription)\(\s*[\w.]+\s*,\s*'([^']+)'")


def _graph_topics(specs):
    """The fully qualified topics the graph's nodes publish or subscribe: the names in each node's source,
    remapped and resolved in the node's namespace as ROS resolves them."""
    topics = set()
    for spec in specs:
        module = spec.node_class.partition(':')[0]
        source = Path(importlib.util.find_spec(module).origin).read_text()
        remap = dict(spec.remappings)
        ns = spec.namespace.rstrip('/')
        for name in _TOPIC_CALL.findall(source):
            name = remap.get(name, name)
            if name.startswith('/'):
                topics.add(name)
            elif name.startswith('~/'):
                topics.add(f'{ns}/{spec.name}/{name[2:]}')
            else:
                topics.add(f'{ns}/{name}')
    return topics


@pytest.mark.parametrize('name', GRAPH_NAMES)
def test_rviz_config_shows_what_the_graph_publishes(name):
    with open(RVIZ_DIR / f'{name}.rviz', encoding='utf-8') as f:
        config = yaml.safe_load(f)
    manager = config['Visualization Manager']
    assert {p['Class'] for p in config['Panels']} >= {'rviz_common/Displays', 'rviz_common/Views'}
    displays = manager['Displays']
    assert {d['Class'] for d in displays} <= RVIZ_DISPLAYS
    assert any(d['Class'] == 'rviz_default_plugins/TF' for d in displays)
    assert manager['Global Options']['Fixed Frame']
    assert manager['Views']['Current']['Class'].startswith('rviz_default_plugins/')
    graph = get_graph(name)
    topics = list(_rviz_topics(displays))
    assert all(t.startswith('/') for t in topics)
    assert set(topics) <= _graph_topics(graph.nodes(graph.resolve()))


def test_rviz_configs_are_installed():
    setup_py = (Path(__file__).resolve().parents[1] / 'setup.py').read_text()
    assert "glob('config/rviz/*.rviz')" in setup_py and "config/rviz'" in setup_py


def test_graph_argument_validation():
    graph = get_graph('sim_camera')
    with pytest.raises(ValueError, match="no argument 'sed'"):
        graph.resolve({'sed': '1'})
    with pytest.raises(ValueError, match='expected one of'):
        graph.resolve({'trajectory': 'teleport'})
    with pytest.raises(ValueError, match="unknown graph 'nope'"):
        get_graph('nope')
    assert as_bool('True') and not as_bool('0')
    with pytest.raises(ValueError):
        as_bool('maybe')


def test_robot_calib_runs_the_lifter_only_when_joints_may_be_unknown():
    graph = get_graph('robot_calib')
    for known in ('auto', 'off'):
        assert 'robot_lifter' in [s.name for s in graph.nodes({'known_joints': known})]
    specs = {s.name: s for s in graph.nodes({'known_joints': 'on'})}
    assert 'robot_lifter' not in specs
    assert ('keypoints_3d', 'keypoints_2d') in specs['robot_pose_fitting'].remappings
    assert specs['robot_pose_fitting'].parameters['joints_mode'] == 'known'


def test_object_pose_on_the_sim_camera_renders_table_top_objects(tmp_path):
    from kp_pose_ros.paths import shared_data

    graph = get_graph('object_pose')
    camera = {s.name: s for s in graph.nodes({'camera': 'sim', 'sim_objects_dir': str(tmp_path)})}['camera']
    assert camera.parameters['scene'] == 'objects' and camera.parameters['objects_dir'] == str(tmp_path)
    lmo = shared_data('lmo', 'models')
    default = {s.name: s for s in graph.nodes({'camera': 'sim'})}['camera'].parameters['objects_dir']
    assert default == (str(lmo) if lmo.is_dir() else '')
    robot = get_graph('sim_camera').nodes()[0].parameters
    assert robot['scene'] == 'robot' and robot['objects_dir'] == ''


def test_every_executable_is_a_console_script():
    setup_py = (Path(__file__).resolve().parents[1] / 'setup.py').read_text()
    for name in GRAPH_NAMES:
        for spec in get_graph(name).nodes():
            module, _, cls = spec.node_class.partition(':')
            assert f"'{spec.executable}': '{module}:main'" in setup_py


def test_runner_applies_names_namespaces_parameters_and_remappings(ros_context):
    spec = NodeSpec(name='probe', namespace='/ns', executable='unused', node_class='test_graphs:_ProbeNode',
                    parameters={'value': 3.5}, remappings=[('out', '/elsewhere')])
    with GraphRun([spec], context=ros_context) as run:
        node = run.node('probe')
        assert node.get_namespace() == '/ns'
        assert node.get_parameter('value').value == 3.5
        assert node.pub.topic_name == '/elsewhere'


def test_runner_refuses_undeclared_parameters(ros_context):
    spec = NodeSpec(name='probe', executable='unused', node_class='test_graphs:_ProbeNode', parameters={'typo': 1})
    with pytest.raises(ValueError, match="does not declare parameter.*typo"):
        GraphRun([spec], context=ros_context)


def _probe_node_class():
    from rclpy.lifecycle import LifecycleNode
    from std_msgs.msg import String

    class ProbeNode(LifecycleNode):  # the runner brings every node up through its lifecycle
        def __init__(self, **kwargs):
            super().__init__('probe_default', **kwargs)
            self.declare_parameter('value', 1.0)
            self.pub = self.create_publisher(String, 'out', 1)
    return ProbeNode


_ProbeNode = _probe_node_class()
