"""Draw a pybullet world with the PBR MeshRenderer: pybullet keeps physics, kinematics and collisions, this mirror
copies every body's visual shapes into the renderer once and their poses and colours at every frame.

Bodies added to the client later (a table, a calibration target, a sphere in a test) are picked up at the next
frame, removed ones dropped. A body can instead be drawn with meshes of one's own (`attach`): a scanned object whose
collision shape is only its convex hull, say. Instance ids encode (body, link) so SimScene can rebuild pybullet-style
object and link segmentation from one mask: id = body * LINKS_PER_BODY + link + 1 (link -1 is the base).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pybullet
import trimesh

from kp_pose_ros.core.transforms import make_transform
from kp_pose_ros.sim.renderer import Material, MeshRenderer

LINKS_PER_BODY = 4096


def instance_id(body: int, link: int) -> int:
    return body * LINKS_PER_BODY + link + 1


def split_instance(instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(body ids, pybullet link indices) of an instance mask; -1 / -2 where nothing was hit."""
    instance = np.asarray(instance)
    hit = instance >= 0
    body = np.where(hit, instance // LINKS_PER_BODY, -1)
    link = np.where(hit, instance % LINKS_PER_BODY - 1, -2)
    return body, link


def _pose(position, orientation) -> np.ndarray:
    return make_transform(np.array(pybullet.getMatrixFromQuaternion(orientation)).reshape(3, 3), np.array(position))


def link_frame(client, body: int, link: int) -> np.ndarray:
    """World pose of a link's URDF frame; for the base, pybullet reports the centre of mass, so undo the inertial
    offset."""
    if link >= 0:
        state = client.getLinkState(body, link, computeForwardKinematics=1)
        return _pose(state[4], state[5])
    com_pos, com_orn = client.getBasePositionAndOrientation(body)
    inertial = client.getDynamicsInfo(body, -1)
    inv_pos, inv_orn = client.invertTransform(inertial[3], inertial[4])
    return _pose(*client.multiplyTransforms(com_pos, com_orn, inv_pos, inv_orn))


@functools.lru_cache(maxsize=256)
def _mesh_file(path: str) -> tuple[trimesh.Trimesh, ...]:
    """A mesh file's triangle meshes, read once per process: bodies are re-added and distractors re-textured at every
    appearance, and every scene loads the same robot. Callers copy before changing them."""
    loaded = trimesh.load(path, process=False)
    meshes = loaded.dump() if isinstance(loaded, trimesh.Scene) else [loaded]
    return tuple(m for m in meshes if isinstance(m, trimesh.Trimesh) and len(m.faces))


def _shape_meshes(geometry: int, dims, filename: bytes) -> list[trimesh.Trimesh]:
    """The triangle meshes of one pybullet visual shape, in its visual frame (materials of mesh files kept)."""
    if geometry == pybullet.GEOM_MESH:
        if not filename:
            return []  # built from vertices in memory: pybullet does not give them back
        meshes = [mesh.copy() for mesh in _mesh_file(filename.decode())]
        for mesh in meshes:
            mesh.apply_scale(np.asarray(dims, float))
        return meshes
    if geometry == pybullet.GEOM_SPHERE:
        return [trimesh.creation.icosphere(subdivisions=3, radius=dims[0])]
    if geometry == pybullet.GEOM_BOX:
        return [trimesh.creation.box(extents=dims)]
    if geometry == pybullet.GEOM_CYLINDER:
        return [trimesh.creation.cylinder(radius=dims[1], height=dims[0], sections=48)]
    if geometry == pybullet.GEOM_CAPSULE:
        return [trimesh.creation.capsule(height=dims[0], radius=dims[1], count=[24, 24])]
    return []


def _has_own_material(mesh: trimesh.Trimesh) -> bool:
    return mesh.visual.kind in ('texture', 'vertex', 'face')


@dataclass
class _Part:
    handle: object
    link: int
    T_link_part: np.ndarray
    rgba: tuple | None        # pybullet colour last applied (None: the mesh keeps its own material)
    mesh: trimesh.Trimesh


class PybulletMirror:
    """Keeps a MeshRenderer in step with the bodies of a pybullet client. `skip` holds body ids drawn some other
    way (SimScene's textured floor). `material_jitter` sets the roughness/metallic of plain-coloured shapes."""

    def __init__(self, client, renderer: MeshRenderer, skip=()):
        self.client, self.renderer = client, renderer
        self.skip = set(skip)
        self._parts: dict[int, list[_Part]] = {}
        self.material_jitter: dict[int, tuple[float, float]] = {}  # body -> (roughness, metallic)
        self._attached: dict[int, tuple[list[trimesh.Trimesh], Material | None]] = {}

    def attach(self, body: int, meshes, material: Material | None = None) -> None:
        """Draw `body` as `meshes` (in its base link's URDF frame) instead of its pybullet visual shapes, with
        `material`, or each mesh's own vertex colours or texture when None. Call it again after pybullet hands a
        removed body's id to a new body, as it does."""
        self._attached[body] = (list(meshes), material)
        for part in self._parts.pop(body, []):
            self.renderer.remove(part.handle)

    def detach(self, body: int) -> None:
        """Undo attach: draw `body` with its pybullet visual shapes again from the next sync."""
        if self._attached.pop(body, None) is not None:
            for part in self._parts.pop(body, []):
                self.renderer.remove(part.handle)

    def body_meshes(self, body: int) -> list[trimesh.Trimesh]:
        """pybullet's visual shapes of a single-link body as meshes in its base link frame (to texture it anew)."""
        meshes = []
        for v in self.client.getVisualShapeData(body):
            if v[1] == -1:
                for mesh in _shape_meshes(v[2], v[3], v[4]):
                    meshes.append(mesh.apply_transform(_pose(v[5], v[6])))
        return meshes

    def drop(self, body: int) -> None:
        """Forget a body about to be removed from the client, so a new body given its id is not drawn as this one."""
        self._attached.pop(body, None)
        self.material_jitter.pop(body, None)
        for part in self._parts.pop(body, []):
            self.renderer.remove(part.handle)

    def handles(self, body: int) -> list:
        """Renderer handles of a body's meshes as of the last sync (empty for an unknown body)."""
        return [part.handle for part in self._parts.get(body, [])]

    def _add_body(self, body: int) -> list[_Part]:
        if body in self._attached:
            meshes, material = self._attached[body]
            return [_Part(self.renderer.add_mesh(mesh, instance_id(body, -1), material), -1, np.eye(4), None, mesh)
                    for mesh in meshes]
        parts = []
        for v in self.client.getVisualShapeData(body):
            link, geometry, dims, filename, pos, orn, rgba = v[1], v[2], v[3], v[4], v[5], v[6], v[7]
            for mesh in _shape_meshes(geometry, dims, filename):
                own = _has_own_material(mesh)
                handle = self.renderer.add_mesh(mesh, instance_id(body, link),
                                                None if own else self._material(body, rgba))
                parts.append(_Part(handle, link, _pose(pos, orn), None if own else tuple(rgba), mesh))
        return parts

    def _material(self, body: int, rgba) -> Material:
        roughness, metallic = self.material_jitter.get(body, (0.6, 0.0))
        return Material(base_color=tuple(float(c) for c in rgba), roughness=roughness, metallic=metallic)

    def sync(self) -> None:
        """Add new bodies, drop removed ones, move every part to its link's pose, apply changed colours."""
        c = self.client
        bodies = {c.getBodyUniqueId(i) for i in range(c.getNumBodies())} - self.skip
        for body in set(self._parts) - bodies:
            for part in self._parts.pop(body):
                self.renderer.remove(part.handle)
        for body in set(self._attached) - bodies:
            del self._attached[body]
        for body in sorted(bodies):
            if body not in self._parts:
                self._parts[body] = self._add_body(body)
            parts = self._parts[body]
            if not parts:
                continue
            colours = {v[1]: tuple(v[7]) for v in c.getVisualShapeData(body)}
            frames = {}
            for k, part in enumerate(parts):
                if part.link not in frames:
                    frames[part.link] = link_frame(c, body, part.link)
                self.renderer.set_pose(part.handle, frames[part.link] @ part.T_link_part)
                rgba = colours.get(part.link)
                if part.rgba is not None and rgba is not None and rgba != part.rgba:
                    self.renderer.remove(part.handle)
                    handle = self.renderer.add_mesh(part.mesh, instance_id(body, part.link),
                                                    self._material(body, rgba))
                    self.renderer.set_pose(handle, frames[part.link] @ part.T_link_part)
                    parts[k] = _Part(handle, part.link, part.T_link_part, rgba, part.mesh)
