"""Camera presets (config/camera_<name>.yaml): the topics and frames a driver publishes, so graphs can be pointed at
a RealSense, an Azure Kinect or the synthetic camera with one launch argument."""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from kp_pose_ros.paths import config_file

CAMERA_PRESETS = ('realsense', 'azure_kinect', 'sim')


@dataclass(frozen=True)
class CameraPreset:
    name: str
    color_topic: str
    depth_topic: str
    camera_info_topic: str
    optical_frame: str
    root_frame: str


def camera_preset(name: str) -> CameraPreset:
    if name not in CAMERA_PRESETS:
        raise ValueError(f"unknown camera '{name}', expected one of: {', '.join(CAMERA_PRESETS)}")
    with open(config_file(f'camera_{name}.yaml'), encoding='utf-8') as f:
        return CameraPreset(**yaml.safe_load(f))
