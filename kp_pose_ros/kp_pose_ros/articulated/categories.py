"""Articulated instances and categories: parts, joints, normalised part space and the category's kinematic prior.

PAGE estimates unseen instances of a category, so everything learned is expressed per category in *normalised part
space*: for part k of an instance, x_norm = (x_link - c_k) / s_k, with c_k the centre of the part's bounding box in
its link frame and s_k that box's diagonal. A part's *box frame* is its link frame moved to c_k (same rotation); the
pipeline estimates box frames (pose + scale), which need no instance model.

ArticulatedInstance reads one URDF (any tree of revolute / prismatic / fixed joints, e.g. sim.procedural instances
or the Panda): link surfaces (robot.surface), part boxes, forward kinematics (robot.kinematics). CategoryModel holds
what a category's instances share, fitted on training instances: the fixed part list, the mean box proportions, the
joints with their axes in the parent part's frame and the category-mean offsets that turn two part box poses into a
joint value, and the per-part keypoints (articulated.part_keypoints writes them). It is stored as YAML beside the
network that was trained with it.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh
import yaml

from kp_pose_ros.core.atomic_file import atomic_open
from kp_pose_ros.robot.kinematics import RobotKinematics
from kp_pose_ros.robot.surface import _part_mesh, sample_robot_surface
from kp_pose_ros.robot.urdf import load_urdf

KEYPOINTS_PER_PART = 3
CATEGORY_FORMAT = 1


@dataclass(frozen=True, eq=False)
class InstancePart:
    """One rigid part: complete surface samples in its link frame and its bounding box there."""

    name: str
    points: np.ndarray   # (M, 3) link frame
    centre: np.ndarray   # (3,) bbox centre in the link frame
    extents: np.ndarray  # (3,) bbox extents

    @property
    def scale(self) -> float:
        """The box diagonal: the unit of normalised part space."""
        return float(np.linalg.norm(self.extents))

    def normalised(self, points: np.ndarray | None = None) -> np.ndarray:
        """Link-frame points (default: this part's samples) in normalised part space."""
        return ((self.points if points is None else np.asarray(points, float)) - self.centre) / self.scale

    def from_normalised(self, points_norm: np.ndarray) -> np.ndarray:
        return self.centre + self.scale * np.asarray(points_norm, float)


@dataclass(frozen=True)
class PartJoint:
    """A 1-DoF joint between two parts, in the parent part's link frame."""

    name: str
    type: str                # 'revolute' | 'prismatic' (continuous joints count as revolute)
    parent: int              # part indices
    child: int
    axis: np.ndarray         # (3,) unit axis in the parent link frame
    origin: np.ndarray       # (4, 4) parent link <- child link at joint value 0
    lower: float
    upper: float


def _box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (lo + hi) / 2, hi - lo


def _link_vertices(xml: str, link: str, urdf_dir: Path) -> np.ndarray:
    """Vertices of a link's geometry in its frame (visual, else collision, as the surface samples take them): the
    bounding box of random surface samples falls short of thin features (a handle's front face) by millimetres."""
    element = next(e for e in ET.fromstring(xml).findall('link') if e.get('name') == link)
    vertices = []
    for part in element.findall('visual') or element.findall('collision'):
        try:
            mesh = _part_mesh(part, str(urdf_dir), None, trimesh)
        except (FileNotFoundError, ValueError, OSError):  # skipped by the sampling too
            continue
        if mesh is not None and mesh.area > 0:
            vertices.append(np.asarray(mesh.vertices, float))
    return np.concatenate(vertices)


class ArticulatedInstance:
    """One articulated instance from its URDF: parts in URDF link order (root first) and the joints between them."""

    def __init__(self, urdf_path: str | os.PathLike, category: str = '', points_per_part: int = 2048, seed: int = 0):
        path = Path(urdf_path)
        model = load_urdf(path)
        self.name, self.category, self.urdf = model.name, category, path
        children = [j.child for j in model.joints.values()]
        order = [model.root_link] + [link for link in model.links if link != model.root_link and link in children]
        self._kinematics = RobotKinematics(model, model.root_link, order[1:]) if len(order) > 1 else None
        # Order parts as the kinematics lists links (parents first); for procedural instances that is URDF order.
        names = self._kinematics.link_names if self._kinematics else (model.root_link,)
        xml = path.read_text()
        surface = sample_robot_surface(xml, names, urdf_dir=str(path.parent), num_points=points_per_part * len(names),
                                       seed=seed)
        parts = []
        for k, name in enumerate(names):
            pts = surface.points[surface.link_index == k]
            if len(pts) < 4:
                raise ValueError(f'{path.name}: link {name!r} has no surface to sample')
            centre, extents = _box(_link_vertices(xml, name, path.parent))
            parts.append(InstancePart(name, pts, centre, extents))
        self.parts: tuple[InstancePart, ...] = tuple(parts)
        index = {name: k for k, name in enumerate(names)}
        joints = []
        for joint_name in (self._kinematics.joint_names if self._kinematics else ()):
            joint = model.joints[joint_name]
            rotation = joint.origin[:3, :3]
            joints.append(PartJoint(joint.name, 'prismatic' if joint.type == 'prismatic' else 'revolute',
                                    index[joint.parent], index[joint.child], rotation @ joint.axis,
                                    joint.origin.copy(), joint.limits.lower, joint.limits.upper))
        self.joints: tuple[PartJoint, ...] = tuple(joints)

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    def link_poses(self, q=None) -> np.ndarray:
        """(P, 4, 4) root <- part link frames at joint values q (J,), default all zero."""
        if self._kinematics is None:
            return np.eye(4)[None]
        q = np.zeros(len(self.joints)) if q is None else np.asarray(q, float)
        return self._kinematics.link_poses(q)

    def box_offsets(self) -> np.ndarray:
        """(P, 4, 4) link <- box frame of each part (a translation to the box centre)."""
        offsets = np.tile(np.eye(4), (len(self.parts), 1, 1))
        offsets[:, :3, 3] = [p.centre for p in self.parts]
        return offsets

    def keypoints(self, keypoints_norm: np.ndarray) -> np.ndarray:
        """Normalised per-part keypoints (P, K, 3) -> the same keypoints in each part's link frame."""
        return np.stack([p.from_normalised(kp) for p, kp in zip(self.parts, np.asarray(keypoints_norm, float))])


def joint_value(joint: CategoryJoint, T_parent_box: np.ndarray, T_child_box: np.ndarray, parent_scale: float) -> float:
    """The joint value (rad | m) that best explains two estimated part box poses (same camera frame).

    Revolute: the angle about the axis closest to the parts' relative rotation (exact for noise-free poses).
    Prismatic: the child's box centre along the axis, relative to the parent's, minus the category-mean closed
    offset scaled by the parent's size.
    """
    Rp, Rc = T_parent_box[:3, :3], T_child_box[:3, :3]
    if joint.type == 'revolute':
        a = joint.origin_rotation.T @ joint.axis  # in the child's frame at value 0
        M = joint.origin_rotation.T @ Rp.T @ Rc
        # tr(Rot(a, q)^T M) = A cos q + B sin q + const: its maximum.
        A = np.trace(M) - a @ M @ a
        ax = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        B = np.trace(ax.T @ M)
        return float(np.arctan2(B, A))
    along = joint.axis @ (Rp.T @ (T_child_box[:3, 3] - T_parent_box[:3, 3]))
    return float(along - parent_scale * joint.offset)


@dataclass
class CategoryJoint:
    """A category's joint: axis (parent link frame), the child's rotation at value 0 relative to the parent, a point
    on the axis in the parent's normalised space and (prismatic) the closed offset along the axis / parent scale."""

    name: str
    type: str
    parent: int
    child: int
    axis: np.ndarray
    origin_rotation: np.ndarray
    hinge: np.ndarray
    offset: float
    lower: float
    upper: float


@dataclass
class CategoryPart:
    name: str
    proportions: np.ndarray                     # mean extents / diagonal (unit norm)
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (3, 3) normalised


@dataclass
class CategoryModel:
    """What the instances of a category share (see the module docstring); fitted on training instances only."""

    category: str
    parts: list[CategoryPart]
    joints: list[CategoryJoint]
    instances: list[str]

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    def keypoints(self, method: str) -> np.ndarray:
        """(P, 3, 3) normalised keypoints of every part for a method ('learned', 'fps', 'box')."""
        missing = [p.name for p in self.parts if method not in p.keypoints]
        if missing:
            raise KeyError(f'category {self.category!r} has no {method!r} keypoints for parts {missing}')
        return np.stack([p.keypoints[method] for p in self.parts])

    def joint_values(self, T_boxes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """(J,) joint values from (P, 4, 4) part box poses and (P,) part scales."""
        return np.array([joint_value(j, T_boxes[j.parent], T_boxes[j.child], float(scales[j.parent]))
                         for j in self.joints])

    @classmethod
    def fit(cls, category: str, instances: list[ArticulatedInstance]) -> CategoryModel:
        """The shared structure of `instances` (all with the same part and joint names, in the same order)."""
        if not instances:
            raise ValueError('fit a category model on at least one instance')
        first = instances[0]
        for inst in instances[1:]:
            if inst.part_names != first.part_names or [j.name for j in inst.joints] != [j.name for j in first.joints]:
                raise ValueError(f'{inst.name} has parts {inst.part_names}, {first.name} has {first.part_names}: '
                                 'a category needs one part list')
        parts = [CategoryPart(name, _unit_mean([inst.parts[k].extents for inst in instances]))
                 for k, name in enumerate(first.part_names)]
        joints = []
        for j, joint in enumerate(first.joints):
            hinge, offset = [], []
            for inst in instances:
                ij, parent, child = inst.joints[j], inst.parts[joint.parent], inst.parts[joint.child]
                o = ij.origin[:3, 3]
                hinge.append(parent.normalised(o[None])[0])
                child_centre = o + ij.origin[:3, :3] @ child.centre
                offset.append(ij.axis @ (child_centre - parent.centre) / parent.scale)
            joints.append(CategoryJoint(joint.name, joint.type, joint.parent, joint.child, joint.axis.copy(),
                                        joint.origin[:3, :3].copy(), np.mean(hinge, axis=0),
                                        float(np.mean(offset)) if joint.type == 'prismatic' else 0.0,
                                        float(np.min([i.joints[j].lower for i in instances])),
                                        float(np.max([i.joints[j].upper for i in instances]))))
        return cls(category, parts, joints, [inst.name for inst in instances])

    def to_dict(self) -> dict:
        return {'format': CATEGORY_FORMAT, 'category': self.category, 'instances': list(self.instances),
                'parts': [{'name': p.name, 'proportions': _list(p.proportions),
                           'keypoints': {m: _list(kp) for m, kp in sorted(p.keypoints.items())}} for p in self.parts],
                'joints': [{'name': j.name, 'type': j.type, 'parent': j.parent, 'child': j.child, 'axis': _list(j.axis),
                            'origin_rotation': _list(j.origin_rotation), 'hinge': _list(j.hinge),
                            'offset': float(j.offset), 'lower': float(j.lower), 'upper': float(j.upper)}
                           for j in self.joints]}

    @classmethod
    def from_dict(cls, data: dict) -> CategoryModel:
        if data.get('format') != CATEGORY_FORMAT:
            raise ValueError(f'category model format {data.get("format")!r}, expected {CATEGORY_FORMAT}')
        parts = [CategoryPart(p['name'], np.asarray(p['proportions'], float),
                              {m: np.asarray(kp, float).reshape(KEYPOINTS_PER_PART, 3)
                               for m, kp in (p.get('keypoints') or {}).items()}) for p in data['parts']]
        joints = [CategoryJoint(j['name'], j['type'], int(j['parent']), int(j['child']), np.asarray(j['axis'], float),
                                np.asarray(j['origin_rotation'], float), np.asarray(j['hinge'], float),
                                float(j['offset']), float(j['lower']), float(j['upper'])) for j in data['joints']]
        return cls(data['category'], parts, joints, list(data.get('instances', [])))

    def save(self, path: str | os.PathLike) -> None:
        with atomic_open(path) as f:
            f.write(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CategoryModel:
        with open(path) as f:
            return cls.from_dict(yaml.safe_load(f))


def _unit_mean(vectors) -> np.ndarray:
    v = np.asarray(vectors, float)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    mean = v.mean(axis=0)
    return mean / np.linalg.norm(mean)


def _list(a) -> list:
    return np.round(np.asarray(a, float), 8).tolist()
