"""The table of robot-free SimScene layouts (sim.objects, sim.procedural_scene): a box body of random size and height at
`table_xy_m`, bodies dropped onto it clear of each other and stepped with pybullet until they rest, those that fell off
dropped again and then removed, and a fresh texture per view; with the settings both scenes' configs share
(TableTopConfig). The scenes keep what differs: how a body is made and at which orientation it falls.

Randomness: the table and the drops draw from the scene's `rng`, the texture from its `appearance_rng`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pybullet
import trimesh

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.sim.camera_effects import EffectRanges
from kp_pose_ros.sim.camera_presets import preset
from kp_pose_ros.sim.pybullet_mirror import link_frame
from kp_pose_ros.sim.renderer import Material
from kp_pose_ros.sim.scene import SceneConfig, SimScene

_TEXTURE_PX = 256
_TILE_M = 0.5
# At rest: slower than these (pybullet also puts resting bodies to sleep, at zero velocity).
_REST_LINEAR_M_S = 5e-3
_REST_ANGULAR_RAD_S = 5e-2


@dataclass
class TableTopConfig:
    """Table, drop and camera ranges (metres, degrees), plus the sensor settings passed to SceneConfig: what
    ObjectSceneConfig and ProceduralSceneConfig share. The defaults are the BOP object scenes'."""

    camera: CameraModel = field(default_factory=lambda: preset('realsense_d435'))
    table_xy_m: tuple[float, float] = (0.0, 0.0)
    table_size_range_m: tuple[float, float] = (0.5, 1.0)  # each side
    table_height_range_m: tuple[float, float] = (0.55, 0.9)
    # Bodies start this far above their clearance over the table (or over whatever already occupies their spot).
    drop_height_range_m: tuple[float, float] = (0.02, 0.15)
    # Bodies land within this share of the table's half-size around its centre.
    spread: float = 0.6
    settle_max_steps: int = 2000  # pybullet steps of 1/240 s
    redrops: int = 2
    # Camera around what the scene looks at (LINEMOD's views are 0.6-1.2 m away, 20-80 degrees up).
    distance_range_m: tuple[float, float] = (0.5, 1.2)
    elevation_range_deg: tuple[float, float] = (20.0, 80.0)
    look_at_jitter_m: float = 0.08
    depth_sensor: str = 'ideal'
    depth_noise_std_m: float = 0.0  # SceneConfig's gaussian shorthand (the sim camera's depth_sensor 'gaussian')
    camera_effects: EffectRanges | None = None
    random_background: bool = True
    shadows: bool | None = None  # None: the PBR renderer's default (on); off renders 2-3x faster on a CPU

    def __post_init__(self) -> None:
        if not 0.0 < self.spread <= 1.0:
            raise ValueError(f'spread must lie within (0, 1], got {self.spread}')

    def scene_config(self) -> SceneConfig:
        return SceneConfig(camera=self.camera, robot_urdf=None, distance_range_m=self.distance_range_m,
                           elevation_range_deg=self.elevation_range_deg, look_at_jitter_m=self.look_at_jitter_m,
                           roll_jitter_deg=10.0, depth_sensor=self.depth_sensor,
                           depth_noise_std_m=self.depth_noise_std_m, camera_effects=self.camera_effects,
                           random_background=self.random_background, renderer='pbr', shadows=self.shadows)


def textured_box(extents, tile_m: float) -> trimesh.Trimesh:
    """A box whose faces each map the texture by planar projection, repeated every tile_m."""
    box = trimesh.creation.box(extents=extents)
    vertices = box.vertices[box.faces].reshape(-1, 3)
    axis = np.abs(box.face_normals).argmax(axis=1).repeat(3)
    uv = np.take_along_axis(vertices, np.array([[1, 2], [0, 2], [0, 1]])[axis], axis=1) / tile_m
    return trimesh.Trimesh(vertices, np.arange(len(vertices)).reshape(-1, 3), process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv))


