"""`make demo-articulated` / `kp-pose demo articulated`: per-part poses and joint states of articulated objects on the
synthetic camera, scored against its truth.

Runs the articulated_pose graph with camera:=sim in this process (the sim camera's scene "articulated": procedural
instances of the TEST split, never seen in training, a new camera pose every frame), pairs each frame's
detections_3d and joint_states with the camera's /sim/articulated/parts and /sim/articulated/joint_states by stamp,
and prints per category how many objects were found of how many were shown (at least --min-visible of the
instance's silhouette in view, in frames the pipeline processed), per part the rotation (deg) and translation (m)
errors of its box frame (its link frame at the centre of its box), per joint the error (deg or m); then the graph's
output rate and latency (image stamp to detections_3d).

An estimated object is the true instance of its category whose root part box centre is nearest to its own, within
MATCH_DISTANCE_M, one to one by minimum total distance (where the estimate did not locate the root part, the first
part both have stands in for it): an object that far off is a false detection, not a bad pose of that instance."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from kp_pose_ros.articulated.part_fit import joint_error
from kp_pose_ros.core.transforms import rotation_error_deg, translation_error
from kp_pose_ros.demo_objects import _rate

NS = '/articulated_pose'
GRAPH = 'articulated_pose'
MODEL = 'articulated/page_voting.onnx'
MATCH_DISTANCE_M = 0.2


@dataclass
class ObjectPose:
    """One object of one frame, true or estimated: box poses of its (located) parts, root first, and joint values."""

    name: str                                    # '<instance>' (truth) or '<category>_<instance id>' (estimate)
    category: str
    parts: dict[str, np.ndarray]                 # part name -> T_cam_box (4, 4)
    joints: dict[str, float] = field(default_factory=dict)  # joint name -> rad | m
    visible: float = 1.0                         # truth: visible share of its silhouette


def objects_from_messages(detections, joint_states=()) -> list[ObjectPose]:
    """The objects of one stamp: a Detection3DArray with one detection per part (id '<object>/<part>', class
    '<category>/<part>', bbox centre = the box frame, score = the visible share for the truth) and JointStates
    naming '<object>/<joint>'. Parts keep the message's order (the truth and the fitting node list the root first)."""
    from kp_pose_ros.ros.poses import matrix_from_pose

    objects: dict[str, ObjectPose] = {}
    for det in detections.detections:
        name, part = det.id.rsplit('/', 1)
        category = det.results[0].hypothesis.class_id.split('/')[0] if det.results else name.rsplit('_', 1)[0]
        obj = objects.setdefault(name, ObjectPose(name, category, {}))
        obj.parts[part] = matrix_from_pose(det.bbox.center)
        if det.results:
            obj.visible = float(det.results[0].hypothesis.score)
    for msg in joint_states:
        for full, value in zip(msg.name, msg.position):
            name, joint = full.rsplit('/', 1)
            if name in objects:
                objects[name].joints[joint] = float(value)
    return list(objects.values())


def _reference_distance(estimate: ObjectPose, truth: ObjectPose) -> float:
    """Distance between the root part box centres (or the first part both have, where the estimate lacks the root)."""
    common = [p for p in truth.parts if p in estimate.parts]
    return translation_error(estimate.parts[common[0]], truth.parts[common[0]]) if common else np.inf


def match(truths: list[ObjectPose], estimates: list[ObjectPose]) -> list[tuple[int, int]]:
    """(truth, estimate) index pairs of the same category, within MATCH_DISTANCE_M of each other (see the module
    docstring), one to one by minimum total distance."""
    if not truths or not estimates:
        return []
    distance = np.array([[_reference_distance(e, t) if e.category == t.category else np.inf for e in estimates]
                         for t in truths])
    close = distance < MATCH_DISTANCE_M
    rows, cols = linear_sum_assignment(np.where(close, distance, 1e9))
    return [(r, c) for r, c in zip(rows, cols) if close[r, c]]


