"""Batched forward kinematics of the links of a URDF that carry keypoints.

The diffusion lifter and the pose fitter evaluate thousands of joint vectors at once (training data, hypotheses),
so every joint's local transform is written as a fixed linear combination of precomputed 4x4 matrices,
    revolute:  origin @ Rot(axis, q) = O + sin(q) O K + (1 - cos(q)) O K^2   (Rodrigues, K the padded axis skew matrix)
    prismatic: origin @ Trans(q axis) = O + q O P                          (P holds the axis in its translation column)
and a batch costs one broadcast multiply-add and one stacked matmul per joint.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from kp_pose_ros.robot.urdf import Joint, URDFModel

PANDA_BASE_LINK = 'panda_link0'
# DREAM's seven Panda keypoints: the base and the links where the arm bends.
PANDA_KEYPOINT_LINKS = ('panda_link0', 'panda_link2', 'panda_link3', 'panda_link4', 'panda_link6', 'panda_link7',
                        'panda_hand')
PANDA_DENSE_KEYPOINT_LINKS = tuple(f'panda_link{i}' for i in range(8)) + ('panda_hand',)

_FIXED, _REVOLUTE, _PRISMATIC = 0, 1, 2


def _skew4(axis: np.ndarray) -> np.ndarray:
    x, y, z = axis
    K = np.zeros((4, 4))
    K[:3, :3] = [[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]]
    return K


def _joint_terms(joint: Joint) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """Kind and the matrices that, scaled by sin(q) and 1 - cos(q) (revolute) or q (prismatic), add to the origin."""
    T0 = joint.origin
    if joint.type == 'fixed':
        return _FIXED, None, None
    if joint.type == 'prismatic':
        P = np.zeros((4, 4))
        P[:3, 3] = joint.axis
        return _PRISMATIC, T0 @ P, None
    K = _skew4(joint.axis)
    return _REVOLUTE, T0 @ K, T0 @ K @ K


class RobotKinematics:
    """Forward kinematics from ``base_link`` to each keypoint link, over the union of their chains.

    ``joint_names`` are the moving joints of that union in chain order (for a serial arm: the arm's joints, base
    first); joint vectors q are ordered the same way.
    """

    def __init__(self, urdf_model: URDFModel, base_link: str, keypoint_links: Sequence[str]) -> None:
        keypoint_links = tuple(keypoint_links)
        if not keypoint_links:
            raise ValueError('keypoint_links is empty: name at least one link')
        if len(set(keypoint_links)) != len(keypoint_links):
            raise ValueError(f'keypoint_links lists a link twice: {keypoint_links}')
        joints: list[Joint] = []
        seen: set[str] = set()
        for link in keypoint_links:
            for joint in urdf_model.chain(base_link, link):
                if joint.name not in seen:
                    seen.add(joint.name)
                    joints.append(joint)
        self.base_link = base_link
        self.keypoint_links = keypoint_links
        # Chains run base to tip, so a joint's parent link is always listed before its child.
        self.link_names: tuple[str, ...] = (base_link,) + tuple(joint.child for joint in joints)
        link_index = {name: i for i, name in enumerate(self.link_names)}
        self._keypoint_index = np.array([link_index[link] for link in keypoint_links])

        moving = [joint for joint in joints if joint.type != 'fixed']
        self.joint_names: tuple[str, ...] = tuple(joint.name for joint in moving)
        self.joint_types: tuple[str, ...] = tuple(joint.type for joint in moving)
        self.lower = np.array([joint.limits.lower for joint in moving])
        self.upper = np.array([joint.limits.upper for joint in moving])
        self.velocity_limits = np.array([joint.limits.velocity for joint in moving])
        for array in (self.lower, self.upper, self.velocity_limits):
            array.flags.writeable = False
        q_index = {joint.name: i for i, joint in enumerate(moving)}

        self._parents = [link_index[joint.parent] for joint in joints]
        self._q_index = [q_index.get(joint.name, -1) for joint in joints]
        terms = [_joint_terms(joint) for joint in joints]
        self._kinds = [kind for kind, _, _ in terms]
        self._origins = [joint.origin for joint in joints]
        self._first = [first for _, first, _ in terms]
        self._second = [second for _, _, second in terms]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def link_poses(self, q: ArrayLike) -> np.ndarray:
        """Poses base <- link of every link in ``link_names``: (B, L, 4, 4) for q (B, J), (L, 4, 4) for q (J,)."""
        batch, single = self._as_batch(q)
        sin, one_minus_cos = np.sin(batch), 1.0 - np.cos(batch)
        poses = np.empty((batch.shape[0], len(self.link_names), 4, 4))
        poses[:, 0] = np.eye(4)
        for step, (parent, kind, qi) in enumerate(zip(self._parents, self._kinds, self._q_index)):
            origin = self._origins[step]
            if kind == _FIXED:
                local = origin
            elif kind == _REVOLUTE:
                local = (origin + sin[:, qi, None, None] * self._first[step]
                         + one_minus_cos[:, qi, None, None] * self._second[step])
            else:
                local = origin + batch[:, qi, None, None] * self._first[step]
            np.matmul(poses[:, parent], local, out=poses[:, step + 1])
        return poses[0] if single else poses

    def keypoints(self, q: ArrayLike) -> np.ndarray:
        """Origins of the keypoint links in the base frame: (B, N, 3) for q (B, J), (N, 3) for q (J,)."""
        return self.link_poses(q)[..., :3, 3][..., self._keypoint_index, :]

    def clip_to_limits(self, q: ArrayLike) -> np.ndarray:
        """q moved onto the nearest joint limit where it lies outside; continuous joints are left as they are."""
        batch, single = self._as_batch(q)
        clipped = np.clip(batch, self.lower, self.upper)
        return clipped[0] if single else clipped

    def sample_joints(self, rng: np.random.Generator, batch_size: int, margin: float = 0.0) -> np.ndarray:
        """(B, J) joint vectors uniform within [lower + margin, upper - margin] (continuous joints: [-pi, pi]).

        ``margin`` is in the joints' units (rad, or m for prismatic joints) and keeps samples off the hard stops.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f'rng must be a numpy.random.Generator, got {type(rng).__name__}')
        if int(batch_size) != batch_size or batch_size < 0:
            raise ValueError(f'batch_size must be a non-negative integer, got {batch_size}')
        if not np.isfinite(margin) or margin < 0:
            raise ValueError(f'margin must be a finite number >= 0, got {margin}')
        low = np.where(np.isfinite(self.lower), self.lower, -np.pi) + margin
        high = np.where(np.isfinite(self.upper), self.upper, np.pi) - margin
        too_narrow = [name for name, lo, hi in zip(self.joint_names, low, high) if lo > hi]
        if too_narrow:
            raise ValueError(f'margin {margin} is more than half the range of joint(s) {", ".join(too_narrow)}')
        return rng.uniform(low, high, size=(int(batch_size), self.num_joints))

    def _as_batch(self, q: ArrayLike) -> tuple[np.ndarray, bool]:
        q = np.asarray(q, dtype=np.float64)
        J = self.num_joints
        if q.ndim not in (1, 2) or q.shape[-1] != J:
            raise ValueError(f'joint values must have shape ({J},) or (B, {J}) for joints '
                             f'{", ".join(self.joint_names)}; got shape {q.shape}')
        if not np.all(np.isfinite(q)):
            raise ValueError('joint values contain NaN or infinite entries')
        return (q[None], True) if q.ndim == 1 else (q, False)
