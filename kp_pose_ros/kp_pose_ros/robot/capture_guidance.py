"""Capture guidance for a calibration: are the captured views diverse enough, and which arm poses would help most.

Why: each arm configuration seen by the camera carries its own detector bias, so a calibration is only as good as
the number and spread of the distinct configurations it averages (robot/calibration.py), and keypoints seen in one
corner of the image constrain the camera poorly elsewhere. ROS-free: the calibration manager turns the result into
its compute response and /diagnostics.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kp_pose_ros.robot.calibration import group_configurations

# Named 3 x 3 image regions, row-major from the top-left.
_REGIONS = ('top left', 'top', 'top right', 'left', 'centre', 'right', 'bottom left', 'bottom', 'bottom right')


@dataclass(frozen=True)
class CaptureTargets:
    """What counts as diverse enough: distinct configurations, the median per-joint spread (standard deviation of
    the configurations' joints, radians) and the fraction of the 3 x 3 image regions any keypoint fell in."""

    min_configurations: int = 6
    min_joint_spread_rad: float = 0.2
    min_image_coverage: float = 0.5


@dataclass(frozen=True)
class CaptureGuidance:
    """``joint_spread_rad``: per joint, the standard deviation over the distinct configurations (0 with one).
    ``image_coverage``: NaN when no keypoint pixels were given. ``suggestions``: joint configurations from the
    candidates, farthest from what was captured first; empty without candidates. ``missing``: what is lacking,
    in words; empty when the capture is diverse enough."""

    num_samples: int
    num_configurations: int
    joint_names: tuple[str, ...]
    joint_spread_rad: np.ndarray
    image_coverage: float
    uncovered_regions: tuple[str, ...]
    suggestions: np.ndarray
    missing: tuple[str, ...]

    @property
    def diverse(self) -> bool:
        return not self.missing

    @property
    def least_varied_joints(self) -> tuple[str, ...]:
        """Joint names, least spread first."""
        return tuple(self.joint_names[i] for i in np.argsort(self.joint_spread_rad, kind='stable'))

    def summary(self) -> str:
        """One line for a service response or a log."""
        head = (f'{self.num_configurations} arm configurations in {self.num_samples} samples'
                + ('' if np.isnan(self.image_coverage) else f', image coverage {self.image_coverage:.0%}'))
        if self.diverse:
            return f'{head}: diverse enough'
        advice = list(self.missing)
        if len(self.suggestions):
            advice.append(f'a pose far from those captured: {np.round(self.suggestions[0], 2).tolist()} rad')
        return f'{head}; {"; ".join(advice)}'


def image_coverage(pixels: Sequence[np.ndarray], image_size: tuple[int, int]) -> tuple[float, tuple[str, ...]]:
    """Fraction of the 3 x 3 regions of a (width, height) image where any keypoint fell, and the regions none did.
    ``pixels``: per sample an (N, 2) array of (x, y); NaN rows are missing keypoints."""
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f'image_size must be positive, got {image_size}')
    points = np.concatenate([np.asarray(p, dtype=float).reshape(-1, 2) for p in pixels] or [np.zeros((0, 2))])
    points = points[np.all(np.isfinite(points), axis=1)]
    inside = points[(points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)]
    cells = set((inside[:, 1] * 3 // height).astype(int) * 3 + (inside[:, 0] * 3 // width).astype(int))
    return len(cells) / 9, tuple(name for i, name in enumerate(_REGIONS) if i not in cells)


def farthest_candidates(captured: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """``count`` candidates picked greedily, each the farthest (max-abs joint distance) from the captured
    configurations and the ones already picked: the poses that add the most new views."""
    chosen = np.zeros((0, candidates.shape[1]))
    for _ in range(min(count, len(candidates))):
        reference = np.concatenate([captured, chosen])
        distance = (np.abs(candidates[:, None, :] - reference[None]).max(axis=2).min(axis=1) if len(reference)
                    else np.zeros(len(candidates)))
        chosen = np.concatenate([chosen, candidates[[int(np.argmax(distance))]]])
    return chosen


def capture_guidance(joint_positions: Sequence[Sequence[float]], joint_names: Sequence[str] = (), *,
                     pixels: Sequence[np.ndarray] | None = None, image_size: tuple[int, int] | None = None,
                     candidates: np.ndarray | None = None, num_suggestions: int = 3,
                     tolerance_rad: float = 0.1, targets: CaptureTargets = CaptureTargets()) -> CaptureGuidance:
    """Judge a capture from its samples' joint positions (one row per sample, the robot's joint order) and, when
    given, their keypoint pixels in an image of ``image_size`` (width, height). ``candidates`` (M, J): reachable
    configurations to suggest from, e.g. drawn within the joint limits (joint_limit_candidates)."""
    joints = np.asarray(joint_positions, dtype=float).reshape(len(joint_positions), -1)
    names = tuple(joint_names) or tuple(f'joint_{i + 1}' for i in range(joints.shape[1]))
    if len(names) != joints.shape[1]:
        raise ValueError(f'{len(names)} joint names for {joints.shape[1]} joint positions')
    labels = group_configurations(list(joints), tolerance_rad)
    distinct = np.stack([joints[labels == c][0] for c in np.unique(labels)]) if len(joints) else joints
    spread = distinct.std(axis=0) if len(distinct) else np.zeros(len(names))
    coverage, uncovered = (np.nan, ()) if pixels is None or image_size is None else image_coverage(pixels, image_size)
    suggestions = (np.zeros((0, len(names))) if candidates is None
                   else farthest_candidates(distinct, np.asarray(candidates, dtype=float), num_suggestions))
    return CaptureGuidance(len(joints), len(distinct), names, spread, coverage, uncovered, suggestions,
                           _missing(len(distinct), names, spread, coverage, uncovered, targets))


def _missing(configurations: int, names, spread: np.ndarray, coverage: float, uncovered, targets) -> tuple[str, ...]:
    missing = []
    if configurations < targets.min_configurations:
        missing.append(f'capture at least {targets.min_configurations - configurations} more distinct arm '
                       'configurations')
    if len(spread) and float(np.median(spread)) < targets.min_joint_spread_rad:
        still = [n for n, s in zip(names, spread) if s < targets.min_joint_spread_rad]
        missing.append(f'move these joints more between captures: {", ".join(still)}')
    if not np.isnan(coverage) and coverage < targets.min_image_coverage:
        missing.append(f'bring the arm into the image regions not yet seen: {", ".join(uncovered)}')
    return tuple(missing)


def joint_limit_candidates(lower: Sequence[float], upper: Sequence[float], count: int = 500,
                           seed: int = 0) -> np.ndarray:
    """``count`` configurations drawn uniformly within the joint limits, kept 10 % away from each limit (seeded,
    so the same capture gets the same advice)."""
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if lower.shape != upper.shape or np.any(~(upper > lower)):
        raise ValueError('joint limits need lower < upper for every joint')
    margin = 0.1 * (upper - lower)
    return np.random.default_rng(seed).uniform(lower + margin, upper - margin, size=(count, len(lower)))
