"""A rosbag2 recording of the user's own cell (MCAP or sqlite3) converted to the robot layout of sim/dataset.py, so
`kp-pose eval robot_calib --dataset DIR` measures the calibration against a reference calibration of that cell.

What the bag must hold: colour images, their camera_info, the arm's /joint_states and, unless --urdf is given, the
latched /robot_description; optionally the depth aligned to colour, and /tf_static (needed when the reference
calibration ends at the camera's root frame, e.g. camera_link, rather than at the image's optical frame).
Record it with `kp-pose record OUT <colour> <aligned depth> <camera_info> /joint_states /tf_static
/robot_description` while the arm moves in front of a static camera.

Per colour image (every N-th, by header stamp):
- joints: /joint_states interpolated at the image stamp + --joint-offset-s (linear between the neighbours within
  --max-joint-gap-s, the nearer one alone at the ends, never extrapolated); a frame without is skipped and counted.
- depth: the depth image whose stamp is nearest within --depth-tolerance-s; none (or --depth-topic ''): an all-zero
  depth PNG, which the layout reads as "no return". The depth must be aligned to colour (same frame and size).
- T_base_cam: the reference calibration (base -> its child frame), composed with /tf_static from that frame to the
  image's optical frame; the same for every frame, which all get --camera-index (one static-camera sequence).
- keypoints: forward kinematics of the URDF at the joints (keypoints_base), in the camera (keypoints_cam),
  projected with camera_info's K and distortion (keypoints_px); in_image as the sim defines it. A recording knows
  nothing of occlusion, so `visible` = in_image, and the link mask is unknown: written all zero ("not robot").

The output loads with sim.dataset.load_meta / load_annotations / load_frame (layout version 1) and is written the
same crash-safe way. Unlike the rest of robot/, this module reads ROS messages: rosbags deserialises them and the
suite's message helpers (ros/images.py, ros/joint_states.py, ros/tf.py) take them as they are.

CLI: python -m kp_pose_ros.robot.cell_recording BAG --out DIR --calibration REF.yaml [--urdf URDF]
     [--base-link panda_link0] [--color-topic T] [--depth-topic T] [--camera-info-topic T]
     [--joint-states-topic /joint_states] [--joint-offset-s 0] [--every N] [--camera-index K]
"""
from __future__ import annotations

import argparse
import bisect
import dataclasses
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

from kp_pose_ros.core.atomic_file import append_json_line, atomic_imwrite
from kp_pose_ros.core.camera import CameraModel, CameraModelError
from kp_pose_ros.core.image_codec import metres_to_depth
from kp_pose_ros.core.stamped_series import StampedSeries, interpolate_at
from kp_pose_ros.core.transform_tree import TransformTree
from kp_pose_ros.core.transforms import invert_transform, transform_points
from kp_pose_ros.graphs.cameras import camera_preset
from kp_pose_ros.robot.calibration_store import StoredCalibration, load_calibration
from kp_pose_ros.robot.kinematics import PANDA_BASE_LINK, PANDA_KEYPOINT_LINKS, RobotKinematics
from kp_pose_ros.robot.urdf import URDFError, parse_urdf
from kp_pose_ros.ros.images import camera_model_from_info, depth_m_from_msg, rgb8_from_msg
from kp_pose_ros.ros.joint_states import joint_positions
from kp_pose_ros.ros.stamps import stamp_to_ns
from kp_pose_ros.ros.tf import transform_from_msg
from kp_pose_ros.sim.dataset import ANNOTATIONS_FILE, LAYOUT_VERSION, META_FILE, _listed, _write_yaml
from kp_pose_ros.sim.writer_cli import progress_printer

GENERATOR = 'kp_pose_ros.robot.cell_recording'
TF_STATIC = '/tf_static'
ROBOT_DESCRIPTION = '/robot_description'
IMAGE, CAMERA_INFO, JOINT_STATE = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CameraInfo', 'sensor_msgs/msg/JointState'
# Bags without message definitions (Humble's sqlite3) are read with these; the few types used here are the same in
# every distribution since.
FALLBACK_TYPES = Stores.ROS2_HUMBLE


