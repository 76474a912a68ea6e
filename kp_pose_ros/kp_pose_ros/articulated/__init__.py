"""Articulated objects (PAGE): per-part poses and joint states by radius voting; ROS-free."""