def score(frames: list[tuple[list[ObjectPose], list[ObjectPose]]], joint_types: dict[tuple[str, str], str],
          min_visible: float) -> dict:
    """Per-category figures over `frames`, (truth, estimates) pairs of one stamp: objects shown (true instances at
    least `min_visible` visible) and found, estimates matching no instance ('extra'; one matching a barely visible
    instance is neither), per part the errors of its box frame where located, per joint its error in deg (revolute)
    or m (prismatic) by `joint_types[(category, joint)]`."""
    rows: dict[str, dict] = {}

    def row(category):
        return rows.setdefault(category, {'shown': 0, 'found': 0, 'extra': 0, 'parts': {}, 'joints': {}})

    for truths, estimates in frames:
        pairs = dict(match(truths, estimates))
        for k, estimate in enumerate(estimates):
            if k not in pairs.values():
                row(estimate.category)['extra'] += 1
        for t, truth in enumerate(truths):
            if truth.visible < min_visible:
                continue
            r = row(truth.category)
            r['shown'] += 1
            for part in truth.parts:
                r['parts'].setdefault(part, {'shown': 0, 'located': 0, 'rotation_deg': [], 'translation_m': []})
                r['parts'][part]['shown'] += 1
            for joint in truth.joints:
                kind = joint_types.get((truth.category, joint), 'revolute')
                r['joints'].setdefault(joint, {'type': kind, 'unit': 'deg' if kind == 'revolute' else 'm',
                                               'errors': []})
            if t not in pairs:
                continue
            estimate = estimates[pairs[t]]
            r['found'] += 1
            for part, T_true in truth.parts.items():
                if part in estimate.parts:
                    p = r['parts'][part]
                    p['located'] += 1
                    p['rotation_deg'].append(rotation_error_deg(estimate.parts[part], T_true))
                    p['translation_m'].append(translation_error(estimate.parts[part], T_true))
            for joint, q_true in truth.joints.items():
                j, kind = r['joints'][joint], r['joints'][joint]['type']
                if joint in estimate.joints:
                    error = float(joint_error([estimate.joints[joint]], [q_true], [kind])[0])
                    j['errors'].append(float(np.degrees(error)) if kind == 'revolute' else error)
    categories = {}
    for category, r in sorted(rows.items()):
        categories[category] = {
            'shown': r['shown'], 'found': r['found'], 'extra': r['extra'],
            'parts': {name: {'shown': p['shown'], 'located': p['located'], 'rotation_deg': _stats(p['rotation_deg']),
                             'translation_m': _stats(p['translation_m'])} for name, p in r['parts'].items()},
            'joints': {name: {'type': j['type'], 'unit': j['unit'], 'estimated': len(j['errors']),
                              **_stats(j['errors'])} for name, j in r['joints'].items()}}
    return {'frames_scored': len(frames), 'min_visible': min_visible, 'categories': categories,
            'objects_shown': sum(c['shown'] for c in categories.values()),
            'objects_found': sum(c['found'] for c in categories.values())}


def _stats(values: list[float]) -> dict:
    if not values:
        return {'median': None, 'mean': None}
    return {'median': round(float(np.median(values)), 4), 'mean': round(float(np.mean(values)), 4)}


def joint_types(instance_names) -> dict[tuple[str, str], str]:
    """(category, joint) -> 'revolute' | 'prismatic' of the named procedural instances ('<category>_<seed>', as the
    sim camera names them), from their URDFs built again (sim.procedural is deterministic per category and seed)."""
    from kp_pose_ros.robot.urdf import load_urdf
    from kp_pose_ros.sim.procedural import articulated_instance

    types = {}
    with tempfile.TemporaryDirectory(prefix='kp_pose_demo_') as folder:
        for name in sorted(set(instance_names)):
            category, seed = name.rsplit('_', 1)
            model = load_urdf(articulated_instance(category, int(seed), folder).urdf)
            for joint in model.joints.values():
                if joint.type in ('revolute', 'continuous', 'prismatic'):
                    types[(category, joint.name)] = 'prismatic' if joint.type == 'prismatic' else 'revolute'
    return types