class CellRecordingError(ValueError):
    """A bag or reference calibration that cannot make a dataset; the message says what is missing."""


@dataclass(frozen=True)
class Topics:
    """What to read; depth '' = no depth."""

    color: str
    depth: str
    camera_info: str
    joint_states: str = '/joint_states'

    @classmethod
    def realsense(cls) -> Topics:
        preset = camera_preset('realsense')
        return cls(preset.color_topic, preset.depth_topic, preset.camera_info_topic)


@dataclass
class Recording:
    """The bag's first pass: everything but the pixels."""

    infos: list = field(default_factory=list)
    joint_msgs: list[tuple[int, object]] = field(default_factory=list)
    static: TransformTree = field(default_factory=TransformTree)
    description: str | None = None
    color: list[tuple[int, str]] = field(default_factory=list)   # (stamp ns, frame_id) in bag order
    depth: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class FramePlan:
    joints: np.ndarray
    depth_stamp_ns: int | None


@dataclass
class ConversionReport:
    out: Path
    frames: int
    skipped_no_joints: int
    without_depth: int
    optical_frame: str

    def summary_line(self) -> str:
        return (f'wrote {self.frames} frames to {self.out} (camera {self.optical_frame}); skipped '
                f'{self.skipped_no_joints} without joint states; {self.without_depth} without depth')


# ------------------------------------------------------------------ inputs
def load_reference(path: str | os.PathLike, base_link: str) -> StoredCalibration:
    """The reference calibration, refused unless it starts at the dataset's base frame."""
    reference = load_calibration(path)
    if reference.parent_frame != base_link:
        raise CellRecordingError(
            f'{reference.path} is {reference.parent_frame} -> {reference.child_frame}, but the robot base is '
            f'{base_link}: pass --base-link {reference.parent_frame} or a calibration from {base_link}')
    return reference


@contextmanager
def open_bag(path: str | os.PathLike) -> Iterator[AnyReader]:
    try:
        reader = AnyReader([Path(path)], default_typestore=get_typestore(FALLBACK_TYPES))
        reader.open()
    except AnyReaderError as exc:
        raise CellRecordingError(f'cannot read {path} as a rosbag2 bag: {exc}') from None
    try:
        yield reader
    finally:
        reader.close()


def _bag_topics(reader: AnyReader) -> str:
    return ', '.join(f'{c.topic} [{c.msgtype}]' for c in sorted(reader.connections, key=lambda c: c.topic))


def connections(reader: AnyReader, topics: Topics, need_description: bool) -> dict[str, object]:
    """Connection per role; a missing or mistyped topic raises with the bag's own topics listed."""
    by_topic = {c.topic: c for c in reader.connections}
    wanted = {'color': (topics.color, IMAGE), 'camera_info': (topics.camera_info, CAMERA_INFO),
              'joint_states': (topics.joint_states, JOINT_STATE)}
    if topics.depth:
        wanted['depth'] = (topics.depth, IMAGE)
    if need_description:
        wanted['description'] = (ROBOT_DESCRIPTION, 'std_msgs/msg/String')
    problems = []
    for topic, msgtype in wanted.values():
        conn = by_topic.get(topic)
        if conn is None:
            problems.append(f'{topic} ({msgtype}) is not in the bag')
        elif conn.msgtype != msgtype:
            problems.append(f'{topic} is {conn.msgtype}, expected {msgtype}')
    if problems:
        hint = ' (or pass --urdf)' if need_description and ROBOT_DESCRIPTION not in by_topic else ''
        raise CellRecordingError('; '.join(problems) + hint + f'. The bag has: {_bag_topics(reader)}')
    found = {role: by_topic[topic] for role, (topic, _) in wanted.items()}
    if TF_STATIC in by_topic:
        found['tf_static'] = by_topic[TF_STATIC]
    return found


