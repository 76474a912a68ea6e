"""Depth sensor models: what a real RGB-D camera makes of the exact depth a renderer draws.

The project's RGB-D calibration fails on real sensors in ways that exact depth plus Gaussian noise never shows: a
per-unit scale bias, holes (dark, specular and grazing surfaces, occlusion shadows), flying pixels at depth edges,
quantisation, multipath in creases and a colour-depth misregistration. These models reproduce each of them, with the
numbers taken from datasheets where a vendor publishes one and marked as engineering choices where none does.

Every model is a frozen dataclass with ``apply(depth_m, camera, rng, *, rgb=None) -> DepthSample``:

- ``depth_m``: exact (H, W) z-depth in metres, NaN (or <= 0 / inf) where nothing was hit; float dtype.
- ``camera``: the CameraModel the depth was rendered with (K only; images are rectified, pixel centres at integers).
- ``rng``: a numpy Generator; every random draw comes from it, so the same seed gives the same output.
- ``rgb``: the registered (H, W, 3) uint8 colour image, the proxy for near-infrared albedo (dark holes, ToF signal)
  and for specular highlights. Without it every surface is a matte mid-grey.

``DepthSample.depth_m`` is float32 with NaN wherever a driver would publish 0 in a 16UC1 image, and
``DepthSample.invalid_reason`` says why (``InvalidReason``); ``to_16uc1()`` gives the driver's millimetre image.

Per-unit constants (the stereo scale bias, the ToF offset and scale, the colour-depth misregistration) are fields, so
one model instance is one physical unit: the nominal presets are a perfect unit (all zero), ``sample_unit(rng)`` draws
a unit within the datasheet bounds. Per-frame effects (noise, holes, flying pixels) are drawn from ``rng`` in apply.

Conventions: camera optical frame (x right, y down, z forward). For stereo the depth image is the left (reference)
imager's view and the second view (right imager, or Kinect v1's projector) sits at +x, so occlusion shadows lie on
the left (-x) side of foreground objects, as in RealSense D400 depth images.

Speed, 640x480 with rgb, median of 30 frames on this repository's 2-core CPU host (numpy 2.4 / 1.26 alike): ideal
0.3 ms, gaussian 5.5 ms, stereo D435 22 ms nominal / 27 ms as a sampled unit (misregistration warp included), ToF
NFOV 17 / 24 ms.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from enum import IntEnum
from types import MappingProxyType

import cv2
import numpy as np
from scipy.special import ndtri

from kp_pose_ros.core.camera import CameraModel


class InvalidReason(IntEnum):
    """Why a pixel carries no depth; the first cause found wins, in this order of checking."""

    NONE = 0
    NO_RETURN = 1          # nothing was hit (renderer background), or the sensor computed no depth
    OUT_OF_RANGE = 2       # nearer than the minimum or beyond the maximum operating distance
    OCCLUSION_SHADOW = 3   # stereo: seen by the reference imager, hidden from the second view
    EDGE = 4               # ToF: mixed foreground/background pixel invalidated by the depth engine
    GRAZING = 5            # surface seen at an incidence angle beyond the sensor's limit
    SPECULAR = 6           # highlight: saturated or mirrored return
    DARK = 7               # too little (near-)infrared signal or texture


@dataclass(frozen=True, eq=False)
class DepthSample:
    """A simulated depth frame: float32 metres (NaN = invalid) and the per-pixel uint8 InvalidReason."""

    depth_m: np.ndarray
    invalid_reason: np.ndarray

    def __post_init__(self) -> None:
        if self.depth_m.shape != self.invalid_reason.shape or self.depth_m.ndim != 2:
            raise ValueError(f'depth {self.depth_m.shape} and invalid_reason {self.invalid_reason.shape} '
                             'must be the same (H, W) shape')

    @property
    def valid(self) -> np.ndarray:
        return self.invalid_reason == InvalidReason.NONE

    def to_16uc1(self, depth_unit_m: float = 0.001) -> np.ndarray:
        """The uint16 image a ROS driver publishes: depth in ``depth_unit_m`` steps, 0 where invalid."""
        out = np.zeros(self.depth_m.shape, np.uint16)
        ok = self.valid
        out[ok] = np.clip(np.rint(self.depth_m[ok] / depth_unit_m), 1, 65535).astype(np.uint16)
        return out


# --------------------------------------------------------------------------- shared helpers
def _check_inputs(depth_m, camera: CameraModel, rgb) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 copy of the depth with NaN for every no-return value, and the checked rgb."""
    if not isinstance(camera, CameraModel):
        raise ValueError(f'camera must be a kp_pose_ros CameraModel, got {type(camera).__name__}')
    depth = np.asarray(depth_m)
    expected = (camera.height, camera.width)
    if depth.shape != expected:
        raise ValueError(f'depth_m must have shape (H, W) = {expected} for this camera, got {depth.shape}')
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'depth_m must be float metres with NaN for no return, got dtype {depth.dtype} '
                         '(a 16UC1 image is millimetres: divide by 1000 and map 0 to NaN)')
    depth = depth.astype(np.float32, copy=True)
    with np.errstate(invalid='ignore'):
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (*expected, 3) or rgb.dtype != np.uint8:
            raise ValueError(f'rgb must be a uint8 array of shape {(*expected, 3)}, got {rgb.dtype} {rgb.shape}')
    return depth, rgb


