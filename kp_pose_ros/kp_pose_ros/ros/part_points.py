"""Labelled part points as sensor_msgs/PointCloud2 (sensor_msgs_py is not on PyPI): what articulated_voting passes to
articulated_fitting beside its keypoints.

Layout: one unorganised cloud (height 1), little-endian, fields x, y, z (float32, metres, the header's frame),
`instance` (uint16: index into the instances of the KeypointArray of the same stamp) and `part` (uint8: the part's
index in the category model), 16 bytes a point (one byte of padding). RViz shows it as any cloud (colour by `part` or
`instance` with the Intensity channel)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

POINT_DTYPE = np.dtype({'names': ['x', 'y', 'z', 'instance', 'part'],
                        'formats': ['<f4', '<f4', '<f4', '<u2', 'u1'],
                        'offsets': [0, 4, 8, 12, 14], 'itemsize': 16})
FIELDS = (('x', PointField.FLOAT32), ('y', PointField.FLOAT32), ('z', PointField.FLOAT32),
          ('instance', PointField.UINT16), ('part', PointField.UINT8))
_NUMPY_OF = {PointField.FLOAT32: 'f4', PointField.UINT16: 'u2', PointField.UINT8: 'u1'}


def part_points_cloud(header: Header, objects: Sequence[Sequence[np.ndarray | None]]) -> PointCloud2:
    """The cloud of `objects[i][k]`: the (n, 3) points of part k of instance i (None or empty: none)."""
    xyz, labels = [np.zeros((0, 3))], [np.zeros((0, 2), np.int64)]
    for i, parts in enumerate(objects):
        for k, pts in enumerate(parts):
            if pts is not None and len(pts):
                xyz.append(np.asarray(pts, np.float64).reshape(-1, 3))
                labels.append(np.tile([i, k], (len(xyz[-1]), 1)))
    xyz, labels = np.concatenate(xyz), np.concatenate(labels)
    # Filled field by field: numpy 2 drops the padding of structured arrays it concatenates.
    cloud = np.zeros(len(xyz), POINT_DTYPE)
    cloud['x'], cloud['y'], cloud['z'] = xyz.T
    cloud['instance'], cloud['part'] = labels.T
    fields = [PointField(name=name, offset=POINT_DTYPE.fields[name][1], datatype=datatype, count=1)
              for name, datatype in FIELDS]
    msg = PointCloud2(header=header, height=1, width=len(cloud), fields=fields, is_bigendian=False,
                      point_step=POINT_DTYPE.itemsize, row_step=POINT_DTYPE.itemsize * len(cloud),
                      is_dense=bool(np.isfinite(cloud['x']).all()))
    msg.data = cloud.tobytes()
    return msg


def part_points_from_cloud(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points (n, 3) float64, instance (n,) int, part (n,) int) of a cloud with this module's fields (any offsets,
    any padding, either byte order); ValueError saying what is wrong with any other."""
    by_name = {f.name: f for f in msg.fields}
    order = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for name, datatype in FIELDS:
        field = by_name.get(name)
        if field is None or field.datatype != datatype or field.count != 1:
            raise ValueError(f'part_points needs fields {", ".join(n for n, _ in FIELDS)} (x y z float32, instance '
                             f'uint16, part uint8); got {[(f.name, f.datatype, f.count) for f in msg.fields]}')
        names.append(name)
        formats.append(order + _NUMPY_OF[datatype])
        offsets.append(field.offset)
    count = msg.width * msg.height
    if msg.point_step < max(o + np.dtype(f).itemsize for o, f in zip(offsets, formats)) or \
            msg.row_step < msg.width * msg.point_step or len(msg.data) < msg.row_step * msg.height:
        raise ValueError(f'part_points is inconsistent: {msg.width}x{msg.height} points of {msg.point_step} bytes, '
                         f'row_step {msg.row_step}, {len(msg.data)} bytes of data')
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets, 'itemsize': msg.point_step})
    data = bytes(msg.data)
    rows = [np.frombuffer(data, dtype, msg.width, r * msg.row_step) for r in range(msg.height)]
    cloud = np.concatenate(rows) if rows else np.zeros(0, dtype)
    points = np.stack([cloud['x'], cloud['y'], cloud['z']], axis=1).astype(np.float64).reshape(count, 3)
    return points, cloud['instance'].astype(np.int64), cloud['part'].astype(np.int64)


def split_part_points(points: np.ndarray, instance: np.ndarray, part: np.ndarray, parts_per_instance: Sequence[int]
                      ) -> tuple[list[tuple[np.ndarray | None, ...]], int]:
    """Per instance, per part, its points (None where it has none), and how many points were left out: not finite,
    or of an instance or part that `parts_per_instance` does not have."""
    known = np.isfinite(points).all(axis=1) & (instance < len(parts_per_instance))
    limits = np.asarray(parts_per_instance, np.int64)
    known[known] &= part[known] < limits[instance[known]]
    out = []
    for i, count in enumerate(parts_per_instance):
        own = known & (instance == i)
        out.append(tuple(points[own & (part == k)] if np.any(own & (part == k)) else None for k in range(count)))
    return out, int(len(points) - known.sum())

