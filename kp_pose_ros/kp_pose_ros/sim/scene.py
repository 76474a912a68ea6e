"""A pybullet RGB-D scene of a robot arm seen by a pinhole camera, with exact ground truth per frame.

One scene owns one pybullet client (DIRECT) for physics, kinematics and collisions, and draws it with the PBR
renderer (sim.renderer: OpenGL through EGL, headless) or pybullet's TinyRenderer (the old, flat style), so several
scenes can live in one process and nothing needs a display. The robot's base link frame is the world origin: poses
and points "in the base frame" are pybullet world coordinates. Everything random is drawn from three Generators
seeded at construction: geometry (camera placement, arm poses, distractor objects and placement) from `rng`, looks
(lights, textures, photographs, colours, materials) from `appearance_rng`, sensors (depth sensor unit and noise,
camera effects) from `sensor_rng`. The same seed and the same sequence of calls give identical frames, and the same
geometry whatever the renderer and sensor models. After rendering, the configured depth sensor model
(sim.depth_sensors) and colour camera effects (sim.camera_effects) turn the ideal images into a real camera's; the
ground truth (segmentation, keypoints, visibility) comes from the ideal ones.

Segmentation values: `link_seg` holds a link index where link 0 is the URDF's base link and link i > 0 is the child
link of pybullet joint i - 1 (for the Panda, index i is panda_link{i} up to 7, then panda_link8, panda_hand,
fingers); `SimFrame.link_names[i]` names it.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field

import cv2
import numpy as np
import pybullet
import pybullet_data
import trimesh
from pybullet_utils import bullet_client

from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.core.transforms import as_transform, invert_transform, make_transform, transform_points
from kp_pose_ros.robot.kinematics import PANDA_KEYPOINT_LINKS
from kp_pose_ros.robot.surface import with_absolute_mesh_paths
from kp_pose_ros.sim.backgrounds import random_background
from kp_pose_ros.sim.camera_effects import CameraEffects, EffectRanges, white_balance_gains
from kp_pose_ros.sim.camera_effects import apply as apply_camera_effects
from kp_pose_ros.sim.camera_presets import preset
from kp_pose_ros.sim.depth_sensors import IdealDepthModel, depth_model_from_name, gaussian
from kp_pose_ros.sim.photos import random_photo_crop
from kp_pose_ros.sim.pybullet_mirror import PybulletMirror, instance_id, link_frame, split_instance
from kp_pose_ros.sim.renderer import Light, Material, MeshRenderer, with_box_uv

RENDERERS = ('pbr', 'tiny')
PANDA_ARM_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))
# Franka's "ready" pose: arm raised, elbow bent, hand pointing down; every link visible from most viewpoints.
PANDA_READY_POSE = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)

# pybullet_data objects used as clutter, loaded at a random size (they ship at 3-15 cm, or 1 m for the balls).
DISTRACTOR_URDFS = ('cube_small.urdf', 'sphere_small.urdf', 'duck_vhacd.urdf', 'teddy_vhacd.urdf',
                    'objects/mug.urdf', 'soccerball.urdf', 'jenga/jenga.urdf', 'lego/lego.urdf')
# pybullet_data also holds 1000 random convex-ish shapes random_urdfs/NNN/NNN.urdf: variety for free.
_RANDOM_URDF_COUNT = 1000
_RANDOM_URDF_CHANCE = 0.5

_FLOOR_TEXTURE_PX = 256
_FLOOR_TILE_M = 1.0
_PLACEMENT_TRIES = 30


def _pair(value, name: str, lower: float | None = None, upper: float | None = None) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f'{name} must be a finite (low, high) pair with low <= high, got {value}')
    if (lower is not None and lo < lower) or (upper is not None and hi > upper):
        raise ValueError(f'{name} must lie within [{lower}, {upper}], got {value}')
    return lo, hi


@dataclass
class SceneConfig:
    """What the scene contains and the ranges its randomisation draws from (angles in degrees, lengths in metres)."""

    camera: CameraModel = field(default_factory=lambda: preset('realsense_d435'))
    # Absolute path, or relative to pybullet_data; None: no robot (a table-top object scene, sim.objects), and the arm,
    # joint and keypoint settings below are ignored.
    robot_urdf: str | None = 'franka_panda/panda.urdf'
    arm_joint_names: tuple[str, ...] = PANDA_ARM_JOINTS
    keypoint_links: tuple[str, ...] = PANDA_KEYPOINT_LINKS
    initial_joint_positions: tuple[float, ...] = PANDA_READY_POSE
    # Joints outside the arm held at fixed positions (half-open gripper).
    fixed_joint_positions: dict[str, float] = field(
        default_factory=lambda: {'panda_finger_joint1': 0.02, 'panda_finger_joint2': 0.02})
    # sample_joint_positions draws this share of poses around initial_joint_positions (std per joint), the rest
    # uniformly within the limits: photographs of real arms mostly show working poses, not the contortions a uniform
    # draw favours. 0 keeps the uniform draw (and its random stream) of earlier versions.
    working_pose_chance: float = 0.0
    working_pose_std_rad: float = 0.6
    # Kept away from the URDF limits by this much when sampling or planning trajectories.
    joint_limit_margin_rad: float = 0.05
    # Camera placement: spherical coordinates around a look-at point near the robot's centre.
    look_at_m: tuple[float, float, float] = (0.0, 0.0, 0.45)
    look_at_jitter_m: float = 0.15
    distance_range_m: tuple[float, float] = (0.9, 2.0)
    azimuth_range_deg: tuple[float, float] = (-180.0, 180.0)
    elevation_range_deg: tuple[float, float] = (5.0, 50.0)
    roll_jitter_deg: float = 5.0
    num_distractors: int = 0
    distractor_size_range_m: tuple[float, float] = (0.08, 0.3)
    distractor_radius_range_m: tuple[float, float] = (0.3, 1.3)
    # Random procedural floor texture and backdrop (where no surface is hit); off: grey checker floor, white backdrop.
    random_background: bool = True
    # Distinct floor textures loaded per scene (pybullet cannot free a texture, so they are made once and reused).
    floor_texture_pool: int = 8
    floor_size_m: float = 30.0
    # Lighting drawn by randomize_appearance (TinyRenderer's Phong coefficients).
    light_elevation_range_deg: tuple[float, float] = (20.0, 90.0)
    light_color_jitter: float = 0.25
    ambient_range: tuple[float, float] = (0.3, 0.7)
    diffuse_range: tuple[float, float] = (0.3, 0.8)
    specular_range: tuple[float, float] = (0.0, 0.4)
    # 'pbr': sim.renderer (OpenGL through EGL, software on a CPU: metallic-roughness materials, several lights with
    # filtered shadow maps, 4x MSAA); 'tiny': pybullet's TinyRenderer (flat Phong, one light, aliased edges), the
    # old style, kept for comparisons and for machines without OpenGL.
    renderer: str = 'pbr'
    # None: the renderer's default (pbr: on; tiny: off, as its shadows double its render time).
    shadows: bool | None = None
    # PBR lights per scene (a sun-like directional light and/or point and spot lights), their colour temperature,
    # illuminance at the look-at point (lux-like pyrender units) and the ambient level.
    light_count_range: tuple[int, int] = (1, 4)
    light_temperature_range_k: tuple[float, float] = (2700.0, 7500.0)
    light_intensity_range: tuple[float, float] = (1.5, 6.0)
    pbr_ambient_range: tuple[float, float] = (0.05, 0.35)
    # Roughness and metallic of plain-coloured shapes (distractors), drawn per appearance.
    roughness_range: tuple[float, float] = (0.25, 0.95)
    metallic_range: tuple[float, float] = (0.0, 0.6)
    # Share of distractors (pbr) wearing a photograph or procedural texture instead of a plain colour.
    textured_distractor_chance: float = 0.5
    # Small per-appearance variations of the robot's own materials (pbr): colour tint (+-), roughness, metallic.
    robot_tint_jitter: float = 0.08
    robot_roughness_range: tuple[float, float] = (0.3, 0.8)
    robot_metallic_range: tuple[float, float] = (0.0, 0.3)
    # Share of backdrops and floor textures cut from real photographs (sim.photos, where installed) rather than
    # procedural ones (pbr renderer; the tiny one keeps procedural textures).
    photo_chance: float = 0.5
    near_m: float = 0.05
    far_m: float = 10.0
    # Gaussian depth noise of this standard deviation at 1 m, growing with z^2 like a stereo sensor's; 0 = exact.
    # A shorthand for depth_sensor='gaussian' at this level; set one or the other.
    depth_noise_std_m: float = 0.0
    # Depth sensor model (sim.depth_sensors): 'ideal', 'gaussian', 'stereo', 'tof' or a camera preset's name
    # (realsense_d435: active stereo, azure_kinect_nfov: time of flight, ...): holes, flying pixels, noise, bias.
    # One physical unit (scale bias, misregistration) is drawn per scene from its seed.
    depth_sensor: str = 'ideal'
    # Colour camera pipeline (sim.camera_effects: exposure, white balance, defocus and motion blur, shot and read
    # noise, gamma, JPEG) drawn per frame from these ranges; None: the image as rendered.
    camera_effects: EffectRanges | None = None
    # Occlusion test of a keypoint against the surface drawn at its pixel. A link frame origin sits inside or on its
    # link's mesh, often behind the visible surface by up to the link's radius and more where a neighbouring link
    # (parent or child) covers the joint: measured on a Panda over 300 random views, the gap to the surface when that
    # surface is the keypoint's own or neighbouring link is up to 0.14 m (base) and 0.11-0.14 m (90th percentile,
    # other links). So such surfaces occlude only when more than `own_link_tolerance_m` in front; any other surface
    # (another link, an object, the floor) occludes when more than `visibility_tolerance_m` in front.
    own_link_tolerance_m: float = 0.15
    visibility_tolerance_m: float = 0.03

    def __post_init__(self) -> None:
        if not isinstance(self.camera, CameraModel):
            raise TypeError(f'camera must be a kp_pose_ros.core.camera.CameraModel, got {type(self.camera).__name__}')
        if self.camera.has_distortion:
            raise ValueError('the renderer draws ideal pinhole images: pass a CameraModel with zero distortion '
                             '(e.g. CameraModel.pinhole with the rectified K)')
        if not (0.0 < self.near_m < self.far_m):
            raise ValueError(f'need 0 < near_m < far_m, got near_m={self.near_m} far_m={self.far_m}')
        if self.robot_urdf is not None and (len(self.arm_joint_names) == 0 or len(self.keypoint_links) == 0):
            raise ValueError('arm_joint_names and keypoint_links must not be empty')
        if self.robot_urdf is not None and len(self.initial_joint_positions) != len(self.arm_joint_names):
            raise ValueError(f'initial_joint_positions has {len(self.initial_joint_positions)} values for '
                             f'{len(self.arm_joint_names)} arm joints')
        self.distance_range_m = _pair(self.distance_range_m, 'distance_range_m', lower=1e-3)
        self.azimuth_range_deg = _pair(self.azimuth_range_deg, 'azimuth_range_deg')
        self.elevation_range_deg = _pair(self.elevation_range_deg, 'elevation_range_deg', -89.0, 89.0)
        self.distractor_size_range_m = _pair(self.distractor_size_range_m, 'distractor_size_range_m', lower=1e-3)
        self.distractor_radius_range_m = _pair(self.distractor_radius_range_m, 'distractor_radius_range_m', lower=0.0)
        self.light_elevation_range_deg = _pair(self.light_elevation_range_deg, 'light_elevation_range_deg', 0.0, 90.0)
        self.ambient_range = _pair(self.ambient_range, 'ambient_range', 0.0, 1.0)
        self.diffuse_range = _pair(self.diffuse_range, 'diffuse_range', 0.0, 1.0)
        self.specular_range = _pair(self.specular_range, 'specular_range', 0.0, 1.0)
        for name in ('look_at_jitter_m', 'roll_jitter_deg', 'light_color_jitter', 'depth_noise_std_m',
                     'visibility_tolerance_m', 'own_link_tolerance_m', 'joint_limit_margin_rad'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f'{name} must be a finite number >= 0, got {value}')
        if self.light_color_jitter > 1.0:
            raise ValueError(f'light_color_jitter must be <= 1, got {self.light_color_jitter}')
        if int(self.num_distractors) != self.num_distractors or self.num_distractors < 0:
            raise ValueError(f'num_distractors must be an integer >= 0, got {self.num_distractors}')
        if int(self.floor_texture_pool) != self.floor_texture_pool or self.floor_texture_pool < 1:
            raise ValueError(f'floor_texture_pool must be an integer >= 1, got {self.floor_texture_pool}')
        if not self.floor_size_m > 0.0:
            raise ValueError(f'floor_size_m must be positive, got {self.floor_size_m}')
        if self.renderer not in RENDERERS:
            raise ValueError(f'renderer must be one of {RENDERERS}, got {self.renderer!r}')
        lo, hi = self.light_count_range
        if not (int(lo) == lo and int(hi) == hi and 1 <= lo <= hi):
            raise ValueError(f'light_count_range must be integers 1 <= low <= high, got {self.light_count_range}')
        self.light_temperature_range_k = _pair(self.light_temperature_range_k, 'light_temperature_range_k', 1000.0,
                                               15000.0)
        self.light_intensity_range = _pair(self.light_intensity_range, 'light_intensity_range', lower=0.0)
        self.pbr_ambient_range = _pair(self.pbr_ambient_range, 'pbr_ambient_range', 0.0, 1.0)
        self.roughness_range = _pair(self.roughness_range, 'roughness_range', 0.0, 1.0)
        self.metallic_range = _pair(self.metallic_range, 'metallic_range', 0.0, 1.0)
        depth_model_from_name(self.depth_sensor)  # ValueError listing the models for an unknown name
        if self.depth_sensor != 'ideal' and self.depth_noise_std_m > 0.0:
            raise ValueError(f"set depth_sensor ({self.depth_sensor!r}) or depth_noise_std_m "
                             f"({self.depth_noise_std_m}), not both")
        if self.camera_effects is not None and not isinstance(self.camera_effects, EffectRanges):
            raise TypeError('camera_effects must be a sim.camera_effects.EffectRanges or None, got '
                            f'{type(self.camera_effects).__name__}')
        if not (0.0 <= self.working_pose_chance <= 1.0 and self.working_pose_std_rad >= 0.0):
            raise ValueError('working_pose_chance must lie within [0, 1] and working_pose_std_rad be >= 0, got '
                             f'{self.working_pose_chance} and {self.working_pose_std_rad}')
        self.robot_roughness_range = _pair(self.robot_roughness_range, 'robot_roughness_range', 0.0, 1.0)
        self.robot_metallic_range = _pair(self.robot_metallic_range, 'robot_metallic_range', 0.0, 1.0)
        if not (0.0 <= self.robot_tint_jitter < 1.0 and 0.0 <= self.textured_distractor_chance <= 1.0):
            raise ValueError('robot_tint_jitter must lie within [0, 1) and textured_distractor_chance within [0, 1], '
                             f'got {self.robot_tint_jitter} and {self.textured_distractor_chance}')
        if not 0.0 <= self.photo_chance <= 1.0:
            raise ValueError(f'photo_chance must lie within [0, 1], got {self.photo_chance}')


@dataclass(frozen=True)
class SimFrame:
    """One rendered frame and its ground truth. Images are (H, W); poses and points are in metres, base frame =
    the robot's base link frame, camera frame = the optical frame (x right, y down, z forward)."""

    rgb: np.ndarray                  # (H, W, 3) uint8
    depth_m: np.ndarray              # (H, W) float32 z-depth along the optical axis as the configured depth sensor
    #                                  measures it; NaN where nothing was hit or the sensor returns no depth
    link_seg: np.ndarray             # (H, W) int16 robot link index (see link_names), -1 where not robot
    object_seg: np.ndarray           # (H, W) int32 pybullet body id (see body_names), -1 where nothing was hit
    joint_names: tuple[str, ...]     # arm joints
    joint_positions: np.ndarray      # (J,) rad
    T_base_cam: np.ndarray           # (4, 4) optical frame in the base frame
    keypoint_names: tuple[str, ...]  # link names
    keypoints_base: np.ndarray       # (N, 3) origins of the keypoint links' URDF frames
    keypoints_cam: np.ndarray        # (N, 3)
    keypoints_px: np.ndarray         # (N, 2) camera.project of keypoints_cam (pixel centres at integers)
    in_image: np.ndarray             # (N,) bool: in front of the camera and inside the image
    visible: np.ndarray              # (N,) bool: in_image and not occluded (see SceneConfig.own_link_tolerance_m)
    camera: CameraModel
    link_names: tuple[str, ...]      # link_seg value -> link name
    body_names: dict[int, str]       # object_seg value -> 'robot', 'floor', 'distractor:<urdf>' (sim.objects adds
    #                                  'table' and 'object:<obj_id>')
    part_seg: np.ndarray | None = None  # (H, W) int16 link of the body in object_seg, any body: pybullet link
    #                                  index + 1 (0 = base link, and bodies drawn with attach_meshes), -1 = no hit


