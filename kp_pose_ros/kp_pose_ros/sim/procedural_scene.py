"""One scene description for the category-level and articulated pipelines: procedural instances (sim.procedural) of
rigid categories settled on a table with physics, articulated objects at random joint states on the floor (laptops,
eyeglasses and scissors on the table when there is one), seen by a SimScene camera without a robot, with per-instance
and per-part ground truth.

Layout (`new_layout`): a table (a box of random size and height at `table_xy_m`, when rigid instances are asked for);
articulated objects first, fixed-base, upright at a random yaw (`yaw_range_deg`, 0 = front towards world +x) with
their lowest collision box 1 mm above the floor or table, their movable joints reset to uniform random states within
the URDF limits (pybullet resetJointState; drawn again, up to _STATE_TRIES times, while two moving parts interpenetrate,
else left closed) and held there by position motors while the rest settles; small objects alone on the floor are seen
from closer (`view_radius_m`); the rigid instances are then dropped upright (canonical +y along world +z) at a random
yaw and a small tilt, and pybullet steps until they rest (collision shape: the convex hull, as sim.objects; those off
the table after `redrops` tries are removed). Instances are drawn per layout from the instance seeds of `split`.

Ground truth (`render`): per instance its category, instance seed, pybullet body, T_cam_obj (object frame as
sim.procedural defines it: NOCS canonical for rigid ones, the closed bbox centre for articulated ones), size_m;
articulated ones also every link's T_cam_part and every movable joint's name, type, state, limits, and axis direction
and a point on it in the object frame, read back from pybullet. Part pixels: SimFrame.part_seg (pybullet link index + 1)
where SimFrame.object_seg is the instance's body.

Randomness: layouts, instance seeds, joint states and camera poses draw from the SimScene's `rng`, looks from its
`appearance_rng`: one seed gives the same frames.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet

from kp_pose_ros.core.transforms import invert_transform, matrix_to_quat_xyzw
from kp_pose_ros.sim.procedural import (
    ARTICULATED_CATEGORIES,
    CATEGORIES,
    SPLITS,
    ArticulatedAsset,
    CategoryInstance,
    articulated_instance,
    category_instance,
    draw_seeds,
)
from kp_pose_ros.sim.pybullet_mirror import link_frame
from kp_pose_ros.sim.scene import SimFrame, SimScene
from kp_pose_ros.sim.tabletop import TableTop, TableTopConfig, TableTopScene

JOINT_TYPES = {pybullet.JOINT_REVOLUTE: 'revolute', pybullet.JOINT_PRISMATIC: 'prismatic'}
# Where each articulated category stands: these on the table when the layout has one, the others on the floor.
TABLE_TOP_CATEGORIES = ('laptop', 'eyeglasses', 'scissors')
_DENSITY_KG_M3 = 500.0
_PLACEMENT_TRIES = 30
_STATE_TRIES = 50          # joint state draws per articulated instance before it is left closed
_PENETRATION_M = 5e-4      # parts overlapping by more than this interpenetrate (touching ones do not)
# z up -> NOCS canonical y up: the canonical frame's axes in a world frame where it stands upright.
_UPRIGHT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _counts(value, name: str) -> tuple[int, int]:
    lo, hi = (int(v) for v in value)
    if lo != value[0] or hi != value[1] or not 0 <= lo <= hi:
        raise ValueError(f'{name} must be integers 0 <= low <= high, got {value}')
    return lo, hi


@dataclass
class ProceduralSceneConfig(TableTopConfig):
    """What a layout holds and the ranges it draws from (metres, degrees); table, drop, camera and sensor settings as
    TableTopConfig, with defaults of its own for larger instances seen from further away. `spread` also applies to
    laptops; the camera looks around the centre of what the layout holds."""

    table_size_range_m: tuple[float, float] = (0.6, 1.0)
    table_height_range_m: tuple[float, float] = (0.55, 0.85)
    drop_height_range_m: tuple[float, float] = (0.01, 0.06)
    settle_max_steps: int = 1500
    distance_range_m: tuple[float, float] = (0.7, 1.8)
    elevation_range_deg: tuple[float, float] = (15.0, 70.0)
    look_at_jitter_m: float = 0.1
    categories: tuple[str, ...] = CATEGORIES                   # rigid, on the table
    articulated_categories: tuple[str, ...] = ARTICULATED_CATEGORIES
    rigid_per_layout: tuple[int, int] = (3, 6)
    articulated_per_layout: tuple[int, int] = (1, 2)
    split: str = 'train'
    yaw_range_deg: tuple[float, float] = (-180.0, 180.0)
    # Articulated objects on the floor stand this far from the table's edge (or, without a table, from its centre).
    floor_gap_range_m: tuple[float, float] = (0.05, 0.6)
    tilt_deg: float = 10.0
    # Layouts without a table whose largest instance is smaller than this (half its closed bbox diagonal; just under
    # the smallest laptop's) are brought closer in proportion, no nearer than min_view_scale: floor gaps, camera
    # distances and look-at jitter scale alike, so eyeglasses or scissors alone fill the view as a laptop does.
    view_radius_m: float = 0.16
    min_view_scale: float = 0.3

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in CATEGORIES] + [
            c for c in self.articulated_categories if c not in ARTICULATED_CATEGORIES]
        if unknown:
            raise ValueError(f'unknown categories {unknown}; rigid: {CATEGORIES}, '
                             f'articulated: {ARTICULATED_CATEGORIES}')
        self.rigid_per_layout = _counts(self.rigid_per_layout, 'rigid_per_layout')
        self.articulated_per_layout = _counts(self.articulated_per_layout, 'articulated_per_layout')
        if self.rigid_per_layout[1] > 0 and not self.categories:
            raise ValueError('rigid_per_layout > 0 needs categories')
        if self.articulated_per_layout[1] > 0 and not self.articulated_categories:
            raise ValueError('articulated_per_layout > 0 needs articulated_categories')
        if self.rigid_per_layout[1] + self.articulated_per_layout[1] == 0:
            raise ValueError('a layout needs at least one instance')
        if self.split not in SPLITS:
            raise ValueError(f'split must be one of {tuple(SPLITS)}, got {self.split!r}')
        if not self.view_radius_m > 0.0 or not 0.0 < self.min_view_scale <= 1.0:
            raise ValueError(f'view_radius_m must be > 0 and min_view_scale within (0, 1], got {self.view_radius_m}, '
                             f'{self.min_view_scale}')
        super().__post_init__()


@dataclass(frozen=True)
class JointTruth:
    name: str
    type: str                # 'revolute' or 'prismatic'
    state: float             # rad or m
    limits: tuple[float, float]
    axis_obj: np.ndarray     # (3,) unit direction in the object frame
    origin_obj: np.ndarray   # (3,) a point on the axis in the object frame (the child link's origin)
    child_part: int          # part id of the link it moves


@dataclass(frozen=True)
class PartTruth:
    name: str
    part_id: int             # SimFrame.part_seg value: pybullet link index + 1 (0 = base link)
    T_cam_part: np.ndarray   # (4, 4) the link's URDF frame in the camera optical frame


@dataclass(frozen=True)
class InstanceTruth:
    kind: str                # 'rigid' or 'articulated'
    category: str
    instance_id: int         # the instance seed (sim.procedural)
    name: str
    body: int                # SimFrame.object_seg value
    T_world_obj: np.ndarray
    T_cam_obj: np.ndarray
    size_m: np.ndarray       # (3,) bbox extents in the object frame (articulated: closed state)
    parts: tuple[PartTruth, ...] = ()
    joints: tuple[JointTruth, ...] = ()


@dataclass(frozen=True)
class ProceduralFrame:
    frame: SimFrame
    instances: tuple[InstanceTruth, ...]

    def instance_mask(self, k: int) -> np.ndarray:
        return self.frame.object_seg == self.instances[k].body

    def part_mask(self, k: int, part_id: int) -> np.ndarray:
        return self.instance_mask(k) & (self.frame.part_seg == part_id)


class ProceduralScene(TableTopScene):
    """`new_layout()` builds new instances and places them; `new_view()` draws a camera pose and looks; `render()`
    gives the frame and its truth. URDFs and OBJs go to `asset_dir` (a temporary folder, removed on close, if None);
    rigid meshes stay in memory (`rigid[body]`)."""

    def __init__(self, config: ProceduralSceneConfig | None = None, seed: int = 0,
                 asset_dir: str | Path | None = None):
        self.config = config if config is not None else ProceduralSceneConfig()
        self._own_assets = asset_dir is None
        self.asset_dir = Path(tempfile.mkdtemp(prefix='kp_pose_assets_') if asset_dir is None else asset_dir)
        self.scene = SimScene(self.config.scene_config(), seed)
        self.client = self.scene.client
        self.client.setGravity(0.0, 0.0, -9.81)
        self.table = TableTop(self.scene, self.config, _PLACEMENT_TRIES)  # built only for layouts with rigid instances
        self.rigid: dict[int, CategoryInstance] = {}
        self.articulated: dict[int, ArticulatedAsset] = {}
        self._assets: dict[tuple[str, int], ArticulatedAsset] = {}
        self._hull_com: dict[int, np.ndarray] = {}
        self.view_scale = 1.0  # of the current layout (see ProceduralSceneConfig.view_radius_m)
        self.new_layout()

    # ------------------------------------------------------------------ layout
    def new_layout(self) -> None:
        cfg, rng = self.config, self.scene.rng
        for body in [*self.rigid, *self.articulated]:
            self.scene.remove_body(body)
        self.table.remove()
        self.rigid, self.articulated, self._hull_com = {}, {}, {}
        n_rigid = int(rng.integers(cfg.rigid_per_layout[0], cfg.rigid_per_layout[1] + 1))
        n_art = int(rng.integers(cfg.articulated_per_layout[0], cfg.articulated_per_layout[1] + 1))
        if n_rigid + n_art == 0:
            n_rigid, n_art = (1, 0) if cfg.rigid_per_layout[1] > 0 else (0, 1)
        if n_rigid > 0:
            self.table.build()
        assets = [self._asset(category, seed) for category, seed in zip(
            rng.choice(list(cfg.articulated_categories), n_art).tolist() if n_art else [],
            draw_seeds(rng, cfg.split, n_art))]
        self.view_scale = 1.0
        if assets and self.table.body is None:
            largest = max(0.5 * float(np.linalg.norm(asset.size_m)) for asset in assets)
            self.view_scale = float(np.clip(largest / cfg.view_radius_m, cfg.min_view_scale, 1.0))
        for asset in assets:
            self._place_articulated(asset)
        if n_rigid:
            bodies = [self._make_rigid(category, seed) for category, seed in
                      zip(rng.choice(list(cfg.categories), n_rigid).tolist(), draw_seeds(rng, cfg.split, n_rigid))]
            for body in self.table.drop_and_settle(bodies, self._place_rigid, self._drop_heights, self.articulated):
                del self.rigid[body]
        self.new_view()

    def _self_penetrating(self, body: int) -> bool:
        """Whether boxes of two different moving links of `body` overlap by more than _PENETRATION_M (pybullet reports
        no closest points within one body, and fixed-base bodies do not collide with themselves). The base is left out:
        sim.procedural shapes each part to move clear of it over its whole range (but for cabinet doors opened past
        90 degrees, which graze their side panel by up to the 2 mm panel gap)."""
        links, corners = _box_corners(self.client, body)
        moving = links >= 0
        return _boxes_penetrate(links[moving], corners[moving], _PENETRATION_M)

    def _asset(self, category: str, seed: int) -> ArticulatedAsset:
        key = (category, seed)
        if key not in self._assets:
            self._assets[key] = articulated_instance(category, seed, self.asset_dir)
        return self._assets[key]

    def _place_articulated(self, asset: ArticulatedAsset) -> None:
        c, cfg, rng = self.client, self.config, self.scene.rng
        category = asset.category
        body = c.loadURDF(str(asset.urdf.resolve()), useFixedBase=True)
        self.articulated[body] = asset
        self.scene.body_names[body] = f'articulated:{asset.name}'
        joints = [j for j in range(c.getNumJoints(body)) if c.getJointInfo(body, j)[2] in JOINT_TYPES]
        limits = [c.getJointInfo(body, j)[8:10] for j in joints]
        for _ in range(_STATE_TRIES):  # states where no two parts interpenetrate (folded temples: one at a time)
            for j, (lower, upper) in zip(joints, limits):
                c.resetJointState(body, j, float(rng.uniform(lower, upper)))
            if not self._self_penetrating(body):
                break
        else:  # closed: free of interpenetration by construction (sim.procedural)
            for j, (lower, _) in zip(joints, limits):
                c.resetJointState(body, j, lower)
        if joints:  # hold the drawn states against gravity and whatever lands on them while the rest settles
            states = [c.getJointState(body, j)[0] for j in joints]
            c.setJointMotorControlArray(body, joints, pybullet.POSITION_CONTROL, targetPositions=states,
                                        forces=[1e4] * len(joints))
        table = self.table.body
        on_table = table is not None and category in TABLE_TOP_CATEGORIES
        others = [b for b in [*self.articulated, table] if b is not None and b != body]
        radius = 0.5 * float(np.hypot(*asset.size_m[:2]))
        table_radius = float(np.hypot(*self.table.half)) if table is not None else 0.0
        for _ in range(_PLACEMENT_TRIES):
            yaw = math.radians(rng.uniform(*cfg.yaw_range_deg))
            if on_table:
                xy = self.table.random_xy()
                floor_z = self.table.top_z
            else:
                angle = rng.uniform(0.0, 2.0 * math.pi)
                distance = (table_radius + radius if table is not None else 0.0) + rng.uniform(
                    *cfg.floor_gap_range_m) * self.view_scale
                xy = np.asarray(cfg.table_xy_m) + distance * np.array([math.cos(angle), math.sin(angle)])
                floor_z = 0.0
            orn = c.getQuaternionFromEuler([0.0, 0.0, yaw])
            c.resetBasePositionAndOrientation(body, [*xy, 0.0], orn)
            lowest = _box_corners(c, body)[1].reshape(-1, 3)[:, 2].min()  # exact: AABBs are padded by ~1 mm
            c.resetBasePositionAndOrientation(body, [*xy, floor_z - lowest + 1e-3], orn)
            if not any(c.getClosestPoints(body, other, 0.0) for other in others):
                return

    def _make_rigid(self, category: str, seed: int) -> int:
        c = self.client
        instance = category_instance(category, seed)
        hull = instance.mesh.convex_hull
        shape = c.createCollisionShape(pybullet.GEOM_MESH, vertices=hull.vertices.tolist())
        body = c.createMultiBody(baseMass=max(hull.volume, 1e-6) * _DENSITY_KG_M3, baseCollisionShapeIndex=shape,
                                 baseInertialFramePosition=hull.center_mass.tolist())
        c.changeDynamics(body, -1, lateralFriction=0.7, rollingFriction=1e-3, spinningFriction=1e-3, restitution=0.0)
        self.scene.attach_meshes(body, [instance.mesh])
        self.scene.body_names[body] = f'rigid:{instance.name}'
        self.rigid[body] = instance
        self._hull_com[body] = hull.center_mass
        return body

    def _place_rigid(self, body: int, position) -> None:
        """The canonical frame at `position`, upright at a random yaw and small tilt (pybullet places the hull's
        centre of mass)."""
        rng = self.scene.rng
        tilt_axis = rng.uniform(0.0, 2.0 * math.pi)
        tilt = math.radians(rng.uniform(0.0, self.config.tilt_deg))
        R = (_rotation([math.cos(tilt_axis), math.sin(tilt_axis), 0.0], tilt)
             @ _rotation([0.0, 0.0, 1.0], rng.uniform(0.0, 2.0 * math.pi)) @ _UPRIGHT)
        self.client.resetBasePositionAndOrientation(body, (np.asarray(position) + R @ self._hull_com[body]).tolist(),
                                                    matrix_to_quat_xyzw(R).tolist())

    def _drop_heights(self, body: int) -> tuple[float, float]:
        """Clear of the table when upright (half the bbox diagonal); crowded retries rise 2 cm."""
        return 0.5 * float(np.linalg.norm(self.rigid[body].size_m)), 0.02

    def resting(self) -> bool:
        """Whether every rigid instance is at rest."""
        return self.table.resting(self.rigid)

    # ------------------------------------------------------------------ view
    def new_view(self) -> None:
        """A camera pose around the centre of the layout's instances (distance and look-at jitter scaled by
        `view_scale`), and new lights, backdrop, floor and table."""
        scene, cfg = self.scene, self.config
        centres = [link_frame(self.client, b, -1)[:3, 3] for b in [*self.rigid, *self.articulated]]
        scene.config.look_at_m = tuple(float(v) for v in np.mean(centres, axis=0))
        scene.config.distance_range_m = tuple(float(d) * self.view_scale for d in cfg.distance_range_m)
        scene.config.look_at_jitter_m = cfg.look_at_jitter_m * self.view_scale
        scene.randomize_camera()
        scene.randomize_appearance()
        self.table.new_texture()

    # ------------------------------------------------------------------ truth
    def instances(self, T_world_cam: np.ndarray) -> tuple[InstanceTruth, ...]:
        """Ground truth of every instance at the current state, in body order."""
        c, T_cam_world = self.client, invert_transform(T_world_cam)
        truth = []
        for body in sorted([*self.rigid, *self.articulated]):
            T_world_obj = link_frame(c, body, -1)
            if body in self.rigid:
                inst = self.rigid[body]
                truth.append(InstanceTruth('rigid', inst.category, inst.seed, inst.name, body, T_world_obj,
                                           T_cam_world @ T_world_obj, inst.size_m))
                continue
            asset = self.articulated[body]
            T_obj_world = invert_transform(T_world_obj)
            parts = [PartTruth(c.getBodyInfo(body)[0].decode(), 0, T_cam_world @ T_world_obj)]
            joints = []
            for j in range(c.getNumJoints(body)):
                info = c.getJointInfo(body, j)
                T_world_link = link_frame(c, body, j)
                parts.append(PartTruth(info[12].decode(), j + 1, T_cam_world @ T_world_link))
                if info[2] in JOINT_TYPES:
                    T_obj_link = T_obj_world @ T_world_link
                    # pybullet's joint axis is in the child link's frame, which sits on the axis.
                    joints.append(JointTruth(
                        info[1].decode(), JOINT_TYPES[info[2]], float(c.getJointState(body, j)[0]),
                        (float(info[8]), float(info[9])), T_obj_link[:3, :3] @ np.asarray(info[13]),
                        T_obj_link[:3, 3].copy(), j + 1))
            truth.append(InstanceTruth('articulated', asset.category, asset.seed, asset.name, body, T_world_obj,
                                       T_cam_world @ T_world_obj, asset.size_m.copy(), tuple(parts), tuple(joints)))
        return tuple(truth)

    def render(self) -> ProceduralFrame:
        frame = self.scene.render()
        return ProceduralFrame(frame, self.instances(frame.T_base_cam))

    def close(self) -> None:
        self.scene.close()
        if self._own_assets:
            shutil.rmtree(self.asset_dir, ignore_errors=True)

    def __enter__(self) -> ProceduralScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _box_corners(client, body: int) -> tuple[np.ndarray, np.ndarray]:
    """The link index (n,) and world corners (n, 8, 3) of every box collision shape of `body` (frames of collision
    shapes are given relative to their link's centre of mass frame)."""
    links, corners = [], []
    signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    for link in range(-1, client.getNumJoints(body)):
        com = client.getBasePositionAndOrientation(body) if link < 0 else client.getLinkState(
            body, link, computeForwardKinematics=1)[:2]
        for shape in client.getCollisionShapeData(body, link):
            if shape[2] != pybullet.GEOM_BOX:
                continue
            position, orientation = client.multiplyTransforms(*com, shape[5], shape[6])
            R = np.array(pybullet.getMatrixFromQuaternion(orientation)).reshape(3, 3)
            links.append(link)
            corners.append((signs * np.asarray(shape[3])) @ R.T + np.asarray(position))
    return np.array(links, int), np.array(corners, float).reshape(-1, 8, 3)


def _boxes_penetrate(links: np.ndarray, corners: np.ndarray, tolerance: float) -> bool:
    """Whether two boxes of different links overlap by more than `tolerance` along every separating axis candidate
    (the 15 axes of the separating axis theorem for two boxes)."""
    i, j = np.triu_indices(len(links), 1)
    keep = links[i] != links[j]
    i, j = i[keep], j[keep]
    if not len(i):
        return False
    axes = corners[:, [4, 2, 1]] - corners[:, [0]]                       # (n, 3, 3): the box edges
    axes = axes / np.linalg.norm(axes, axis=2, keepdims=True)
    a, b = axes[i], axes[j]
    cross = np.cross(a[:, :, None, :], b[:, None, :, :]).reshape(-1, 9, 3)
    candidates = np.concatenate([a, b, cross], axis=1)                   # (p, 15, 3)
    norm = np.linalg.norm(candidates, axis=2, keepdims=True)
    valid = norm[..., 0] > 1e-6                                          # (parallel edges give no axis)
    candidates = candidates / np.where(norm > 1e-6, norm, 1.0)
    proj_a = np.einsum('pkd,pcd->pkc', candidates, corners[i])
    proj_b = np.einsum('pkd,pcd->pkc', candidates, corners[j])
    overlap = np.minimum(proj_a.max(2), proj_b.max(2)) - np.maximum(proj_a.min(2), proj_b.min(2))
    depth = np.where(valid, overlap, np.inf).min(axis=1)
    return bool((depth > tolerance).any())


def _rotation(axis, angle: float) -> np.ndarray:
    return np.array(pybullet.getMatrixFromQuaternion(pybullet.getQuaternionFromAxisAngle(axis, angle))).reshape(3, 3)

