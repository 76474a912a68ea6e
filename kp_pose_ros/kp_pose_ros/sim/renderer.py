"""Offscreen mesh renderer for synthetic data: PBR materials, several lights with soft shadows, anti-aliased RGB, exact
depth and instance masks, exact pinhole intrinsics. ROS-free: arrays in, arrays out.

It draws meshes at the poses it is given and nothing else; physics and kinematics stay in pybullet (SimScene). Built on
pyrender (OpenGL 3.3 core) so that it runs headless on Mesa's software rasteriser through EGL, without a GPU or display.

Two passes per frame: a colour pass with 4x MSAA (pyrender's fixed sample count) and PCF-filtered shadow maps, and an
id pass without multisampling, whose depth and ids are those of the surface under each pixel centre, never blended.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# pyrender picks its GL platform at import time; EGL is the one that needs neither a display nor a GPU.
os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')
# pyrender 0.1.45 (the last release) still reads np.infty, an alias numpy 2 removed.
if not hasattr(np, 'infty'):
    np.infty = np.inf

import pyrender  # noqa: E402
import trimesh  # noqa: E402

from kp_pose_ros.core.camera import CameraModel  # noqa: E402

# OpenCV optical frame (x right, y down, z forward) -> OpenGL camera frame (x right, y up, z backward).
_OPTICAL_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])
_ID_BITS = 24  # instance ids travel through the id pass as 8-bit RGB colours (id + 1; 0 is "nothing hit")


# Renderers alive in this process. They share one EGL display, which pyrender terminates when a renderer is deleted,
# breaking every other renderer: only the last one to close may let pyrender terminate it.
_live_renderers = 0


def with_box_uv(mesh: trimesh.Trimesh, tile_m: float) -> trimesh.Trimesh:
    """A copy of ``mesh`` with UV coordinates from a box projection (each face mapped along its dominant normal
    axis, one texture tile per ``tile_m``), so any shape, UVs or not, can wear a texture such as a photograph."""
    out = mesh.copy()
    out.unmerge_vertices()  # one vertex per face corner, so each face gets its own projection
    axis = np.argmax(np.abs(out.face_normals), axis=1)
    corners = out.vertices[out.faces]  # (F, 3, 3)
    keep = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # the two coordinates across the dominant axis
    uv = np.take_along_axis(corners, keep[:, None, :], axis=2) / tile_m
    out.visual = trimesh.visual.TextureVisuals(uv=uv.reshape(-1, 2))
    return out


class RendererError(RuntimeError):
    """The renderer cannot run here (no OpenGL context) or was given something it cannot draw."""


@dataclass(frozen=True)
class Material:
    """Metallic-roughness material (glTF 2.0 model). ``texture`` is an (H, W, 3|4) uint8 image read through the mesh's
    UV coordinates and multiplied by ``base_color``."""

    base_color: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)
    metallic: float = 0.0
    roughness: float = 0.6
    texture: np.ndarray | None = None


@dataclass(frozen=True)
class Light:
    """``kind`` is 'directional' (shines along ``direction``), 'point' (at ``position``) or 'spot' (at ``position``
    along ``direction``, full intensity inside ``inner_cone_rad``, none outside ``outer_cone_rad``). Intensity is in
    lux for directional lights and candela otherwise (glTF's units); directional and spot lights cast shadows."""

    kind: str
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 3.0
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, float, float] = (0.0, 0.0, -1.0)
    inner_cone_rad: float = 0.0
    outer_cone_rad: float = np.pi / 4


@dataclass(frozen=True)
class RenderResult:
    rgb: np.ndarray  # (H, W, 3) uint8, anti-aliased
    depth_m: np.ndarray  # (H, W) float32 z along the optical axis at each pixel centre, NaN where nothing was hit
    instance: np.ndarray  # (H, W) int32 instance id of the surface at each pixel centre, -1 where nothing was hit


def _light_pose(position, direction) -> np.ndarray:
    """A pose whose -z axis is ``direction`` (pyrender lights shine along their local -z)."""
    z = -np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(z)
    if not norm > 0:
        raise RendererError(f'light direction must be non-zero, got {direction}')
    z /= norm
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, np.cross(z, x), z, position
    return pose


def _pyrender_light(light: Light) -> tuple[pyrender.light.Light, np.ndarray]:
    color, intensity = np.asarray(light.color, dtype=np.float64), float(light.intensity)
    if light.kind == 'directional':
        return pyrender.DirectionalLight(color=color, intensity=intensity), _light_pose((0, 0, 0), light.direction)
    if light.kind == 'point':
        pose = np.eye(4)
        pose[:3, 3] = light.position
        return pyrender.PointLight(color=color, intensity=intensity), pose
    if light.kind == 'spot':
        spot = pyrender.SpotLight(color=color, intensity=intensity, innerConeAngle=light.inner_cone_rad,
                                  outerConeAngle=light.outer_cone_rad)
        return spot, _light_pose(light.position, light.direction)
    raise RendererError(f"light kind must be 'directional', 'point' or 'spot', got {light.kind!r}")


