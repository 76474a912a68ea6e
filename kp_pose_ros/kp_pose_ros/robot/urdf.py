"""The kinematic part of a URDF (links, joints, origins, axes, limits) parsed with the standard library.

Pose fitting needs only the kinematic tree, and the robot model usually arrives as XML text on /robot_description,
so a small parser over xml.etree replaces urdfdom/urdf_parser_py (neither ships with the PyPI ROS wheels).

Read: <link name>, <joint name type> with <parent link>, <child link>, <origin xyz rpy>, <axis xyz> and
<limit lower upper velocity>. Ignored: visuals, collisions, inertials, transmissions, gazebo tags and <mimic>:
a mimic joint is kept as an ordinary joint with its own value, so a chain through one (e.g. the second Panda finger)
must be given that value explicitly. Floating and planar joints are parsed, so a robot description with a mobile
base still loads, but a chain that passes through one is refused.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

MOVING_JOINT_TYPES = ('revolute', 'continuous', 'prismatic')
SUPPORTED_JOINT_TYPES = MOVING_JOINT_TYPES + ('fixed',)
_PARSED_ONLY_JOINT_TYPES = ('floating', 'planar')


class URDFError(ValueError):
    """A robot description that cannot be turned into a kinematic model, or a chain it does not contain."""


@dataclass(frozen=True)
class JointLimits:
    """Position limits (rad or m) and speed limit; continuous joints have lower=-inf, upper=+inf."""

    lower: float
    upper: float
    velocity: float


@dataclass(frozen=True, eq=False)
class Joint:
    """One URDF joint. ``origin`` is parent <- joint frame at zero position (4x4, read-only).

    ``axis`` is the unit motion axis in the joint frame, None for joints that do not move along one axis;
    ``limits`` is None for fixed, floating and planar joints.
    """

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray
    axis: np.ndarray | None
    limits: JointLimits | None


class URDFModel:
    """A URDF's kinematic tree: every link has at most one parent joint and all links hang from one root."""

    def __init__(self, name: str, links: tuple[str, ...], joints: tuple[Joint, ...]) -> None:
        self.name = name
        self.links = links
        self._link_set = frozenset(links)
        self.joints = {joint.name: joint for joint in joints}
        self._parent_joint = {joint.child: joint for joint in joints}
        self.root_link = _single_root(links, joints, self._parent_joint)

    def parent_joint(self, link: str) -> Joint | None:
        """The joint whose child is ``link``; None for the root link."""
        self._check_link(link)
        return self._parent_joint.get(link)

    def chain(self, base_link: str, tip_link: str) -> list[Joint]:
        """Joints from ``base_link`` down to ``tip_link``, base first; empty when both are the same link."""
        self._check_link(base_link)
        self._check_link(tip_link)
        joints: list[Joint] = []
        link = tip_link
        while link != base_link:
            joint = self._parent_joint.get(link)
            if joint is None:
                path = ' -> '.join([self.root_link] + [j.child for j in reversed(joints)])
                raise URDFError(
                    f"no kinematic chain from '{base_link}' to '{tip_link}': '{tip_link}' is not below "
                    f"'{base_link}' in the link tree (its path from the root is {path})")
            joints.append(joint)
            link = joint.parent
        joints.reverse()
        for joint in joints:
            if joint.type not in SUPPORTED_JOINT_TYPES:
                raise URDFError(
                    f"joint '{joint.name}' on the chain from '{base_link}' to '{tip_link}' is {joint.type}; "
                    f"only {', '.join(SUPPORTED_JOINT_TYPES)} joints are supported")
        return joints

    def _check_link(self, link: str) -> None:
        if link not in self._link_set:
            raise URDFError(f"robot '{self.name}' has no link '{link}'; its links are: {', '.join(self.links)}")


def parse_urdf(xml_text: str | bytes) -> URDFModel:
    """Kinematic model of a URDF given as XML text (e.g. the /robot_description parameter or topic)."""
    if not isinstance(xml_text, (str, bytes)):
        raise TypeError(f'URDF must be XML text (str or bytes), got {type(xml_text).__name__}')
    if not xml_text.strip():
        raise URDFError('URDF text is empty')
    try:
        robot = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise URDFError(f'malformed URDF XML: {err}') from None
    if robot.tag != 'robot':
        raise URDFError(f'URDF root element must be <robot>, got <{robot.tag}>')
    name = robot.get('name', '')
    links = _parse_links(robot)
    joints = tuple(_parse_joint(element, set(links)) for element in robot.findall('joint'))
    _check_unique([joint.name for joint in joints], 'joint')
    return URDFModel(name, links, joints)


def load_urdf(path: str | os.PathLike) -> URDFModel:
    """Kinematic model of a URDF file (plain URDF: run xacro first)."""
    try:
        with open(path, 'rb') as stream:
            text = stream.read()
    except OSError as err:
        raise URDFError(f"cannot read URDF file '{os.fspath(path)}': {err.strerror}") from None
    return parse_urdf(text)


def _parse_links(robot: ET.Element) -> tuple[str, ...]:
    names = []
    for element in robot.findall('link'):
        name = element.get('name')
        if not name:
            raise URDFError('a <link> has no name attribute')
        names.append(name)
    if not names:
        raise URDFError(f"robot '{robot.get('name', '')}' declares no <link>")
    _check_unique(names, 'link')
    return tuple(names)


def _check_unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise URDFError(f"{what} name '{name}' is declared more than once")
        seen.add(name)