def report(summary: dict) -> str:
    """The summary as a table for the terminal."""
    def cell(value, digits):
        return '-' if value is None else f'{value:.{digits}f}'

    lines = [f"demo articulated: {summary['frames_rendered']} frames rendered, {summary['frames_processed']} through "
             f"the pipeline, {summary['frames_scored']} scored; found {summary['objects_found']} of "
             f"{summary['objects_shown']} objects shown (at least {summary['min_visible']:.0%} visible)",
             f"{'category':<11}{'part / joint':<16}{'found':>11}{'rot deg med/mean':>19}{'trans m med/mean':>19}"]
    for category, c in summary['categories'].items():
        lines.append(f"{category:<11}{'(objects)':<16}{c['found']:>5}/{c['shown']:<5}  extra {c['extra']}")
        for name, p in c['parts'].items():
            r, t = p['rotation_deg'], p['translation_m']
            lines.append(f"{'':<11}{name:<16}{p['located']:>5}/{p['shown']:<5}"
                         f"{cell(r['median'], 1):>10} / {cell(r['mean'], 1):<6}{cell(t['median'], 3):>10} / "
                         f"{cell(t['mean'], 3):<6}")
        for name, j in c['joints'].items():
            digits = 1 if j['unit'] == 'deg' else 3
            lines.append(f"{'':<11}{name:<16}{j['estimated']:>5}{'':<6}joint error {cell(j['median'], digits)} / "
                         f"{cell(j['mean'], digits)} {j['unit']} (median / mean, {j['type']})")
    latency = summary['latency_ms']
    lines.append(f"output {cell(summary['output_rate_hz'], 2)} Hz (camera {cell(summary['camera_rate_hz'], 2)} Hz); "
                 f"latency image stamp -> detections_3d median {cell(latency.get('median'), 1)} ms, p95 "
                 f"{cell(latency.get('p95'), 1)} ms")
    return '\n'.join(lines)


@contextmanager
def _running(overrides: dict, log_dir: Path | None):
    """(context, executor) beside the running graph, or None (saying why) when a node did not come up: composed in
    this process, or one process per node as `ros2 launch` starts them (`log_dir`; brought to active before this
    yields, so start-up is not in the rate)."""
    from kp_pose_ros.graphs.processes import running_graph
    from kp_pose_ros.graphs.registry import get_graph
    from kp_pose_ros.graphs.runner import run_graph

    if log_dir is None:
        with run_graph(GRAPH, overrides) as graph:
            if graph.not_active:
                print(f"demo articulated: not active (see the log above): {', '.join(graph.not_active)}",
                      file=sys.stderr)
                yield None
            else:
                yield graph.context, graph.executor
        return
    with ExitStack() as stack:
        try:
            context, executor, _, _ = stack.enter_context(running_graph(get_graph(GRAPH).nodes(overrides),
                                                                        log_dir=log_dir))
        except RuntimeError as exc:
            print(f'demo articulated: the graph did not come up (logs in {log_dir}): {exc}', file=sys.stderr)
            yield None
            return
        yield context, executor


def run(overrides: dict, duration_s: float, min_visible: float, log_dir: Path | None = None) -> dict | None:
    """Run the articulated_pose graph with `overrides` for `duration_s` (in this process, or one process per node
    logging into `log_dir`) and score it; None when a node did not start."""
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from vision_msgs.msg import Detection3DArray

    from kp_pose_ros.ros.stamps import stamp_to_ns

    received = {key: defaultdict(list) for key in ('parts', 'true_joints', 'detections', 'joints')}
    arrivals, latency_ms = {'truth': [], 'estimates': []}, []
    with _running(overrides, log_dir) as running:
        if running is None:
            return None
        context, executor = running
        observer = Node('demo_articulated_observer', context=context)
        clock = observer.get_clock()

        def collect(key, arrival=None):
            def callback(msg):
                stamp = stamp_to_ns(msg.header.stamp)
                received[key][stamp].append(msg)
                if arrival == 'estimates':
                    latency_ms.append((clock.now().nanoseconds - stamp) / 1e6)
                if arrival:
                    arrivals[arrival].append(time.monotonic())
            return callback

        observer.create_subscription(Detection3DArray, '/sim/articulated/parts', collect('parts', 'truth'), 50)
        observer.create_subscription(JointState, '/sim/articulated/joint_states', collect('true_joints'), 50)
        observer.create_subscription(Detection3DArray, f'{NS}/detections_3d', collect('detections', 'estimates'), 50)
        observer.create_subscription(JointState, f'{NS}/joint_states', collect('joints'), 200)
        executor.add_node(observer)
        try:
            start = time.monotonic()
            next_report = start + 5.0
            while time.monotonic() - start < duration_s:
                executor.spin_once(timeout_sec=0.05)
                if time.monotonic() >= next_report:
                    next_report += 5.0
                    parts = sum(len(m.detections) for msgs in received['detections'].values() for m in msgs)
                    print(f"[{time.monotonic() - start:5.1f} s] {len(received['parts'])} frames rendered, "
                          f"{len(received['detections'])} through the pipeline, {parts} part poses", flush=True)
        finally:
            executor.remove_node(observer)
            observer.destroy_node()
    frames = []
    for stamp in sorted(received['detections']):
        if stamp in received['parts']:
            truth = objects_from_messages(received['parts'][stamp][0], received['true_joints'].get(stamp, ()))
            estimates = objects_from_messages(received['detections'][stamp][0], received['joints'].get(stamp, ()))
            frames.append((truth, estimates))
    names = {obj.name for truth, _ in frames for obj in truth}
    summary = score(frames, joint_types(names), min_visible)
    return {'duration_s': duration_s, 'frames_rendered': len(received['parts']),
            'frames_processed': len(received['detections']), **summary,
            'output_rate_hz': _rate(arrivals['estimates']), 'camera_rate_hz': _rate(arrivals['truth']),
            'latency_ms': {'median': round(float(np.median(latency_ms)), 1),
                           'p95': round(float(np.percentile(latency_ms, 95)), 1)} if latency_ms else {}}