class TableTop:
    """The table body of a scene (`body` None, `top_z` 0 and `half` 0 until `build`) and what lands on it."""

    def __init__(self, scene: SimScene, config: TableTopConfig, placement_tries: int):
        self.scene, self.config, self.placement_tries = scene, config, placement_tries
        self.body: int | None = None
        self.top_z = 0.0
        self.half = np.zeros(2)  # half-size in x and y
        self._mesh: trimesh.Trimesh | None = None

    def build(self) -> None:
        """A new table of random size and height (the previous one removed)."""
        c, cfg, rng = self.scene.client, self.config, self.scene.rng
        self.remove()
        size = rng.uniform(*cfg.table_size_range_m, 2)
        height = rng.uniform(*cfg.table_height_range_m)
        self.half, self.top_z = size / 2.0, float(height)
        shape = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[size[0] / 2, size[1] / 2, height / 2])
        self.body = c.createMultiBody(baseMass=0, baseCollisionShapeIndex=shape,
                                      basePosition=[*cfg.table_xy_m, height / 2])
        c.changeDynamics(self.body, -1, lateralFriction=0.8)
        self.scene.body_names[self.body] = 'table'
        self._mesh = textured_box([size[0], size[1], height], _TILE_M)

    def remove(self) -> None:
        if self.body is not None:
            self.scene.remove_body(self.body)
        self.body, self.top_z, self.half, self._mesh = None, 0.0, np.zeros(2), None

    def random_xy(self) -> np.ndarray:
        """A landing spot within `spread` of the table's half-size around its centre."""
        cfg = self.config
        return np.asarray(cfg.table_xy_m) + self.scene.rng.uniform(-1.0, 1.0, 2) * cfg.spread * self.half

    def drop_and_settle(self, bodies: list[int], place: Callable[[int, list[float]], None],
                        heights: Callable[[int], tuple[float, float]], obstacles: Iterable[int] = ()) -> list[int]:
        """Drop `bodies` onto the table and step until they rest; drop those that fell off again, `redrops` times, then
        remove them. `place(body, position)` puts a body's model frame there at a freshly drawn orientation;
        `heights(body)` gives how far above the top it starts (before the random drop height) and how much higher each
        crowded retry goes. Returns the removed bodies."""
        obstacles = list(obstacles)
        pending = list(bodies)
        for _ in range(self.config.redrops + 1):
            self._drop(pending, [b for b in bodies if b not in pending] + obstacles, place, heights)
            self._settle(bodies)
            pending = [b for b in bodies if not self.on_table(b)]
            if not pending:
                break
        for body in pending:
            self.scene.remove_body(body)
        return pending

    def _drop(self, bodies, placed, place, heights) -> None:
        """Each body above a random spot of the table, clear of those placed so far (else a little higher)."""
        c, rng = self.scene.client, self.scene.rng
        placed = list(placed)
        for body in bodies:
            clearance, rise = heights(body)
            z = self.top_z + clearance + rng.uniform(*self.config.drop_height_range_m)
            for _ in range(self.placement_tries):
                place(body, [*self.random_xy(), z])
                c.resetBaseVelocity(body, [0, 0, 0], [0, 0, 0])
                if not any(c.getClosestPoints(body, other, 0.0) for other in placed):
                    break
                z += rise
            placed.append(body)

    def _settle(self, bodies: list[int]) -> None:
        for step in range(self.config.settle_max_steps):
            self.scene.client.stepSimulation()
            if step % 10 == 9 and self.resting(bodies):
                return

    def resting(self, bodies: Iterable[int]) -> bool:
        """Whether every body is slower than _REST_LINEAR_M_S and _REST_ANGULAR_RAD_S."""
        for body in bodies:
            linear, angular = self.scene.client.getBaseVelocity(body)
            if np.linalg.norm(linear) > _REST_LINEAR_M_S or np.linalg.norm(angular) > _REST_ANGULAR_RAD_S:
                return False
        return True

    def on_table(self, body: int) -> bool:
        """Its base centre above the table top and within the table's footprint."""
        centre = link_frame(self.scene.client, body, -1)[:3, 3]
        inside = np.all(np.abs(centre[:2] - np.asarray(self.config.table_xy_m)) <= self.half)
        return bool(inside and centre[2] > self.top_z)

    def new_texture(self) -> None:
        """A new look for the table (after the scene's randomize_appearance, whose surface images it reuses)."""
        if self.body is None:
            return
        scene = self.scene
        rng, cfg = scene.appearance_rng, scene.config
        texture = scene.surface_image(_TEXTURE_PX, _TEXTURE_PX)
        if texture is None:
            texture = np.full((_TEXTURE_PX, _TEXTURE_PX, 3), 200, np.uint8)
        tint = tuple(float(v) for v in rng.uniform(0.5, 1.0, 3)) + (1.0,)
        material = Material(base_color=tint, texture=texture, roughness=float(rng.uniform(*cfg.roughness_range)),
                            metallic=float(rng.uniform(0.0, 0.3)))
        scene.attach_meshes(self.body, [self._mesh], material)


class TableTopScene:
    """A scene with a TableTop in `table`: its top height and half-size as the scene's own attributes."""

    table: TableTop

    @property
    def table_top_z(self) -> float:
        return self.table.top_z

    @property
    def table_half(self) -> np.ndarray:
        return self.table.half
