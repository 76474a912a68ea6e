"""Synthetic RGB-D camera: publishes what a RealSense driver publishes (colour, aligned depth, camera_info, the
static optical transform), rendered by pybullet, plus ground truth under /sim/. Three scenes: a moving robot arm (joint
states, camera pose, keypoints) for robot_calib, table-top layouts of a BOP model set (every object's pose and
visibility) for object_pose, or layouts of procedural articulated instances unseen in training (every part's box pose
and size, every joint's state) for articulated_pose.

Frames are rendered from the frame index, not the wall clock, so a run is deterministic for a seed however fast the
machine is; stamps are the node's clock (use_sim_time works)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from geometry_msgs.msg import Point, PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection3DArray

from kp_pose_msgs.msg import Keypoint2D, Keypoint3D, KeypointArray, KeypointInstance
from kp_pose_ros.articulated.categories import ArticulatedInstance
from kp_pose_ros.core.image_codec import metres_to_depth
from kp_pose_ros.core.transforms import make_transform, quat_xyzw_to_matrix
from kp_pose_ros.objects.models import load_bop_models
from kp_pose_ros.ros.detections import detection_3d
from kp_pose_ros.ros.images import array_to_image, camera_info_from_model
from kp_pose_ros.ros.joint_states import joint_state
from kp_pose_ros.ros.lifecycle_node import ConfigureError, PipelineNode
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.poses import pose_from_matrix
from kp_pose_ros.ros.qos import LATCHED_QOS, qos_profile, sensor_qos_params
from kp_pose_ros.ros.tf import StaticTfBroadcaster, transform_stamped
from kp_pose_ros.sim.camera_effects import EffectRanges
from kp_pose_ros.sim.camera_presets import PRESET_NAMES, camera_from_fov, preset
from kp_pose_ros.sim.depth_sensors import DEPTH_SENSOR_NAMES
from kp_pose_ros.sim.objects import ObjectFrame, ObjectScene, ObjectSceneConfig
from kp_pose_ros.sim.procedural import ARTICULATED_CATEGORIES
from kp_pose_ros.sim.procedural_scene import InstanceTruth, ProceduralFrame, ProceduralScene, ProceduralSceneConfig
from kp_pose_ros.sim.procedural_writer import config_for
from kp_pose_ros.sim.renderer import RendererError
from kp_pose_ros.sim.scene import RENDERERS, SceneConfig, SimScene
from kp_pose_ros.sim.trajectory import RandomWaypointTrajectory

# Optical frame axes (z forward, x right, y down) expressed in the camera body frame (x forward, y left, z up), REP 103.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# Offset of the colour imager from camera_link, as a D435's driver reports it (metres, body frame).
COLOR_OFFSET_M = (0.0, 0.015, 0.0)
# camera_link -> colour frame -> colour optical frame, fixed.
T_LINK_COLOR = make_transform(np.eye(3), np.array(COLOR_OFFSET_M))
T_COLOR_OPTICAL = make_transform(R_BODY_OPTICAL, np.zeros(3))
# The articulated categories articulated_pose estimates (a fixed part list each; cabinets' parts vary), as far as the
# data engine draws them: scene "articulated"'s default.
ESTIMATED_ARTICULATED = tuple(c for c in ('laptop', 'drawer', 'eyeglasses', 'scissors') if c in ARTICULATED_CATEGORIES)


def driver_static_transforms(camera_name: str, stamp) -> list:
    """The static transforms a RealSense driver publishes for `camera_name` (camera_link -> colour -> optical)."""
    link, color, optical = f'{camera_name}_link', f'{camera_name}_color_frame', f'{camera_name}_color_optical_frame'
    return [transform_stamped(link, color, T_LINK_COLOR, stamp),
            transform_stamped(color, optical, T_COLOR_OPTICAL, stamp)]


def camera_messages(frame, camera, header) -> tuple[Image, CameraInfo, Image]:
    """A rendered frame as the driver's colour image (rgb8), camera_info (shared by colour and aligned depth) and
    aligned depth (16UC1, mm), all with `header`."""
    return (array_to_image(frame.rgb, 'rgb8', header), camera_info_from_model(camera, header),
            array_to_image(metres_to_depth(frame.depth_m, '16UC1'), '16UC1', header))


def next_object_frame(scene: ObjectScene | ProceduralScene, index: int,
                      views_per_layout: int) -> ObjectFrame | ProceduralFrame:
    """Frame `index` of an object (or articulated) scene: a new view every frame, a new layout every
    `views_per_layout` frames (the first shows the layout the scene was built with)."""
    if index > 0 and index % views_per_layout == 0:
        scene.new_layout()
    elif index > 0:
        scene.new_view()
    return scene.render()


def objects_message(frame: ObjectFrame, models: dict, header) -> Detection3DArray:
    """Every object of the layout as a Detection3D (the object nodes' convention, ros.detections): class obj_XXXXXX,
    pose camera <- model, model box; score = the visible share of its silhouette in the image (BOP's visib_fract: 0
    when hidden or out of view), so consumers choose which objects count as seen."""
    msg = Detection3DArray(header=header)
    for k, instance in enumerate(frame.instances):
        model = models[instance.obj_id]
        full = frame.full_masks[k]
        silhouette = np.count_nonzero(full)
        visible = np.count_nonzero(full & frame.visible_mask(k)) / silhouette if silhouette else 0.0
        msg.detections.append(detection_3d(header, model.name, visible, instance.T_cam_obj, f'{model.name}_{k}',
                                           model.box_min_m, model.box_size_m))
    return msg


def articulated_scene_config(camera, categories, per_layout, sensor: dict) -> ProceduralSceneConfig:
    """Scene "articulated": the data engine's articulated layouts (sim.procedural_writer kind "articulated": on the
    floor, no table) of TEST-split instances of `categories` (never seen in training), `per_layout` = (fewest, most)
    instances per layout. ValueError, saying why, for unknown categories or bad counts."""
    categories = [str(c) for c in categories]
    unknown = [c for c in categories if c not in ARTICULATED_CATEGORIES]
    if not categories or unknown:
        problem = f'unknown categories {unknown}' if unknown else 'no category'
        raise ValueError(f'articulated_categories: {problem}; the data engine draws '
                         f'{", ".join(ARTICULATED_CATEGORIES)}')
    counts = [int(n) for n in per_layout]
    if len(counts) != 2 or not 1 <= counts[0] <= counts[1]:
        raise ValueError(f'articulated_per_layout must be [fewest, most] with 1 <= fewest <= most, got {counts}')
    return config_for('articulated', categories, camera=camera, split='test', articulated_per_layout=tuple(counts),
                      **sensor)


def part_boxes(instance: InstanceTruth, model: ArticulatedInstance) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(part name, T_cam_box, box extents) of each part of an articulated instance, base first: the box frame is the
    part's link frame moved to the centre of its geometry's bounding box (articulated.categories), as articulated_pose
    estimates it."""
    offsets = dict(zip(model.part_names, model.box_offsets()))
    extents = {p.name: p.extents for p in model.parts}
    return [(p.name, p.T_cam_part @ offsets[p.name], extents[p.name]) for p in instance.parts]


