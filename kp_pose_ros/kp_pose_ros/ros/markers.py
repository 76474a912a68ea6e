"""visualization_msgs builders for RViz: keypoints, skeletons, axes, boxes and meshes.

NaN points are missing keypoints: they are skipped, and so is every edge touching one. Markers expire after
`lifetime_s` (0 = never) so that an object that stops being detected disappears instead of freezing in place.
A marker left with no valid point is sent as a DELETE of its ns/id, which clears the previous one at once.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations, product

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from kp_pose_ros.core.transforms import as_transform, matrix_to_quat_xyzw

DEFAULT_LIFETIME_S = 0.5
_AXIS_COLORS = ((1.0, 0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0))  # x red, y green, z blue


def _color(rgba: Sequence[float]) -> ColorRGBA:
    c = np.asarray(rgba, dtype=np.float64)
    if c.shape != (4,) or not np.all((c >= 0.0) & (c <= 1.0)):
        raise ValueError(f'rgba must be 4 values in [0, 1], got {rgba}')
    return ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=float(c[3]))


def _positive(value: float, name: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a positive finite number, got {value}')
    return float(value)


def _points(points) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 3) array and a mask of its valid (all finite) rows; infinities are errors, NaN rows are missing."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f'points must have shape (N, 3), got {pts.shape}')
    if np.any(np.isinf(pts)):
        raise ValueError('points contain infinite values (use NaN for a missing keypoint)')
    return pts, ~np.any(np.isnan(pts), axis=1)


def _point(p) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def _marker(frame: str, stamp: Time, ns: str, marker_id: int, marker_type: int, lifetime_s: float) -> Marker:
    if not frame:
        raise ValueError('marker frame must be a non-empty frame id')
    if not np.isfinite(lifetime_s) or lifetime_s < 0:
        raise ValueError(f'lifetime_s must be >= 0 (0 = forever), got {lifetime_s}')
    m = Marker()
    m.header.frame_id = frame
    m.header.stamp = stamp
    m.ns = ns
    m.id = int(marker_id)
    m.type = marker_type
    m.action = Marker.ADD
    m.pose.orientation.w = 1.0
    sec, nanosec = divmod(int(round(lifetime_s * 1e9)), 1_000_000_000)
    m.lifetime = Duration(sec=sec, nanosec=nanosec)
    m.frame_locked = False
    return m


def _set_pose(m: Marker, T) -> None:
    T = as_transform(T)
    m.pose.position = _point(T[:3, 3])
    q = matrix_to_quat_xyzw(T[:3, :3])
    m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = map(float, q)


def _delete_if_empty(m: Marker) -> Marker:
    if not m.points:
        m.action = Marker.DELETE
    return m


def keypoint_markers(points, frame: str, stamp: Time, ns: str = 'keypoints', marker_id: int = 0,
                     rgba: Sequence[float] = (0.1, 0.9, 0.1, 1.0), scale: float = 0.02,
                     names: Sequence[str] | None = None,
                     lifetime_s: float = DEFAULT_LIFETIME_S) -> list[Marker]:
    """One SPHERE_LIST of the valid points (diameter `scale`), plus a TEXT_VIEW_FACING label per valid point when
    names are given; labels live in namespace '<ns>/<marker_id>/labels' with the keypoint index as id, so several
    instances never overwrite each other's labels."""
    pts, valid = _points(points)
    scale = _positive(scale, 'scale')
    if names is not None and len(names) != len(pts):
        raise ValueError(f'got {len(names)} names for {len(pts)} points')
    spheres = _marker(frame, stamp, ns, marker_id, Marker.SPHERE_LIST, lifetime_s)
    spheres.scale.x = spheres.scale.y = spheres.scale.z = scale
    spheres.color = _color(rgba)
    spheres.points = [_point(p) for p in pts[valid]]
    markers = [_delete_if_empty(spheres)]
    if names is None:
        return markers
    for i in np.flatnonzero(valid):
        label = _marker(frame, stamp, f'{ns}/{marker_id}/labels', int(i), Marker.TEXT_VIEW_FACING, lifetime_s)
        label.pose.position = _point(pts[i])
        label.scale.z = scale
        label.color = _color(rgba)
        label.text = str(names[i])
        markers.append(label)
    return markers