def opengl_projection(camera: CameraModel, near: float, far: float) -> np.ndarray:
    """4x4 OpenGL projection matrix that makes pybullet's TinyRenderer draw exactly what `camera` projects.

    pybullet's computeProjectionMatrixFOV cannot express fx != fy or an off-centre principal point, so build the
    frustum from K directly. TinyRenderer samples pixel column u at NDC x = 2u/W - 1 and writes row v from the
    bottom-up raster row H-1-v, i.e. at NDC y = 1 - 2(v+1)/H. Measured: rendered spheres' centroids land on their
    predicted image centres within 0.06 px on average (0.2 px at most) with these offsets, and ~0.7 px off with the
    OpenGL convention of pixel centres at NDC 2(u+0.5)/W - 1.
    """
    w, h = camera.width, camera.height
    P = np.zeros((4, 4))
    P[0, 0] = 2.0 * camera.fx / w
    P[0, 2] = 1.0 - 2.0 * camera.cx / w
    P[1, 1] = 2.0 * camera.fy / h
    P[1, 2] = 2.0 * (camera.cy + 1.0) / h - 1.0
    P[2, 2] = -(far + near) / (far - near)
    P[2, 3] = -2.0 * far * near / (far - near)
    P[3, 2] = -1.0
    return P


# Optical frame (x right, y down, z forward) -> OpenGL eye frame (x right, y up, z backward).
_OPTICAL_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def look_at(eye, target, roll_rad: float = 0.0) -> np.ndarray:
    """4x4 pose of a camera optical frame at `eye` looking at `target`, image "up" towards world +z, then rolled
    about the optical axis by `roll_rad`. A view straight up or down uses world +x as the reference instead."""
    eye, target = np.asarray(eye, dtype=float), np.asarray(target, dtype=float)
    z = target - eye
    norm = np.linalg.norm(z)
    if eye.shape != (3,) or target.shape != (3,) or not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f'look_at needs two distinct finite 3D points, got eye={eye.tolist()} '
                         f'target={target.tolist()}')
    z /= norm
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.999 else np.array([1.0, 0.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    x, y = c * x + s * y, -s * x + c * y
    return make_transform(np.column_stack([x, y, z]), eye)


def _plain_floor_texture() -> np.ndarray:
    """The floor without random backgrounds: a grey 2x2 checker tile (one tile per _FLOOR_TILE_M), both renderers."""
    size = _FLOOR_TEXTURE_PX
    grey = np.full((size, size, 3), 150, np.uint8)
    grey[(np.add.outer(np.arange(size) // (size // 2), np.arange(size) // (size // 2)) % 2).astype(bool)] = 110
    return grey


def _resolve_urdf(path: str) -> str:
    if os.path.isabs(path) and os.path.isfile(path):
        return path
    candidate = os.path.join(pybullet_data.getDataPath(), path)
    if os.path.isfile(candidate):
        return candidate
    raise FileNotFoundError(f'robot URDF {path!r} not found (absolute, or relative to {pybullet_data.getDataPath()})')


class SimScene:
    """The robot, a floor, optional distractor objects, a camera and lights, in one private pybullet client.

    Typical use: `set_joint_positions(q)` and/or `randomize_camera()`, `randomize_appearance()`, then `render()`.
    """

    def __init__(self, config: SceneConfig | None = None, seed: int = 0):
        self.config = config = config if config is not None else SceneConfig()
        self.camera = config.camera
        self.rng = np.random.default_rng(seed)
        # The sensors (depth unit and noise, colour camera effects) draw from their own stream, so the same seed
        # gives the same scenes, poses and ground truth whatever sensor models are configured.
        self.sensor_rng = np.random.default_rng([seed, 1])
        # Likewise the looks (lights, textures, backdrops, colours, materials): both renderers see the same geometry.
        self.appearance_rng = np.random.default_rng([seed, 2])
        self._client = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        c, cfg = self._client, self.config
        if cfg.robot_urdf is not None:
            self._load_robot()
        else:
            self.urdf_text, self.robot_id = None, None
            self.link_names = self.joint_names = self.keypoint_names = ()
            self._arm_joints, self._keypoint_links = [], []
            self._self_collision_pairs, self._keypoint_neighbours = [], []
            self.urdf_joint_limits = self.joint_limits = np.zeros((0, 2))

        self.floor_id = self._make_floor()
        robot = {} if self.robot_id is None else {self.robot_id: 'robot'}
        self.body_names: dict[int, str] = {**robot, self.floor_id: 'floor'}
        self._pbr: MeshRenderer | None = None
        if cfg.renderer == 'pbr':
            self._pbr = MeshRenderer(self.camera, cfg.near_m, cfg.far_m,
                                     shadows=True if cfg.shadows is None else cfg.shadows)
            self._mirror = PybulletMirror(c, self._pbr, skip={self.floor_id})
            self._floor_handle = None
        else:
            self._floor_textures = self._make_floor_textures()
        self.distractor_ids = [self._load_distractor() for _ in range(cfg.num_distractors)]
        self.depth_model = (gaussian(cfg.depth_noise_std_m) if cfg.depth_noise_std_m > 0.0
                            else depth_model_from_name(cfg.depth_sensor, unit_rng=self.sensor_rng))

        self._projection = opengl_projection(self.camera, cfg.near_m, cfg.far_m).T.reshape(-1).tolist()
        self._backdrop: np.ndarray | None = None
        self._lighting: dict = {}
        self.set_joint_positions(np.asarray(cfg.initial_joint_positions if self.robot_id is not None else (), float))
        self.randomize_camera()
        self.randomize_appearance()

    def _load_robot(self) -> None:
        c, cfg = self._client, self.config
        urdf_path = _resolve_urdf(cfg.robot_urdf)
        with open(urdf_path, encoding='utf-8') as f:
            # As published on /robot_description: meshes as file:// URIs, found without the file's directory.
            self.urdf_text = with_absolute_mesh_paths(f.read(), os.path.dirname(urdf_path))
        self.robot_id = c.loadURDF(urdf_path, basePosition=[0, 0, 0], useFixedBase=True,
                                   flags=pybullet.URDF_USE_MATERIAL_COLORS_FROM_MTL)
        joints = [c.getJointInfo(self.robot_id, j) for j in range(c.getNumJoints(self.robot_id))]
        self.link_names: tuple[str, ...] = (c.getBodyInfo(self.robot_id)[0].decode(),) + tuple(
            info[12].decode() for info in joints)
        joint_index = {info[1].decode(): info[0] for info in joints}
        missing = [n for n in cfg.arm_joint_names if n not in joint_index]
        if missing:
            raise ValueError(f'arm joints {missing} not in {urdf_path}; it has {sorted(joint_index)}')
        unknown = [n for n in cfg.keypoint_links if n not in self.link_names]
        if unknown:
            raise ValueError(f'keypoint links {unknown} not in {urdf_path}; it has {list(self.link_names)}')
        self.joint_names: tuple[str, ...] = tuple(cfg.arm_joint_names)
        self._arm_joints = [joint_index[n] for n in self.joint_names]
        self.urdf_joint_limits = np.array([joints[j][8:10] for j in self._arm_joints], dtype=float)
        if np.any(self.urdf_joint_limits[:, 0] >= self.urdf_joint_limits[:, 1]):
            raise ValueError(f'arm joints need finite lower < upper limits in the URDF, got '
                             f'{self.urdf_joint_limits.tolist()} (continuous joint?)')
        margin = np.minimum(cfg.joint_limit_margin_rad, 0.25 * np.diff(self.urdf_joint_limits, axis=1)[:, 0])
        self.joint_limits = self.urdf_joint_limits + np.column_stack([margin, -margin])
        for name, value in cfg.fixed_joint_positions.items():
            if name not in joint_index:
                raise ValueError(f'fixed joint {name!r} not in {urdf_path}')
            c.resetJointState(self.robot_id, joint_index[name], float(value))
        self.keypoint_names: tuple[str, ...] = tuple(cfg.keypoint_links)
        # pybullet link index of each keypoint link (-1 is the base link).
        self._keypoint_links = [self.link_names.index(n) - 1 for n in self.keypoint_names]
        tree = self._solid_tree(joints)
        self._self_collision_pairs = self._collision_pairs(tree)
        self._keypoint_neighbours = [self._neighbour_links(link, joints, tree) for link in self._keypoint_links]

    def _solid_tree(self, joints) -> dict[int, int | None]:
        """Parent of each link that has collision geometry, looking through links without any (the Panda's link8 and
        grasp target), so the hand counts as link7's child. pybullet link indices; the base is -1 with parent None."""
        c = self._client
        has_shape = {i: bool(c.getCollisionShapeData(self.robot_id, i)) for i in range(-1, len(joints))}

        def solid_parent(i: int) -> int:
            p = joints[i][16]
            while p >= 0 and not has_shape[p]:
                p = joints[p][16]
            return p

        return {i: (solid_parent(i) if i >= 0 else None) for i in range(-1, len(joints)) if has_shape[i]}

    @staticmethod
    def _collision_pairs(tree: dict[int, int | None]) -> list[tuple[int, int]]:
        """Link pairs worth checking for self-collision: neither parent/child nor siblings (those touch by design)."""
        solid = sorted(tree)
        return [(a, b) for k, a in enumerate(solid) for b in solid[k + 1:]
                if tree[b] != a and tree[a] != b and tree[a] != tree[b]]

    @staticmethod
    def _neighbour_links(link: int, joints, tree: dict[int, int | None]) -> np.ndarray:
        """link_seg values of `link`, its parent and its children (those with geometry; a link without any stands in
        for its nearest ancestor with some): the surfaces its frame origin may sit behind, as a joint origin is
        covered by both links it connects."""
        while link is not None and link not in tree:
            link = joints[link][16] if link >= 0 else None
        if link is None:
            return np.zeros(0, dtype=np.int16)
        near = {link, tree[link]} | {i for i, parent in tree.items() if parent == link}
        return np.array(sorted(i + 1 for i in near if i is not None), dtype=np.int16)

    def _make_floor(self) -> int:
        c, half = self._client, self.config.floor_size_m / 2.0
        reps = self.config.floor_size_m / _FLOOR_TILE_M
        visual = c.createVisualShape(
            pybullet.GEOM_MESH, vertices=[[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]],
            indices=[0, 1, 2, 0, 2, 3], uvs=[[0, 0], [reps, 0], [reps, reps], [0, reps]], normals=[[0, 0, 1]] * 4)
        collision = c.createCollisionShape(pybullet.GEOM_PLANE)
        return c.createMultiBody(baseMass=0, baseCollisionShapeIndex=collision, baseVisualShapeIndex=visual)

    def _make_floor_textures(self) -> list[int]:
        size = _FLOOR_TEXTURE_PX
        if self.config.random_background:
            images = [random_background(self.appearance_rng, size, size)
                      for _ in range(self.config.floor_texture_pool)]
        else:
            images = [_plain_floor_texture()]
        ids = []
        with tempfile.TemporaryDirectory(prefix='kp_pose_sim_') as tmp:
            for k, image in enumerate(images):
                path = os.path.join(tmp, f'floor_{k}.png')
                if not cv2.imwrite(path, image[:, :, ::-1]):
                    raise OSError(f'could not write floor texture {path}')
                ids.append(self._client.loadTexture(path))
        return ids

    def _load_distractor(self) -> int:
        c, rng = self._client, self.rng
        if rng.random() < _RANDOM_URDF_CHANCE:
            k = int(rng.integers(_RANDOM_URDF_COUNT))
            urdf = f'random_urdfs/{k:03d}/{k:03d}.urdf'
        else:
            urdf = DISTRACTOR_URDFS[int(rng.integers(len(DISTRACTOR_URDFS)))]
        path = os.path.join(pybullet_data.getDataPath(), urdf)
        probe = c.loadURDF(path)
        lo, hi = c.getAABB(probe)
        c.removeBody(probe)
        scale = rng.uniform(*self.config.distractor_size_range_m) / max(np.max(np.subtract(hi, lo)), 1e-6)
        body = c.loadURDF(path, globalScaling=float(scale), useFixedBase=True)
        self.body_names[body] = f'distractor:{urdf}'
        return body

    @property
    def client(self) -> bullet_client.BulletClient:
        """This scene's pybullet client, to add bodies of your own (a table, a calibration target); they are
        rendered and segmented like the rest (object_seg holds their body id)."""
        return self._client

    # ------------------------------------------------------------------ robot
    @property
    def joint_positions(self) -> np.ndarray:
        return self._q.copy()

    def set_joint_positions(self, q) -> None:
        """Arm joint positions (rad), in arm_joint_names order, within the URDF limits."""
        q = np.asarray(q, dtype=float)
        if q.shape != (len(self._arm_joints),) or not np.all(np.isfinite(q)):
            raise ValueError(f'expected {len(self._arm_joints)} finite joint positions for {self.joint_names}, '
                             f'got {np.asarray(q).tolist()}')
        lo, hi = self.urdf_joint_limits[:, 0] - 1e-6, self.urdf_joint_limits[:, 1] + 1e-6
        outside = np.nonzero((q < lo) | (q > hi))[0]
        if outside.size:
            raise ValueError('joint positions outside the URDF limits: ' + ', '.join(
                f'{self.joint_names[i]}={q[i]:.4f} not in [{lo[i]:.4f}, {hi[i]:.4f}]' for i in outside))
        for j, value in zip(self._arm_joints, q):
            self._client.resetJointState(self.robot_id, j, float(value))
        self._q = q.copy()

    def in_collision(self, q=None) -> bool:
        """Whether the arm at q (default: the current pose) penetrates the floor or itself. Leaves the arm at the
        pose it was in."""
        c = self._client
        if self.robot_id is None:
            return False
        if q is not None:
            previous = self._q
            self.set_joint_positions(q)
        try:
            floor = [pt for pt in c.getClosestPoints(self.robot_id, self.floor_id, 0.0) if pt[3] >= 0]
            if floor:
                return True
            return any(c.getClosestPoints(self.robot_id, self.robot_id, 0.0, linkIndexA=a, linkIndexB=b)
                       for a, b in self._self_collision_pairs)
        finally:
            if q is not None:
                self.set_joint_positions(previous)

    def sample_joint_positions(self, max_tries: int = 200) -> np.ndarray:
        """Random arm pose within joint_limits that is free of floor and self collisions: uniform, or (working_pose_
        chance of the time) normal around initial_joint_positions, where real arms spend most of their time."""
        cfg = self.config
        for _ in range(max_tries):
            if cfg.working_pose_chance > 0.0 and self.rng.random() < cfg.working_pose_chance:
                q = np.clip(self.rng.normal(cfg.initial_joint_positions, cfg.working_pose_std_rad),
                            self.joint_limits[:, 0], self.joint_limits[:, 1])
            else:
                q = self.rng.uniform(self.joint_limits[:, 0], self.joint_limits[:, 1])
            if not self.in_collision(q):
                return q
        raise RuntimeError(f'no collision-free arm pose in {max_tries} random draws')

    def _link_frame(self, link: int) -> np.ndarray:
        """World pose of a robot link's URDF frame (not its centre of mass, which pybullet reports for the base)."""
        return link_frame(self._client, self.robot_id, link)

    def link_pose(self, link_name: str) -> np.ndarray:
        """4x4 pose of a robot link's URDF frame in the base frame, at the current joint positions."""
        if link_name not in self.link_names:
            raise ValueError(f'unknown link {link_name!r}; links: {list(self.link_names)}')
        return self._link_frame(self.link_names.index(link_name) - 1)

    # ------------------------------------------------------------------ camera
    @property
    def T_base_cam(self) -> np.ndarray:
        return self._T_base_cam.copy()

    def set_camera_pose(self, T_base_cam) -> None:
        """Place the camera: 4x4 pose of its optical frame (z forward, x right, y down) in the robot base frame."""
        self._T_base_cam = as_transform(T_base_cam, 'T_base_cam').copy()
        view = _OPTICAL_TO_GL @ invert_transform(self._T_base_cam)
        self._view = view.T.reshape(-1).tolist()

    def randomize_camera(self) -> np.ndarray:
        """Draw a camera pose from the configured ranges, place the camera there and return the pose."""
        cfg, rng = self.config, self.rng
        distance = rng.uniform(*cfg.distance_range_m)
        azimuth = math.radians(rng.uniform(*cfg.azimuth_range_deg))
        elevation = math.radians(rng.uniform(*cfg.elevation_range_deg))
        target = np.asarray(cfg.look_at_m, dtype=float) + rng.uniform(-cfg.look_at_jitter_m, cfg.look_at_jitter_m, 3)
        direction = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                              math.sin(elevation)])
        roll = math.radians(rng.uniform(-cfg.roll_jitter_deg, cfg.roll_jitter_deg))
        T = look_at(target + distance * direction, target, roll)
        self.set_camera_pose(T)
        return T.copy()

    # ------------------------------------------------------------------ appearance
    def randomize_appearance(self) -> None:
        """New lighting, floor texture and tint, backdrop, and distractor poses, colours and materials."""
        if self._pbr is not None:
            self._randomize_pbr_appearance()
            return
        cfg, rng, c = self.config, self.appearance_rng, self._client
        light_az = rng.uniform(0.0, 2.0 * math.pi)
        light_el = math.radians(rng.uniform(*cfg.light_elevation_range_deg))
        self._lighting = dict(
            lightDirection=[math.cos(light_el) * math.cos(light_az), math.cos(light_el) * math.sin(light_az),
                            math.sin(light_el)],
            lightColor=(1.0 - rng.uniform(0.0, cfg.light_color_jitter, 3)).tolist(),
            lightAmbientCoeff=float(rng.uniform(*cfg.ambient_range)),
            lightDiffuseCoeff=float(rng.uniform(*cfg.diffuse_range)),
            lightSpecularCoeff=float(rng.uniform(*cfg.specular_range)),
        )
        texture = self._floor_textures[int(rng.integers(len(self._floor_textures)))]
        tint = [1.0, 1.0, 1.0, 1.0]
        if cfg.random_background:
            tint = rng.uniform(0.6, 1.0, 3).tolist() + [1.0]
            self._backdrop = random_background(rng, self.camera.height, self.camera.width)
        c.changeVisualShape(self.floor_id, -1, textureUniqueId=texture, rgbaColor=tint)
        placed = []
        for body in self.distractor_ids:
            self._place_distractor(body, placed)
            placed.append(body)
            c.changeVisualShape(body, -1, rgbaColor=rng.uniform(0.05, 1.0, 3).tolist() + [1.0])

    def attach_meshes(self, body: int, meshes, material: Material | None = None) -> None:
        """Draw `body` (a pybullet body of this scene's client) with these trimesh meshes in its base frame instead
        of pybullet's visual shapes (PBR renderer only): objects with their own coloured or textured models."""
        if self._pbr is None:
            raise ValueError("attach_meshes needs renderer='pbr'")
        self._mirror.attach(body, meshes, material)

    def remove_body(self, body: int) -> None:
        """Remove a body added through `client` (and its name and meshes): pybullet hands its id to the next new body,
        which must not inherit meshes attached to this one."""
        if self._pbr is not None:
            self._mirror.drop(body)
        self._client.removeBody(body)
        self.body_names.pop(body, None)

    def silhouette(self, body: int) -> np.ndarray:
        """(H, W) bool mask of `body` alone at its current pose, others hidden (PBR renderer only): BOP's full masks."""
        if self._pbr is None:
            raise ValueError("silhouette needs renderer='pbr'")
        self._mirror.sync()
        self._pbr.set_camera_pose(self._T_base_cam)
        return self._pbr.silhouette(self._mirror.handles(body))

    def surface_image(self, height: int, width: int) -> np.ndarray:
        """A real photograph's crop (photo_chance of the time, where sim.photos finds some installed) or a
        procedural texture."""
        rng = self.appearance_rng
        if self.config.random_background and rng.random() < self.config.photo_chance:
            return random_photo_crop(rng, height, width, fallback=random_background)
        if self.config.random_background:
            return random_background(rng, height, width)
        return None

    def _randomize_pbr_appearance(self) -> None:
        cfg, rng, c = self.config, self.appearance_rng, self._client
        lights = []
        for k in range(int(rng.integers(cfg.light_count_range[0], cfg.light_count_range[1] + 1))):
            azimuth = rng.uniform(0.0, 2.0 * math.pi)
            elevation = math.radians(rng.uniform(*cfg.light_elevation_range_deg))
            towards = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                                math.sin(elevation)])
            colour = 1.0 / white_balance_gains(rng.uniform(*cfg.light_temperature_range_k))
            colour = tuple(float(v) for v in colour / colour.max())
            lux = float(rng.uniform(*cfg.light_intensity_range))
            kind = 'directional' if k == 0 and rng.random() < 0.5 else ('point', 'spot')[int(rng.integers(2))]
            if kind == 'directional':
                lights.append(Light('directional', colour, lux, direction=tuple(-towards)))
                continue
            distance = rng.uniform(1.5, 4.0)
            position = np.asarray(cfg.look_at_m) + distance * towards
            outer = math.radians(rng.uniform(25.0, 60.0))
            lights.append(Light(kind, colour, lux * distance ** 2, position=tuple(position), direction=tuple(-towards),
                                inner_cone_rad=0.6 * outer, outer_cone_rad=outer))
        self._pbr.set_lights(lights)
        self._pbr.set_ambient((float(rng.uniform(*cfg.pbr_ambient_range)),) * 3)
        floor = self.surface_image(_FLOOR_TEXTURE_PX, _FLOOR_TEXTURE_PX)
        if floor is None:
            floor = _plain_floor_texture()
        if self._floor_handle is not None:
            self._pbr.remove(self._floor_handle)
        self._floor_handle = self._pbr.add_mesh(
            self._floor_mesh(), instance_id(self.floor_id, -1),
            Material(texture=floor, roughness=float(rng.uniform(*cfg.roughness_range)),
                     metallic=float(rng.uniform(0.0, 0.2))))
        self._pbr.set_background(self.surface_image(self.camera.height, self.camera.width))
        placed = []
        for body in self.distractor_ids:
            self._place_distractor(body, placed)
            placed.append(body)
            roughness, metallic = float(rng.uniform(*cfg.roughness_range)), float(rng.uniform(*cfg.metallic_range))
            self._mirror.material_jitter[body] = (roughness, metallic)
            c.changeVisualShape(body, -1, rgbaColor=rng.uniform(0.05, 1.0, 3).tolist() + [1.0])
            if rng.random() < cfg.textured_distractor_chance:
                texture = self.surface_image(_FLOOR_TEXTURE_PX, _FLOOR_TEXTURE_PX)
                if texture is not None:
                    meshes = [with_box_uv(m, rng.uniform(0.05, 0.3)) for m in self._mirror.body_meshes(body)]
                    self._mirror.attach(body, meshes, Material(texture=texture, roughness=roughness,
                                                               metallic=metallic))
                    continue
            self._mirror.detach(body)
        self._vary_robot_materials()

    def _vary_robot_materials(self) -> None:
        """Small variations of the target's own materials: paint tint, gloss and metal differ between units,
        cameras and light; the network must not learn one exact shade."""
        if self.robot_id is None:
            return
        cfg, rng = self.config, self.appearance_rng
        self._mirror.sync()
        for handle in self._mirror.handles(self.robot_id):
            self._pbr.vary_material(handle, tint=1.0 + rng.uniform(-cfg.robot_tint_jitter, cfg.robot_tint_jitter, 3),
                                    roughness=float(rng.uniform(*cfg.robot_roughness_range)),
                                    metallic=float(rng.uniform(*cfg.robot_metallic_range)))

    def _floor_mesh(self) -> trimesh.Trimesh:
        """The floor plane as a textured quad, the texture repeated every _FLOOR_TILE_M."""
        half, reps = self.config.floor_size_m / 2.0, self.config.floor_size_m / _FLOOR_TILE_M
        vertices = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]], float)
        uv = np.array([[0, 0], [reps, 0], [reps, reps], [0, reps]], float)
        return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], process=False,
                               visual=trimesh.visual.TextureVisuals(uv=uv))

    def _place_distractor(self, body: int, others: list[int]) -> None:
        """On the floor around the robot at a random yaw, redrawn while it touches the robot or other clutter (up to
        _PLACEMENT_TRIES times; then the last draw stays, as some overlap is harmless in a picture)."""
        c, rng, cfg = self._client, self.rng, self.config
        for _ in range(_PLACEMENT_TRIES):
            radius, angle = rng.uniform(*cfg.distractor_radius_range_m), rng.uniform(0.0, 2.0 * math.pi)
            orn = c.getQuaternionFromEuler([0.0, 0.0, rng.uniform(0.0, 2.0 * math.pi)])
            c.resetBasePositionAndOrientation(body, [radius * math.cos(angle), radius * math.sin(angle), 0.0], orn)
            lo, _ = c.getAABB(body)
            pos = [radius * math.cos(angle), radius * math.sin(angle), -lo[2]]
            c.resetBasePositionAndOrientation(body, pos, orn)
            if not any(c.getClosestPoints(body, other, 0.0) for other in [self.robot_id, *others] if other is not None):
                return

    # ------------------------------------------------------------------ rendering
    def render(self) -> SimFrame:
        """Render the current state and compute its ground truth."""
        cfg, cam = self.config, self.camera
        rgb, depth, object_seg, part_seg = self._render_pbr() if self._pbr is not None else self._render_tiny()
        link_seg = np.where(self._robot_pixels(object_seg), part_seg, -1).astype(np.int16)
        keypoints_base = np.array([self._link_frame(link)[:3, 3] for link in self._keypoint_links]).reshape(-1, 3)
        keypoints_cam = transform_points(invert_transform(self._T_base_cam), keypoints_base)
        keypoints_px = cam.project(keypoints_cam)
        visible, in_image = self._visibility(keypoints_cam, keypoints_px, depth, link_seg)

        if not isinstance(self.depth_model, IdealDepthModel):
            depth = self.depth_model.apply(depth, cam, self.sensor_rng, rgb=rgb).depth_m
        if cfg.camera_effects is not None:
            # Renders are display-referred (sRGB-like): linearise, then the camera's own gamma re-encodes.
            rgb = apply_camera_effects(rgb, CameraEffects.sample(self.sensor_rng, cfg.camera_effects),
                                       self.sensor_rng, input_gamma=2.2)
        return SimFrame(
            rgb=rgb, depth_m=depth, link_seg=link_seg, object_seg=object_seg,
            joint_names=self.joint_names, joint_positions=self._q.copy(), T_base_cam=self._T_base_cam.copy(),
            keypoint_names=self.keypoint_names, keypoints_base=keypoints_base, keypoints_cam=keypoints_cam,
            keypoints_px=keypoints_px, in_image=in_image, visible=visible, camera=cam,
            link_names=self.link_names, body_names=dict(self.body_names), part_seg=part_seg)

    def _render_pbr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self._mirror.sync()
        self._pbr.set_camera_pose(self._T_base_cam)
        result = self._pbr.render()
        body, link = split_instance(result.instance)
        # Our link index has the base link as 0, i.e. pybullet's link index + 1.
        return result.rgb, result.depth_m, body.astype(np.int32), (link + 1).astype(np.int16)

    def _render_tiny(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cfg, cam, c = self.config, self.camera, self._client
        _, _, rgba, zbuffer, seg = c.getCameraImage(
            cam.width, cam.height, viewMatrix=self._view, projectionMatrix=self._projection,
            shadow=int(bool(cfg.shadows)), renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX, **self._lighting)
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(cam.height, cam.width, 4)
        zbuffer = np.asarray(zbuffer, dtype=np.float64).reshape(cam.height, cam.width)
        seg = np.asarray(seg, dtype=np.int64).reshape(cam.height, cam.width)

        hit = seg >= 0
        near, far = cfg.near_m, cfg.far_m
        depth = (far * near / (far - (far - near) * zbuffer)).astype(np.float32)
        depth[~hit] = np.nan
        object_seg = np.where(hit, seg & 0xFFFFFF, -1).astype(np.int32)
        # seg >> 24 is pybullet's link index + 1, i.e. our link index with the base link as 0.
        part_seg = np.where(hit, seg >> 24, -1).astype(np.int16)
        rgb = np.ascontiguousarray(rgba[:, :, :3])
        if self._backdrop is not None:
            rgb[~hit] = self._backdrop[~hit]
        return rgb, depth, object_seg, part_seg

    def _robot_pixels(self, object_seg: np.ndarray) -> np.ndarray:
        return object_seg == (self.robot_id if self.robot_id is not None else -2)

    def _visibility(self, points_cam: np.ndarray, pixels: np.ndarray, depth: np.ndarray, link_seg: np.ndarray):
        """(visible, in_image) from the noise-free depth and the link drawn at each keypoint's pixel; see
        SceneConfig.own_link_tolerance_m for why the keypoint's own links get a larger tolerance."""
        cfg, cam = self.config, self.camera
        cols, rows, inside = cam.pixel_indices(pixels)
        in_image = (points_cam[:, 2] > cfg.near_m) & np.isfinite(pixels).all(axis=1) & inside
        visible = in_image.copy()
        for k in np.nonzero(in_image)[0]:
            surface, link = depth[rows[k], cols[k]], link_seg[rows[k], cols[k]]
            tolerance = cfg.own_link_tolerance_m if link in self._keypoint_neighbours[k] else cfg.visibility_tolerance_m
            visible[k] = not surface < points_cam[k, 2] - tolerance
        return visible, in_image

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Disconnect the pybullet client; the scene is unusable afterwards. Safe to call twice."""
        renderer = getattr(self, '_pbr', None)
        if renderer is not None:
            self._pbr = None
            renderer.close()
        client = getattr(self, '_client', None)
        if client is not None:
            self._client = None
            client.disconnect()

    def __enter__(self) -> SimScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
