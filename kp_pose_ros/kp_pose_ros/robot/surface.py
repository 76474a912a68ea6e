"""Points on the robot's outer surface, per link, from the URDF's visual (or collision) geometry.

Depth refinement (robot/depth_alignment.py) aligns these points, placed by forward kinematics, with what the depth
camera measured: a surface model pins the camera pose to millimetres where seven keypoints at link origins cannot.

Mesh references are resolved the way ROS tools do: ``package://pkg/path`` through a caller-supplied package lookup
(ament_index on a ROS install), then relative to the URDF's directory (pybullet's convention, which drops the package
name); ``file://`` and plain paths as files, plain relative paths against the URDF's directory. Meshes load with
trimesh (OBJ, STL, PLY, and DAE where pycollada is installed); boxes, cylinders and spheres are built directly.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from kp_pose_ros.robot.urdf import URDFError, parse_vector3

GEOMETRY_KINDS = ('visual', 'collision')


@dataclass(frozen=True, eq=False)
class RobotSurface:
    """Surface samples of the links in ``link_names``: ``points``/``normals`` (N, 3) in each point's own link frame,
    ``link_index`` (N,) into ``link_names``. ``missing`` lists geometry that could not be loaded, for the log."""

    link_names: tuple[str, ...]
    link_index: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    missing: tuple[str, ...] = ()

    def in_base(self, link_poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points and outward normals in the base frame, given base <- link poses (L, 4, 4) ordered as link_names."""
        link_poses = np.asarray(link_poses, float)
        if link_poses.shape != (len(self.link_names), 4, 4):
            raise ValueError(f'need one pose per surface link ({len(self.link_names)}, 4, 4), got {link_poses.shape}')
        R = link_poses[self.link_index, :3, :3]
        t = link_poses[self.link_index, :3, 3]
        return np.einsum('nij,nj->ni', R, self.points) + t, np.einsum('nij,nj->ni', R, self.normals)


def resolve_mesh_path(uri: str, urdf_dir: str | None,
                      package_dir: Callable[[str], str | None] | None = None) -> str:
    """A file path for a URDF mesh filename; raises FileNotFoundError naming every place looked at."""
    tried = []
    if uri.startswith('package://'):
        package, _, rest = uri[len('package://'):].partition('/')
        root = package_dir(package) if package_dir is not None else None
        if root:
            tried.append(os.path.join(root, rest))
        if urdf_dir:
            tried += [os.path.join(urdf_dir, rest), os.path.join(urdf_dir, package, rest)]
    elif uri.startswith('file://'):
        tried.append(uri[len('file://'):])
    elif os.path.isabs(uri) or not urdf_dir:
        tried.append(uri)
    else:
        tried.append(os.path.join(urdf_dir, uri))
    for path in tried:
        if os.path.isfile(path):
            return path
    places = ', '.join(tried) or 'nowhere: no URDF directory and no package lookup'
    raise FileNotFoundError(f"mesh '{uri}' not found (looked at: {places})")


def with_absolute_mesh_paths(xml_text: str, urdf_dir: str,
                             package_dir: Callable[[str], str | None] | None = None) -> str:
    """The URDF with every mesh it can resolve turned into a file:// URI, so that a node reading it from
    /robot_description, without the file's directory, still finds the meshes. Unresolved ones are left as they are."""
    try:
        robot = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise URDFError(f'malformed URDF XML: {err}') from None
    for mesh in robot.iter('mesh'):
        try:
            path = resolve_mesh_path(mesh.get('filename', ''), urdf_dir, package_dir)
        except FileNotFoundError:
            continue
        mesh.set('filename', 'file://' + os.path.abspath(path))
    return ET.tostring(robot, encoding='unicode')