def _parse_joint(element: ET.Element, links: set[str]) -> Joint:
    name = element.get('name')
    if not name:
        raise URDFError('a <joint> has no name attribute')
    joint_type = element.get('type')
    if joint_type not in SUPPORTED_JOINT_TYPES + _PARSED_ONLY_JOINT_TYPES:
        raise URDFError(f"joint '{name}' has unknown type {joint_type!r}; URDF types are "
                        f"{', '.join(SUPPORTED_JOINT_TYPES + _PARSED_ONLY_JOINT_TYPES)}")
    parent, child = (_joint_link(element, name, role, links) for role in ('parent', 'child'))
    if parent == child:
        raise URDFError(f"joint '{name}' connects link '{parent}' to itself")
    origin_element = element.find('origin')
    origin = np.eye(4)
    if origin_element is not None:
        origin[:3, 3] = parse_vector3(origin_element.get('xyz', '0 0 0'), f"joint '{name}' origin xyz")
        rpy = parse_vector3(origin_element.get('rpy', '0 0 0'), f"joint '{name}' origin rpy")
        # URDF rpy are fixed-axis rotations about x, then y, then z: R = Rz(yaw) Ry(pitch) Rx(roll).
        origin[:3, :3] = Rotation.from_euler('xyz', rpy).as_matrix()
    origin.flags.writeable = False
    axis = limits = None
    if joint_type in MOVING_JOINT_TYPES:
        axis = _joint_axis(element, name)
        limits = _joint_limits(element, name, joint_type)
    return Joint(name, joint_type, parent, child, origin, axis, limits)


def _joint_link(element: ET.Element, joint: str, role: str, links: set[str]) -> str:
    tag = element.find(role)
    link = tag.get('link') if tag is not None else None
    if not link:
        raise URDFError(f"joint '{joint}' has no <{role} link=...>")
    if link not in links:
        raise URDFError(f"joint '{joint}' names {role} link '{link}', which is not declared as a <link>")
    return link


def parse_vector3(text: str, what: str) -> np.ndarray:
    """Three finite numbers from a URDF attribute (xyz, rpy, axis, size, scale)."""
    try:
        values = np.array([float(token) for token in text.split()])
    except ValueError:
        raise URDFError(f'{what} must be 3 numbers, got {text!r}') from None
    if values.shape != (3,) or not np.all(np.isfinite(values)):
        raise URDFError(f'{what} must be 3 finite numbers, got {text!r}')
    return values


def _joint_axis(element: ET.Element, joint: str) -> np.ndarray:
    axis_element = element.find('axis')
    # The URDF default axis is x.
    axis = parse_vector3(axis_element.get('xyz', '1 0 0') if axis_element is not None else '1 0 0',
                         f"joint '{joint}' axis")
    norm = np.linalg.norm(axis)
    if norm < 1e-9:
        raise URDFError(f"joint '{joint}' has a zero axis")
    axis = axis / norm
    axis.flags.writeable = False
    return axis


def _limit_value(limit: ET.Element, joint: str, attribute: str, default: float | None) -> float:
    text = limit.get(attribute)
    if text is None:
        if default is None:
            raise URDFError(f"joint '{joint}' <limit> has no {attribute} attribute")
        return default
    try:
        value = float(text)
    except ValueError:
        raise URDFError(f"joint '{joint}' limit {attribute} is not a number: {text!r}") from None
    if math.isnan(value):
        raise URDFError(f"joint '{joint}' limit {attribute} is NaN")
    return value


def _joint_limits(element: ET.Element, joint: str, joint_type: str) -> JointLimits:
    limit = element.find('limit')
    if joint_type == 'continuous':
        velocity = _limit_value(limit, joint, 'velocity', math.inf) if limit is not None else math.inf
        return JointLimits(-math.inf, math.inf, velocity)
    if limit is None:
        raise URDFError(f"{joint_type} joint '{joint}' has no <limit> (URDF requires one)")
    # URDF defaults lower and upper to 0 and requires velocity.
    lower = _limit_value(limit, joint, 'lower', 0.0)
    upper = _limit_value(limit, joint, 'upper', 0.0)
    if lower > upper:
        raise URDFError(f"joint '{joint}' has lower limit {lower} above upper limit {upper}")
    return JointLimits(lower, upper, _limit_value(limit, joint, 'velocity', None))


def _single_root(links: tuple[str, ...], joints: tuple[Joint, ...], parent_joint: dict[str, Joint]) -> str:
    children: dict[str, list[str]] = {}
    for joint in joints:
        if parent_joint[joint.child] is not joint:
            raise URDFError(f"link '{joint.child}' is the child of more than one joint "
                            f"('{parent_joint[joint.child].name}' and '{joint.name}')")
        children.setdefault(joint.parent, []).append(joint.child)
    roots = [link for link in links if link not in parent_joint]
    if len(roots) != 1:
        detail = f"{len(roots)} root links ({', '.join(roots)})" if roots else 'no root link (the joints form a loop)'
        raise URDFError(f'the link tree is not connected: {detail}; a URDF needs exactly one root link')
    reached = {roots[0]}
    stack = [roots[0]]
    while stack:
        for child in children.get(stack.pop(), ()):
            reached.add(child)
            stack.append(child)
    unreached = [link for link in links if link not in reached]
    if unreached:
        raise URDFError(f"links {', '.join(unreached)} are not connected to the root link '{roots[0]}' "
                        '(their joints form a loop)')
    return roots[0]
