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

from dataclasses import dataclass

import numpy as np
import pybullet

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.transforms import invert_transform
from kp_pose_ros.objects.models import ObjectModel
from kp_pose_ros.sim.pybullet_mirror import link_frame
from kp_pose_ros.sim.scene import SimFrame, SimScene
from kp_pose_ros.sim.tabletop import TableTop, TableTopConfig, TableTopScene

_DENSITY_KG_M3 = 600.0
_PLACEMENT_TRIES = 20


@dataclass
class ObjectSceneConfig(TableTopConfig):
    """How many objects a layout drops; table, drop, camera and sensor settings as TableTopConfig (its defaults)."""

    objects_per_layout: int = 8

    def __post_init__(self) -> None:
        if int(self.objects_per_layout) != self.objects_per_layout or self.objects_per_layout < 1:
            raise ValueError(f'objects_per_layout must be an integer >= 1, got {self.objects_per_layout}')
        super().__post_init__()


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


def _random_quaternion(rng: np.random.Generator) -> list[float]:
    q = rng.normal(size=4)
    return (q / np.linalg.norm(q)).tolist()


class ObjectScene(TableTopScene):
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
        self.table = TableTop(self.scene, self.config, _PLACEMENT_TRIES)
        self.bodies: dict[int, int] = {}  # body -> obj_id
        self.new_layout()

    # ------------------------------------------------------------------ layout
    def new_layout(self) -> None:
        """A new table and a new set of objects dropped onto it and settled; then a new view."""
        rng = self.scene.rng
        for body in self.bodies:
            self.scene.remove_body(body)
        self.bodies = {}
        self.table.build()
        ids = list(self.models)
        bodies = [self._make_body(int(ids[k])) for k in rng.integers(len(ids), size=self.config.objects_per_layout)]
        for body in self.table.drop_and_settle(bodies, self._place, self._drop_heights):
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

    def _place(self, body: int, position) -> None:
        """The model frame at `position` at a random orientation (pybullet places the centre of mass)."""
        quaternion = _random_quaternion(self.scene.rng)
        com = self.models[self.bodies[body]].hull.center_mass
        rotation = np.array(pybullet.getMatrixFromQuaternion(quaternion)).reshape(3, 3)
        self.client.resetBasePositionAndOrientation(body, (np.asarray(position) + rotation @ com).tolist(),
                                                    quaternion)

    def _drop_heights(self, body: int) -> tuple[float, float]:
        """Clear of the table at any orientation; crowded retries rise by a tenth of that."""
        radius = float(np.linalg.norm(self.models[self.bodies[body]].hull.vertices, axis=1).max())
        return radius, 2.0 * radius / _PLACEMENT_TRIES

    def resting(self) -> bool:
        """Whether every object is at rest."""
        return self.table.resting(self.bodies)

    # ------------------------------------------------------------------ view
    def new_view(self) -> None:
        """A camera pose around the table-top centre, and new lights, backdrop, floor and table texture."""
        scene = self.scene
        scene.config.look_at_m = (*self.config.table_xy_m, self.table_top_z)  # the lights aim there too
        scene.randomize_camera()
        scene.randomize_appearance()
        self.table.new_texture()

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

