"""A calibrated camera as sensor_msgs/CameraInfo describes it, with projection and undistortion through OpenCV.

Conventions are those of ROS image_geometry and OpenCV: pixel centres at integer coordinates, camera optical frame
(x right, y down, z forward), distortion models 'plumb_bob' / 'rational_polynomial' (OpenCV's k1, k2, p1, p2, k3, k4,
k5, k6, ...) and 'equidistant' (OpenCV's fisheye k1..k4). Like image_geometry, an empty or all-zero D means an ideal
pinhole camera whatever the model name says.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import cv2
import numpy as np

PLUMB_BOB = 'plumb_bob'
RATIONAL_POLYNOMIAL = 'rational_polynomial'
EQUIDISTANT = 'equidistant'
DISTORTION_MODELS = (PLUMB_BOB, RATIONAL_POLYNOMIAL, EQUIDISTANT)

# Coefficient counts cv2.projectPoints/undistortPoints accept; shorter polynomial D vectors are zero-padded up to one.
_OPENCV_D_LENGTHS = (4, 5, 8, 12, 14)
_FISHEYE_D_LENGTH = 4
# OpenCV 4.x iterates undistortion only 5 times by default, which leaves pixel-sized errors at the corners of wide
# lenses; these settle to far below 1e-3 px.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)


class CameraModelError(ValueError):
    """Intrinsics or distortion that cannot describe a real camera."""


def _undistort_points(src: np.ndarray, K: np.ndarray, D: np.ndarray) -> np.ndarray:
    # OpenCV 4.x (Humble's and Jazzy's) names the overload with termination criteria undistortPointsIter;
    # OpenCV 5 folded it into undistortPoints.
    undistort_iter = getattr(cv2, 'undistortPointsIter', None)
    if undistort_iter is not None:
        return undistort_iter(src, K, D, None, None, _UNDISTORT_CRITERIA)
    return cv2.undistortPoints(src, K, D, criteria=_UNDISTORT_CRITERIA)


def _image_size(width, height) -> tuple[int, int]:
    try:
        width, height = operator.index(width), operator.index(height)
    except TypeError:
        raise CameraModelError(f'image size must be integers, got {width!r}x{height!r}') from None
    if width <= 0 or height <= 0:
        raise CameraModelError(f'image size must be positive, got {width}x{height}')
    return width, height


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _rows(points, columns: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, columns) float64 copy of ``points``, a NaN-filled output and the mask of rows that are fully finite."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != columns:
        raise CameraModelError(f'{what} must be an (N, {columns}) array, got shape {points.shape}')
    out = np.full((points.shape[0], 2), np.nan)
    return points, out, np.isfinite(points).all(axis=1)


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Intrinsics K (3x3), distortion D as given (unpadded) and the image size they were calibrated for.

    Arrays are stored read-only float64 copies, so a model can be shared between threads and callbacks.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = PLUMB_BOB

    def __post_init__(self) -> None:
        width, height = _image_size(self.width, self.height)
        K = np.array(self.K, dtype=np.float64)
        if K.size == 9:
            K = K.reshape(3, 3)
        if K.shape != (3, 3) or not np.isfinite(K).all():
            raise CameraModelError(f'K must be a finite 3x3 matrix (or 9 values), got {np.asarray(self.K).tolist()}')
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise CameraModelError(f'focal lengths must be > 0, got fx={K[0, 0]} fy={K[1, 1]} (uncalibrated camera?)')
        if not np.allclose([K[0, 1], K[1, 0], K[2, 0], K[2, 1], K[2, 2]], [0, 0, 0, 0, 1], atol=1e-9):
            # OpenCV's projection ignores skew, so accepting it would silently give wrong pixels.
            raise CameraModelError(f'K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}')
        D = np.array(self.D, dtype=np.float64).reshape(-1)
        if not np.isfinite(D).all():
            raise CameraModelError(f'distortion coefficients must be finite, got {D.tolist()}')
        model = self.distortion_model
        distorted = bool(np.any(D != 0))
        if model not in DISTORTION_MODELS and not (model == '' and not distorted):
            raise CameraModelError(
                f'unknown distortion model {model!r}; supported: {", ".join(DISTORTION_MODELS)}')
        if distorted and model == EQUIDISTANT and D.size != _FISHEYE_D_LENGTH:
            raise CameraModelError(f'equidistant distortion needs 4 coefficients (k1..k4), got {D.size}')
        if distorted and model != EQUIDISTANT and not _OPENCV_D_LENGTHS[0] <= D.size <= _OPENCV_D_LENGTHS[-1]:
            raise CameraModelError(
                f'{model} distortion needs 4 to 14 coefficients (k1, k2, p1, p2[, k3[, k4, k5, k6[, ...]]]), '
                f'got {D.size}')
        object.__setattr__(self, 'width', width)
        object.__setattr__(self, 'height', height)
        object.__setattr__(self, 'K', _readonly(K))
        object.__setattr__(self, 'D', _readonly(D))

    @classmethod
    def pinhole(cls, width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> CameraModel:
        """An ideal camera without distortion (rectified images, simulators)."""
        return cls(width, height, np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> CameraModel:
        """An ideal camera with square pixels whose optical axis meets the middle of the sensor.

        With pixel centres at integer coordinates the middle is ((W-1)/2, (H-1)/2), which is where a renderer with a
        symmetric frustum (pybullet, OpenGL) puts it; the image then spans exactly ``hfov_deg`` edge to edge.
        """
        if not 0 < hfov_deg < 180:
            raise CameraModelError(f'horizontal field of view must be in (0, 180) degrees, got {hfov_deg}')
        width, height = _image_size(width, height)
        f = width / 2.0 / math.tan(math.radians(hfov_deg) / 2.0)
        return cls.pinhole(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.D != 0))

    @property
    def hfov_deg(self) -> float:
        """Angle between the rays through the left and right image edges (ignoring distortion)."""
        return math.degrees(math.atan((self.cx + 0.5) / self.fx) + math.atan((self.width - 0.5 - self.cx) / self.fx))

    @property
    def vfov_deg(self) -> float:
        """Angle between the rays through the top and bottom image edges (ignoring distortion)."""
        return math.degrees(math.atan((self.cy + 0.5) / self.fy) + math.atan((self.height - 0.5 - self.cy) / self.fy))

    def _opencv_D(self) -> np.ndarray:
        if self.distortion_model == EQUIDISTANT:
            return self.D
        length = next(n for n in _OPENCV_D_LENGTHS if n >= self.D.size)
        return np.pad(self.D, (0, length - self.D.size))

    def project(self, points_cam) -> np.ndarray:
        """Pixels (N, 2) of points (N, 3) in the camera optical frame, distortion applied.

        Rows that are not finite or lie on or behind the image plane (z <= 0) come back as NaN rows.
        """
        points, out, ok = _rows(points_cam, 3, 'points_cam')
        ok[ok] = points[ok, 2] > 0
        if not ok.any():
            return out
        pts = points[ok]
        if not self.has_distortion:
            out[ok] = pts[:, :2] / pts[:, 2:] * [self.fx, self.fy] + [self.cx, self.cy]
            return out
        zero = np.zeros((3, 1))
        if self.distortion_model == EQUIDISTANT:
            pixels, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), zero, zero, self.K, self.D)
        else:
            pixels, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), zero, zero, self.K, self._opencv_D())
        out[ok] = pixels.reshape(-1, 2)
        return out

    def pixel_indices(self, pixels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cols, rows, inside) of pixels (N, 2): the nearest pixel's integer indices and whether it lies in the image
        (NaN rows, e.g. points behind the camera, do not)."""
        cols, rows = np.round(np.nan_to_num(np.asarray(pixels, dtype=np.float64), nan=-1.0)).astype(int).T
        return cols, rows, (cols >= 0) & (cols < self.width) & (rows >= 0) & (rows < self.height)

    def normalize(self, pixels) -> np.ndarray:
        """Undistorted normalised camera coordinates ((u - cx) / fx, (v - cy) / fy) of pixels (N, 2), i.e. (x/z, y/z).

        This is the Normalised Camera Coordinate Space (NCCS) of RoboKeyGen (Tian et al., §III-A.2): 2D keypoints in
        it no longer depend on the intrinsics, so one 2D-to-3D lifting model serves every camera. Non-finite rows
        (missing keypoints) stay NaN rows.
        """
        px, out, ok = _rows(pixels, 2, 'pixels')
        if not ok.any():
            return out
        if not self.has_distortion:
            out[ok] = (px[ok] - [self.cx, self.cy]) / [self.fx, self.fy]
        elif self.distortion_model == EQUIDISTANT:
            out[ok] = cv2.fisheye.undistortPoints(px[ok].reshape(-1, 1, 2), self.K, self.D).reshape(-1, 2)
        else:
            out[ok] = _undistort_points(px[ok].reshape(-1, 1, 2), self.K, self._opencv_D()).reshape(-1, 2)
        return out

    def undistort_pixels(self, pixels) -> np.ndarray:
        """Where pixels (N, 2) would lie in a distortion-free image with the same K; NaN rows stay NaN."""
        return self.normalize(pixels) * [self.fx, self.fy] + [self.cx, self.cy]
