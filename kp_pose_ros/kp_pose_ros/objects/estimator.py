"""The rigid-object pipeline per frame, in one place: the nodes, `kp-pose eval object_pose` and the benchmark all
call ObjectPoseEstimator, so what is measured is what runs.

Detections (YOLOv10) -> keypoints on square crops, all crops of the frame in one batch -> per detection PnP + RANSAC
against the object's model keypoints, optional depth refinement and agreement -> rejected when the fit is poor ->
symmetric objects' rotations canonicalised -> stable instance ids (tracking). Each step's time is recorded so the
stages can be reported separately (and on /diagnostics).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kp_pose_ros.objects.detector import Detections, YoloV10Detector
from kp_pose_ros.objects.keypoint_model import ObjectKeypointModel
from kp_pose_ros.objects.models import ObjectModel
from kp_pose_ros.objects.pose import ObjectPoseConfig, canonical_rotation, fit_object_pose
from kp_pose_ros.objects.tracking import InstanceTracker
from kp_pose_ros.paths import model_file

# Model points used to check a pose against depth: a fixed-size, seeded subset of each mesh's vertices.
DEPTH_CHECK_POINTS = 500


@dataclass
class ObjectEstimatorConfig:
    """Per-frame policy. `classes` filters the detector's class names (empty: every class the keypoint model has)."""

    score_threshold: float = 0.3
    classes: tuple[str, ...] = ()
    max_detections: int = 30
    use_depth: bool = True
    min_pose_score: float = 0.0
    # LINEMOD-style scenes hold each object once: keep the best-scored pose per class.
    one_per_class: bool = False
    track: bool = True
    tracking_max_distance_m: float = 0.05
    tracking_max_age_s: float = 1.0
    pose: ObjectPoseConfig = field(default_factory=ObjectPoseConfig)


@dataclass(frozen=True)
class ObjectPose:
    """One object instance: its pose (camera <- model, metres) and the evidence for it."""

    obj_id: int
    name: str
    box: np.ndarray  # xyxy, image pixels
    detection_score: float
    T_cam_obj: np.ndarray
    score: float  # the pose hypothesis score (objects.pose)
    inlier_ratio: float
    reprojection_rms_px: float
    depth_agreement: float  # NaN without depth
    keypoints_px: np.ndarray
    keypoint_confidence: np.ndarray
    instance_id: int = -1


@dataclass
class ObjectFrameResult:
    detections: Detections
    poses: list[ObjectPose]
    rejected: list[tuple[str, str]]  # (class name, why)
    stage_ms: dict[str, float]


class ObjectPoseSolver:
    """The pose stage on its own (the pose node runs just this): per detection, PnP against the object's model
    keypoints, depth refinement and check, rejection, canonical rotations and instance ids.

    `keypoints_3d` maps class names to (K, 3) model keypoints (metres); `models` (BOP meshes by class name, optional)
    give the symmetries and the points for the depth check."""

    def __init__(self, keypoints_3d: dict[str, np.ndarray], obj_ids: dict[str, int],
                 models: dict[str, ObjectModel] | None = None, config: ObjectEstimatorConfig | None = None):
        self.keypoints_3d, self.obj_ids = keypoints_3d, obj_ids
        self.config = config or ObjectEstimatorConfig()
        self._check_points, self._symmetries = {}, {}
        rng = np.random.default_rng(0)
        for name, model in (models or {}).items():
            vertices = np.asarray(model.mesh.vertices)
            pick = rng.choice(len(vertices), min(DEPTH_CHECK_POINTS, len(vertices)), replace=False)
            self._check_points[name] = vertices[pick]
            if model.symmetric:
                self._symmetries[name] = model.symmetry_transforms()
        self.tracker = InstanceTracker(max_distance_m=self.config.tracking_max_distance_m,
                                       max_age_s=self.config.tracking_max_age_s)

    def reset(self) -> None:
        """Forget tracked instances (new ids from the next frame)."""
        self.tracker.reset()

    def solve(self, names: list[str], boxes: np.ndarray, detection_scores: np.ndarray, pixels: np.ndarray,
              confidence: np.ndarray, K: np.ndarray, depth_m: np.ndarray | None = None,
              stamp_s: float | None = None) -> tuple[list[ObjectPose], list[tuple[str, str]]]:
        """(poses, rejected (name, why)) for detections of known classes with their keypoints (N, K, 2) and
        confidences (N, K) in image pixels."""
        config = self.config
        depth = depth_m if config.use_depth else None
        poses, rejected = [], []
        for i, name in enumerate(names):
            if name not in self.keypoints_3d:
                rejected.append((name, 'no model keypoints for this class'))
                continue
            x0, y0, x1, y1 = np.asarray(boxes[i], float)
            fit = fit_object_pose(self.keypoints_3d[name], pixels[i], confidence[i], K, config.pose, depth_m=depth,
                                  model_points=self._check_points.get(name), side_px=max(x1 - x0, y1 - y0))
            if not fit.ok or fit.score < config.min_pose_score:
                rejected.append((name, fit.message if not fit.ok else
                                 f'pose score {fit.score:.2f} below {config.min_pose_score}'))
                continue
            poses.append(ObjectPose(self.obj_ids[name], name, np.asarray(boxes[i], float).copy(),
                                    float(detection_scores[i]), fit.T_cam_obj, float(fit.score),
                                    float(fit.inlier_ratio), float(fit.reprojection_rms_px),
                                    float(fit.depth_agreement), np.asarray(pixels[i]), np.asarray(confidence[i])))
        if config.one_per_class:
            best = {}
            for pose in poses:
                if pose.name not in best or pose.score > best[pose.name].score:
                    best[pose.name] = pose
            poses = list(best.values())
        return self._identify(poses, stamp_s), rejected

    def _identify(self, poses: list[ObjectPose], stamp_s: float | None) -> list[ObjectPose]:
        """Instance ids from the tracker, and symmetric objects' rotations made canonical (closest to the track's
        previous pose, else to the camera frame), so a published frame does not jump between equivalent poses."""
        if not poses:
            return poses
        ids = np.full(len(poses), -1)
        if self.config.track and stamp_s is not None:
            ids = self.tracker.update(stamp_s, np.array([p.obj_id for p in poses]),
                                      np.array([p.T_cam_obj[:3, 3] for p in poses]))
        out = []
        for pose, instance in zip(poses, ids):
            T = pose.T_cam_obj
            if pose.name in self._symmetries:
                reference = self.tracker.pose(int(instance)) if instance >= 0 else None
                T = canonical_rotation(T, self._symmetries[pose.name], reference)
            if instance >= 0:
                self.tracker.set_pose(int(instance), T)
            out.append(ObjectPose(**{**pose.__dict__, 'T_cam_obj': T, 'instance_id': int(instance)}))
        return out


