"""Part box poses, sizes and joint values from voted per-part keypoints (PAGE's last stage), and their metrics.

A part's three keypoints are known in normalised part space (u, the category's), so a similarity fit kp ~ s R u + t
gives the part's box frame [R, t] in the camera and its size s (the box diagonal). Unseen instances have no mesh, so
the refinement against the part's segmented points uses the box itself (s * the category's proportions) as the
model: observed points must lie on or inside it. Only points *outside* are penalised, because parts are not solid
boxes (an open cabinet carcass, a drawer) and visible points may lie well inside. A known instance (e.g. the robot)
can instead pass its own cloud for point-to-point ICP. Either refinement keeps the keypoints as a prior, takes a
bounded step with a robust loss and is kept only when it lowers the combined cost.

fit_object then ties the parts together: one rotation per kinematic tree, a value per revolute joint, free
translations and sizes, fitted jointly to every part's keypoints, so that noise on one part's keypoints is averaged
with its neighbours' instead of bending the object.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial import ConvexHull, cKDTree
from scipy.spatial.transform import Rotation

from kp_pose_ros.articulated.categories import CategoryJoint, CategoryModel, joint_value
from kp_pose_ros.core.rigid_fit import DegenerateGeometryError, umeyama


@dataclass(frozen=True)
class PartFitConfig:
    keypoint_sigma_m: float = 0.005  # expected keypoint error: weighs keypoints against points, scales confidence
    point_sigma_m: float = 0.003     # expected depth point error
    points_weight: float = 3.0       # a part's observed points together count as this many keypoints
    loss_scale: float = 3.0          # soft-L1 threshold in sigmas
    max_points: int = 512            # observed points used per part (a fixed-seed subsample)
    max_rotation_deg: float = 10.0   # bounds of the refinement step
    max_translation: float = 0.1     # fraction of the part's size
    max_log_scale: float = 0.1
    refine_scale: bool = True
    max_keypoint_rms_increase_m: float = 0.005  # a refinement that moves the keypoint fit further is refused
    icp_iterations: int = 10


@dataclass(frozen=True)
class ObjectFitConfig:
    part: PartFitConfig = field(default_factory=PartFitConfig)
    joint_margin: float = 0.05  # rad or m beyond the category's joint limits
    revolute_grid: int = 72     # joint values tried for a child that has only two keypoints


@dataclass(frozen=True, eq=False)
class PartFit:
    """camera <- part box frame, the box diagonal (m), keypoint rms (m), confidence in [0, 1]; NaN pose if not ok."""

    T_cam_box: np.ndarray
    scale: float
    rms_m: float
    confidence: float
    ok: bool
    reason: str = ''
    refined: bool = False  # the point refinement was kept


@dataclass(frozen=True, eq=False)
class ObjectFit:
    """Joint-consistent part boxes; parts that could not be located have NaN poses, confidence 0 and a reason."""

    parts: tuple[PartFit, ...]  # the independent per-part fits the joint fit started from
    T_cam_box: np.ndarray       # (P, 4, 4)
    scales: np.ndarray          # (P,)
    extents: np.ndarray         # (P, 3)
    confidence: np.ndarray      # (P,)
    located: np.ndarray         # (P,) bool
    joint_values: np.ndarray    # (J,), NaN where undetermined
    reasons: tuple[str, ...]
    ok: bool


def _valid(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.isfinite(keypoints).all(axis=1) & np.isfinite(scores) & (scores > 0)


def _scores(scores, n: int) -> np.ndarray:
    return np.ones(n) if scores is None else np.asarray(scores, float).reshape(n)


def _confidence(scores: np.ndarray, valid: np.ndarray, rms: float, sigma: float) -> float:
    score = float(np.clip(np.where(valid, scores, 0.0), 0.0, 1.0).mean())
    return score * float(np.exp(-0.5 * (rms / sigma) ** 2))


def _subsample(points, limit: int) -> np.ndarray | None:
    if points is None:
        return None
    points = np.asarray(points, float).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) > limit:
        points = points[np.sort(np.random.default_rng(0).choice(len(points), limit, replace=False))]
    return points if len(points) else None


def _outside(points: np.ndarray, R: np.ndarray, t: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Distance of each camera-frame point outside the box [R, t] with half extents `half` (0 inside)."""
    local = (points - t) @ R
    return np.linalg.norm(np.maximum(np.abs(local) - half, 0.0), axis=1)


