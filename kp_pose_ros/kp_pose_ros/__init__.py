"""kp_pose_ros: keypoint-based pose estimation for ROS 2.

Layers: ``core`` (numpy/onnxruntime, no ROS imports), ``ros`` (message <-> array adapters),
``nodes`` (thin rclpy nodes), ``graphs`` (one definition per pipeline, for launch files and the in-process runner),
``sim`` (the synthetic RGB-D camera scene), ``training`` (torch; never imported by a node).
"""