class ObjectPoseEstimator:
    """Detector + keypoint model + ObjectPoseSolver, for one process (eval, benchmark, demo)."""

    def __init__(self, detector: YoloV10Detector, keypoint_model: ObjectKeypointModel,
                 models: dict[int, ObjectModel] | None = None, config: ObjectEstimatorConfig | None = None):
        self.detector, self.keypoint_model = detector, keypoint_model
        self.config = config or ObjectEstimatorConfig()
        km = keypoint_model
        by_id = {obj_id: name for obj_id, name in zip(km.obj_ids, km.names)}
        self.solver = ObjectPoseSolver(
            {name: points for name, points in zip(km.names, km.keypoints_3d)},
            {name: obj_id for obj_id, name in by_id.items()},
            {by_id[obj_id]: model for obj_id, model in (models or {}).items() if obj_id in by_id}, self.config)

    def reset(self) -> None:
        self.solver.reset()

    def estimate(self, rgb: np.ndarray, K: np.ndarray, depth_m: np.ndarray | None = None,
                 stamp_s: float | None = None, detections: Detections | None = None) -> ObjectFrameResult:
        """Poses of the objects in one RGB image (uint8, HxWx3) with intrinsics K; depth (metres, NaN holes) refines
        and checks them when given and enabled. `detections` given: those boxes instead of the detector's (to
        measure the keypoint and pose stages on their own)."""
        config = self.config
        stage_ms = {}
        if detections is None:
            start = time.perf_counter()
            detections = self.detector.detect(rgb, score_threshold=config.score_threshold,
                                              max_detections=config.max_detections)
            stage_ms['detect'] = 1000.0 * (time.perf_counter() - start)
        names = [detections.names[int(c)] for c in detections.class_ids]
        index = [self.keypoint_model.index_of(n) for n in names]
        chosen = [i for i, (n, k) in enumerate(zip(names, index))
                  if k is not None and (not config.classes or n in config.classes)]
        start = time.perf_counter()
        keypoints = self.keypoint_model.predict(rgb, detections.boxes[chosen], np.array([index[i] for i in chosen]))
        stage_ms['keypoints'] = 1000.0 * (time.perf_counter() - start)
        start = time.perf_counter()
        poses, rejected = self.solver.solve([names[i] for i in chosen], detections.boxes[chosen],
                                            detections.scores[chosen], keypoints.pixels, keypoints.confidence, K,
                                            depth_m, stamp_s)
        stage_ms['pose'] = 1000.0 * (time.perf_counter() - start)
        return ObjectFrameResult(detections, poses, rejected, stage_ms)


def model_set_files(model_set: str) -> tuple[Path, Path]:
    """(detector, keypoint model) ONNX files of an object set: `<set>_detector.onnx` and `<set>_keypoints.onnx` in the
    package's models/, or in the folder `model_set` names when it is a path."""
    names = (f'{model_set}_detector.onnx', f'{model_set}_keypoints.onnx')
    if '/' in model_set:
        return Path(names[0]), Path(names[1])
    return model_file(names[0]), model_file(names[1])


def load_estimator(model_set: str, models: dict[int, ObjectModel] | None = None,
                   config: ObjectEstimatorConfig | None = None, providers: str = 'auto',
                   threads: int = 0) -> ObjectPoseEstimator:
    """The estimator of an object set's shipped models (model_set_files)."""
    detector_path, keypoints_path = model_set_files(model_set)
    return ObjectPoseEstimator(YoloV10Detector(detector_path, providers=providers, threads=threads),
                               ObjectKeypointModel(keypoints_path, providers=providers, threads=threads),
                               models, config)
