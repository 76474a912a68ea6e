"""Synthetic RGB-D camera: a pybullet scene with a robot arm, used by the sim_camera node and the dataset writer."""
