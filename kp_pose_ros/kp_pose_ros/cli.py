"""`kp-pose`: run a pipeline graph in one process, list graphs, inspect topics, run benchmarks.

  kp-pose graphs                          the graphs and their arguments
  kp-pose params [NODE ...]               every node's parameters (structural or live), as README tables
  kp-pose run sim_camera seed:=3 [--duration 10]
  kp-pose topics                          topics and types seen on this ROS_DOMAIN_ID
  kp-pose hz /camera/camera/color/image_raw [--duration 5]
  kp-pose bench sim_camera
  kp-pose demo [--duration 8]
  kp-pose demo objects [--duration 60]    object poses on the sim camera, scored against its ground truth
  kp-pose demo articulated [--duration 60]  per-part poses and joint states on the sim camera, scored likewise
  kp-pose play BAG [--rate 2] [--loop] [--clock] [--remap /camera/color/image_raw:=/image] [--topics T ...]
  kp-pose record OUT /camera/color/image_raw /tf_static [--storage mcap|sqlite3] [--duration 10]
  kp-pose eval robot_keypoints --dataset DIR [--model M.onnx] [--threshold T] [--out results.json]
  kp-pose eval robot_calib --dataset DIR [--no-depth] [--no-joints] [--gt-keypoints] [--out results.json]
  kp-pose eval object_pose --bop DIR [--models SET] [--depth] [--out results.json]
  kp-pose eval articulated_pose --dataset DIR [--model M.onnx] [--method learned|fps|box] [--direct]
               [--true-regions] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition(':=')
        if not sep or not key:
            raise SystemExit(f"kp-pose: expected name:=value, got '{item}'")
        overrides[key] = value
    return overrides


def cmd_graphs(_args) -> int:
    from kp_pose_ros.graphs.registry import GRAPH_NAMES, get_graph

    for name in GRAPH_NAMES:
        graph = get_graph(name)
        print(f'{name}: {graph.description}')
        for a in graph.arguments:
            choices = f" [{'|'.join(a.choices)}]" if a.choices else ''
            print(f'    {a.name}:={a.default}{choices}  {a.description}')
    return 0


def parameter_tables(nodes=None) -> str:
    """Markdown tables of the nodes' parameters, from the PARAMS the nodes declare (the README carries them)."""
    from kp_pose_ros.graphs.runner import load_class
    from kp_pose_ros.nodes import NODE_CLASSES
    from kp_pose_ros.ros.params import markdown_table

    parts = []
    for name in nodes or NODE_CLASSES:
        if name not in NODE_CLASSES:
            raise SystemExit(f"kp-pose: unknown node '{name}', expected one of: {', '.join(NODE_CLASSES)}")
        parts.append(f'#### `{name}`\n\n{markdown_table(load_class(NODE_CLASSES[name]).PARAMS)}\n')
    return '\n'.join(parts)


def cmd_params(args) -> int:
    print(parameter_tables(args.nodes), end='')
    return 0


def cmd_run(args) -> int:
    from kp_pose_ros.graphs.runner import run_graph

    with run_graph(args.graph, _parse_overrides(args.overrides)) as run:
        names = ', '.join(n.get_fully_qualified_name() for n in run.nodes)
        print(f'kp-pose: running graph {args.graph}: {names}', flush=True)
        if run.not_active:
            print(f'kp-pose: not active (see the log above): {", ".join(run.not_active)}', flush=True)
        try:
            run.spin_for(args.duration)
        except KeyboardInterrupt:
            pass
    return 0


def _with_node(fn):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node('kp_pose_cli')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        return fn(node, executor)
    except KeyboardInterrupt:
        return 0
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def cmd_topics(args) -> int:
    def list_topics(node, executor):
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        for name, types in sorted(node.get_topic_names_and_types()):
            print(f"{name} [{', '.join(types)}]")
        return 0
    return _with_node(list_topics)


def cmd_hz(args) -> int:
    from kp_pose_ros.ros.qos import qos_from_name
    from kp_pose_ros.ros.topic_stats import TopicStats, topic_type

    def measure(node, executor):
        stats = TopicStats(node, args.topic, topic_type(node, args.topic, executor, args.wait),
                           qos_from_name(args.qos, depth=10))
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        print(json.dumps({'topic': args.topic, **stats.summary()}, indent=2))
        return 0 if stats.summary()['messages'] else 1
    return _with_node(measure)