def scan(reader: AnyReader, conns: dict[str, object]) -> Recording:
    """One pass over the bag keeping stamps, camera_info, joint states, static transforms and the URDF."""
    role_of = {conn.topic: role for role, conn in conns.items()}
    rec = Recording()
    for conn, _, raw in reader.messages(connections=list(conns.values())):
        role, msg = role_of[conn.topic], reader.deserialize(raw, conn.msgtype)
        if role in ('color', 'depth'):
            getattr(rec, role).append((stamp_to_ns(msg.header.stamp), msg.header.frame_id))
        elif role == 'camera_info':
            rec.infos.append(msg)
        elif role == 'joint_states':
            rec.joint_msgs.append((stamp_to_ns(msg.header.stamp), msg))
        elif role == 'description':
            rec.description = msg.data
        else:
            for t in msg.transforms:
                rec.static.set_transform(t.header.frame_id, t.child_frame_id, transform_from_msg(t.transform), 0,
                                         static=True)
    return rec


def robot_model(urdf_text: str | None, base_link: str, keypoint_links: Sequence[str]) -> RobotKinematics:
    if not urdf_text:
        raise CellRecordingError(f'{ROBOT_DESCRIPTION} holds no URDF: pass --urdf')
    try:
        return RobotKinematics(parse_urdf(urdf_text), base_link, keypoint_links)
    except URDFError as exc:
        raise CellRecordingError(f'robot model: {exc}') from None


def camera_of(rec: Recording) -> CameraModel:
    """The camera of every camera_info in the bag; one that changes midway is refused (one camera per dataset)."""
    if not rec.infos:
        raise CellRecordingError('the camera_info topic has no messages')
    try:
        camera = camera_model_from_info(rec.infos[0])
    except CameraModelError as exc:
        raise CellRecordingError(f'camera_info: {exc}') from None
    for info in rec.infos[1:]:
        if (info.width, info.height, info.distortion_model) != (camera.width, camera.height, camera.distortion_model) \
                or not np.allclose(info.k, camera.K.reshape(-1)) or not np.allclose(info.d, camera.D):
            raise CellRecordingError('camera_info changes during the bag; convert the parts with one camera '
                                     'setting separately')
    return camera


def optical_frame(rec: Recording) -> str:
    frames = sorted({frame for _, frame in rec.color})
    if not frames:
        raise CellRecordingError('the colour topic has no messages')
    if len(frames) > 1:
        raise CellRecordingError(f'the colour images come from several frames {frames}: one camera per dataset')
    return frames[0]


def camera_pose(reference: StoredCalibration, optical: str, static: TransformTree) -> np.ndarray:
    """T_base_optical: the reference itself when it ends at the optical frame, else composed with /tf_static."""
    if reference.child_frame == optical:
        return reference.transform
    try:
        return reference.transform @ static.lookup(reference.child_frame, optical)
    except LookupError as exc:
        raise CellRecordingError(
            f'the reference calibration ends at {reference.child_frame}, the images are in {optical}, and the '
            f"bag's {TF_STATIC} does not link them: {exc}") from None


def joint_series(rec: Recording, joint_names: Sequence[str]) -> tuple[StampedSeries, int]:
    """The arm's joints over time, and how many JointState messages lacked some of them (e.g. a gripper's)."""
    series = StampedSeries(span_ns=2**62, max_items=len(rec.joint_msgs) + 1)
    partial = 0
    for stamp, msg in rec.joint_msgs:
        try:
            series.add(stamp, joint_positions(msg, joint_names))
        except (KeyError, ValueError):
            partial += 1
    if not len(series):
        seen = sorted({n for _, m in rec.joint_msgs for n in m.name})
        raise CellRecordingError(f'no joint state holds all of the robot\'s joints {list(joint_names)} '
                                 f'(the messages name {seen or "nothing"})')
    return series, partial


def plan_frames(rec: Recording, series: StampedSeries, every: int, joint_offset_ns: int, max_joint_gap_ns: int,
                depth_tolerance_ns: int) -> tuple[dict[int, FramePlan], int]:
    """Frames to write by colour stamp (every N-th colour image, first of duplicate stamps), and how many were
    skipped for want of joints."""
    depth_stamps = sorted({stamp for stamp, _ in rec.depth})
    plans, skipped = {}, 0
    for stamp, _ in rec.color[::every]:
        if stamp in plans:
            continue
        at = stamp + joint_offset_ns
        joints = interpolate_at(at, *series.bracket(at), max_joint_gap_ns)
        if joints is None:
            skipped += 1
            continue
        plans[stamp] = FramePlan(joints, _nearest(depth_stamps, stamp, depth_tolerance_ns))
    return plans, skipped