def _soft_l1_cost(f: np.ndarray, c: float) -> float:
    z = (f / c) ** 2
    return float(0.5 * c * c * np.sum(2.0 * (np.sqrt(1.0 + z) - 1.0)))


def _transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _not_ok(reason: str) -> PartFit:
    return PartFit(np.full((4, 4), np.nan), float('nan'), float('nan'), 0.0, False, reason)


def fit_part(u, keypoints, scores=None, points=None, *, proportions=None, model_points=None,
             config: PartFitConfig = PartFitConfig()) -> PartFit:
    """Box pose and size of one part from its keypoints (3, 3) in metres, their canonical normalised positions u and
    scores (NaN rows and score 0 are skipped), refined against its observed points (N, 3) when given: against the box
    `proportions` (unit-norm extents, the category's) or, for a known instance, its cloud `model_points` (M, 3) in
    normalised part space."""
    u, kp = np.asarray(u, float).reshape(-1, 3), np.asarray(keypoints, float).reshape(-1, 3)
    w = _scores(scores, len(kp))
    valid = _valid(kp, w)
    if valid.sum() < 3:
        return _not_ok(f'only {int(valid.sum())} of {len(kp)} keypoints are valid; a part pose needs 3')
    try:
        R, t, s = umeyama(u[valid], kp[valid], w[valid], with_scale=True)
    except DegenerateGeometryError:
        return _not_ok('the valid keypoints are collinear: the rotation about their line is undetermined')
    if not s > 0:
        return _not_ok('the keypoints give no positive scale')
    if points is not None and proportions is None and model_points is None:
        raise ValueError('observed points need a model to refine against: the box proportions or an instance cloud')
    pts = _subsample(points, config.max_points)
    refined = False
    if pts is not None:
        R, t, s, refined = _refine_part(u[valid], kp[valid], w[valid], pts, R, t, s, proportions, model_points,
                                        config)
    rms = float(np.sqrt(np.mean(np.sum((s * u[valid] @ R.T + t - kp[valid]) ** 2, axis=1))))
    return PartFit(_transform(R, t), float(s), rms, _confidence(w, valid, rms, config.keypoint_sigma_m), True, '',
                   refined)


def _refine_part(u, kp, w, pts, R0, t0, s0, proportions, model_points, config: PartFitConfig):
    """Bounded robust refinement of (R, t, s) against the points with the keypoints as a prior; the initial pose is
    returned unless the combined cost drops and the keypoint rms stays close to the keypoint-only fit's."""
    kp_w = np.sqrt(w)[:, None] / config.keypoint_sigma_m
    pt_w = np.sqrt(config.points_weight / len(pts)) / config.point_sigma_m
    tree = cKDTree(np.asarray(model_points, float)) if model_points is not None else None
    half = None if proportions is None else np.asarray(proportions, float) / 2

    def pose(x):
        s = s0 * np.exp(x[6]) if len(x) == 7 else s0
        return Rotation.from_rotvec(x[:3]).as_matrix() @ R0, t0 + x[3:6], s

    def residuals(x, targets=None):
        R, t, s = pose(x)
        kp_res = ((s * u @ R.T + t - kp) * kp_w).ravel()
        if tree is None:
            pt_res = _outside(pts, R, t, s * half)
        else:
            pt_res = np.linalg.norm(s * targets @ R.T + t - pts, axis=1)
        return np.concatenate([kp_res, pt_w * pt_res])

    def correspondences(x):
        R, t, s = pose(x)
        return tree.data[tree.query(((pts - t) @ R) / s)[1]]

    rot, trans = np.radians(config.max_rotation_deg), config.max_translation * s0
    lo = np.array([-rot] * 3 + [-trans] * 3 + ([-config.max_log_scale] if config.refine_scale else []))
    x0 = np.zeros(len(lo))
    x = x0
    for _ in range(1 if tree is None else config.icp_iterations):
        targets = None if tree is None else correspondences(x)
        result = least_squares(residuals, x, bounds=(lo, -lo), loss='soft_l1', f_scale=config.loss_scale,
                               kwargs={'targets': targets}, max_nfev=100)
        step = np.abs(result.x - x).max()
        x = result.x
        if step < 1e-9:
            break

    def cost(x):
        return _soft_l1_cost(residuals(x, None if tree is None else correspondences(x)), config.loss_scale)

    R, t, s = pose(x)
    rms0 = np.sqrt(np.mean(np.sum((s0 * u @ R0.T + t0 - kp) ** 2, axis=1)))
    rms = np.sqrt(np.mean(np.sum((s * u @ R.T + t - kp) ** 2, axis=1)))
    if cost(x) < cost(x0) and rms <= rms0 + config.max_keypoint_rms_increase_m:
        return R, t, s, True
    return R0, t0, s0, False


