"""Benchmarks by name; each module kp_pose_ros.bench.<name> has `run() -> dict` and `report(results) -> str`."""
from __future__ import annotations

import json
import platform
import time
from importlib import import_module
from pathlib import Path

BENCHMARK_NAMES = ('sim_camera', 'robot_calib', 'throughput', 'object_throughput')
RESULTS_DIR = Path.cwd() / 'results'


def run_benchmark(name: str, output: str | None = None) -> int:
    if name not in BENCHMARK_NAMES:
        raise SystemExit(f"kp-pose: unknown benchmark '{name}', expected one of: {', '.join(BENCHMARK_NAMES)}")
    module = import_module(f'kp_pose_ros.bench.{name}')
    started = time.time()
    results = module.run()
    results['_meta'] = {
        'benchmark': name,
        'date_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(started)),
        'duration_s': round(time.time() - started, 1),
        'machine': f'{platform.machine()}, {platform.processor() or "cpu"}, {_cpu_count()} cores',
        'python': platform.python_version(),
    }
    path = Path(output) if output else RESULTS_DIR / f'{name}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(results, indent=2) + '\n')
    tmp.replace(path)
    print(module.report(results))
    print(f'kp-pose: results written to {path}')
    return 0


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