def _nearest(stamps: list[int], stamp: int, tolerance: int) -> int | None:
    i = bisect.bisect_left(stamps, stamp)
    near = [s for s in stamps[max(0, i - 1):i + 1] if abs(s - stamp) <= tolerance]
    return min(near, key=lambda s: abs(s - stamp)) if near else None


# ------------------------------------------------------------------ output
_NOT_ALIGNED = "not aligned; record the depth aligned to colour, or pass --depth-topic ''"

@dataclass(frozen=True)
class _Geometry:
    """What turns joints into annotated keypoints."""

    kinematics: RobotKinematics
    camera: CameraModel
    T_base_cam: np.ndarray

    def annotation(self, index: int, camera_index: int, joints: np.ndarray) -> dict:
        cam, name = self.camera, f'{index:06d}.png'
        keypoints_base = self.kinematics.keypoints(joints)
        keypoints_cam = transform_points(invert_transform(self.T_base_cam), keypoints_base)
        pixels = cam.project(keypoints_cam)
        in_image = np.isfinite(pixels).all(axis=1) & cam.pixel_indices(pixels)[2]
        return {
            'index': index, 'rgb': f'rgb/{name}', 'depth': f'depth/{name}', 'mask': f'mask/{name}',
            'camera_index': camera_index,
            'joint_names': list(self.kinematics.joint_names), 'joint_positions': _listed(joints),
            'T_base_cam': _listed(self.T_base_cam), 'K': _listed(cam.K),
            'keypoint_names': list(self.kinematics.keypoint_links), 'keypoints_base': _listed(keypoints_base),
            'keypoints_cam': _listed(keypoints_cam), 'keypoints_px': _listed(pixels),
            'in_image': _listed(in_image), 'visible': _listed(in_image),
        }


def check_depth_aligned(rec: Recording, optical: str) -> None:
    """Depth in another frame than the colour is not aligned to it: refused before anything is written."""
    others = sorted({frame for _, frame in rec.depth} - {optical})
    if others:
        raise CellRecordingError(f'the depth is in {others}, the colour in {optical}: {_NOT_ALIGNED}')


def _depth_mm(msg, camera: CameraModel) -> np.ndarray:
    """Aligned depth as the layout's uint16 mm."""
    if (msg.width, msg.height) != (camera.width, camera.height):
        raise CellRecordingError(f'the depth is {msg.width}x{msg.height}, the colour {camera.width}x{camera.height}: '
                                 f'{_NOT_ALIGNED}')
    return metres_to_depth(depth_m_from_msg(msg), '16UC1')


def _rgb(msg, camera: CameraModel) -> np.ndarray:
    if (msg.width, msg.height) != (camera.width, camera.height):
        raise CellRecordingError(f'a colour image is {msg.width}x{msg.height} but camera_info says '
                                 f'{camera.width}x{camera.height}: is the camera_info topic this camera\'s?')
    return rgb8_from_msg(msg)


def meta(source: dict, geometry: _Geometry, num_frames: int, complete: bool) -> dict:
    cam, kin = geometry.camera, geometry.kinematics
    return {
        'generator': GENERATOR, 'layout_version': LAYOUT_VERSION, 'num_frames': int(num_frames),
        'camera': {'width': cam.width, 'height': cam.height, 'K': cam.K.tolist(), 'D': cam.D.tolist(),
                   'distortion_model': cam.distortion_model},
        'keypoint_links': list(kin.keypoint_links), 'joint_names': list(kin.joint_names),
        'link_names': list(kin.link_names), 'depth_unit_m': 0.001,
        'T_base_cam': geometry.T_base_cam.tolist(),
        'visible': 'in_image: a recording has no occlusion information',
        'mask': 'unknown: all zero (a recording has no segmentation)',
        **source,
        'complete': complete,
    }


def _check_new(out: Path) -> None:
    for existing in (META_FILE, ANNOTATIONS_FILE):
        if (out / existing).exists():
            raise FileExistsError(f'{out / existing} exists: write each dataset into a new directory')