def sample_robot_surface(xml_text: str | bytes, link_names: Sequence[str], urdf_dir: str | None = None,
                         package_dir: Callable[[str], str | None] | None = None, kind: str = 'visual',
                         num_points: int = 4000, seed: int = 0) -> RobotSurface:
    """``num_points`` samples spread over the links' surfaces by area (deterministic for a seed).

    Links without geometry of ``kind`` fall back on the other kind; geometry that cannot be loaded is skipped and
    named in ``missing``. Raises URDFError when none of the links has usable geometry.
    """
    import trimesh

    if kind not in GEOMETRY_KINDS:
        raise ValueError(f'kind must be one of {GEOMETRY_KINDS}, got {kind!r}')
    if int(num_points) != num_points or num_points < 1:
        raise ValueError(f'num_points must be a positive integer, got {num_points}')
    try:
        robot = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise URDFError(f'malformed URDF XML: {err}') from None
    elements = {link.get('name'): link for link in robot.findall('link')}
    other = GEOMETRY_KINDS[1 - GEOMETRY_KINDS.index(kind)]
    meshes, owners, missing = [], [], []
    for index, name in enumerate(link_names):
        link = elements.get(name)
        if link is None:
            raise URDFError(f"robot has no link '{name}'")
        parts = link.findall(kind) or link.findall(other)
        for part in parts:
            try:
                mesh = _part_mesh(part, urdf_dir, package_dir, trimesh)
            except (FileNotFoundError, ValueError, OSError) as exc:  # URDFError is a ValueError
                missing.append(f'{name}: {exc}')
                continue
            if mesh is not None and mesh.area > 0:
                meshes.append(mesh)
                owners.append(index)
    if not meshes:
        raise URDFError('no link has usable geometry' + (f" ({'; '.join(missing)})" if missing else ''))
    areas = np.array([mesh.area for mesh in meshes])
    counts = np.maximum(1, np.round(areas / areas.sum() * num_points)).astype(int)
    rng = np.random.default_rng(seed)
    points, normals, index = [], [], []
    for mesh, owner, count in zip(meshes, owners, counts):
        sampled, faces = trimesh.sample.sample_surface(mesh, int(count), seed=int(rng.integers(2 ** 31)))
        points.append(sampled)
        normals.append(mesh.face_normals[faces])
        index.append(np.full(len(sampled), owner))
    return RobotSurface(tuple(link_names), np.concatenate(index), np.concatenate(points).astype(float),
                        np.concatenate(normals).astype(float), tuple(missing))


def _part_mesh(part: ET.Element, urdf_dir, package_dir, trimesh):
    """One <visual>/<collision> as a trimesh in its link's frame (None when it has no geometry)."""
    geometry = part.find('geometry')
    if geometry is None or len(geometry) == 0:
        return None
    shape = geometry[0]
    if shape.tag == 'mesh':
        path = resolve_mesh_path(shape.get('filename', ''), urdf_dir, package_dir)
        mesh = trimesh.load(path, force='mesh', process=False)
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise ValueError(f'{path} holds no triangle mesh')
        mesh.apply_scale(parse_vector3(shape.get('scale', '1 1 1'), 'mesh scale'))
    elif shape.tag == 'box':
        mesh = trimesh.creation.box(extents=parse_vector3(shape.get('size', ''), 'box size'))
    elif shape.tag == 'cylinder':
        mesh = trimesh.creation.cylinder(radius=float(shape.get('radius', 'nan')),
                                         height=float(shape.get('length', 'nan')))
    elif shape.tag == 'sphere':
        mesh = trimesh.creation.icosphere(subdivisions=2, radius=float(shape.get('radius', 'nan')))
    else:
        raise ValueError(f'unsupported geometry <{shape.tag}>')
    origin = part.find('origin')
    if origin is not None:
        T = np.eye(4)
        T[:3, 3] = parse_vector3(origin.get('xyz', '0 0 0'), 'origin xyz')
        T[:3, :3] = Rotation.from_euler('xyz', parse_vector3(origin.get('rpy', '0 0 0'), 'origin rpy')).as_matrix()
        mesh.apply_transform(T)
    return mesh

