"""ament_python package definition; also installs editable into the development venv (scripts/setup.sh)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'kp_pose_ros'

# Each node is also a console script, so `ros2 run kp_pose_ros <node>` works in a colcon workspace.
NODES = {
    'sim_camera': 'kp_pose_ros.nodes.sim_camera:main',
    'robot_keypoints': 'kp_pose_ros.nodes.robot_keypoints:main',
    'robot_lifter': 'kp_pose_ros.nodes.robot_lifter:main',
    'robot_pose_fitting': 'kp_pose_ros.nodes.robot_pose_fitting:main',
    'calibration_manager': 'kp_pose_ros.nodes.calibration_manager:main',
    'object_detector': 'kp_pose_ros.nodes.object_detector:main',
    'object_keypoints': 'kp_pose_ros.nodes.object_keypoints:main',
    'object_pose': 'kp_pose_ros.nodes.object_pose:main',
    'articulated_voting': 'kp_pose_ros.nodes.articulated_voting:main',
    'articulated_fitting': 'kp_pose_ros.nodes.articulated_fitting:main',
}

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
        (f'share/{PACKAGE}/config/rviz', glob('config/rviz/*.rviz')),
        (f'share/{PACKAGE}/models', glob('models/*.onnx') + glob('models/*.yaml')),
        (f'share/{PACKAGE}/models/articulated', glob('models/articulated/*.onnx') + glob('models/articulated/*.yaml')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='kp_pose_ros developers',
    maintainer_email='dev@kp-pose-ros.invalid',
    description='Keypoint-based pose estimation for ROS 2 (robot calibration, rigid, articulated, category-level).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [f'{name} = {target}' for name, target in NODES.items()]
        + ['kp-pose = kp_pose_ros.cli:main'],
    },
)