def cmd_demo(args) -> int:
    if args.demo_args[:1] == ['objects']:
        from kp_pose_ros.demo_objects import main as objects_main

        return objects_main(args.demo_args[1:])
    if args.demo_args[:1] == ['articulated']:
        from kp_pose_ros.demo_articulated import main as articulated_main

        return articulated_main(args.demo_args[1:])
    from kp_pose_ros.demo import main as demo_main

    return demo_main(args.demo_args)


def cmd_bench(args) -> int:
    from kp_pose_ros.bench.registry import run_benchmark

    return run_benchmark(args.name, args.output)


def cmd_eval(args) -> int:
    if (args.stage == 'object_pose') != bool(args.bop) or (args.stage != 'object_pose') != bool(args.dataset):
        print('kp-pose eval: object_pose takes --bop DIR, the robot stages --dataset DIR', file=sys.stderr)
        return 2
    return {'robot_keypoints': eval_robot_keypoints, 'robot_calib': eval_robot_calib,
            'object_pose': eval_object_pose, 'articulated_pose': eval_articulated_pose}[args.stage](args)


def eval_articulated_pose(args) -> int:
    from kp_pose_ros.articulated import pose_eval
    from kp_pose_ros.articulated.estimator import ArticulatedEstimatorConfig, load_estimator
    from kp_pose_ros.paths import model_file

    model = args.model or str(model_file('articulated/page_voting.onnx'))
    config = ArticulatedEstimatorConfig(method=args.method, keypoints_from='direct' if args.direct else 'voting')
    estimator = load_estimator(model, config, args.providers, args.threads)
    results = {}
    for root in args.dataset:
        results[root] = pose_eval.evaluate(estimator, root, true_regions=args.true_regions,
                                           max_frames=args.max_frames)
        print(pose_eval.report(root, results[root]), flush=True)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump({'model': model, 'provider': estimator.network.provider, 'datasets': results}, f, indent=1)
        print(f'kp-pose: results written to {args.out}')
    return 0


def eval_object_pose(args) -> int:
    from kp_pose_ros.objects import pose_eval
    from kp_pose_ros.objects.bop import BopDataset
    from kp_pose_ros.objects.estimator import ObjectEstimatorConfig, load_estimator
    from kp_pose_ros.objects.models import load_bop_models

    results = {}
    for root in args.bop:
        dataset = BopDataset(root, split=args.split)
        models_eval = load_bop_models(dataset.models_dir)
        config = ObjectEstimatorConfig(use_depth=args.depth, track=False)
        estimator = load_estimator(args.models, models_eval, config, args.providers, args.threads)
        results[root] = pose_eval.evaluate(estimator, dataset, models_eval, use_depth=args.depth,
                                           max_frames=args.max_frames, gt_boxes=args.gt_boxes)
        print(pose_eval.report(root, results[root]), flush=True)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump({'models': args.models, 'datasets': results}, f, indent=1, default=float)
        print(f'kp-pose: results written to {args.out}')
    return 0


def eval_robot_keypoints(args) -> int:
    from kp_pose_ros.paths import model_file
    from kp_pose_ros.robot import keypoint_accuracy as ka
    from kp_pose_ros.robot.keypoints import RobotKeypointDetector

    model = args.model or str(model_file('robot_keypoints_panda.onnx'))
    detector = RobotKeypointDetector(model, providers=args.providers, threads=args.threads)
    threshold = args.threshold if args.threshold is not None else detector.suggested_confidence_threshold
    summaries = {}
    for dataset in args.dataset:
        summaries[dataset] = ka.summarise(ka.detect_dataset(detector, dataset), threshold)
        print(ka.report(dataset, summaries[dataset]), flush=True)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump({'model': model, 'provider': detector.provider, 'datasets': summaries}, f, indent=1)
        print(f'kp-pose: results written to {args.out}')
    return 0


