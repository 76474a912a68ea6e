"""Colour-camera intrinsics of common RGB-D sensors, for the simulated camera and synthetic training data.

Numbers are nominal: datasheet fields of view, or the focal length a typical factory calibration reports at that
resolution, rounded to what varies between units anyway (a few pixels). A real unit's camera_info differs by a few
percent; a network trained across several presets should not care. All presets are ideal pinhole cameras (D = 0):
the renderer draws undistorted images, like a driver's rectified stream.
"""
from __future__ import annotations

from types import MappingProxyType

from kp_pose_ros.core.camera import CameraModel


def camera_from_fov(width: int, height: int, hfov_deg: float) -> CameraModel:
    """Square-pixel pinhole camera with a centred principal point spanning `hfov_deg` horizontally."""
    return CameraModel.from_fov(width, height, hfov_deg)


_PRESETS = {
    # Intel RealSense D435 colour (OV2740, datasheet 69 x 42 deg at 16:9). The 640x480 stream is a 4:3 crop; units
    # report fx = fy ~ 615 px there (HFOV ~ 55 deg) with the principal point within a few px of the centre.
    'realsense_d435': CameraModel.pinhole(640, 480, 615.0, 615.0, 320.0, 240.0),
    # Intel RealSense D415 colour: same sensor family and datasheet FOV as the D435; factory calibrations at
    # 640x480 report fx = fy ~ 605 px (HFOV ~ 56 deg).
    'realsense_d415': CameraModel.pinhole(640, 480, 605.0, 605.0, 320.0, 240.0),
    # Azure Kinect DK colour, 1280x720 (datasheet 90 x 59 deg). Factory calibrations report fx = fy ~ 608 px,
    # i.e. HFOV ~ 93 deg, a little wider than the nominal figure.
    'azure_kinect': CameraModel.pinhole(1280, 720, 608.0, 608.0, 640.0, 360.0),
    # Azure Kinect DK depth, NFOV unbinned 640x576 (datasheet 75 x 65 deg). Square pixels at 75 deg horizontal give
    # ~69 deg vertical; the real lens is not a pinhole, this is the closest ideal camera.
    'azure_kinect_nfov': camera_from_fov(640, 576, 75.0),
    # Azure Kinect DK depth, WFOV 2x2 binned 512x512 (datasheet 120 x 120 deg). The real lens is a fisheye; a 120 deg
    # pinhole stretches the corners but keeps the coverage.
    'azure_kinect_wfov': camera_from_fov(512, 512, 120.0),
    # Kinect for Xbox 360 colour, 640x480: the fx = fy = 525 px that ROS openni_camera assumes, i.e. HFOV 62.73 deg.
    'kinect_xbox360': camera_from_fov(640, 480, 62.73),
}

PRESETS = MappingProxyType(_PRESETS)
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> CameraModel:
    """The named preset's CameraModel (immutable, safe to share)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown camera preset {name!r}; available: {', '.join(PRESET_NAMES)}") from None


# The cross-camera evaluation of RoboKeyGen (Table II): name -> (width, height, horizontal FOV in degrees). Held-out
# sets of both trainers are rendered or sampled at these.
PAPER_EVAL_CAMERAS = {'xbox360_kinect_62.73': (640, 480, 62.73), 'realsense_70.21': (640, 480, 70.21),
                      'azure_kinect_93.01': (1280, 720, 93.01)}
