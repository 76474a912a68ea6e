"""Rigid objects (after ../shared/seeds/004): BOP model sets and their keypoints, YOLOv10 detection, keypoint
heatmaps on crops, PnP + RANSAC with optional depth, tracking, ADD(-S) metrics. ROS-free: arrays in, arrays out."""