def _initial_reasons(depth: np.ndarray) -> np.ndarray:
    reason = np.zeros(depth.shape, np.uint8)
    reason[np.isnan(depth)] = InvalidReason.NO_RETURN
    return reason


def _mark(reason: np.ndarray, mask: np.ndarray, why: InvalidReason) -> None:
    """Set ``why`` where ``mask`` holds and no earlier cause was recorded."""
    reason[mask & (reason == InvalidReason.NONE)] = why


def _draw_mask(rng: np.random.Generator, candidates: np.ndarray, probability) -> np.ndarray:
    """Bernoulli(probability) on the candidate pixels only (probability: scalar or per-pixel array)."""
    out = np.zeros(candidates.shape, bool)
    idx = np.flatnonzero(candidates)
    if idx.size:
        p = probability if np.isscalar(probability) else np.asarray(probability).ravel()[idx]
        out.ravel()[idx] = rng.random(idx.size) < p
    return out


def _pixel_rays(camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates x (1, W) and y (H, 1) of the pixel centres."""
    x = ((np.arange(camera.width, dtype=np.float32) - camera.cx) / camera.fx)[None, :]
    y = ((np.arange(camera.height, dtype=np.float32) - camera.cy) / camera.fy)[:, None]
    return x, y


def _jump_mask(depth: np.ndarray, rel: float) -> np.ndarray:
    """Both pixels of every 4-neighbour pair whose depths differ by more than ``rel`` of the nearer one.

    At the preset focal lengths (525-615 px) a 5 % jump between neighbours is a surface steeper than ~88 deg, i.e. a
    depth discontinuity (occluding edge) rather than a slanted surface. No-return neighbours do not count.
    """
    mask = np.zeros(depth.shape, bool)
    with np.errstate(invalid='ignore'):
        for a, b, ma, mb in ((depth[:, :-1], depth[:, 1:], mask[:, :-1], mask[:, 1:]),
                             (depth[:-1], depth[1:], mask[:-1], mask[1:])):
            jump = np.abs(a - b) > rel * np.fmin(a, b)
            ma |= jump
            mb |= jump
    return mask


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (Chebyshev) of the mask."""
    if radius <= 0:
        return mask.copy()
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask.view(np.uint8), kernel).astype(bool)


