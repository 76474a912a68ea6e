"""The articulated pipeline, one frame at a time: the estimator the nodes, `kp-pose eval articulated_pose`, the
benchmark and the demo all call, so what is measured is what runs.

depth -> back-projected points (robot.depth_alignment.depth_view: holes and flying pixels dropped) -> object
regions (segmentation) -> observations -> voting network (one batch) -> per object: its category (the category
whose parts hold most of the points' probability), part labels, radius voting for every part keypoint (voting) or
the directly regressed keypoints (the ablation) [ArticulatedVoter, the voting node] -> joint-consistent part boxes
and joint values from the keypoints (part_fit) and stable instance ids (objects.tracking) [ArticulatedFitter, the
fitting node]. The nodes pass the keypoints and each part's labelled points (for the fit's box refinement).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from kp_pose_ros.articulated.categories import CategoryModel
from kp_pose_ros.articulated.observation import NUM_POINTS, observe
from kp_pose_ros.articulated.part_fit import ObjectFit, ObjectFitConfig, fit_object
from kp_pose_ros.articulated.segmentation import SegmentationConfig, find_regions
from kp_pose_ros.articulated.voting import VotingConfig, vote_keypoints
from kp_pose_ros.articulated.voting_model import ArticulatedVotingModel, CategorySlot, NetworkOutput
from kp_pose_ros.core.camera import CameraModel
from kp_pose_ros.objects.tracking import InstanceTracker
from kp_pose_ros.robot.depth_alignment import depth_view

KEYPOINT_SOURCES = ('voting', 'direct')
STAGES = ('depth', 'segmentation', 'network', 'voting', 'fit')


@dataclass(frozen=True)
class ArticulatedEstimatorConfig:
    method: str = 'learned'              # keypoint set the network's radii are read for: learned | fps | box
    keypoints_from: str = 'voting'       # voting | direct (regressed keypoints: the ablation)
    num_points: int = NUM_POINTS
    min_object_points: int = 100         # points labelled as the category's parts needed to estimate an object
    min_part_points: int = 15            # fewer labelled points leave a part's box unrefined
    max_part_points: int = 256           # labelled points per part passed on to the fit (an even stride)
    min_confidence: float = 0.05         # objects whose best part is below this are dropped
    seed: int = 0
    voting: VotingConfig = field(default_factory=VotingConfig)
    fit: ObjectFitConfig = field(default_factory=ObjectFitConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    track_distance_m: float = 0.10
    track_age_s: float = 1.0

    def __post_init__(self):
        if self.keypoints_from not in KEYPOINT_SOURCES:
            raise ValueError(f'keypoints_from must be one of {KEYPOINT_SOURCES}, got {self.keypoints_from!r}')


@dataclass(frozen=True, eq=False)
class VotedObject:
    """The voting stage's output for one object (what the voting node publishes as 3D keypoints)."""

    category: str
    keypoints: np.ndarray         # (P, 3, 3) voted (or regressed) keypoints, camera frame; NaN where none
    keypoint_scores: np.ndarray   # (P, 3) in [0, 1]
    region: np.ndarray | None     # (H, W) bool: the pixels it was found in (None when rebuilt from a message)
    box: tuple[float, float, float, float]  # the region's pixel box (x0, y0, x1, y1)
    score: float                  # mean probability of its points being the category's parts
    points: int                   # points labelled as its parts
    part_points: tuple            # per part, (n, 3) camera-frame points labelled as it (at most max_part_points),
                                  # or None where too few: the fit's box refinement


@dataclass(frozen=True, eq=False)
class VotedFrame:
    objects: list[VotedObject]
    timings_s: dict[str, float]
    regions: int
    reason: str = ''              # why nothing came out, for the node's log


@dataclass(frozen=True, eq=False)
class ArticulatedObject:
    """One object: part box poses in the camera frame, sizes, confidences, joint values; NaN where not located."""

    category: str
    part_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    joint_types: tuple[str, ...]
    fit: ObjectFit
    voted: VotedObject
    instance_id: int = -1

    @property
    def T_cam_box(self) -> np.ndarray:
        return self.fit.T_cam_box

    @property
    def joint_values(self) -> np.ndarray:
        return self.fit.joint_values

    @property
    def confidence(self) -> float:
        return float(np.max(self.fit.confidence)) if len(self.fit.confidence) else 0.0


@dataclass(frozen=True, eq=False)
class ArticulatedFrame:
    objects: list[ArticulatedObject]
    timings_s: dict[str, float]
    regions: int
    reason: str = ''


