"""Camera-to-robot calibration from many per-frame estimates: a sliding window, a robust aggregate, its uncertainty.

Frames and naming: ``T_a_b`` is the pose of frame b in frame a (it maps coordinates in b to coordinates in a), as in
``TransformTree.lookup(a, b)``. Per-frame estimates come as ``T_base_cam``: the camera's *optical* frame (REP 103
optical axes: x right, y down, z forward; the frame id of the image header) in the robot base frame.

Why a robust aggregate: a single frame's pose has centimetre-level noise, and now and then a frame is grossly wrong
(a keypoint put on the wrong link, motion blur). The consensus is the geometric median (translation) and the geodesic
L1 median on SO(3) (rotation), which tolerate up to half the samples being wrong; samples too far from it are
rejected; the calibration is the weighted mean of the rest (the mean is the efficient estimate once outliers are
gone); their spread around it is reported so the user knows how far to trust it.

Why the frame spread is not the error: frames of one view (one arm configuration seen by the camera) share the
detector's bias for that view, so thirty frames of one view scatter by millimetres around a pose centimetres off.
Samples that carry their arm configuration (joint positions) are grouped into configurations, and the reported
uncertainty counts each configuration as one independent draw: a cluster-robust standard error (the frames'
deviations summed within a configuration before squaring), with Student's t on the effective number of
configurations minus one. One configuration gives an unbounded (infinite) uncertainty, two or three a wide one.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.stats import chi
from scipy.stats import t as student_t

from kp_pose_ros.core.transforms import as_transform, invert_transform, make_transform

# Below this a Weiszfeld step counts as converged: far under any physically meaningful pose difference.
_WEISZFELD_TOLERANCE = 1e-12
_WEISZFELD_ITERATIONS = 200
# Weiszfeld divides by the distance to each sample; this keeps a sample that coincides with the iterate finite.
_MIN_DISTANCE = 1e-15
# Two-sided 95 % coverage of the reported uncertainty bounds.
_BOUND_QUANTILE = 0.975
# Error that no number of views averages away, added in quadrature to the bounds: the estimator's own bias (surface
# model against the measured depth, the depth scale fit, depth-to-colour registration). Measured: the largest
# 30-frame RGB-D calibration error over 10 development sequences with realistic depth sensors was 4.4 mm / 0.28 deg
# (README, robot_calib benchmark); rounded up.
SYSTEMATIC_TRANSLATION_M = 0.005
SYSTEMATIC_ROTATION_DEG = 0.3


class CalibrationError(ValueError):
    """The samples cannot give a calibration: too few, or too inconsistent to agree on one pose."""


@dataclass(frozen=True, eq=False)
class CalibrationSample:
    """One frame's estimate of the camera pose.

    ``weight`` is the caller's relative confidence in the frame (e.g. its number of inlier keypoints); it scales the
    sample in the consensus and in the mean. ``residuals_px`` holds the frame's reprojection residual per keypoint
    under its own pose, NaN for keypoints that were missing or rejected; ``keypoint_names`` names those entries.
    ``joint_positions`` is the arm configuration the frame saw (radians or metres, in the robot's joint order):
    frames of one configuration share one view's bias. Without it a sample's view is unknown.
    """

    stamp_ns: int
    T_base_cam: np.ndarray
    weight: float = 1.0
    residuals_px: np.ndarray | None = None
    keypoint_names: tuple[str, ...] | None = None
    joint_positions: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'stamp_ns', int(self.stamp_ns))
        object.__setattr__(self, 'T_base_cam', as_transform(self.T_base_cam, 'T_base_cam').copy())
        weight = float(self.weight)
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f'sample weight must be a finite number > 0, got {self.weight}')
        object.__setattr__(self, 'weight', weight)
        if self.residuals_px is not None:
            residuals = np.array(self.residuals_px, dtype=np.float64)
            if residuals.ndim != 1:
                raise ValueError(f'residuals_px must have shape (N,), got {residuals.shape}')
            if np.any(np.isinf(residuals)) or np.any(residuals < 0):
                raise ValueError('residuals_px must be >= 0 and finite (NaN marks a missing keypoint)')
            object.__setattr__(self, 'residuals_px', residuals)
        if self.keypoint_names is not None:
            names = tuple(self.keypoint_names)
            if self.residuals_px is None or len(names) != len(self.residuals_px):
                raise ValueError(f'keypoint_names ({len(names)}) need residuals_px of the same length, got '
                                 f'{None if self.residuals_px is None else len(self.residuals_px)}')
            object.__setattr__(self, 'keypoint_names', names)
        if self.joint_positions is not None:
            joints = np.array(self.joint_positions, dtype=np.float64)
            if joints.ndim != 1 or not np.all(np.isfinite(joints)):
                raise ValueError(f'joint_positions must be finite with shape (J,), got {joints.tolist()}')
            object.__setattr__(self, 'joint_positions', joints)

    @property
    def mean_residual_px(self) -> float:
        """Mean residual over the keypoints the frame used; NaN when it has none."""
        if self.residuals_px is None or not np.any(np.isfinite(self.residuals_px)):
            return math.nan
        return float(np.nanmean(self.residuals_px))


class CalibrationWindow:
    """The latest samples: at most ``max_samples``, none older than ``max_age_ns`` before the newest one.

    Age is measured in sample stamps, not wall-clock time, so a replayed bag or simulated clock behaves the same.
    Thread-safe: service callbacks may capture and compute from different executor threads.
    """

    def __init__(self, max_samples: int, max_age_ns: int | None = None) -> None:
        if int(max_samples) < 1:
            raise ValueError(f'max_samples must be >= 1, got {max_samples}')
        if max_age_ns is not None and int(max_age_ns) <= 0:
            raise ValueError(f'max_age_ns must be > 0 or None, got {max_age_ns}')
        self.max_samples = int(max_samples)
        self.max_age_ns = None if max_age_ns is None else int(max_age_ns)
        self._samples: deque[CalibrationSample] = deque(maxlen=self.max_samples)
        self._lock = threading.Lock()

    def add(self, sample: CalibrationSample) -> None:
        if not isinstance(sample, CalibrationSample):
            raise TypeError(f'expected a CalibrationSample, got {type(sample).__name__}')
        with self._lock:
            self._samples.append(sample)
            if self.max_age_ns is not None:
                oldest_kept = max(s.stamp_ns for s in self._samples) - self.max_age_ns
                self._samples = deque((s for s in self._samples if s.stamp_ns >= oldest_kept),
                                      maxlen=self.max_samples)

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()

    @property
    def samples(self) -> list[CalibrationSample]:
        """A snapshot, oldest first: aggregating it is safe while other threads keep adding."""
        with self._lock:
            return list(self._samples)

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """The aggregate pose and how much to trust it.

    ``T_base_cam``: camera optical frame in the robot base frame. ``inliers``: per input sample, in input order.
    Spreads are one standard deviation of the inlier samples around the aggregate (NaN with one inlier): translation
    per base-frame axis, rotation as the rotation vector from the aggregate to each sample, per axis of the
    aggregate's frame. ``effective_samples`` is Kish's effective count of the weighted inliers (their number when
    the weights are equal); the standard errors divide the spread by its square root. Thresholds are the distances
    beyond which a sample was rejected. Residual statistics are means over the inlier samples of their own
    per-frame residuals (pixels; NaN where a keypoint was never observed).

    ``configurations``: per input sample, the index of its arm configuration (see group_configurations).
    ``num_configurations`` counts those among the inliers; ``effective_configurations`` is their Kish count (by
    total weight). The ``*_sem_xyz_*`` fields are the aggregate's standard error per axis with each configuration
    as one independent draw (cluster-robust; within-view noise included); ``*_view_std_*`` is the RMS distance of a
    configuration's own mean from the aggregate, i.e. how far a calibration from one view typically is.
    """

    T_base_cam: np.ndarray
    inliers: np.ndarray
    translation_std_xyz_m: np.ndarray
    rotation_std_xyz_deg: np.ndarray
    effective_samples: float
    translation_threshold_m: float
    rotation_threshold_deg: float
    keypoint_names: tuple[str, ...] | None
    keypoint_mean_residual_px: np.ndarray
    mean_residual_px: float
    configurations: np.ndarray
    num_configurations: int
    effective_configurations: float
    translation_sem_xyz_m: np.ndarray
    rotation_sem_xyz_deg: np.ndarray
    translation_view_std_m: float
    rotation_view_std_deg: float
    systematic_translation_m: float = 0.0
    systematic_rotation_deg: float = 0.0

    @property
    def num_samples(self) -> int:
        return int(len(self.inliers))

    @property
    def num_inliers(self) -> int:
        return int(np.count_nonzero(self.inliers))

    @property
    def translation_std_m(self) -> float:
        """RMS distance of the inlier translations from the aggregate (the 3D spread)."""
        return float(np.linalg.norm(self.translation_std_xyz_m))

    @property
    def rotation_std_deg(self) -> float:
        """RMS angle between the inlier rotations and the aggregate."""
        return float(np.linalg.norm(self.rotation_std_xyz_deg))

    @property
    def translation_stderr_m(self) -> float:
        """Expected RMS translation error of the aggregate itself, if the samples' errors are independent."""
        return self.translation_std_m / math.sqrt(self.effective_samples)

    @property
    def rotation_stderr_deg(self) -> float:
        """Expected RMS rotation error of the aggregate itself, if the samples' errors are independent."""
        return self.rotation_std_deg / math.sqrt(self.effective_samples)

    @property
    def coverage_factor(self) -> float:
        """Student's t (97.5 %) on effective_configurations - 1 degrees of freedom; inf for one configuration."""
        dof = self.effective_configurations - 1.0
        return float(student_t.ppf(_BOUND_QUANTILE, dof)) if dof > 1e-9 else math.inf

    @property
    def translation_uncertainty_m(self) -> float:
        """~95 % bound on the aggregate's translation error, view bias included; inf when it cannot be bounded.

        t times the RMS standard error (exact for an error along one axis, conservative when spread over three), and
        the systematic term in quadrature."""
        return math.hypot(_bound(self.coverage_factor, self.translation_sem_xyz_m), self.systematic_translation_m)

    @property
    def rotation_uncertainty_deg(self) -> float:
        """~95 % bound on the aggregate's rotation error (degrees), as translation_uncertainty_m."""
        return math.hypot(_bound(self.coverage_factor, self.rotation_sem_xyz_deg), self.systematic_rotation_deg)


def _bound(factor: float, sem_xyz: np.ndarray) -> float:
    return math.inf if math.isinf(factor) else factor * float(np.linalg.norm(sem_xyz))


def group_configurations(joint_positions: Sequence[np.ndarray | None], tolerance_rad: float) -> np.ndarray:
    """Configuration index per sample: samples whose joints all lie within tolerance_rad of a configuration's
    first sample belong to it (first come, first served, so a configuration revisited later is the same view).
    Samples without joints share one configuration: nothing tells their views apart."""
    if not tolerance_rad >= 0:
        raise ValueError(f'tolerance_rad must be >= 0, got {tolerance_rad}')
    leaders: list[np.ndarray | None] = []
    labels = np.empty(len(joint_positions), dtype=int)
    for i, joints in enumerate(joint_positions):
        labels[i] = next((j for j, lead in enumerate(leaders) if _same_view(lead, joints, tolerance_rad)), -1)
        if labels[i] < 0:
            labels[i] = len(leaders)
            leaders.append(joints)
    return labels


def _same_view(a: np.ndarray | None, b: np.ndarray | None, tolerance_rad: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and float(np.max(np.abs(a - b), initial=0.0)) <= tolerance_rad


def _clustered(offsets: np.ndarray, weights: np.ndarray, labels: np.ndarray):
    """Cluster-robust (CR1) standard error per axis of the weighted mean whose deviations are ``offsets``, the
    weighted RMS distance of the cluster means from it, and the Kish count of clusters by total weight."""
    clusters = np.unique(labels)
    total = weights.sum()
    sums = np.stack([weights[labels == c] @ offsets[labels == c] for c in clusters])
    cluster_weight = np.array([weights[labels == c].sum() for c in clusters])
    count = len(clusters)
    if count < 2:
        return np.full(3, np.inf), math.nan, 1.0
    sem = np.sqrt(count / (count - 1) * (sums ** 2).sum(axis=0)) / total
    means = sums / cluster_weight[:, None]
    view_std = math.sqrt(count / (count - 1) * float(cluster_weight @ (means ** 2).sum(axis=1)) / total)
    return sem, view_std, float(cluster_weight.sum() ** 2 / (cluster_weight ** 2).sum())


def _weiszfeld(start, offsets: Callable, move: Callable, weights: np.ndarray):
    """Weighted L1 median by Weiszfeld's iteration in a tangent space.

    ``offsets(center)`` gives each sample's (n, 3) offset from center; ``move(center, step)`` applies a step. Used for
    the geometric median of translations (vector differences) and the geodesic median of rotations (rotation vectors
    in the center's frame): the same iteration in two geometries.
    """
    center = start
    for _ in range(_WEISZFELD_ITERATIONS):
        v = offsets(center)
        coef = weights / np.maximum(np.linalg.norm(v, axis=1), _MIN_DISTANCE)
        step = coef @ v / coef.sum()
        center = move(center, step)
        if np.linalg.norm(step) < _WEISZFELD_TOLERANCE:
            break
    return center


def _spread(offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-axis weighted standard deviation of offsets from the estimate (reliability weights: unbiased, ddof=1
    when the weights are equal); NaN for a single sample, whose spread is unknown."""
    v1, v2 = weights.sum(), (weights ** 2).sum()
    denominator = v1 - v2 / v1
    if denominator <= 0:
        return np.full(3, np.nan)
    return np.sqrt(weights @ offsets ** 2 / denominator)


def _keypoint_residuals(samples: Sequence[CalibrationSample], inliers: np.ndarray):
    """Keypoint names, per-keypoint mean residual and overall mean residual over the inlier samples."""
    lengths = {None if s.residuals_px is None else len(s.residuals_px) for s in samples}
    if lengths == {None}:
        return None, np.zeros(0), math.nan
    if len(lengths) != 1:
        raise ValueError('all samples must report residuals for the same keypoints; got lengths '
                         f'{sorted(lengths, key=str)}')
    names = {s.keypoint_names for s in samples} - {None}
    if len(names) > 1:
        raise ValueError(f'samples name their keypoints differently: {sorted(names)}')
    residuals = np.stack([s.residuals_px for s, keep in zip(samples, inliers) if keep])
    seen = np.isfinite(residuals)
    counts = seen.sum(axis=0)
    sums = np.where(seen, residuals, 0.0).sum(axis=0)
    per_keypoint = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    overall = float(sums.sum() / counts.sum()) if counts.sum() > 0 else math.nan
    return (names.pop() if names else None), per_keypoint, overall


def aggregate(samples: Sequence[CalibrationSample], *, min_samples: int = 5,
              translation_floor_m: float = 0.01, rotation_floor_deg: float = 1.0,
              inlier_quantile: float = 0.999, min_inlier_fraction: float = 0.5,
              configuration_tolerance_rad: float = 0.1, systematic_translation_m: float = 0.0,
              systematic_rotation_deg: float = 0.0) -> CalibrationResult:
    """Robust calibration from per-frame estimates.

    A sample is an outlier when its translation is further from the consensus than
    ``max(translation_floor_m, k * median distance)``, or its rotation further than
    ``max(rotation_floor_deg, k * median angle)``. For isotropic Gaussian noise the distances follow a chi
    distribution with 3 degrees of freedom, and ``k = chi3.ppf(inlier_quantile) / chi3.ppf(0.5)`` keeps that
    fraction of good samples (k = 2.62 for 0.999); the median makes the scale estimate immune to the outliers. The
    floors stop a very consistent window from rejecting good samples over sub-millimetre differences.
    Raises CalibrationError with fewer than ``min_samples`` samples, or when fewer than ``min_inlier_fraction`` of
    them agree with the consensus (the window does not hold one consistent camera pose).
    ``configuration_tolerance_rad`` groups samples into arm configurations (group_configurations) for the
    uncertainty; ``systematic_*`` is the error no number of views averages away (SYSTEMATIC_*), added in
    quadrature to the bounds.
    """
    if min_samples < 1:
        raise ValueError(f'min_samples must be >= 1, got {min_samples}')
    if translation_floor_m < 0 or rotation_floor_deg < 0:
        raise ValueError(f'the floors must be >= 0, got {translation_floor_m} m and {rotation_floor_deg} deg')
    if not 0.5 < inlier_quantile < 1:
        raise ValueError(f'inlier_quantile must lie in (0.5, 1), got {inlier_quantile}')
    if not 0 < min_inlier_fraction <= 1:
        raise ValueError(f'min_inlier_fraction must lie in (0, 1], got {min_inlier_fraction}')
    samples = list(samples)
    for i, sample in enumerate(samples):
        if not isinstance(sample, CalibrationSample):
            raise TypeError(f'sample {i} is a {type(sample).__name__}, not a CalibrationSample')
    n = len(samples)
    if n < min_samples:
        raise CalibrationError(f'{n} samples captured; at least {min_samples} are needed for a calibration')

    T = np.stack([s.T_base_cam for s in samples])
    t = T[:, :3, 3]
    rotations = Rotation.from_matrix(T[:, :3, :3])
    w = np.array([s.weight for s in samples])

    t_median = _weiszfeld(np.average(t, axis=0, weights=w), lambda c: t - c, lambda c, step: c + step, w)
    # The chordal mean starts the rotation median: it is closed-form and insensitive to quaternion signs.
    r_median = _weiszfeld(rotations.mean(weights=w), lambda c: (c.inv() * rotations).as_rotvec(),
                          lambda c, step: c * Rotation.from_rotvec(step), w)
    distance = np.linalg.norm(t - t_median, axis=1)
    angle = np.degrees((r_median.inv() * rotations).magnitude())
    k = chi(3).ppf(inlier_quantile) / chi(3).ppf(0.5)
    t_threshold = max(translation_floor_m, k * float(np.median(distance)))
    r_threshold = max(rotation_floor_deg, k * float(np.median(angle)))
    inliers = (distance <= t_threshold) & (angle <= r_threshold)
    num_inliers = int(np.count_nonzero(inliers))
    if num_inliers == 0 or num_inliers < min_inlier_fraction * n:
        raise CalibrationError(
            f'only {num_inliers} of {n} samples agree within {t_threshold * 100:.1f} cm and {r_threshold:.2f} deg '
            f'of their consensus ({min_inlier_fraction:.0%} required): the estimates are inconsistent (did the '
            'camera move, or is the robot model wrong?)')

    w_in = w[inliers]
    t_mean = np.average(t[inliers], axis=0, weights=w_in)
    r_mean = rotations[inliers].mean(weights=w_in)
    rotation_offsets = np.degrees((r_mean.inv() * rotations[inliers]).as_rotvec())
    names, per_keypoint, overall = _keypoint_residuals(samples, inliers)
    labels = group_configurations([s.joint_positions for s in samples], configuration_tolerance_rad)
    t_sem, t_view, effective = _clustered(t[inliers] - t_mean, w_in, labels[inliers])
    r_sem, r_view, _ = _clustered(rotation_offsets, w_in, labels[inliers])
    return CalibrationResult(
        T_base_cam=make_transform(r_mean.as_matrix(), t_mean),
        inliers=inliers,
        translation_std_xyz_m=_spread(t[inliers] - t_mean, w_in),
        rotation_std_xyz_deg=_spread(rotation_offsets, w_in),
        effective_samples=float(w_in.sum() ** 2 / (w_in ** 2).sum()),
        translation_threshold_m=t_threshold,
        rotation_threshold_deg=r_threshold,
        keypoint_names=names,
        keypoint_mean_residual_px=per_keypoint,
        mean_residual_px=overall,
        configurations=labels,
        num_configurations=int(len(np.unique(labels[inliers]))),
        effective_configurations=effective,
        translation_sem_xyz_m=t_sem,
        rotation_sem_xyz_deg=r_sem,
        translation_view_std_m=t_view,
        rotation_view_std_deg=r_view,
        systematic_translation_m=float(systematic_translation_m),
        systematic_rotation_deg=float(systematic_rotation_deg),
    )


def compose_root(T_base_optical, T_root_optical) -> np.ndarray:
    """T_base_root: the transform to publish as base -> camera root frame.

    ``T_base_optical`` is the calibration (the optical frame, e.g. ``camera_color_optical_frame``, in the robot base
    frame). ``T_root_optical`` is the driver's static transform from the camera's root frame (e.g. ``camera_link``,
    the top of the camera's own TF tree) to that same optical frame: the lookup(root, optical) result, which with
    RealSense composes camera_link -> camera_color_frame -> camera_color_optical_frame. Publishing base -> root keeps
    one parent per frame in TF, so the driver's subtree hangs under the robot and the optical frame lands exactly at
    the calibrated pose: T_base_root @ T_root_optical == T_base_optical.
    """
    T_base_optical = as_transform(T_base_optical, 'T_base_optical')
    return T_base_optical @ invert_transform(as_transform(T_root_optical, 'T_root_optical'))
