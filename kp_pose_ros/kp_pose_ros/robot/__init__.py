"""RoboKeyGen and camera-to-robot calibration, ROS-free: URDF/FK, keypoints, diffusion lifting, pose fitting,
depth alignment, calibration."""