def articulated_truth(scene: ProceduralScene, frame: ProceduralFrame, models: dict, header) \
        -> tuple[Detection3DArray, JointState]:
    """The ground truth of an articulated frame: one Detection3D per part of every instance (id
    `<instance>/<part>`, class `<category>/<part>`, pose and bbox centre = the part's box frame in the camera optical
    frame, bbox size = the box extents, score = the visible share of the instance's silhouette, 0 when hidden or out of
    view) and one JointState with every joint's true state (`<instance>/<joint>`, rad or m). `models` caches each
    instance's ArticulatedInstance by URDF path."""
    parts, names, states = Detection3DArray(header=header), [], []
    for k, inst in enumerate(frame.instances):
        if inst.kind != 'articulated':
            continue
        urdf = scene.articulated[inst.body].urdf
        if urdf not in models:
            models[urdf] = ArticulatedInstance(urdf, inst.category, points_per_part=64)
        silhouette = np.count_nonzero(scene.scene.silhouette(inst.body))
        visible = np.count_nonzero(frame.instance_mask(k)) / silhouette if silhouette else 0.0
        for name, T_cam_box, extents in part_boxes(inst, models[urdf]):
            parts.detections.append(detection_3d(header, f'{inst.category}/{name}', min(visible, 1.0), T_cam_box,
                                                 f'{inst.name}/{name}', -extents / 2, extents))
        names += [f'{inst.name}/{j.name}' for j in inst.joints]
        states += [j.state for j in inst.joints]
    return parts, joint_state(names, states, header.stamp)


