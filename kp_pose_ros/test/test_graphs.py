"""Graph definitions, the launch files built from them, and the in-process runner agree."""
import runpy
import sys
import types
from pathlib import Path

import pytest

from kp_pose_ros.graphs.registry import GRAPH_NAMES, get_graph
from kp_pose_ros.graphs.runner import GraphRun
from kp_pose_ros.graphs.spec import NodeSpec, as_bool

LAUNCH_DIR = Path(__file__).resolve().parents[1] / 'launch'


class _Recorded:
    """Stands in for a launch action class: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


@pytest.fixture
def launch_api(monkeypatch):
    """launch and launch_ros are not installable here (ENVIRONMENT.md): record what the launch code builds with them,
    using the same module paths and keyword names as the Humble/Jazzy API."""
    mods = {name: types.ModuleType(name) for name in
            ('launch', 'launch.actions', 'launch.substitutions', 'launch_ros', 'launch_ros.actions')}
    mods['launch'].LaunchDescription = type('LaunchDescription', (_Recorded,), {})
    mods['launch.actions'].DeclareLaunchArgument = type('DeclareLaunchArgument', (_Recorded,), {})
    mods['launch.actions'].OpaqueFunction = type('OpaqueFunction', (_Recorded,), {})
    mods['launch.substitutions'].LaunchConfiguration = _LaunchConfiguration
    mods['launch_ros.actions'].Node = type('Node', (_Recorded,), {})
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
    _, nodes = _launch('sim_camera', values)
    params = nodes[0].kwargs['parameters'][0]
    assert params['seed'] == 7 and params['rate_hz'] == 5.0 and params['random_background'] is False


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
    from rclpy.node import Node
    from std_msgs.msg import String

    class ProbeNode(Node):
        def __init__(self, **kwargs):
            super().__init__('probe_default', **kwargs)
            self.declare_parameter('value', 1.0)
            self.pub = self.create_publisher(String, 'out', 1)
    return ProbeNode


_ProbeNode = _probe_node_class()