def eval_robot_calib(args) -> int:
    from kp_pose_ros.paths import model_file
    from kp_pose_ros.robot import calib_eval
    from kp_pose_ros.robot.estimator import EstimatorConfig
    from kp_pose_ros.robot.keypoints import RobotKeypointDetector
    from kp_pose_ros.robot.lifting import DiffusionLifter, JointRegressor

    detector = None
    if not args.gt_keypoints:
        detector = RobotKeypointDetector(args.model or str(model_file('robot_keypoints_panda.onnx')),
                                         providers=args.providers, threads=args.threads)
    regressor = lifter = None
    if args.no_joints:
        regressor = JointRegressor(model_file('robot_joints_panda.onnx'), args.providers)
        lifter = DiffusionLifter(model_file('robot_lifter_panda.onnx'), args.providers, seed=0)
    config = EstimatorConfig(joints_mode='unknown' if args.no_joints else 'known',
                             depth_alignment=not args.no_depth,
                             static_camera_frames=args.static_camera_frames)
    estimator = calib_eval.robot_estimator(config, args.urdf, args.base_link, regressor=regressor, lifter=lifter)
    results = {}
    for dataset in args.dataset:
        sequences = [calib_eval.run_sequence(estimator, frames) for _, frames in calib_eval.dataset_sequences(
            dataset, detector.detect if detector else None, use_depth=not args.no_depth,
            use_joints=not args.no_joints)]
        results[dataset] = calib_eval.summarise(sequences)
        print(calib_eval.report(dataset, results[dataset]), flush=True)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump({'config': vars(args) | {'fn': None}, 'provider': detector.provider if detector else None,
                       'datasets': results}, f, indent=1, default=float)
        print(f'kp-pose: results written to {args.out}')
    return 0


def cmd_play(args) -> int:
    from kp_pose_ros.ros.bags import play

    def replay(node, _executor):
        stats = play(node, args.bag, rate=args.rate, loop=args.loop, clock_hz=args.clock, remaps=args.remap,
                     topics=args.topics, wait_s=args.wait, duration=args.duration)
        print(stats.summary_line(), flush=True)
        return 0 if stats.messages else 1
    return _with_node(replay)