class SimCameraNode(PipelineNode):
    PARAMS = (
        Param('scene', 'robot', '"robot": a Franka Panda moving through random poses (ground truth /sim/joint_states, '
              '/sim/camera_pose, /sim/keypoints); "objects": table-top layouts of the models in objects_dir seen from '
              'a new camera pose each frame (ground truth /sim/objects); "articulated": procedural articulated '
              'instances unseen in training (TEST split) at random joint states, a new camera pose each frame '
              '(ground truth /sim/articulated/parts, /sim/articulated/joint_states). The arm, camera placement, '
              'distractor and robot-state parameters apply to "robot" only; "objects" and "articulated" need renderer '
              '"pbr".',
              choices=('robot', 'objects', 'articulated')),
        Param('objects_dir', '', 'scene "objects": BOP model folder (obj_XXXXXX.ply in mm, models_info.json) whose '
              'objects are dropped onto the table.'),
        Param('objects_per_layout', 8, 'scene "objects": objects dropped per layout, drawn with repeats (those that '
              'fall off the table are left out).', min_value=1, max_value=30),
        Param('articulated_categories', list(ESTIMATED_ARTICULATED), 'scene "articulated": categories drawn per '
              f'instance, of {", ".join(ARTICULATED_CATEGORIES)} (default: those articulated_pose estimates).'),
        Param('articulated_per_layout', [1, 2], 'scene "articulated": fewest and most instances per layout.'),
        Param('views_per_layout', 10, 'scenes "objects" and "articulated": frames per layout, each from a new camera '
              'pose with new lights and backdrop; then new objects.', min_value=1, max_value=100000),
        Param('camera_model', 'realsense_d435', 'Intrinsics preset of the simulated colour camera, or "fov" to use '
              'width/height/hfov_deg.', choices=PRESET_NAMES + ('fov',)),
        Param('width', 640, 'Image width in pixels (camera_model "fov" only).', min_value=16, max_value=4096),
        Param('height', 480, 'Image height in pixels (camera_model "fov" only).', min_value=16, max_value=4096),
        Param('hfov_deg', 70.0, 'Horizontal field of view (camera_model "fov" only).', min_value=10.0, max_value=150.0),
        Param('rate_hz', 10.0, 'Frame rate. Rendering takes ~80 ms at 640x480 on one core, which caps it.',
              live=True, min_value=0.1, max_value=120.0),
        Param('seed', 0, 'Seed of the scene: trajectory, camera placement, appearance. Same seed, same frames.'),
        Param('trajectory', 'random', '"random": smooth motion through random waypoints within joint limits; '
              '"static": hold static_joints.', choices=('random', 'static')),
        Param('joint_speed', 0.4, 'Peak joint speed of the random trajectory (rad/s); use trajectory "static" for a '
              'still arm.', min_value=0.01, max_value=3.0),
        Param('static_joints', [0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8],
              'Arm joint positions for trajectory "static" (rad).'),
        Param('camera_placement', 'random',
              '"random": a pose drawn from the seed around the robot; "fixed": camera_pose.',
              choices=('random', 'fixed')),
        Param('camera_pose', [1.5, 0.0, 0.6, 0.0, 0.0, 0.0, 1.0],
              'Pose of camera_link in the robot base frame, x y z qx qy qz qw (camera_placement "fixed").'),
        Param('camera_reposition_period_s', 0.0,
              'Draw a new random camera pose this often (0: the camera never moves).',
              min_value=0.0, max_value=3600.0),
        Param('num_distractors', 0, 'Distractor objects placed around the robot.', min_value=0, max_value=20),
        Param('random_background', True, 'Random floor and background: real photographs (where installed) and '
              'procedural textures.'),
        Param('renderer', 'pbr', '"pbr": OpenGL through EGL (materials, several lights, soft shadows, '
              'anti-aliasing); "tiny": pybullet\'s TinyRenderer (flat, faster, no OpenGL needed).',
              choices=RENDERERS),
        Param('shadows', False, 'Shadow maps (pbr): they cost 2-3x the render time on a CPU, which caps rate_hz; '
              'training data has them.'),
        Param('depth_sensor', 'gaussian', 'Depth sensor model: "gaussian" (depth_noise_std_m), "ideal", "stereo", '
              '"tof", or a camera preset (realsense_d435: holes, flying pixels, scale bias, misregistration; '
              'azure_kinect_nfov: time of flight).', choices=DEPTH_SENSOR_NAMES),
        Param('depth_noise_std_m', 0.002, 'Gaussian depth noise at 1 m, growing with the square of the distance like a '
              'stereo camera\'s (0.002: about a RealSense D435\'s at 1 m); depth_sensor "gaussian" only.',
              min_value=0.0, max_value=0.05),
        Param('camera_effects', False, 'Draw a colour camera per frame: exposure, white balance, blur, shot and '
              'read noise, gamma, JPEG (sim.camera_effects).'),
        Param('camera_name', 'camera', 'Frame prefix: <name>_link, <name>_color_frame, <name>_color_optical_frame.'),
        Param('base_frame', 'panda_link0', 'The robot base frame the ground truth is expressed in.'),
        Param('publish_robot_state', True, 'Also publish /joint_states and /robot_description, as a real robot does.'),
        *sensor_qos_params('reliable', 5, what='image and camera_info publishers (RealSense publishes reliable)'),
    )

    def __init__(self, **kwargs):
        super().__init__('sim_camera', **kwargs)
        self.scene: SimScene | None = None

    def configure(self) -> None:
        p = self.p
        camera = (camera_from_fov(p.width, p.height, p.hfov_deg) if p.camera_model == 'fov'
                  else preset(p.camera_model))
        sensor = dict(random_background=p.random_background, shadows=p.shadows,
                      camera_effects=EffectRanges() if p.camera_effects else None,
                      **(dict(depth_noise_std_m=p.depth_noise_std_m) if p.depth_sensor == 'gaussian'
                         else dict(depth_sensor=p.depth_sensor)))
        self.camera = camera
        self.frame_index = 0
        self.optical_frame = f'{p.camera_name}_color_optical_frame'
        try:
            if p.scene == 'objects':
                self._configure_objects(camera, sensor)
            elif p.scene == 'articulated':
                self._configure_articulated(camera, sensor)
            else:
                self._configure_robot(camera, sensor)
        except RendererError as exc:
            raise ConfigureError(f'{exc} (renderer:=tiny needs no OpenGL)') from exc

        qos = qos_profile(p.qos_reliability, p.qos_depth)
        self.pub_color = self.create_publisher(Image, '~/color/image_raw', qos)
        self.pub_color_info = self.create_publisher(CameraInfo, '~/color/camera_info', qos)
        self.pub_depth = self.create_publisher(Image, '~/aligned_depth_to_color/image_raw', qos)
        self.pub_depth_info = self.create_publisher(CameraInfo, '~/aligned_depth_to_color/camera_info', qos)
        self.static_tf = StaticTfBroadcaster(self)

    def _configure_robot(self, camera, sensor: dict) -> None:
        p = self.p
        self.scene = SimScene(SceneConfig(camera=camera, num_distractors=p.num_distractors, renderer=p.renderer,
                                          **sensor), seed=p.seed)
        # Waypoints in collision with the floor or the arm itself are redrawn (the motion between is not checked).
        self.trajectory = RandomWaypointTrajectory(self.scene.joint_limits, seed=p.seed, speed=p.joint_speed,
                                                   accept=lambda q: not self.scene.in_collision(q))
        self.scene_time_s = 0.0
        # The scene is placed by its optical frame.
        self.T_link_optical = T_LINK_COLOR @ T_COLOR_OPTICAL
        try:
            self._place_camera()
        except ValueError as exc:
            raise ConfigureError(str(exc)) from exc
        self.pub_gt_joints = self.create_publisher(JointState, '/sim/joint_states', 10)
        self.pub_gt_pose = self.create_publisher(PoseStamped, '/sim/camera_pose', 10)
        self.pub_gt_keypoints = self.create_publisher(KeypointArray, '/sim/keypoints', 10)
        self.pub_joints = None
        if p.publish_robot_state:
            self.pub_joints = self.create_publisher(JointState, '/joint_states', 10)
            self.pub_description = self.create_publisher(String, '/robot_description', LATCHED_QOS)

    def _configure_objects(self, camera, sensor: dict) -> None:
        p = self.p
        if not p.objects_dir:
            raise ConfigureError('scene "objects" needs objects_dir: a BOP model folder (obj_XXXXXX.ply, '
                                 'models_info.json)')
        if p.renderer != 'pbr':
            raise ConfigureError('scene "objects" draws each model\'s own mesh, which needs renderer "pbr"')
        try:
            self.models = load_bop_models(Path(p.objects_dir).expanduser())
        except (OSError, ValueError) as exc:
            raise ConfigureError(f'objects_dir {p.objects_dir}: {exc}') from exc
        self.scene = ObjectScene(self.models, ObjectSceneConfig(camera=camera, objects_per_layout=p.objects_per_layout,
                                                                **sensor), seed=p.seed)
        self.pub_gt_objects = self.create_publisher(Detection3DArray, '/sim/objects', 10)

    def _configure_articulated(self, camera, sensor: dict) -> None:
        p = self.p
        if p.renderer != 'pbr':
            raise ConfigureError('scene "articulated" draws each part\'s own mesh, which needs renderer "pbr"')
        try:
            config = articulated_scene_config(camera, p.articulated_categories, p.articulated_per_layout, sensor)
        except ValueError as exc:
            raise ConfigureError(str(exc)) from exc
        self.scene = ProceduralScene(config, seed=p.seed)
        self.part_models: dict = {}
        self.pub_gt_parts = self.create_publisher(Detection3DArray, '/sim/articulated/parts', 10)
        self.pub_gt_articulated_joints = self.create_publisher(JointState, '/sim/articulated/joint_states', 10)

    def activate(self) -> None:
        p = self.p
        if p.scene == 'robot' and p.publish_robot_state:
            self.pub_description.publish(String(data=self.scene.urdf_text))
        now = self.get_clock().now().to_msg()
        self.static_tf.send(driver_static_transforms(p.camera_name, now))
        # Rendering (~80 ms) runs off the executor; a tick that finds the renderer busy is skipped, and scene time
        # advances per rendered frame, so the frames stay the same for a seed however many ticks are skipped.
        self.renderer = self.create_worker(self._render, 'rendering')
        self.timer = self.create_timer(1.0 / p.rate_hz, lambda: self.renderer.submit(None))
        scene = {'objects': lambda: f'objects scene ({len(self.models)} models of {p.objects_dir})',
                 'articulated': lambda: f'articulated scene ({", ".join(self.scene.config.articulated_categories)}, '
                                        f'test split)',
                 'robot': lambda: 'robot scene'}[p.scene]()
        self.get_logger().info(
            f'sim camera {p.camera_model} {self.camera.width}x{self.camera.height} (HFOV '
            f'{self.camera.hfov_deg:.1f} deg) at {p.rate_hz:g} Hz, {scene}, seed {p.seed}; topics under '
            f'{self.get_namespace().rstrip("/")}/{self.get_name()}/')

    def cleanup(self) -> None:
        if self.scene is not None:
            self.scene.close()
            self.scene = None

    def on_parameter_change(self, name, value) -> None:
        if name == 'rate_hz' and self.state == 'active':
            self.timer.timer_period_ns = int(1e9 / float(value))

    def _place_camera(self) -> None:
        if self.p.camera_placement == 'fixed':
            pose = np.asarray(self.p.camera_pose, dtype=float)
            if pose.shape != (7,):
                raise ValueError(f'camera_pose needs 7 numbers (x y z qx qy qz qw), got {pose.size}')
            T_base_link = make_transform(quat_xyzw_to_matrix(pose[3:]), pose[:3])
            self.scene.set_camera_pose(T_base_link @ self.T_link_optical)
        else:
            self.scene.randomize_camera()

    def _render(self, _tick=None) -> None:
        if self.p.scene == 'robot':
            frame, publish = self._next_robot_frame(), self.publish_frame
        else:
            frame = next_object_frame(self.scene, self.frame_index, self.p.views_per_layout)
            publish = self.publish_object_frame if self.p.scene == 'objects' else self.publish_articulated_frame
        self.frame_index += 1
        publish(frame, self.get_clock().now().to_msg())
        self.diagnostics.output('color/image_raw')

    def _next_robot_frame(self):
        # Scene time advances one frame period per frame (not with the wall clock), so a run is deterministic and a
        # live change of rate_hz changes the pace, not the arm's position.
        t, step = self.scene_time_s, 1.0 / self.p.rate_hz
        period = self.p.camera_reposition_period_s
        if self.p.camera_placement == 'random' and period > 0 and self.frame_index > 0 \
                and int(t / period) != int((t - step) / period):
            self.scene.randomize_camera()
        q = self.trajectory.at(t) if self.p.trajectory == 'random' else np.asarray(self.p.static_joints, float)
        self.scene.set_joint_positions(q)
        self.scene_time_s += step
        return self.scene.render()

    def _publish_camera(self, frame, stamp) -> Header:
        header = Header(stamp=stamp, frame_id=self.optical_frame)
        color, info, depth = camera_messages(frame, self.camera, header)
        self.pub_color.publish(color)
        self.pub_color_info.publish(info)
        self.pub_depth.publish(depth)
        self.pub_depth_info.publish(info)
        return header

    def publish_object_frame(self, frame: ObjectFrame, stamp) -> None:
        header = self._publish_camera(frame.frame, stamp)
        self.pub_gt_objects.publish(objects_message(frame, self.models, header))

    def publish_articulated_frame(self, frame: ProceduralFrame, stamp) -> None:
        header = self._publish_camera(frame.frame, stamp)
        parts, joints = articulated_truth(self.scene, frame, self.part_models, header)
        self.pub_gt_parts.publish(parts)
        self.pub_gt_articulated_joints.publish(joints)

    def publish_frame(self, frame, stamp) -> None:
        header = self._publish_camera(frame, stamp)

        base_header = Header(stamp=stamp, frame_id=self.p.base_frame)
        joints = joint_state(frame.joint_names, frame.joint_positions, stamp)
        self.pub_gt_joints.publish(joints)
        if self.pub_joints is not None:
            self.pub_joints.publish(joints)
        self.pub_gt_pose.publish(PoseStamped(header=base_header, pose=pose_from_matrix(frame.T_base_cam)))
        self.pub_gt_keypoints.publish(self._keypoint_msg(frame, header))

    @staticmethod
    def _keypoint_msg(frame, header) -> KeypointArray:
        """Ground-truth keypoints; score 1 visible, 0.5 in the image but occluded, 0 outside the image."""
        inst = KeypointInstance(class_id='panda', instance_id=0, score=1.0)
        rows, cols = np.nonzero(frame.link_seg >= 0)
        if rows.size:
            inst.bbox.center.position.x = float(cols.min() + cols.max()) / 2.0
            inst.bbox.center.position.y = float(rows.min() + rows.max()) / 2.0
            inst.bbox.size_x = float(cols.max() - cols.min() + 1)
            inst.bbox.size_y = float(rows.max() - rows.min() + 1)
        for name, px, pc, in_img, vis in zip(frame.keypoint_names, frame.keypoints_px, frame.keypoints_cam,
                                             frame.in_image, frame.visible):
            score = 1.0 if vis else (0.5 if in_img else 0.0)
            inst.keypoints_2d.append(Keypoint2D(name=name, x=float(px[0]), y=float(px[1]), score=score))
            inst.keypoints_3d.append(Keypoint3D(name=name, score=1.0,
                                                position=Point(x=float(pc[0]), y=float(pc[1]), z=float(pc[2]))))
        return KeypointArray(header=header, instances=[inst])


def main(args=None):
    spin_node(SimCameraNode, args)


if __name__ == '__main__':
    main()
