"""Command-line pieces every dataset writer shares: the sensor options and a progress line."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from kp_pose_ros.sim.camera_effects import EffectRanges
from kp_pose_ros.sim.depth_sensors import DEPTH_SENSOR_NAMES


def add_sensor_arguments(parser: argparse.ArgumentParser, depth_example: str = 'realsense_d435') -> None:
    """--depth-sensor and --camera-effects; read them back with sensor_settings."""
    parser.add_argument('--depth-sensor', default='ideal', choices=DEPTH_SENSOR_NAMES,
                        help=f'depth sensor model (sim.depth_sensors), e.g. {depth_example}')
    parser.add_argument('--camera-effects', action='store_true',
                        help='draw a colour camera per frame (exposure, white balance, blur, noise, gamma, JPEG)')


def sensor_settings(args: argparse.Namespace) -> dict:
    """SceneConfig keywords for the options add_sensor_arguments declared."""
    return {'depth_sensor': args.depth_sensor, 'camera_effects': EffectRanges() if args.camera_effects else None}


def progress_printer(total: int) -> Callable[[int, int], None]:
    """A writer's progress callback that prints about 20 lines to stderr, and the last."""
    step = max(1, total // 20)

    def report(done: int, of: int) -> None:
        if done % step == 0 or done == of:
            print(f'{done}/{of} frames', file=sys.stderr, flush=True)
    return report