def cmd_record(args) -> int:
    from kp_pose_ros.ros.bags import record

    def rec(node, executor):
        stats = record(node, executor, args.output, args.topics, storage=args.storage, duration=args.duration)
        print(stats.summary_line(), flush=True)
        return 0
    return _with_node(rec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='kp-pose', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('graphs', help='list graphs and their arguments').set_defaults(fn=cmd_graphs)
    p = sub.add_parser('params', help="nodes' parameters as markdown tables")
    p.add_argument('nodes', nargs='*', help='node executables (default: all)')
    p.set_defaults(fn=cmd_params)
    p = sub.add_parser('run', help='run a graph in this process')
    p.add_argument('graph')
    p.add_argument('overrides', nargs='*', help='graph arguments as name:=value')
    p.add_argument('--duration', type=float, default=None, help='stop after this many seconds')
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser('topics', help='list topics on this ROS domain')
    p.add_argument('--wait', type=float, default=2.0, help='discovery time (s)')
    p.set_defaults(fn=cmd_topics)
    p = sub.add_parser('hz', help='rate, latency and size of one topic')
    p.add_argument('topic')
    p.add_argument('--duration', type=float, default=5.0)
    p.add_argument('--wait', type=float, default=5.0, help='discovery time (s)')
    p.add_argument('--qos', default='sensor_data', choices=('sensor_data', 'reliable'))
    p.set_defaults(fn=cmd_hz)
    p = sub.add_parser('demo', help='the main job on the synthetic camera (make demo); `demo objects`: object poses '
                       '(make demo-objects); `demo articulated`: articulated objects (make demo-articulated); '
                       'kp-pose demo [objects|articulated] --help', add_help=False)
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser('bench', help='run a benchmark and write its results file')
    p.add_argument('name')
    p.add_argument('--output', default=None, help='results file (default results/<name>.json)')
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser('eval', help='accuracy of a pipeline stage on an annotated dataset')
    p.add_argument('stage', choices=('robot_keypoints', 'robot_calib', 'object_pose', 'articulated_pose'))
    p.add_argument('--bop', nargs='+', default=None,
                   help='object_pose: BOP-format folder(s) (camera.json, models_eval/, <split>/<scene>/rgb, '
                        'scene_gt.json, scene_camera.json)')
    p.add_argument('--split', default='test', help="object_pose: the BOP split folder (default 'test')")
    p.add_argument('--models', default='lmo',
                   help='object_pose: object set whose models to run (<set>_detector.onnx, <set>_keypoints.onnx '
                        'in the package models/, or a path prefix to such files)')
    p.add_argument('--depth', action='store_true', help='object_pose: refine and check poses with depth/')
    p.add_argument('--max-frames', type=int, default=None,
                   help='object_pose, articulated_pose: only the first N frames')
    p.add_argument('--gt-boxes', action='store_true',
                   help='object_pose: annotated visible boxes instead of the detector (isolates keypoints + PnP)')
    p.add_argument('--dataset', nargs='+', default=None,
                   help='robot-layout dataset folder(s) (sim.dataset: meta.yaml, annotations.jsonl, rgb/, depth/); '
                        'robot_calib: frames sharing camera_index form one static-camera sequence')
    p.add_argument('--model', default=None,
                   help='ONNX model with its YAML manifest (default: the shipped one): robot_keypoints / robot_calib '
                        'the 2D keypoint model, articulated_pose the voting network')
    p.add_argument('--threshold', type=float, default=None,
                   help="robot_keypoints: confidence threshold (default: the manifest's "
                        "suggested_confidence_threshold)")
    p.add_argument('--no-depth', action='store_true', help='robot_calib: RGB only, ignore depth/')
    p.add_argument('--no-joints', action='store_true',
                   help='robot_calib: unknown joints (lift the keypoints, regress the joints)')
    p.add_argument('--gt-keypoints', action='store_true',
                   help='robot_calib: the annotated visible keypoints instead of the detector (isolates the fit)')
    p.add_argument('--static-camera-frames', type=int, default=30,
                   help='robot_calib: known joints without depth: PnP over this many frames (0: per frame)')
    p.add_argument('--urdf', default=None, help="robot_calib: robot URDF (default: pybullet's Panda)")
    p.add_argument('--base-link', default='panda_link0', help='robot_calib: robot base frame')
    p.add_argument('--method', choices=('learned', 'fps', 'box'), default='learned',
                   help='articulated_pose: the keypoint set whose radii are voted (ablation: fps, box)')
    p.add_argument('--direct', action='store_true',
                   help='articulated_pose: directly regressed keypoints instead of voting (ablation)')
    p.add_argument('--true-regions', action='store_true',
                   help='articulated_pose: annotated instance masks instead of the depth segmentation')
    p.add_argument('--providers', default='auto', help='auto, cpu, cuda or tensorrt')
    p.add_argument('--threads', type=int, default=0, help='onnxruntime intra-op threads (0: its default)')
    p.add_argument('--out', default=None, help='write the figures as JSON here')
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser('play', help='replay a rosbag2 bag (sqlite3 or MCAP), header stamps preserved')
    p.add_argument('bag', help='bag folder (or one .mcap / .db3 file)')
    p.add_argument('--rate', type=float, default=1.0, help='playback speed factor')
    p.add_argument('--loop', action='store_true', help='play again and again (until Ctrl-C or --duration)')
    p.add_argument('--clock', type=float, nargs='?', const=40.0, default=0.0, metavar='HZ',
                   help='publish the bag time on /clock (rosgraph_msgs/Clock), at HZ (default 40)')
    p.add_argument('--remap', action='append', default=[], metavar='FROM:=TO', help='rename a topic (repeatable)')
    p.add_argument('--topics', nargs='+', default=None, help='play only these topics')
    p.add_argument('--wait', type=float, default=0.0, metavar='S',
                   help='wait up to S seconds for every topic to have a subscriber before playing')
    p.add_argument('--duration', type=float, default=None, help='stop after this many seconds')
    p.set_defaults(fn=cmd_play)
    p = sub.add_parser('record', help='record topics into a new rosbag2 bag (raw messages, header stamps kept)')
    p.add_argument('output', help='bag folder to create (must not exist)')
    p.add_argument('topics', nargs='+', help='topics to record (subscribed when they appear)')
    p.add_argument('--storage', default='mcap', choices=('mcap', 'sqlite3'))
    p.add_argument('--duration', type=float, default=None, help='stop after this many seconds (default: Ctrl-C)')
    p.set_defaults(fn=cmd_record)
    args, rest = parser.parse_known_args(argv)
    if args.command == 'demo':
        args.demo_args = rest  # the demo has its own options
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.fn(args)


if __name__ == '__main__':
    sys.exit(main())