def _graph_or_reason(model: str) -> tuple[object, str]:
    """The articulated_pose graph and '' when the demo can run; else None and why not."""
    from kp_pose_ros.graphs.registry import get_graph
    from kp_pose_ros.paths import model_file

    try:
        graph = get_graph(GRAPH)
    except (ValueError, ImportError) as exc:
        return None, f'the {GRAPH} graph is not available ({exc})'
    path = Path(model) if Path(model).is_absolute() else model_file(model)
    missing = [str(p) for p in (path, path.with_suffix('.yaml')) if not p.is_file()]
    if missing:
        return None, (f"missing model files: {', '.join(missing)} (the PAGE voting network and its manifest come "
                      "from kp_pose_ros.training.train_articulated; --model names another)")
    return graph, ''


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='kp-pose demo articulated', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--duration', type=float, default=60.0, help='seconds to run')
    parser.add_argument('--model', default=MODEL,
                        help='PAGE voting network: a path relative to the package models/ or any path')
    parser.add_argument('--method', default='learned', choices=('learned', 'fps', 'box'),
                        help='part keypoints voted for and fitted')
    parser.add_argument('--categories', default='',
                        help="categories the sim camera draws, comma-separated (default: the camera's, the "
                             'estimated ones)')
    parser.add_argument('--seed', default='0', help='scene seed')
    parser.add_argument('--rate-hz', default='10.0', help='sim camera frame rate (rendering caps it)')
    parser.add_argument('--min-visible', type=float, default=0.1,
                        help='instances less visible than this share of their silhouette are not scored')
    parser.add_argument('--providers', default='auto', choices=('auto', 'tensorrt', 'cuda', 'cpu'))
    parser.add_argument('--processes', default=None, metavar='LOG_DIR',
                        help='one process per node as ros2 launch starts them, logging into LOG_DIR (default: all '
                             'composed in this process)')
    parser.add_argument('--out', default=None, help='write the figures as JSON here')
    args = parser.parse_args(argv)

    graph, reason = _graph_or_reason(args.model)
    if graph is None:
        print(f'demo articulated: cannot run: {reason}', file=sys.stderr)
        return 2
    from kp_pose_ros.sim.procedural import ARTICULATED_CATEGORIES

    unknown = [c for c in args.categories.replace(',', ' ').split() if c not in ARTICULATED_CATEGORIES]
    if unknown:
        print(f"demo articulated: cannot run: unknown categories {unknown}; the sim camera draws "
              f"{', '.join(ARTICULATED_CATEGORIES)}", file=sys.stderr)
        return 2
    wanted = {'camera': 'sim', 'seed': args.seed, 'sim_rate_hz': args.rate_hz, 'model': args.model,
              'method': args.method, 'providers': args.providers, 'overlay': 'false',
              'sim_categories': args.categories}
    declared = {a.name for a in graph.arguments}
    overrides = {k: v for k, v in wanted.items() if k in declared}
    try:
        graph.resolve(overrides)
    except ValueError as exc:
        print(f'demo articulated: cannot run: {exc}', file=sys.stderr)
        return 2
    summary = run(overrides, args.duration, args.min_visible, Path(args.processes) if args.processes else None)
    if summary is None:
        return 1
    print(report(summary), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1), encoding='utf-8')
        print(f'demo articulated: figures written to {args.out}')
    if not summary['frames_processed']:
        print('demo articulated: no frame went through the pipeline (see the log above)', file=sys.stderr)
        return 1
    return 0