@dataclass
class _Writer:
    """Writes the frames in the order they become complete (colour, and its depth when it has one)."""

    out: Path
    geometry: _Geometry
    camera_index: int
    fd: int
    written: int = 0

    def write(self, plan: FramePlan, rgb: np.ndarray, depth_mm: np.ndarray | None) -> None:
        cam, name = self.geometry.camera, f'{self.written:06d}.png'
        zeros = np.zeros((cam.height, cam.width), np.uint16)
        atomic_imwrite(self.out / 'rgb' / name, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        atomic_imwrite(self.out / 'depth' / name, zeros if depth_mm is None else depth_mm)
        atomic_imwrite(self.out / 'mask' / name, zeros.astype(np.uint8))
        append_json_line(self.fd, self.geometry.annotation(self.written, self.camera_index, plan.joints),
                         self.out / ANNOTATIONS_FILE)
        self.written += 1


def write_frames(reader: AnyReader, conns: dict, plans: dict[int, FramePlan], writer: _Writer,
                 progress: Callable[[int, int], None] | None) -> None:
    """Second pass: decode the planned colour images and the depth they pair with, keeping only what waits."""
    camera, total = writer.geometry.camera, len(plans)
    plans = dict(plans)
    wanted = Counter(p.depth_stamp_ns for p in plans.values() if p.depth_stamp_ns is not None)
    depths: dict[int, np.ndarray] = {}
    waiting: deque[tuple[FramePlan, np.ndarray]] = deque()
    depth_conn = conns.get('depth')
    streams = [conns['color']] + ([depth_conn] if depth_conn is not None else [])
    for conn, _, raw in reader.messages(connections=streams):
        msg = reader.deserialize(raw, conn.msgtype)
        stamp = stamp_to_ns(msg.header.stamp)
        if depth_conn is not None and conn.topic == depth_conn.topic:
            if wanted[stamp] and stamp not in depths:
                depths[stamp] = _depth_mm(msg, camera)
        elif stamp in plans:
            waiting.append((plans.pop(stamp), _rgb(msg, camera)))
        while waiting and (waiting[0][0].depth_stamp_ns is None or waiting[0][0].depth_stamp_ns in depths):
            plan, rgb = waiting.popleft()
            key = plan.depth_stamp_ns
            writer.write(plan, rgb, None if key is None else depths[key])
            if key is not None:
                wanted[key] -= 1
                if not wanted[key]:
                    del depths[key]
            if progress is not None:
                progress(writer.written, total)


def convert(bag: str | os.PathLike, out_dir: str | os.PathLike, calibration: str | os.PathLike, *,
            topics: Topics | None = None, urdf: str | os.PathLike | None = None, base_link: str = PANDA_BASE_LINK,
            keypoint_links: Sequence[str] = PANDA_KEYPOINT_LINKS, joint_offset_s: float = 0.0,
            max_joint_gap_s: float = 0.05, depth_tolerance_s: float = 0.02, every: int = 1, camera_index: int = 0,
            progress: Callable[[int, int], None] | None = None) -> ConversionReport:
    """Convert `bag` into a new robot-layout dataset at `out_dir` (see the module docstring)."""
    if int(every) != every or every < 1:
        raise ValueError(f'every must be a positive integer, got {every}')
    topics = topics or Topics.realsense()
    out = Path(out_dir)
    _check_new(out)
    reference = load_reference(calibration, base_link)
    with open_bag(bag) as reader:
        conns = connections(reader, topics, need_description=urdf is None)
        rec = scan(reader, conns)
        kinematics = robot_model(Path(urdf).read_text(encoding='utf-8') if urdf else rec.description, base_link,
                                 keypoint_links)
        optical = optical_frame(rec)
        check_depth_aligned(rec, optical)
        geometry = _Geometry(kinematics, camera_of(rec), camera_pose(reference, optical, rec.static))
        series, partial = joint_series(rec, kinematics.joint_names)
        plans, skipped = plan_frames(rec, series, every, round(joint_offset_s * 1e9), round(max_joint_gap_s * 1e9),
                                     round(depth_tolerance_s * 1e9))
        if not plans:
            raise CellRecordingError(f'none of the {len(rec.color)} colour images has joint states within '
                                     f'{max_joint_gap_s} s of its stamp + {joint_offset_s} s')
        source = {'source_bag': str(Path(bag).resolve()), 'topics': dataclasses.asdict(topics),
                  'robot_urdf': str(Path(urdf).resolve()) if urdf else ROBOT_DESCRIPTION, 'base_link': base_link,
                  'optical_frame': optical,
                  'calibration': {'file': str(reference.path.resolve()), 'name': reference.name,
                                  'parent_frame': reference.parent_frame, 'child_frame': reference.child_frame},
                  'joint_offset_s': float(joint_offset_s), 'every': int(every),
                  'joint_messages_without_the_arm': partial, 'frames_skipped_no_joints': skipped,
                  'frames_without_depth': sum(p.depth_stamp_ns is None for p in plans.values())}
        for sub in ('rgb', 'depth', 'mask'):
            (out / sub).mkdir(parents=True, exist_ok=True)
        _write_yaml(out / META_FILE, meta(source, geometry, 0, complete=False))
        fd = os.open(out / ANNOTATIONS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            writer = _Writer(out, geometry, camera_index, fd)
            write_frames(reader, conns, plans, writer, progress)
        finally:
            os.close(fd)
    _write_yaml(out / META_FILE, meta(source, geometry, writer.written, complete=True))
    return ConversionReport(out, writer.written, skipped, source['frames_without_depth'], optical)


def main(argv: list[str] | None = None) -> int:
    defaults = Topics.realsense()
    parser = argparse.ArgumentParser(prog='python -m kp_pose_ros.robot.cell_recording',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('bag', help='rosbag2 folder (MCAP or sqlite3), e.g. from kp-pose record')
    parser.add_argument('--out', required=True, help='new dataset folder')
    parser.add_argument('--calibration', required=True,
                        help='reference calibration YAML (calibration manager format: base -> camera frame)')
    parser.add_argument('--urdf', default=None, help='robot URDF (default: /robot_description from the bag)')
    parser.add_argument('--base-link', default=PANDA_BASE_LINK, help='robot base frame')
    parser.add_argument('--color-topic', default=defaults.color)
    parser.add_argument('--depth-topic', default=defaults.depth, help="aligned depth; '' for none")
    parser.add_argument('--camera-info-topic', default=defaults.camera_info)
    parser.add_argument('--joint-states-topic', default=defaults.joint_states)
    parser.add_argument('--joint-offset-s', type=float, default=0.0,
                        help='joints are taken at the image stamp + this (s)')
    parser.add_argument('--max-joint-gap-s', type=float, default=0.05,
                        help='farthest joint state used for an image (s); frames without are skipped')
    parser.add_argument('--depth-tolerance-s', type=float, default=0.02,
                        help='farthest depth stamp from the colour stamp (s); frames without get empty depth')
    parser.add_argument('--every', type=int, default=1, help='keep every N-th colour image')
    parser.add_argument('--camera-index', type=int, default=0, help='sequence id of this static camera')
    args = parser.parse_args(argv)
    if args.every < 1 or args.max_joint_gap_s < 0 or args.depth_tolerance_s < 0:
        parser.error('--every must be >= 1, --max-joint-gap-s and --depth-tolerance-s >= 0')
    topics = Topics(args.color_topic, args.depth_topic, args.camera_info_topic, args.joint_states_topic)
    try:
        report = convert(args.bag, args.out, args.calibration, topics=topics, urdf=args.urdf,
                         base_link=args.base_link, joint_offset_s=args.joint_offset_s,
                         max_joint_gap_s=args.max_joint_gap_s, depth_tolerance_s=args.depth_tolerance_s,
                         every=args.every, camera_index=args.camera_index,
                         progress=lambda done, total: progress_printer(total)(done, total))
    except (ValueError, OSError) as exc:  # bad input (every refusal above is one of these): say what, no traceback
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(report.summary_line())
    return 0


if __name__ == '__main__':
    sys.exit(main())