class ArticulatedVoter:
    """Depth to voted part keypoints (the voting node). Not thread-safe (random sampling): one caller."""

    def __init__(self, network: ArticulatedVotingModel,
                 config: ArticulatedEstimatorConfig = ArticulatedEstimatorConfig()):
        if config.method not in network.methods:
            raise ValueError(f'the network has radii for {network.methods}, not {config.method!r}')
        self.network, self.config = network, config
        self._method = network.methods.index(config.method)
        self._slots = list(network.categories.values())
        self._rng = np.random.default_rng(config.seed)

    def vote(self, rgb: np.ndarray, depth_m: np.ndarray, camera: CameraModel, regions=None) -> VotedFrame:
        """Voted keypoints of the objects in an RGB-D frame (depth in metres, aligned to `camera`); `regions` (list
        of (H, W) bool masks) replaces the depth segmentation (e.g. true masks, to measure the rest alone)."""
        timings = dict.fromkeys(STAGES, 0.0)
        t = time.perf_counter()
        view = depth_view(depth_m, camera)
        timings['depth'] = time.perf_counter() - t
        reason = ''
        if regions is None:
            t = time.perf_counter()
            found = find_regions(view, self._rng, self.config.segmentation)
            regions, reason = found.masks, found.reason
            timings['segmentation'] = time.perf_counter() - t
        observed = [(m, observe(rgb, view.points, m, self._rng, self.config.num_points)) for m in regions]
        observed = [(m, o) for m, o in observed if o is not None]
        if not observed:
            return VotedFrame([], timings, len(regions), reason or 'no region has enough depth points')
        t = time.perf_counter()
        outputs = self.network.infer([o for _, o in observed])
        timings['network'] = time.perf_counter() - t
        t = time.perf_counter()
        objects = [v for v in (self._voted(m, o, out) for (m, o), out in zip(observed, outputs)) if v is not None]
        timings['voting'] = time.perf_counter() - t
        if not objects and not reason:
            reason = f'{len(observed)} region(s), none recognised as {", ".join(self.network.categories)}'
        return VotedFrame(objects, timings, len(regions), reason)

    def _voted(self, mask, obs, out: NetworkOutput) -> VotedObject | None:
        prob = out.probabilities
        slot: CategorySlot = max(self._slots, key=lambda s: prob[:, s.classes].sum())
        own = np.concatenate([prob[:, :1], prob[:, slot.classes]], axis=1)
        labels = own.argmax(axis=1)  # 0 background, k + 1 part k
        fg = labels > 0
        if fg.sum() < self.config.min_object_points:
            return None
        P = len(slot.model.parts)
        part_share = own[fg, 1:].sum(axis=1)  # each point's probability of being one of the category's parts
        if self.config.keypoints_from == 'voting':
            radii = out.radii[self._method][fg][:, slot.channels]
            vote = vote_keypoints(obs.points[fg], radii, part_share, self.config.voting)
            keypoints, scores = vote.keypoints, vote.scores
        else:
            keypoints, scores = out.direct[slot.channels], np.ones(3 * P)
        part_points = []
        for k in range(P):
            pts = obs.points[labels == k + 1]
            step = max(1, -(-len(pts) // self.config.max_part_points))
            part_points.append(pts[::step] if len(pts) >= self.config.min_part_points else None)
        return VotedObject(slot.model.category, keypoints.reshape(P, 3, 3), scores.reshape(P, 3), mask, obs.box,
                           float(part_share.mean()), int(fg.sum()), tuple(part_points))


class ArticulatedFitter:
    """Voted keypoints to joint-consistent part boxes, joint values and stable ids (the fitting node). One caller."""

    def __init__(self, categories: dict[str, CategoryModel],
                 config: ArticulatedEstimatorConfig = ArticulatedEstimatorConfig()):
        self.categories, self.config = dict(categories), config
        self._index = {name: k for k, name in enumerate(self.categories)}
        self.tracker = InstanceTracker(config.track_distance_m, config.track_age_s)

    def reset(self) -> None:
        """Forget the instance tracks (a new scene, a looped bag)."""
        self.tracker.reset()

    def fit(self, voted: list[VotedObject], stamp_s: float | None = None) -> list[ArticulatedObject]:
        """Objects from voted keypoints (unknown categories are skipped); `stamp_s` (seconds) assigns stable ids."""
        objects = []
        for v in voted:
            model = self.categories.get(v.category)
            if model is None:
                continue
            fit = fit_object(model, self.config.method, v.keypoints, v.keypoint_scores, v.part_points, self.config.fit)
            if not fit.located.any() or float(np.max(fit.confidence)) < self.config.min_confidence:
                continue
            objects.append(ArticulatedObject(model.category, model.part_names, model.joint_names,
                                             tuple(j.type for j in model.joints), fit, v))
        if stamp_s is None or not objects:
            return objects
        roots = np.array([o.T_cam_box[0, :3, 3] for o in objects])
        finite = np.all(np.isfinite(roots), axis=1)
        ids = np.full(len(objects), -1)
        if finite.any():
            ids[finite] = self.tracker.update(stamp_s, [self._index[o.category] for o, f in zip(objects, finite) if f],
                                              roots[finite])
        return [replace(o, instance_id=int(i)) for o, i in zip(objects, ids)]


class ArticulatedPoseEstimator:
    """Both stages in one process: what `kp-pose eval articulated_pose`, the benchmark and the demo run (the graph
    runs the same two objects in its two nodes)."""

    def __init__(self, network: ArticulatedVotingModel,
                 config: ArticulatedEstimatorConfig = ArticulatedEstimatorConfig()):
        self.config = config
        self.voter = ArticulatedVoter(network, config)
        self.fitter = ArticulatedFitter({name: s.model for name, s in network.categories.items()}, config)

    @property
    def network(self) -> ArticulatedVotingModel:
        return self.voter.network

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.fitter.categories)

    def reset(self) -> None:
        self.fitter.reset()

    def estimate(self, rgb: np.ndarray, depth_m: np.ndarray, camera: CameraModel, regions=None,
                 stamp_s: float | None = None) -> ArticulatedFrame:
        voted = self.voter.vote(rgb, depth_m, camera, regions)
        t = time.perf_counter()
        objects = self.fitter.fit(voted.objects, stamp_s)
        timings = {**voted.timings_s, 'fit': time.perf_counter() - t}
        reason = voted.reason or ('' if objects or not voted.objects else 'no voted object could be fitted')
        return ArticulatedFrame(objects, timings, voted.regions, reason)


def load_estimator(model_path, config: ArticulatedEstimatorConfig = ArticulatedEstimatorConfig(),
                   providers: str = 'auto', threads: int = 0) -> ArticulatedPoseEstimator:
    return ArticulatedPoseEstimator(ArticulatedVotingModel(model_path, providers=providers, threads=threads), config)