def skeleton_marker(points, edges: Iterable[tuple[int, int]], frame: str, stamp: Time, ns: str = 'skeleton',
                    marker_id: int = 0, rgba: Sequence[float] = (0.9, 0.9, 0.1, 1.0), width: float = 0.005,
                    lifetime_s: float = DEFAULT_LIFETIME_S) -> Marker:
    """LINE_LIST joining point pairs; an edge with a missing (NaN) end is left out."""
    pts, valid = _points(points)
    m = _marker(frame, stamp, ns, marker_id, Marker.LINE_LIST, lifetime_s)
    m.scale.x = _positive(width, 'width')
    m.color = _color(rgba)
    line_points = []
    for i, j in edges:
        if not (0 <= i < len(pts) and 0 <= j < len(pts)):
            raise ValueError(f'edge ({i}, {j}) refers to a point outside 0..{len(pts) - 1}')
        if valid[i] and valid[j]:
            line_points += [_point(pts[i]), _point(pts[j])]
    m.points = line_points
    return _delete_if_empty(m)


def axes_marker(T, frame: str, stamp: Time, ns: str = 'axes', marker_id: int = 0, length: float = 0.1,
                 width: float = 0.005, lifetime_s: float = DEFAULT_LIFETIME_S) -> Marker:
    """The three axes of pose T as one LINE_LIST with per-vertex colours (x red, y green, z blue)."""
    length = _positive(length, 'length')
    m = _marker(frame, stamp, ns, marker_id, Marker.LINE_LIST, lifetime_s)
    _set_pose(m, T)
    m.scale.x = _positive(width, 'width')
    m.color = _color((1.0, 1.0, 1.0, 1.0))
    tips = length * np.eye(3)
    m.points = [p for tip in tips for p in (Point(), _point(tip))]
    m.colors = [_color(rgba) for rgba in _AXIS_COLORS for _ in range(2)]
    return m


def box_marker(T, size, frame: str, stamp: Time, ns: str = 'box', marker_id: int = 0,
               rgba: Sequence[float] = (0.2, 0.6, 1.0, 1.0), width: float = 0.003,
               lifetime_s: float = DEFAULT_LIFETIME_S) -> Marker:
    """LINE_LIST of the 12 edges of a box of extents `size` (x, y, z) centred on pose T."""
    size = np.asarray(size, dtype=np.float64)
    if size.shape != (3,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise ValueError(f'size must be 3 positive finite extents, got {size.tolist()}')
    m = _marker(frame, stamp, ns, marker_id, Marker.LINE_LIST, lifetime_s)
    _set_pose(m, T)
    m.scale.x = _positive(width, 'width')
    m.color = _color(rgba)
    corners = np.array(list(product((-0.5, 0.5), repeat=3))) * size
    # Two corners share an edge when they differ in exactly one coordinate: 12 of the 28 pairs.
    m.points = [_point(corners[k]) for a, b in combinations(range(8), 2)
                if np.count_nonzero(corners[a] != corners[b]) == 1 for k in (a, b)]
    return m


def mesh_marker(T, resource: str, frame: str, stamp: Time, ns: str = 'mesh', marker_id: int = 0, scale: float = 1.0,
                rgba: Sequence[float] = (0.8, 0.8, 0.8, 0.6), lifetime_s: float = DEFAULT_LIFETIME_S) -> Marker:
    """MESH_RESOURCE (`resource`: a file:// or package:// URI RViz can read) at pose T, uniformly scaled by `scale`
    (0.001 for meshes in millimetres, as BOP's)."""
    if not resource:
        raise ValueError('mesh resource must be a non-empty URI')
    m = _marker(frame, stamp, ns, marker_id, Marker.MESH_RESOURCE, lifetime_s)
    _set_pose(m, T)
    m.scale.x = m.scale.y = m.scale.z = _positive(scale, 'scale')
    m.color = _color(rgba)
    m.mesh_resource = resource
    return m


def delete_all_marker(frame: str, stamp: Time | None = None, ns: str = '') -> Marker:
    """DELETEALL, e.g. on shutdown or reset, so RViz does not keep showing the last poses."""
    m = Marker()
    m.header.frame_id = frame
    m.header.stamp = stamp if stamp is not None else Time()
    m.ns = ns
    m.action = Marker.DELETEALL
    return m


def marker_array(markers: Iterable[Marker]) -> MarkerArray:
    markers = list(markers)
    for m in markers:
        if not isinstance(m, Marker):
            raise TypeError(f'marker_array takes Marker messages, got {type(m).__name__} (flatten lists first)')
    return MarkerArray(markers=markers)