def _incidence_cos2(depth: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Squared cosine of the incidence angle (see incidence_cos); NaN at the border and next to holes."""
    z = np.asarray(depth, dtype=np.float32)
    zu = np.full(z.shape, np.nan, np.float32)
    zv = np.full(z.shape, np.nan, np.float32)
    np.subtract(z[:, 2:], z[:, :-2], out=zu[:, 1:-1])
    np.subtract(z[2:], z[:-2], out=zv[1:-1])
    x, y = _pixel_rays(camera)
    a = zu * np.float32(0.5 * camera.fx)
    c = zv * np.float32(0.5 * camera.fy)
    nz = a * x
    nz += c * y
    nz += z
    norm2 = a * a
    norm2 += c * c
    norm2 += nz * nz
    norm2 *= x * x + y * y + np.float32(1.0)
    with np.errstate(invalid='ignore', divide='ignore'):
        return z * z / norm2


def incidence_cos(depth_m: np.ndarray, camera: CameraModel) -> np.ndarray:
    """cos of the angle between each pixel's viewing ray and the surface normal, from the depth via K.

    With P = z (x, y, 1), the normal dP/du x dP/dv is parallel to n = (-fx z_u, -fy z_v, fx z_u x + fy z_v y + z), and
    n . (x, y, 1) = z, so cos = z / (|n| |r|). Central differences; NaN at the border and next to holes.
    """
    return np.sqrt(_incidence_cos2(depth_m, camera))


def _grazing(depth: np.ndarray, camera: CameraModel, jumps: np.ndarray, max_incidence_deg: float) -> np.ndarray:
    """Surfaces seen beyond ``max_incidence_deg``; pixels at depth discontinuities are edges, not grazing."""
    cos2 = _incidence_cos2(depth, camera)
    with np.errstate(invalid='ignore'):
        return (cos2 < math.cos(math.radians(max_incidence_deg)) ** 2) & ~jumps


# sRGB -> linear reflectance, the visible-light proxy for near-infrared albedo.
_SRGB_TO_LINEAR = np.where(np.arange(256) / 255.0 <= 0.04045, np.arange(256) / 255.0 / 12.92,
                           ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4).astype(np.float32)


_LUMINANCE = np.array([[0.2126, 0.7152, 0.0722]], np.float32)


def _albedo(rgb: np.ndarray) -> np.ndarray:
    """Linear luminance (Rec. 709 weights) of the colour image, in [0, 1]."""
    return cv2.transform(cv2.LUT(rgb, _SRGB_TO_LINEAR), _LUMINANCE)


def _specular(rgb: np.ndarray, level: int) -> np.ndarray:
    """Near-white highlights (every channel >= level): where a rendered surface mirrors the light source."""
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) >= level


def _correlated_normal(rng: np.random.Generator, shape, blob_px: float) -> np.ndarray:
    """Standard normal marginals with Gaussian spatial correlation, so that holes come as blobs, not salt and pepper.

    White noise blurred by a unit-sum kernel k has std sqrt(sum(k2d^2)) = sum(k1^2) for a separable kernel; dividing
    by it restores unit variance. Thresholding at ndtri(rate) then selects a fraction ``rate`` of the pixels.
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    if blob_px > 0:
        k = cv2.getGaussianKernel(2 * math.ceil(3 * blob_px) + 1, blob_px, cv2.CV_32F)
        noise = cv2.sepFilter2D(noise, -1, k, k, borderType=cv2.BORDER_REFLECT) / float(np.sum(k * k))
    return noise


def _local_min_max(depth: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and farthest finite depth within ``radius`` px (square window); holes ignored."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    finite = ~np.isnan(depth)
    near = cv2.erode(np.where(finite, depth, np.float32(1e9)).astype(np.float32), kernel)
    far = cv2.dilate(np.where(finite, depth, np.float32(0)).astype(np.float32), kernel)
    return near, far


def _occlusion_shadow(depth: np.ndarray, disparity_scale_px_m: float) -> np.ndarray:
    """Pixels the reference view sees but the second view (at +x) does not.

    A point at column u lands at u - d(u) in the second view, d = f b / z. It is hidden there iff some point to its
    right lands at or left of it (u' > u with u' - d(u') <= u - d(u)), which is a reverse running minimum per row.
    On a background at z_b beside a foreground edge at z_f this marks the band of f b (1/z_f - 1/z_b) pixels left of
    the edge. No-return pixels count as infinitely far (they hide nothing).
    """
    h, w = depth.shape
    disp = disparity_scale_px_m / depth
    disp[np.isnan(disp)] = 0.0
    key = np.arange(w, dtype=np.float32)[None, :] - disp
    right_min = np.full((h, w), np.inf, np.float32)
    right_min[:, :-1] = np.minimum.accumulate(key[:, :0:-1], axis=1)[:, ::-1]
    return (key >= right_min) & ~np.isnan(depth)


def _quantise(depth: np.ndarray, unit_m: float) -> np.ndarray:
    return (np.rint(depth / unit_m) * unit_m).astype(np.float32)


# --------------------------------------------------------------------------- misregistration
@functools.lru_cache(maxsize=8)
def _rotated_rays(rotation_deg, fx, fy, cx, cy, width, height) -> tuple[np.ndarray, ...]:
    """R (x, y, 1) for every pixel: the depth-independent part of a re-projection, cached per unit and camera."""
    R = cv2.Rodrigues(np.radians(np.asarray(rotation_deg, dtype=np.float64)))[0].astype(np.float32)
    x, y = _pixel_rays(CameraModel.pinhole(width, height, fx, fy, cx, cy))
    rays = tuple(_readonly(R[i, 0] * x + R[i, 1] * y + R[i, 2]) for i in range(3))
    return rays


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Misregistration:
    """A small error in the depth-to-colour extrinsics, as one unit's factory calibration has.

    The driver registers depth to colour with the calibrated extrinsics; if they are off by (R, t), a point X of the
    colour optical frame is drawn at the pixel of R X + t. Depth values are kept: a mm-sized t changes z by about the
    1 mm depth unit, far below the noise, and keeping them keeps the quantisation.
    Issue 8's figure: a few px / a few tenths of a degree; no vendor publishes a registration accuracy.
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)   # rotation vector (axis * angle), degrees
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def sample(cls, rng: np.random.Generator, rotation_std_deg: float, translation_std_m: float) -> Misregistration:
        """One unit's error: each rotation-vector and translation component normal with the given std."""
        rot = rng.normal(0.0, rotation_std_deg, 3)
        trans = rng.normal(0.0, translation_std_m, 3)
        return cls(tuple(float(v) for v in rot), tuple(float(v) for v in trans))

    @property
    def is_identity(self) -> bool:
        return not any(self.rotation_deg) and not any(self.translation_m)

    def pixel_shift(self, depth_m: np.ndarray, camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
        """(du, dv): where each pixel's point moves in the image. Holes move like points at infinity (rotation only)."""
        return self._shifter(camera)(np.asarray(depth_m, np.float32))

    def _shifter(self, camera: CameraModel):
        """(depth[, flat pixel indices]) -> (du, dv), with the depth-independent rotation part computed once."""
        t = np.asarray(self.translation_m, dtype=np.float32)
        x, y = _pixel_rays(camera)
        # (R X + t) / z with X = z (x, y, 1).
        rx, ry, rz = _rotated_rays(self.rotation_deg, camera.fx, camera.fy, camera.cx, camera.cy, camera.width,
                                   camera.height)

        def shift(z, idx=None):
            px, py, pz, xx, yy = rx, ry, rz, x, y
            if idx is not None:
                px, py, pz = px.ravel()[idx], py.ravel()[idx], pz.ravel()[idx]
                xx, yy = x.ravel()[idx % camera.width], y.ravel()[idx // camera.width]
            with np.errstate(divide='ignore', invalid='ignore'):
                inv_z = np.float32(1.0) / z
            inv_z[np.isnan(inv_z)] = 0.0
            inv_pz = np.float32(1.0) / (pz + t[2] * inv_z)
            du = (px + t[0] * inv_z) * inv_pz
            du -= xx
            du *= np.float32(camera.fx)
            dv = (py + t[1] * inv_z) * inv_pz
            dv -= yy
            dv *= np.float32(camera.fy)
            return du, dv
        return shift

    def apply(self, sample: DepthSample, camera: CameraModel, geometry_m: np.ndarray | None = None,
              iterations: int = 2) -> DepthSample:
        """Re-project the frame by a backward warp with nearest sampling (never blending depths across edges).

        Each output pixel p solves q + shift(q) = p by fixed-point iteration, started from p's own shift and, where a
        nearer surface lies within reach, again from that surface's shift, so that where two surfaces land on p
        (occlusion) both are found and the nearer wins, as in a z-buffer. Where no start reaches a fixed point (to the
        pixel) the error uncovers surface that the depth sensor never saw: a NO_RETURN hole, as in a driver's
        registered depth. ``geometry_m`` (default: the sample's depth) places each pixel, so holes move with their
        surface; the models pass the exact depth.
        """
        if self.is_identity:
            return sample
        h, w = sample.depth_m.shape
        geometry = sample.depth_m if geometry_m is None else np.asarray(geometry_m, np.float32)
        far = np.where(np.isnan(geometry), np.float32(1e9), geometry).astype(np.float32)
        shift = self._shifter(camera)
        du, dv = shift(geometry)
        u = np.arange(w, dtype=np.float32)[None, :]
        v = np.arange(h, dtype=np.float32)[:, None]

        # Start 1, every pixel: cv2's nearest remap rounds half to even, like np.rint, on OpenCV 4.11 and 5.0.
        def remap(image, qu, qv):
            return cv2.remap(image, qu, qv, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        qu, qv = u - du, v - dv
        for _ in range(iterations):
            qu, qv = u - remap(du, qu, qv), v - remap(dv, qu, qv)
        # A fixed point: one more step lands on the same pixel.
        converged = (np.rint(u - remap(du, qu, qv)) == np.rint(qu)) & (np.rint(v - remap(dv, qu, qv)) == np.rint(qv))

        # Start 2, only where a nearer surface lies within the spread of the shifts.
        spread = max(float(du.max() - du.min()), float(dv.max() - dv.min()))
        radius = min(int(math.ceil(spread)) + 1, 16)
        near = cv2.erode(far, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))
        idx = np.flatnonzero(near < far)
        if idx.size:
            pu, pv = (idx % w).astype(np.float32), (idx // w).astype(np.float32)
            su, sv = shift(near.ravel()[idx], idx)
            au, av = pu - su, pv - sv

            def at(image, qu, qv):
                row = np.clip(np.rint(qv), 0, h - 1).astype(np.intp)
                return image.ravel()[row * w + np.clip(np.rint(qu), 0, w - 1).astype(np.intp)]
            for _ in range(iterations):
                au, av = pu - at(du, au, av), pv - at(dv, au, av)
            ok = (np.rint(pu - at(du, au, av)) == np.rint(au)) & (np.rint(pv - at(dv, au, av)) == np.rint(av))
            z_a = np.where(ok, at(far, au, av), np.inf)
            z_b = np.where(converged.ravel()[idx], at(far, qu.ravel()[idx], qv.ravel()[idx]), np.inf)
            take = z_a < z_b
            sel = idx[take]
            qu.ravel()[sel], qv.ravel()[sel] = au[take], av[take]
            converged.ravel()[sel] = True

        def sample_at(image, border):
            return cv2.remap(image, qu, qv, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        depth = sample_at(sample.depth_m, float('nan'))
        reason = sample_at(sample.invalid_reason, int(InvalidReason.NO_RETURN))
        depth[~converged] = np.nan
        reason[~converged] = InvalidReason.NO_RETURN
        return DepthSample(depth, reason)


# --------------------------------------------------------------------------- models
@dataclass(frozen=True)
class IdealDepthModel:
    """Exact depth: the renderer's output, with only no-return pixels invalid."""

    def apply(self, depth_m, camera: CameraModel, rng: np.random.Generator, *, rgb=None) -> DepthSample:
        depth, _ = _check_inputs(depth_m, camera, rgb)
        return DepthSample(depth, _initial_reasons(depth))

    def sample_unit(self, rng: np.random.Generator) -> IdealDepthModel:
        return self


@dataclass(frozen=True)
class GaussianDepthModel:
    """The scene's original model: z + N(0, 1) * std_at_1m * z^2, nothing invalidated.

    Draws exactly what SimScene.render drew (one float64 standard normal per pixel, only when std_at_1m > 0), so a
    scene switched to this model renders bit-identical frames for the same seed.
    """

    # Default 3.6 mm at 1 m: the D435's z^2 coefficient, 0.08 px / (447 px * 0.050 m) (see StereoDepthModel).
    std_at_1m: float = 0.0036

    def __post_init__(self) -> None:
        if not self.std_at_1m >= 0:
            raise ValueError(f'std_at_1m must be >= 0, got {self.std_at_1m}')

    def noise_std_m(self, z_m, camera: CameraModel | None = None):
        return self.std_at_1m * np.square(z_m)

    def apply(self, depth_m, camera: CameraModel, rng: np.random.Generator, *, rgb=None) -> DepthSample:
        depth, _ = _check_inputs(depth_m, camera, rgb)
        if self.std_at_1m > 0.0:
            depth += (rng.standard_normal(depth.shape) * self.std_at_1m * depth ** 2).astype(np.float32)
        return DepthSample(depth, _initial_reasons(depth))

    def sample_unit(self, rng: np.random.Generator) -> GaussianDepthModel:
        return self


def gaussian(std_at_1m: float) -> GaussianDepthModel:
    """The scene's depth_noise_std_m model (kept for existing callers)."""
    return GaussianDepthModel(std_at_1m)


@dataclass(frozen=True)
class StereoDepthModel:
    """Active stereo (RealSense D4xx) or structured light (Kinect v1): matching error in disparity, hence z^2 noise.

    Defaults are a RealSense D435. Sources: Intel RealSense D400 Series Datasheet (baseline, FOV, Min-Z, absolute
    error), Intel's "Tuning depth cameras for best performance" white paper (RMS = z^2 * subpixel / (f * b), subpixel
    ~0.08 px, f = 0.5 * Xres / tan(HFOV / 2)), librealsense (1 mm default depth units, 1/32 px disparity steps).
    """

    # Distance between the imagers; D435 50 mm, D415 55 mm (datasheet). The second view sits at +x.
    baseline_m: float = 0.050
    # Depth imager focal length at its best depth resolution, which sets the matching error in metres: D435 848x480,
    # HFOV 87 deg -> 0.5 * 848 / tan(43.5 deg) = 447 px (datasheet FOV, white-paper formula). None: the image's fx.
    focal_px: float | None = 447.0
    # RMS disparity error of the matcher; ~0.08 px on well-textured scenes (white paper, typical figure).
    subpixel_rms_px: float = 0.08
    # Disparity resolution: 1/32 px (librealsense disparity_transform: D4xx disparity has 5 fractional bits).
    subpixel_steps: int = 32
    # Depth unit of the 16UC1 stream: 1 mm (librealsense default).
    depth_unit_m: float = 0.001
    # Operating range: Min-Z ~0.28 m at 1280x720 for the D435 (datasheet); ~10 m maximum (datasheet: varies with
    # calibration, scene and lighting).
    min_range_m: float = 0.28
    max_range_m: float = 10.0
    # Per-unit depth scale error, z_measured / z_true - 1 (a baseline/focal calibration error scales disparity).
    scale_bias: float = 0.0
    # Bound for sample_unit's draw (uniform): datasheet absolute error <= 2 % at 2 m.
    max_scale_bias: float = 0.02
    # Incidence angle beyond which matching fails (the window is foreshortened); engineering choice, no vendor figure.
    max_incidence_deg: float = 75.0
    # Dark surfaces: linear albedo below dark_albedo (sRGB ~55) lose dark_hole_rate of their pixels, in blobs of
    # hole_blob_px (Gaussian sigma). Engineering choice: D4xx images of black plastic/fabric lose about half.
    dark_albedo: float = 0.04
    dark_hole_rate: float = 0.5
    hole_blob_px: float = 2.0
    # Highlights (all channels >= specular_level) lose specular_hole_rate of their pixels; engineering choice.
    specular_level: int = 250
    specular_hole_rate: float = 0.9
    # Flying pixels: within flying_band_px of a depth edge the matching window straddles both surfaces; a fraction
    # flying_rate of those pixels gets a disparity between foreground and background. Engineering choice (1-3 px
    # fringes are typical of D4xx depth at object edges).
    flying_band_px: int = 2
    flying_rate: float = 0.5
    # Neighbour jump (fraction of the nearer depth) that counts as a depth edge; see _jump_mask.
    edge_jump_rel: float = 0.05
    # Per-unit colour-depth misregistration, and sample_unit's per-component std (issue 8: a few px / tenths of deg).
    misregistration: Misregistration | None = None
    misregistration_rot_std_deg: float = 0.15
    misregistration_trans_std_m: float = 0.0015

    def __post_init__(self) -> None:
        _check_positive(self, 'baseline_m', 'subpixel_steps', 'depth_unit_m', 'max_range_m')
        if self.focal_px is not None:
            _check_positive(self, 'focal_px')
        _check_unit_interval(self, 'dark_hole_rate', 'specular_hole_rate', 'flying_rate')
        if not 0 <= self.min_range_m < self.max_range_m:
            raise ValueError(f'need 0 <= min_range_m < max_range_m, got {self.min_range_m}, {self.max_range_m}')

    def focal(self, camera: CameraModel | None = None) -> float:
        if self.focal_px is not None:
            return float(self.focal_px)
        if camera is None:
            raise ValueError('focal_px is None: pass the camera whose fx to use')
        return camera.fx

    def noise_std_m(self, z_m, camera: CameraModel | None = None):
        """The z^2 law: RMS depth error z^2 * subpixel / (f * b) (before quantisation)."""
        return np.square(z_m) * self.subpixel_rms_px / (self.focal(camera) * self.baseline_m)

    def sample_unit(self, rng: np.random.Generator) -> StereoDepthModel:
        """This model as one physical unit: a scale bias and a misregistration drawn within the stated bounds."""
        scale = float(rng.uniform(-self.max_scale_bias, self.max_scale_bias))
        mis = Misregistration.sample(rng, self.misregistration_rot_std_deg, self.misregistration_trans_std_m)
        return replace(self, scale_bias=scale, misregistration=mis)

    def apply(self, depth_m, camera: CameraModel, rng: np.random.Generator, *, rgb=None) -> DepthSample:
        z, rgb = _check_inputs(depth_m, camera, rgb)
        reason = _initial_reasons(z)
        with np.errstate(invalid='ignore', divide='ignore'):
            _mark(reason, (z < self.min_range_m) | (z > self.max_range_m), InvalidReason.OUT_OF_RANGE)
            jumps = _jump_mask(z, self.edge_jump_rel)
            _mark(reason, _occlusion_shadow(z, camera.fx * self.baseline_m), InvalidReason.OCCLUSION_SHADOW)
            _mark(reason, _grazing(z, camera, jumps, self.max_incidence_deg), InvalidReason.GRAZING)
            if rgb is not None:
                spec = _specular(rgb, self.specular_level) & (reason == 0)
                _mark(reason, _draw_mask(rng, spec, self.specular_hole_rate), InvalidReason.SPECULAR)
                dark = (_albedo(rgb) < self.dark_albedo) & (reason == 0)
                if dark.any():
                    holes = _correlated_normal(rng, z.shape, self.hole_blob_px) < ndtri(self.dark_hole_rate)
                    _mark(reason, dark & holes, InvalidReason.DARK)

            fb = self.focal(camera) * self.baseline_m
            disp = fb / z
            # Flying pixels: disparity interpolated between the nearest and farthest surface around the edge.
            band = _dilate(jumps, self.flying_band_px) & (reason == 0)
            if band.any():
                near, far = _local_min_max(z, self.flying_band_px + 1)
                fly = _draw_mask(rng, band & (far > near * (1.0 + self.edge_jump_rel)), self.flying_rate)
                mix = rng.random(int(fly.sum()), dtype=np.float32)
                disp[fly] = fb * (mix / near[fly] + (1.0 - mix) / far[fly])
            disp += rng.standard_normal(z.shape, dtype=np.float32) * np.float32(self.subpixel_rms_px)
            disp = np.rint(disp * self.subpixel_steps) / np.float32(self.subpixel_steps)
            _mark(reason, ~(disp > 0), InvalidReason.NO_RETURN)
            depth = _quantise(fb * (1.0 + self.scale_bias) / disp, self.depth_unit_m)
        depth[reason != 0] = np.nan
        return _finish(depth, reason, camera, self.misregistration, z)


@dataclass(frozen=True)
class TofDepthModel:
    """Continuous-wave time of flight (Azure Kinect DK): noise set by the returned IR signal, range-limited.

    Defaults are the NFOV unbinned mode. Source: Microsoft, "Azure Kinect DK hardware specifications" (operating
    ranges for 15-95 % reflectivity at 850 nm, systematic error < 11 mm + 0.1 % of distance, random error std
    <= 17 mm) and "Azure Kinect DK depth camera" (invalidation of mixed/edge, saturated and low-signal pixels;
    multipath in corners).
    """

    # Operating range of the depth mode: NFOV unbinned 0.5-3.86 m; WFOV 2x2 binned 0.25-2.88 m; WFOV unbinned
    # 0.25-2.21 m; NFOV 2x2 binned 0.5-5.46 m (hardware specification).
    min_range_m: float = 0.5
    max_range_m: float = 3.86
    # Random error std at the edge of the specification (max range, 15 % reflectivity): <= 17 mm (hardware spec).
    # Shot-noise limited phase: std ~ 1 / sqrt(signal), signal ~ albedo / z^2, so std = 17 mm * (z / z_max) *
    # sqrt(0.15 / albedo), capped at 2x for albedos below half the reference.
    random_std_m: float = 0.017
    reference_albedo: float = 0.15
    # Per-unit systematic error z_meas = z (1 + scale_bias) + offset_m, and sample_unit's uniform bounds:
    # < 11 mm + 0.1 % of distance (hardware spec).
    offset_m: float = 0.0
    scale_bias: float = 0.0
    max_offset_m: float = 0.011
    max_scale_bias: float = 0.001
    # Low signal: signal relative to the spec's edge (15 % at max range) below 1 starts losing pixels, all are lost at
    # 1 - dark_signal_ramp. Engineering choice: valid inside the specified envelope, soft edge outside it.
    dark_signal_ramp: float = 0.5
    # Albedo used when no rgb is given: a matte mid-grey.
    default_albedo: float = 0.5
    # Multipath: light bounced off the other face of a concave crease arrives late, biasing depth long. Bias =
    # gain * sag, the sag being how far the pixel lies behind the local (Gaussian, sigma multipath_window_px) mean
    # surface in inverse depth (zero on planes and convex edges). Gain 3 gives ~1 cm at a 90 deg corner 1 m away at
    # 600 px; engineering choice (AMCW multipath errors of cm in corners: Fuchs, ICPR 2010; Jimenez et al., IVC 2014).
    multipath_gain: float = 3.0
    multipath_window_px: float = 3.0
    multipath_max_m: float = 0.03
    # Mixed pixels within edge_band_px of a depth edge are invalidated (the depth engine drops them).
    edge_band_px: int = 1
    edge_jump_rel: float = 0.05
    # Incidence angle beyond which too little signal returns; engineering choice, no vendor figure.
    max_incidence_deg: float = 80.0
    # Highlights: saturated returns are invalidated by the depth engine; engineering choice for the proxy.
    specular_level: int = 250
    specular_hole_rate: float = 0.9
    # Depth unit of the 16UC1 stream: 1 mm.
    depth_unit_m: float = 0.001
    misregistration: Misregistration | None = None
    misregistration_rot_std_deg: float = 0.15
    misregistration_trans_std_m: float = 0.0015

    def __post_init__(self) -> None:
        _check_positive(self, 'reference_albedo', 'default_albedo', 'depth_unit_m', 'dark_signal_ramp')
        _check_unit_interval(self, 'specular_hole_rate')
        if not 0 <= self.min_range_m < self.max_range_m:
            raise ValueError(f'need 0 <= min_range_m < max_range_m, got {self.min_range_m}, {self.max_range_m}')

    def noise_std_m(self, z_m, albedo=None):
        """std = random_std_m * (z / max_range) * sqrt(reference_albedo / albedo), capped at 2x random_std_m."""
        albedo = self.default_albedo if albedo is None else albedo
        ratio = np.sqrt(self.reference_albedo / np.maximum(albedo, 0.25 * self.reference_albedo))
        return self.random_std_m * np.asarray(z_m) / self.max_range_m * ratio

    def sample_unit(self, rng: np.random.Generator) -> TofDepthModel:
        """This model as one physical unit: offset, scale and misregistration drawn within the stated bounds."""
        offset = float(rng.uniform(-self.max_offset_m, self.max_offset_m))
        scale = float(rng.uniform(-self.max_scale_bias, self.max_scale_bias))
        mis = Misregistration.sample(rng, self.misregistration_rot_std_deg, self.misregistration_trans_std_m)
        return replace(self, offset_m=offset, scale_bias=scale, misregistration=mis)

    def multipath_bias_m(self, depth_m: np.ndarray, jumps: np.ndarray | None = None) -> np.ndarray:
        """Long bias from multipath in concave creases (see the multipath fields); 0 near edges, holes, borders."""
        z = np.asarray(depth_m, np.float32)
        finite = ~np.isnan(z)
        weight = finite.astype(np.float32)
        inv = np.where(finite, 1.0 / np.where(finite, z, 1.0), 0.0).astype(np.float32)
        sigma = self.multipath_window_px
        radius = math.ceil(3 * sigma)
        k = cv2.getGaussianKernel(2 * radius + 1, sigma, cv2.CV_32F)
        num = cv2.sepFilter2D(inv, -1, k, k, borderType=cv2.BORDER_CONSTANT)
        den = cv2.sepFilter2D(weight, -1, k, k, borderType=cv2.BORDER_CONSTANT)
        with np.errstate(invalid='ignore', divide='ignore'):
            sag = z - den / num          # > 0 where the pixel lies behind the local mean surface
            bias = np.clip(self.multipath_gain * sag, 0.0, self.multipath_max_m)
        # Full support only: a one-sided window (border, hole, depth edge) would fake a crease.
        if jumps is None:
            jumps = _jump_mask(z, self.edge_jump_rel)
        ok = finite & (den > 0.9999) & ~_dilate(jumps, radius)
        return np.where(ok, bias, 0.0).astype(np.float32)

    def apply(self, depth_m, camera: CameraModel, rng: np.random.Generator, *, rgb=None) -> DepthSample:
        z, rgb = _check_inputs(depth_m, camera, rgb)
        reason = _initial_reasons(z)
        with np.errstate(invalid='ignore', divide='ignore'):
            _mark(reason, (z < self.min_range_m) | (z > self.max_range_m), InvalidReason.OUT_OF_RANGE)
            jumps = _jump_mask(z, self.edge_jump_rel)
            if self.edge_band_px > 0:
                _mark(reason, _dilate(jumps, self.edge_band_px - 1), InvalidReason.EDGE)
            _mark(reason, _grazing(z, camera, jumps, self.max_incidence_deg), InvalidReason.GRAZING)
            if rgb is not None:
                spec = _specular(rgb, self.specular_level) & (reason == 0)
                _mark(reason, _draw_mask(rng, spec, self.specular_hole_rate), InvalidReason.SPECULAR)
                albedo = _albedo(rgb)
            else:
                albedo = np.full(z.shape, self.default_albedo, np.float32)
            signal = (albedo / (z * z)) / (self.reference_albedo / self.max_range_m ** 2)
            p_dark = np.clip((1.0 - signal) / self.dark_signal_ramp, 0.0, 1.0)
            _mark(reason, _draw_mask(rng, (p_dark > 0) & (reason == 0), p_dark), InvalidReason.DARK)

            noisy = z + self.multipath_bias_m(z, jumps)
            noisy += rng.standard_normal(z.shape, dtype=np.float32) * self.noise_std_m(z, albedo).astype(np.float32)
            depth = _quantise(noisy * (1.0 + self.scale_bias) + self.offset_m, self.depth_unit_m)
        _mark(reason, ~(depth > 0), InvalidReason.NO_RETURN)
        depth[reason != 0] = np.nan
        return _finish(depth, reason, camera, self.misregistration, z)


def _finish(depth, reason, camera, misregistration: Misregistration | None, geometry) -> DepthSample:
    sample = DepthSample(depth.astype(np.float32, copy=False), reason)
    return sample if misregistration is None else misregistration.apply(sample, camera, geometry)


def _check_positive(model, *names: str) -> None:
    for name in names:
        if not getattr(model, name) > 0:
            raise ValueError(f'{type(model).__name__}.{name} must be > 0, got {getattr(model, name)}')


def _check_unit_interval(model, *names: str) -> None:
    for name in names:
        if not 0 <= getattr(model, name) <= 1:
            raise ValueError(f'{type(model).__name__}.{name} must be in [0, 1], got {getattr(model, name)}')


# --------------------------------------------------------------------------- presets
_D435 = StereoDepthModel()
_D415 = StereoDepthModel(
    # D415 datasheet: 55 mm baseline, depth FOV 65 x 40 deg, best at 1280x720 -> 0.5 * 1280 / tan(32.5 deg) = 1005 px;
    # Min-Z ~0.45 m at 1280x720. Other figures as the D435 (same D4 processor and datasheet accuracy).
    baseline_m=0.055, focal_px=1005.0, min_range_m=0.45)
_KINECT_V1 = StereoDepthModel(
    # Kinect for Xbox 360 (structured light, the projector as second view): 75 mm baseline, ~580 px IR focal length,
    # disparity in 1/8 px steps (Khoshelham & Elberink, Sensors 12:1437, 2012). Their random error reaching ~4 cm at
    # 5 m gives 0.04 * 580 * 0.075 / 25 = 0.07 px. Range 0.8-4.0 m (Kinect for Windows SDK default mode).
    # Calibration-dependent scale error bound 1 %: engineering choice, no vendor figure.
    baseline_m=0.075, focal_px=580.0, subpixel_rms_px=0.07, subpixel_steps=8, min_range_m=0.8, max_range_m=4.0,
    max_scale_bias=0.01)
_AZURE_NFOV = TofDepthModel()
# The 512x512 azure_kinect_wfov preset is the WFOV 2x2 binned mode: 0.25-2.88 m (the unbinned 1024x1024 mode: 2.21 m).
_AZURE_WFOV = TofDepthModel(min_range_m=0.25, max_range_m=2.88)

DEPTH_MODELS = MappingProxyType({
    'realsense_d435': _D435,
    'realsense_d415': _D415,
    # The colour preset's depth: the ROS driver's default NFOV unbinned mode, registered to colour.
    'azure_kinect': _AZURE_NFOV,
    'azure_kinect_nfov': _AZURE_NFOV,
    'azure_kinect_wfov': _AZURE_WFOV,
    'kinect_xbox360': _KINECT_V1,
})

_GENERIC = MappingProxyType({
    'ideal': IdealDepthModel(),
    'gaussian': GaussianDepthModel(),
    'stereo': _D435,
    'tof': _AZURE_NFOV,
})


# Every name depth_model_from_name accepts.
DEPTH_SENSOR_NAMES: tuple[str, ...] = tuple(_GENERIC) + tuple(DEPTH_MODELS)


def depth_model_for_preset(name: str, unit_rng: np.random.Generator | None = None):
    """The default depth model of a camera preset: the nominal unit, or a unit drawn from ``unit_rng``."""
    try:
        model = DEPTH_MODELS[name]
    except KeyError:
        raise ValueError(f'no depth model for camera preset {name!r}; presets: {", ".join(DEPTH_MODELS)}') from None
    return model if unit_rng is None else model.sample_unit(unit_rng)


def depth_model_from_name(name: str, unit_rng: np.random.Generator | None = None):
    """'ideal', 'gaussian', 'stereo' (D435), 'tof' (Azure Kinect NFOV) or a camera preset name."""
    model = _GENERIC.get(name) or DEPTH_MODELS.get(name)
    if model is None:
        raise ValueError(f'unknown depth model {name!r}; choose one of: {", ".join(DEPTH_SENSOR_NAMES)}')
    return model if unit_rng is None else model.sample_unit(unit_rng)