def _pyrender_material(material: Material) -> pyrender.MetallicRoughnessMaterial:
    texture = None
    if material.texture is not None:
        image = np.ascontiguousarray(material.texture, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise RendererError(f'texture must be an (H, W, 3|4) uint8 image, got shape {image.shape}')
        texture = pyrender.Texture(source=image, source_channels='RGBA'[:image.shape[2]])
    return pyrender.MetallicRoughnessMaterial(baseColorFactor=material.base_color, metallicFactor=material.metallic,
                                              roughnessFactor=material.roughness, baseColorTexture=texture)


class MeshRenderer:
    """Renders trimesh meshes at given poses through a pinhole camera given as a CameraModel (distortion ignored).

    ``shadows`` switches the shadow maps of directional and spot lights (most of the colour pass's cost on a CPU).
    Meshes are uploaded once; moving one (``set_pose``) only changes a matrix, so scenes can change every frame.
    """

    def __init__(self, camera: CameraModel, near_m: float = 0.05, far_m: float = 20.0, shadows: bool = True):
        if not 0 < near_m < far_m:
            raise RendererError(f'need 0 < near_m < far_m, got {near_m}, {far_m}')
        self.camera = camera
        self.shadows = shadows
        self._scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 0.0), ambient_light=(0.05, 0.05, 0.05))
        # pyrender's window coordinates put pixel centres at +0.5; CameraModel puts them at integers.
        gl_camera = pyrender.IntrinsicsCamera(camera.fx, camera.fy, camera.cx + 0.5, camera.cy + 0.5,
                                              znear=near_m, zfar=far_m)
        self._camera_node = self._scene.add(gl_camera, pose=_OPTICAL_TO_GL)
        self._light_nodes: list[pyrender.Node] = []
        self._background: np.ndarray | None = None
        self._seg_colors: dict[pyrender.Node, np.ndarray] = {}
        self._base_factors: dict[pyrender.Node, list] = {}
        try:
            self._gl = pyrender.OffscreenRenderer(camera.width, camera.height)
            global _live_renderers
            _live_renderers += 1
        except Exception as error:  # EGL reports a missing driver/device with several exception types
            raise RendererError(
                f'cannot create an offscreen OpenGL context (PYOPENGL_PLATFORM={os.environ["PYOPENGL_PLATFORM"]}): '
                f'{error!r}. Headless rendering needs libEGL with Mesa (apt: libegl1 libegl-mesa0) '
                'or a GPU driver.') from error
        self._release_context()

    def add_mesh(self, mesh: trimesh.Trimesh, instance_id: int, material: Material | None = None) -> pyrender.Node:
        """Adds ``mesh`` (identity pose) and returns its handle. Without ``material`` the mesh keeps its own vertex
        colours or UV texture."""
        if not 0 <= instance_id < 2 ** _ID_BITS - 1:
            raise RendererError(f'instance_id must be in [0, {2 ** _ID_BITS - 2}], got {instance_id}')
        pr_mesh = pyrender.Mesh.from_trimesh(
            mesh, material=None if material is None else _pyrender_material(material), smooth=False)
        node = self._scene.add(pr_mesh)
        code = instance_id + 1
        self._seg_colors[node] = np.array([code & 255, (code >> 8) & 255, (code >> 16) & 255])
        return node

    def remove(self, handle: pyrender.Node) -> None:
        self._scene.remove_node(handle)
        del self._seg_colors[handle]
        self._base_factors.pop(handle, None)

    def vary_material(self, handle: pyrender.Node, tint=(1.0, 1.0, 1.0), roughness: float | None = None,
                      metallic: float | None = None) -> None:
        """Small variations of a mesh's own material (a target's paint ages, reflects, differs per unit): base
        colour times ``tint``, roughness and metallic replaced where given. Always relative to the material the
        mesh was added with, so repeated calls do not drift."""
        primitives = handle.mesh.primitives
        if handle not in self._base_factors:
            self._base_factors[handle] = [(np.array(p.material.baseColorFactor, float), p.material.roughnessFactor,
                                           p.material.metallicFactor) for p in primitives]
        for p, (colour, rough, metal) in zip(primitives, self._base_factors[handle]):
            p.material.baseColorFactor = np.concatenate([np.clip(colour[:3] * np.asarray(tint, float), 0, 1),
                                                         colour[3:]])
            p.material.roughnessFactor = rough if roughness is None else float(roughness)
            p.material.metallicFactor = metal if metallic is None else float(metallic)

    def set_pose(self, handle: pyrender.Node, T_world_mesh: np.ndarray) -> None:
        self._scene.set_pose(handle, np.asarray(T_world_mesh, dtype=np.float64))

    def set_camera_pose(self, T_world_cam: np.ndarray) -> None:
        """``T_world_cam``: the optical frame (x right, y down, z forward) in world coordinates."""
        self._scene.set_pose(self._camera_node, np.asarray(T_world_cam, dtype=np.float64) @ _OPTICAL_TO_GL)

    def set_lights(self, lights: list[Light]) -> None:
        """Replaces all lights."""
        nodes = [pyrender.Node(light=light, matrix=pose) for light, pose in map(_pyrender_light, lights)]
        for node in self._light_nodes:
            self._scene.remove_node(node)
        for node in nodes:
            self._scene.add_node(node)
        self._light_nodes = nodes

    def set_ambient(self, rgb: tuple[float, float, float]) -> None:
        self._scene.ambient_light = np.asarray(rgb, dtype=np.float64)

    def set_background(self, rgb: np.ndarray | None) -> None:
        """(H, W, 3) uint8 image shown where nothing is hit (blended with anti-aliased edges), or None for black."""
        if rgb is not None:
            rgb = np.asarray(rgb)
            if rgb.shape != (self.camera.height, self.camera.width, 3) or rgb.dtype != np.uint8:
                raise RendererError(f'background must be ({self.camera.height}, {self.camera.width}, 3) uint8, '
                                    f'got {rgb.shape} {rgb.dtype}')
        self._background = rgb

    def _release_context(self) -> None:
        """An EGL context is current to one thread at a time: release it after each use, so whichever thread renders
        next (a node's worker, say, not the thread that built the renderer) can make it current."""
        from OpenGL.EGL import EGL_NO_CONTEXT, EGL_NO_SURFACE, eglMakeCurrent

        eglMakeCurrent(self._gl._platform._egl_display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT)

    def render(self) -> RenderResult:
        flags = pyrender.RenderFlags.RGBA
        if self.shadows:
            flags |= pyrender.RenderFlags.SHADOWS_DIRECTIONAL | pyrender.RenderFlags.SHADOWS_SPOT
        try:
            rgba, _ = self._gl.render(self._scene, flags=flags)
            seg, depth = self._gl.render(self._scene, flags=pyrender.RenderFlags.SEG, seg_node_map=self._seg_colors)
        finally:
            self._release_context()
        seg = seg.astype(np.int32)
        instance = (seg[..., 0] | (seg[..., 1] << 8) | (seg[..., 2] << 16)) - 1
        depth_m = np.where(instance >= 0, depth, np.nan).astype(np.float32)
        # The cleared colour is (0, 0, 0, 0), so the resolved colour is premultiplied by coverage in alpha.
        rgb = rgba[..., :3]
        if self._background is not None:
            alpha = rgba[..., 3:].astype(np.float32) / 255.0
            rgb = np.clip(rgb + (1.0 - alpha) * self._background + 0.5, 0, 255)
        return RenderResult(rgb=np.ascontiguousarray(rgb, dtype=np.uint8), depth_m=depth_m, instance=instance)

    def silhouette(self, handles) -> np.ndarray:
        """(H, W) bool: pixel centres the meshes `handles` cover with every other mesh hidden (an object's full mask
        under occlusion), at the current camera pose. One id pass, no shading."""
        code = np.array([255, 255, 255])
        try:
            seg, _ = self._gl.render(self._scene, flags=pyrender.RenderFlags.SEG,
                                     seg_node_map={handle: code for handle in handles})
        finally:
            self._release_context()
        return seg[..., 0] > 0

    def close(self) -> None:
        global _live_renderers
        gl, self._gl = self._gl, None
        if gl is None:
            return
        _live_renderers -= 1
        if _live_renderers == 0:
            gl.delete()
            return
        # Free this renderer's GL objects and context but keep the shared display (pyrender 0.1.45, its last
        # release, has no public call for this).
        from OpenGL.EGL import eglDestroyContext

        platform = gl._platform
        platform.make_current()
        gl._renderer.delete()
        eglDestroyContext(platform._egl_display, platform._egl_context)
        # Forget the display too, or the platform's and renderer's __del__ terminate it after all.
        platform._egl_context = platform._egl_display = None
        gl._renderer = gl._platform = None

    def __del__(self) -> None:
        # A renderer dropped without close() must not let pyrender's own __del__ terminate the shared display.
        try:
            self.close()
        except Exception:  # interpreter shutdown: EGL may already be gone
            pass

    def __enter__(self) -> MeshRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
