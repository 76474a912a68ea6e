"""Thin lifecycle nodes (ros/lifecycle_node.PipelineNode): messages in, core/ and pipeline calls, messages out."""

# Executable name -> 'module:Class', for tools that list every node (kp-pose params, the README's tables).
NODE_CLASSES = {
    'sim_camera': 'kp_pose_ros.nodes.sim_camera:SimCameraNode',
    'robot_keypoints': 'kp_pose_ros.nodes.robot_keypoints:RobotKeypointsNode',
    'robot_lifter': 'kp_pose_ros.nodes.robot_lifter:RobotLifterNode',
    'robot_pose_fitting': 'kp_pose_ros.nodes.robot_pose_fitting:RobotPoseFittingNode',
    'calibration_manager': 'kp_pose_ros.nodes.calibration_manager:CalibrationManagerNode',
    'object_detector': 'kp_pose_ros.nodes.object_detector:ObjectDetectorNode',
    'object_keypoints': 'kp_pose_ros.nodes.object_keypoints:ObjectKeypointsNode',
    'object_pose': 'kp_pose_ros.nodes.object_pose:ObjectPoseNode',
    'articulated_voting': 'kp_pose_ros.nodes.articulated_voting:ArticulatedVotingNode',
    'articulated_fitting': 'kp_pose_ros.nodes.articulated_fitting:ArticulatedFittingNode',
}