def _rot(axis: np.ndarray, q: float) -> np.ndarray:
    return Rotation.from_rotvec(axis * q).as_matrix()


def _child_rotation(joint: CategoryJoint, R_parent: np.ndarray, q: float) -> np.ndarray:
    R = R_parent @ joint.origin_rotation
    return R @ _rot(joint.origin_rotation.T @ joint.axis, q) if joint.type == 'revolute' else R


def _similarity(R: np.ndarray, u: np.ndarray, kp: np.ndarray) -> tuple[np.ndarray, float, float]:
    """t, s (least squares) with kp ~ s R u + t for a known R, and the rms."""
    ru = u @ R.T
    ru_c, kp_c = ru - ru.mean(axis=0), kp - kp.mean(axis=0)
    s = float(np.sum(ru_c * kp_c) / np.sum(ru_c * ru_c))
    t = kp.mean(axis=0) - s * ru.mean(axis=0)
    return t, s, float(np.sqrt(np.mean(np.sum((s * ru + t - kp) ** 2, axis=1))))


def fit_object(model: CategoryModel, method: str, keypoints, scores=None, part_points=None,
               config: ObjectFitConfig = ObjectFitConfig()) -> ObjectFit:
    """Joint-consistent box poses, sizes and joint values of one object from its parts' keypoints (P, 3, 3), scores
    (P, 3) and optional segmented points (a list of P (N_k, 3) arrays or None).

    Each part is first fitted alone (fit_part). The joint fit then has one rotation per kinematic tree (the root, and
    the child of any revolute joint whose value the keypoints cannot fix), a value per revolute joint (within the
    limits plus a margin; prismatic joints leave the rotation unchanged and their value is read off the fitted boxes),
    and a translation and log-size per located part. A part with fewer than 3 valid keypoints is still located when
    its rotation follows from the chain and 2 keypoints remain (a revolute child's value is then searched over its
    range); otherwise it is reported not located, never guessed.
    """
    cfg = config.part
    u = model.keypoints(method)
    P = len(model.parts)
    kp = np.asarray(keypoints, float).reshape(P, -1, 3)
    w = np.ones(kp.shape[:2]) if scores is None else np.asarray(scores, float).reshape(kp.shape[:2])
    part_points = [None] * P if part_points is None else list(part_points)
    if len(part_points) != P:
        raise ValueError(f'part_points has {len(part_points)} entries for {P} parts')
    proportions = np.stack([p.proportions for p in model.parts])
    fits = tuple(fit_part(u[k], kp[k], w[k], part_points[k], proportions=proportions[k], config=cfg)
                 for k in range(P))
    valid = np.stack([_valid(kp[k], w[k]) for k in range(P)])
    n_valid = valid.sum(axis=1)

    parent_joint = {j.child: i for i, j in enumerate(model.joints)}
    children = {k: [i for i, j in enumerate(model.joints) if j.parent == k] for k in range(P)}
    roots = [k for k in range(P) if k not in parent_joint]
    order = list(roots)
    for k in order:
        order += [model.joints[i].child for i in children[k]]

    def prismatic_fit(k):
        """A fitted part rigidly rotating with k (k itself or a prismatic descendant): R_k from its rotation."""
        if fits[k].ok:
            return fits[k].T_cam_box[:3, :3]
        for i in children[k]:
            joint = model.joints[i]
            if joint.type == 'prismatic':
                R = prismatic_fit(joint.child)
                if R is not None:
                    return R @ joint.origin_rotation.T
        return None

    R0 = np.full((P, 3, 3), np.nan)
    tops, tied, q0, reasons = [], {}, {}, [''] * P
    for k in order:
        i = parent_joint.get(k)
        joint = None if i is None else model.joints[i]
        parent_known = joint is not None and np.isfinite(R0[joint.parent]).all()
        if joint is not None and joint.type == 'prismatic':
            if parent_known:
                R0[k] = _child_rotation(joint, R0[joint.parent], 0.0)
            continue
        if joint is not None and parent_known and (fits[k].ok or n_valid[k] >= 2):
            lo, hi = joint.lower - config.joint_margin, joint.upper + config.joint_margin
            if fits[k].ok:
                q = joint_value(joint, _transform(R0[joint.parent], np.zeros(3)), fits[k].T_cam_box, 1.0)
            else:  # two keypoints: the value that fits them best
                grid = np.linspace(lo, hi, config.revolute_grid)
                errors = [_similarity(_child_rotation(joint, R0[joint.parent], g), u[k][valid[k]], kp[k][valid[k]])[2]
                          for g in grid]
                q = grid[int(np.argmin(errors))]
            q0[i] = float(np.clip(q, lo + 1e-9, hi - 1e-9))
            tied[i] = (lo, hi)
            R0[k] = _child_rotation(joint, R0[joint.parent], q0[i])
            continue
        R = prismatic_fit(k)
        if R is not None:
            tops.append(k)
            R0[k] = R
        else:
            reasons[k] = 'its rotation follows neither from its keypoints nor through a joint'

    located = np.array([np.isfinite(R0[k]).all() and n_valid[k] >= 2 for k in range(P)])
    for k in range(P):
        if not located[k] and not reasons[k]:
            reasons[k] = f'only {int(n_valid[k])} valid keypoints: too few to place it along the kinematic chain'
    t0, s0 = np.zeros((P, 3)), np.ones(P)
    for k in np.flatnonzero(located):
        if fits[k].ok:
            t0[k], s0[k] = fits[k].T_cam_box[:3, 3], fits[k].scale
        else:
            t0[k], s0[k], _ = _similarity(R0[k], u[k][valid[k]], kp[k][valid[k]])
    for k in np.flatnonzero(located & ~(s0 > 0)):
        located[k], reasons[k] = False, 'its keypoints give no positive size'
    pts = [_subsample(part_points[k], cfg.max_points) if located[k] else None for k in range(P)]
    loc = np.flatnonzero(located)
    joints = sorted(tied)
    n_rot, n_loc = 3 * len(tops), 4 * len(loc)
    kp_w = np.sqrt(np.where(valid, w, 0.0))[..., None] / cfg.keypoint_sigma_m

    def unpack(x):
        R = R0.copy()
        for m, k in enumerate(tops):
            R[k] = Rotation.from_rotvec(x[3 * m:3 * m + 3]).as_matrix() @ R0[k]
        q = dict(zip(joints, x[n_rot + n_loc:]))
        for k in order:
            i = parent_joint.get(k)
            if i is not None and (i in tied or model.joints[i].type == 'prismatic'):
                R[k] = _child_rotation(model.joints[i], R[model.joints[i].parent], q.get(i, 0.0))
        t, s = t0.copy(), s0.copy()
        block = x[n_rot:n_rot + n_loc].reshape(-1, 4)
        t[loc], s[loc] = block[:, :3], np.exp(block[:, 3])
        return R, t, s, q

    def residuals(x):
        R, t, s, _ = unpack(x)
        out = []
        for k in loc:
            res = s[k] * u[k] @ R[k].T + t[k] - kp[k]
            out.append(np.where(valid[k][:, None], res * kp_w[k], 0.0).ravel())
            if pts[k] is not None:
                scale = np.sqrt(cfg.points_weight / len(pts[k])) / cfg.point_sigma_m
                out.append(scale * _outside(pts[k], R[k], t[k], s[k] * proportions[k] / 2))
        return np.concatenate(out)

    x0 = np.concatenate([np.zeros(n_rot), np.column_stack([t0[loc], np.log(s0[loc])]).ravel(),
                         [q0[i] for i in joints]])
    lower = np.full(len(x0), -np.inf)
    upper = np.full(len(x0), np.inf)
    lower[n_rot + n_loc:] = [tied[i][0] for i in joints]
    upper[n_rot + n_loc:] = [tied[i][1] for i in joints]
    x = x0
    if len(loc):
        x = least_squares(residuals, x0, bounds=(lower, upper), loss='soft_l1', f_scale=cfg.loss_scale,
                          x_scale='jac', max_nfev=200 * len(x0)).x
    R, t, s, q = unpack(x)

    T = np.full((P, 4, 4), np.nan)
    scales, confidence = np.full(P, np.nan), np.zeros(P)
    for k in loc:
        T[k] = _transform(R[k], t[k])
        scales[k] = s[k]
        sel = valid[k]
        rms = float(np.sqrt(np.mean(np.sum((s[k] * u[k][sel] @ R[k].T + t[k] - kp[k][sel]) ** 2, axis=1))))
        confidence[k] = _confidence(w[k], sel, rms, cfg.keypoint_sigma_m)
    values = np.full(len(model.joints), np.nan)
    for i, joint in enumerate(model.joints):
        if i in q:
            values[i] = q[i]
        elif joint.type == 'prismatic' and located[joint.parent] and located[joint.child]:
            values[i] = joint_value(joint, T[joint.parent], T[joint.child], scales[joint.parent])
    return ObjectFit(fits, T, scales, scales[:, None] * proportions, confidence, located, values, tuple(reasons),
                     bool(located.all() and np.isfinite(values).all()))


