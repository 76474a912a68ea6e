"""Table-top scenes of rigid objects from a BOP model set, with exact 6D ground truth, for the object pipeline.

A SimScene without the robot (SceneConfig.robot_urdf=None) holds a table (a box body of random size, height and
texture at `table_xy_m`) and N objects drawn from the model set with repeats. Objects are dropped from above the table
at random orientations and pybullet steps until they rest; those that fall off are dropped again, then removed. The
PBR renderer draws each object's real mesh with its vertex colours or texture (PybulletMirror.attach), not pybullet's
visual shape.

Collision shape: the convex hull of each mesh (pybullet GEOM_MESH from the hull's vertices). It is exact for convex
objects and fills cavities and concave gaps of the others (a mug rests as if full, a handle spans a hull face): resting
poses can be slightly off where an object would rest on a concave part, but never interpenetrate visibly, and it
needs no VHACD decomposition step per model. Mass comes from the hull volume at a wood-like density, its centre of mass
at the hull's.

Randomness: layouts (table, objects, drops) and camera poses draw from the scene's `rng`, looks (lights, backdrop,
floor, table texture) from its `appearance_rng`: one seed gives the same frames.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pybullet
import trimesh

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.transforms import invert_transform
from kp_pose_ros.sim.camera_effects import EffectRanges
from kp_pose_ros.sim.camera_presets import preset
from kp_pose_ros.sim.pybullet_mirror import link_frame
from kp_pose_ros.sim.renderer import Material
from kp_pose_ros.sim.scene import SceneConfig, SimFrame, SimScene

_MODEL_FILE = re.compile(r'^obj_(\d+)\.ply$')
_DENSITY_KG_M3 = 600.0
_TABLE_TEXTURE_PX = 256
_TABLE_TILE_M = 0.5
_PLACEMENT_TRIES = 20
# Settled: every object slower than these (pybullet also puts resting bodies to sleep, at zero velocity).
_REST_LINEAR_M_S = 5e-3
_REST_ANGULAR_RAD_S = 5e-2


@dataclass(frozen=True)
class ObjectModel:
    """One model of a BOP set, in metres, in the model frame BOP poses refer to."""

    obj_id: int
    mesh: trimesh.Trimesh  # with its vertex colours or texture
    diameter_m: float
    hull: trimesh.Trimesh  # convex hull: the collision shape

    @property
    def name(self) -> str:
        return f'obj_{self.obj_id:06d}'


def load_bop_models(folder: str | os.PathLike, obj_ids=None) -> dict[int, ObjectModel]:
    """The obj_XXXXXX.ply models of a BOP model folder (mm) as ObjectModels (m), by obj_id. Diameters come from its
    models_info.json where present, else from the mesh. `obj_ids` picks a subset."""
    folder = Path(folder)
    files = {int(m.group(1)): folder / name for name in sorted(os.listdir(folder)) if (m := _MODEL_FILE.match(name))}
    if not files:
        raise FileNotFoundError(f'no obj_XXXXXX.ply models in {folder}')
    info_path = folder / 'models_info.json'
    info = json.loads(info_path.read_text(encoding='utf-8')) if info_path.is_file() else {}
    if obj_ids is not None:
        missing = sorted(set(obj_ids) - set(files))
        if missing:
            raise ValueError(f'objects {missing} not in {folder} (it has {sorted(files)})')
        files = {k: files[k] for k in sorted(set(obj_ids))}
    models = {}
    for obj_id, path in files.items():
        mesh = trimesh.load(path, process=False)  # PLY TextureFile comments are resolved beside the file
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise ValueError(f'{path}: not a triangle mesh')
        mesh.apply_scale(0.001)
        hull = mesh.convex_hull
        entry = info.get(str(obj_id), {})
        diameter = float(entry['diameter']) / 1000.0 if 'diameter' in entry else _diameter(hull.vertices)
        models[obj_id] = ObjectModel(obj_id, mesh, diameter, hull)
    return models


def _diameter(points: np.ndarray) -> float:
    d = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1).max()))


@dataclass
class ObjectSceneConfig:
    """Table, objects and camera ranges (metres, degrees), plus the sensor settings passed to SceneConfig."""

    camera: CameraModel = field(default_factory=lambda: preset('realsense_d435'))
    objects_per_layout: int = 8
    table_xy_m: tuple[float, float] = (0.0, 0.0)
    table_size_range_m: tuple[float, float] = (0.5, 1.0)  # each side
    table_height_range_m: tuple[float, float] = (0.55, 0.9)
    # Objects start this far above the table (or above whatever already occupies their spot).
    drop_height_range_m: tuple[float, float] = (0.02, 0.15)
    # Objects land within this share of the table's half-size around its centre.
    spread: float = 0.6
    settle_max_steps: int = 2000  # pybullet steps of 1/240 s
    redrops: int = 2
    # Camera around the table-top centre (LINEMOD's views are 0.6-1.2 m away, 20-80 degrees up).
    distance_range_m: tuple[float, float] = (0.5, 1.2)
    elevation_range_deg: tuple[float, float] = (20.0, 80.0)
    look_at_jitter_m: float = 0.08
    depth_sensor: str = 'ideal'
    camera_effects: EffectRanges | None = None
    random_background: bool = True

    def __post_init__(self) -> None:
        if int(self.objects_per_layout) != self.objects_per_layout or self.objects_per_layout < 1:
            raise ValueError(f'objects_per_layout must be an integer >= 1, got {self.objects_per_layout}')
        if not 0.0 < self.spread <= 1.0:
            raise ValueError(f'spread must lie within (0, 1], got {self.spread}')

    def scene_config(self) -> SceneConfig:
        return SceneConfig(camera=self.camera, robot_urdf=None, distance_range_m=self.distance_range_m,
                           elevation_range_deg=self.elevation_range_deg, look_at_jitter_m=self.look_at_jitter_m,
                           roll_jitter_deg=10.0, depth_sensor=self.depth_sensor, camera_effects=self.camera_effects,
                           random_background=self.random_background, renderer='pbr')


@dataclass(frozen=True)
class ObjectInstance:
    obj_id: int
    body: int                # pybullet body id: its pixels in SimFrame.object_seg
    T_world_obj: np.ndarray  # (4, 4) model frame in the world (metres)
    T_cam_obj: np.ndarray    # (4, 4) model frame in the camera optical frame (metres)


@dataclass(frozen=True)
class ObjectFrame:
    frame: SimFrame
    instances: tuple[ObjectInstance, ...]
    full_masks: tuple[np.ndarray, ...]  # (H, W) bool per instance: its silhouette with every other body hidden

    def visible_mask(self, k: int) -> np.ndarray:
        return self.frame.object_seg == self.instances[k].body


def _textured_box(extents, tile_m: float) -> trimesh.Trimesh:
    """A box whose faces each map the texture by planar projection, repeated every tile_m."""
    box = trimesh.creation.box(extents=extents)
    vertices = box.vertices[box.faces].reshape(-1, 3)
    axis = np.abs(box.face_normals).argmax(axis=1).repeat(3)
    uv = np.take_along_axis(vertices, np.array([[1, 2], [0, 2], [0, 1]])[axis], axis=1) / tile_m
    return trimesh.Trimesh(vertices, np.arange(len(vertices)).reshape(-1, 3), process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv))


def _random_quaternion(rng: np.random.Generator) -> list[float]:
    q = rng.normal(size=4)
    return (q / np.linalg.norm(q)).tolist()


class ObjectScene:
    """Objects of a model set on a table, seen by the SimScene's camera. `new_layout()` builds a new table and drops
    new objects; `new_view()` draws a camera pose and looks; `render()` gives the frame with per-instance truth."""

    def __init__(self, models: dict[int, ObjectModel], config: ObjectSceneConfig | None = None, seed: int = 0):
        if not models:
            raise ValueError('need at least one object model')
        self.models = dict(sorted(models.items()))
        self.config = config if config is not None else ObjectSceneConfig()
        self.scene = SimScene(self.config.scene_config(), seed)
        self.client = self.scene.client
        self.client.setGravity(0.0, 0.0, -9.81)
        self._shapes: dict[int, int] = {}  # obj_id -> collision shape, made once per client
        self.table_body: int | None = None
        self.table_top_z = 0.0
        self.table_half = np.zeros(2)
        self.bodies: dict[int, int] = {}  # body -> obj_id
        self.new_layout()

    # ------------------------------------------------------------------ layout
    def new_layout(self) -> None:
        """A new table and a new set of objects dropped onto it and settled; then a new view."""
        c, cfg, rng = self.client, self.config, self.scene.rng
        for body in [*self.bodies, *([self.table_body] if self.table_body is not None else [])]:
            c.removeBody(body)
            self.scene.body_names.pop(body, None)
        self.bodies = {}
        size = rng.uniform(*cfg.table_size_range_m, 2)
        height = rng.uniform(*cfg.table_height_range_m)
        self.table_half, self.table_top_z = size / 2.0, float(height)
        shape = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[size[0] / 2, size[1] / 2, height / 2])
        self.table_body = c.createMultiBody(baseMass=0, baseCollisionShapeIndex=shape,
                                            basePosition=[*cfg.table_xy_m, height / 2])
        c.changeDynamics(self.table_body, -1, lateralFriction=0.8)
        self.scene.body_names[self.table_body] = 'table'
        self._table_mesh = _textured_box([size[0], size[1], height], _TABLE_TILE_M)
        ids = list(self.models)
        bodies = [self._make_body(int(ids[k])) for k in rng.integers(len(ids), size=cfg.objects_per_layout)]
        for _ in range(cfg.redrops + 1):
            self._drop(bodies)
            self._settle()
            bodies = [b for b in self.bodies if not self._on_table(b)]
            if not bodies:
                break
        for body in bodies:  # still off the table after the last drop
            c.removeBody(body)
            self.scene.body_names.pop(body)
            del self.bodies[body]
        self.new_view()

    def _make_body(self, obj_id: int) -> int:
        c, model = self.client, self.models[obj_id]
        if obj_id not in self._shapes:
            self._shapes[obj_id] = c.createCollisionShape(pybullet.GEOM_MESH, vertices=model.hull.vertices.tolist())
        mass = max(model.hull.volume, 1e-6) * _DENSITY_KG_M3
        body = c.createMultiBody(baseMass=mass, baseCollisionShapeIndex=self._shapes[obj_id],
                                 baseInertialFramePosition=model.hull.center_mass.tolist())
        c.changeDynamics(body, -1, lateralFriction=0.7, rollingFriction=1e-3, spinningFriction=1e-3,
                         restitution=0.0)
        self.scene.attach_meshes(body, [model.mesh])
        self.scene.body_names[body] = f'object:{obj_id}'
        self.bodies[body] = obj_id
        return body

    def _set_model_pose(self, body: int, position, quaternion) -> None:
        """Place the model frame (pybullet places the centre of mass)."""
        com = self.models[self.bodies[body]].hull.center_mass
        rotation = np.array(pybullet.getMatrixFromQuaternion(quaternion)).reshape(3, 3)
        self.client.resetBasePositionAndOrientation(body, (np.asarray(position) + rotation @ com).tolist(),
                                                    quaternion)
        self.client.resetBaseVelocity(body, [0, 0, 0], [0, 0, 0])

    def _drop(self, bodies: list[int]) -> None:
        """Each body above a random spot of the table at a random orientation, clear of the others placed so far."""
        c, cfg, rng = self.client, self.config, self.scene.rng
        placed = [b for b in self.bodies if b not in bodies]
        for body in bodies:
            radius = float(np.linalg.norm(self.models[self.bodies[body]].hull.vertices, axis=1).max())
            z = self.table_top_z + radius + rng.uniform(*cfg.drop_height_range_m)
            for _ in range(_PLACEMENT_TRIES):
                xy = np.asarray(cfg.table_xy_m) + rng.uniform(-1.0, 1.0, 2) * cfg.spread * self.table_half
                self._set_model_pose(body, [*xy, z], _random_quaternion(rng))
                if not any(c.getClosestPoints(body, other, 0.0) for other in placed):
                    break
                z += 2.0 * radius / _PLACEMENT_TRIES  # crowded: try a little higher
            placed.append(body)

    def _settle(self) -> None:
        c = self.client
        for step in range(self.config.settle_max_steps):
            c.stepSimulation()
            if step % 10 == 9 and self.resting():
                return

    def resting(self) -> bool:
        """Whether every object is at rest (slower than _REST_LINEAR_M_S and _REST_ANGULAR_RAD_S)."""
        for body in self.bodies:
            linear, angular = self.client.getBaseVelocity(body)
            if np.linalg.norm(linear) > _REST_LINEAR_M_S or np.linalg.norm(angular) > _REST_ANGULAR_RAD_S:
                return False
        return True

    def _on_table(self, body: int) -> bool:
        """Its centre above the table top and within the table's footprint."""
        centre = link_frame(self.client, body, -1)[:3, 3]
        inside = np.all(np.abs(centre[:2] - np.asarray(self.config.table_xy_m)) <= self.table_half)
        return bool(inside and centre[2] > self.table_top_z)

    # ------------------------------------------------------------------ view
    def new_view(self) -> None:
        """A camera pose around the table-top centre, and new lights, backdrop, floor and table texture."""
        scene = self.scene
        scene.config.look_at_m = (*self.config.table_xy_m, self.table_top_z)  # the lights aim there too
        scene.randomize_camera()
        scene.randomize_appearance()
        rng, cfg = scene.appearance_rng, scene.config
        texture = scene.surface_image(_TABLE_TEXTURE_PX, _TABLE_TEXTURE_PX)
        if texture is None:
            texture = np.full((_TABLE_TEXTURE_PX, _TABLE_TEXTURE_PX, 3), 200, np.uint8)
        tint = tuple(float(v) for v in rng.uniform(0.5, 1.0, 3)) + (1.0,)
        material = Material(base_color=tint, texture=texture, roughness=float(rng.uniform(*cfg.roughness_range)),
                            metallic=float(rng.uniform(0.0, 0.3)))
        scene.attach_meshes(self.table_body, [self._table_mesh], material)

    # ------------------------------------------------------------------ truth
    def object_poses(self) -> list[tuple[int, int, np.ndarray]]:
        """(body, obj_id, T_world_obj) of every object on the table, in body order."""
        return [(body, obj_id, link_frame(self.client, body, -1)) for body, obj_id in sorted(self.bodies.items())]

    def render(self, full_masks: bool = True) -> ObjectFrame:
        """The frame, each object's pose in the camera, and (`full_masks`) its silhouette with the others hidden."""
        frame = self.scene.render()
        T_cam_world = invert_transform(frame.T_base_cam)
        instances = tuple(ObjectInstance(obj_id, body, T, T_cam_world @ T) for body, obj_id, T in self.object_poses())
        masks = tuple(self.scene.silhouette(i.body) for i in instances) if full_masks else ()
        return ObjectFrame(frame, instances, masks)

    def close(self) -> None:
        self.scene.close()

    def __enter__(self) -> ObjectScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bop_pose(T_cam_obj: np.ndarray) -> tuple[list[float], list[float]]:
    """(cam_R_m2c row-major, cam_t_m2c in mm) as BOP's scene_gt.json holds them."""
    T = np.asarray(T_cam_obj, float)
    return T[:3, :3].reshape(-1).tolist(), (T[:3, 3] * 1000.0).tolist()


def model_points_px(model: ObjectModel, T_cam_obj: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Pixels of the model's vertices under a pose (NaN rows behind the camera)."""
    points = model.mesh.vertices @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]
    return camera.project(points)