# ------------------------------------------------------------------------------------------------------------ metrics
def joint_error(q_est, q_true, types) -> np.ndarray:
    """Per-joint absolute error: radians (wrapped to [0, pi]) for revolute joints, metres for prismatic ones."""
    diff = np.asarray(q_est, float) - np.asarray(q_true, float)
    revolute = np.array([t == 'revolute' for t in types], bool)
    wrapped = np.abs(np.arctan2(np.sin(diff), np.cos(diff)))
    return np.where(revolute, wrapped, np.abs(diff))


def _corners(T: np.ndarray, extents: np.ndarray) -> np.ndarray:
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    return (signs * extents / 2) @ T[:3, :3].T + T[:3, 3]


_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count('1') == 1])


def _in_box(points: np.ndarray, T: np.ndarray, extents: np.ndarray, tol: float) -> np.ndarray:
    return np.all(np.abs((points - T[:3, 3]) @ T[:3, :3]) <= extents / 2 + tol, axis=1)


def _crossings(corners: np.ndarray, T: np.ndarray, extents: np.ndarray, tol: float) -> np.ndarray:
    """Where the edges of a box (its 8 corners, camera frame) cross the faces of box (T, extents)."""
    local = (corners - T[:3, 3]) @ T[:3, :3]
    a, b = local[_EDGES[:, 0]], local[_EDGES[:, 1]]
    found = []
    for axis in range(3):
        for side in (-0.5, 0.5):
            d = b[:, axis] - a[:, axis]
            with np.errstate(divide='ignore', invalid='ignore'):
                f = (side * extents[axis] - a[:, axis]) / d
            hit = (np.abs(d) > 1e-15) & (f >= 0) & (f <= 1)
            found.append(a[hit] + f[hit, None] * (b[hit] - a[hit]))
    points = np.concatenate(found)
    points = points[np.all(np.abs(points) <= extents / 2 + tol, axis=1)]
    return points @ T[:3, :3].T + T[:3, 3]


def box_iou_3d(T_a, extents_a, T_b, extents_b) -> float:
    """Exact IoU of two oriented boxes (box frame poses, full extents): the intersection is the convex hull of the
    corners of each box inside the other and the crossings of each box's edges with the other's faces."""
    T_a, T_b = np.asarray(T_a, float), np.asarray(T_b, float)
    ea, eb = np.asarray(extents_a, float), np.asarray(extents_b, float)
    vol_a, vol_b = float(np.prod(ea)), float(np.prod(eb))
    tol = 1e-9 * max(ea.max(), eb.max())
    ca, cb = _corners(T_a, ea), _corners(T_b, eb)
    points = np.concatenate([ca[_in_box(ca, T_b, eb, tol)], cb[_in_box(cb, T_a, ea, tol)],
                             _crossings(ca, T_b, eb, tol), _crossings(cb, T_a, ea, tol)])
    if len(points) < 4:
        return 0.0
    try:
        inter = ConvexHull(points).volume
    except (RuntimeError, ValueError):  # QhullError (a RuntimeError): flat or degenerate, so no volume in common
        return 0.0
    return float(inter / (vol_a + vol_b - inter))
