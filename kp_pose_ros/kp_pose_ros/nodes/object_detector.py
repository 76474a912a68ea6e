"""2D object boxes from colour images (YOLOv10 through ONNX Runtime): the first stage of object_pose."""
from __future__ import annotations

from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from kp_pose_ros.objects.detector import YoloV10Detector
from kp_pose_ros.ros.detections import detection_2d_array
from kp_pose_ros.ros.images import fresh_rgb8
from kp_pose_ros.ros.lifecycle_node import ConfigureError, PipelineNode
from kp_pose_ros.ros.models import inference_params, load_model
from kp_pose_ros.ros.node_main import spin_node
from kp_pose_ros.ros.params import Param
from kp_pose_ros.ros.qos import KEYPOINT_QUEUE, qos_profile, sensor_qos_params


class ObjectDetectorNode(PipelineNode):
    PARAMS = (
        Param('model', 'lmo_detector.onnx', 'YOLOv10 ONNX export (nms=False): a file in the package models/ or a '
              'path; class names come from its metadata.'),
        *inference_params(),
        Param('score_threshold', 0.3, 'Boxes scored below this are dropped.', live=True, min_value=0.0,
              max_value=1.0),
        Param('classes', [''], 'Class names to report; [""]: every class of the model.', live=True),
        Param('max_detections', 30, 'At most this many boxes per image, best first.', live=True, min_value=1,
              max_value=300),
        Param('max_image_age_s', 1.0, 'Images older than this on arrival are dropped (0: never).', live=True,
              min_value=0.0, max_value=60.0),
        *sensor_qos_params(default_depth=2, what='image subscription'),
    )
    STREAMS = ('image',)

    def __init__(self, **kwargs):
        super().__init__('object_detector', **kwargs)
        self.detector: YoloV10Detector | None = None
        self.class_ids: list[int] | None = None

    def configure(self) -> None:
        self.detector = load_model(self, YoloV10Detector, self.p.model, 'detector')
        try:
            self.class_ids = self._class_ids(self.p.classes)
        except ValueError as exc:
            raise ConfigureError(str(exc)) from exc
        self.pub = self.create_publisher(Detection2DArray, 'detections', KEYPOINT_QUEUE)

    def activate(self) -> None:
        self.create_subscription(Image, 'image', self._on_image, qos_profile(self.p.qos_reliability, self.p.qos_depth))
        # Inference runs off the executor on the newest image (core/latest_worker.py).
        self.worker = self.create_worker(self._detect, 'object detection')

    def cleanup(self) -> None:
        self.detector = None

    def on_parameter_change(self, name, value) -> None:
        if name == 'classes' and self.detector is not None:
            self.class_ids = self._class_ids(value)  # an unknown name raises: the change is refused

    def _class_ids(self, names) -> list[int] | None:
        """The model's class ids of `names` (None: every class); ValueError naming an unknown class."""
        wanted = [n for n in names if n]
        if not wanted:
            return None
        ids = {name: i for i, name in self.detector.names.items()}
        unknown = [n for n in wanted if n not in ids]
        if unknown:
            raise ValueError(f'classes {unknown} are not in the detector ({", ".join(ids)})')
        return [ids[n] for n in wanted]

    def _on_image(self, msg: Image) -> None:
        rgb = fresh_rgb8(self, msg, self.p.max_image_age_s)
        if rgb is not None and self.worker.submit((msg, rgb)):
            self.diagnostics.drop('busy')

    def _detect(self, item) -> None:
        msg, rgb = item
        with self.diagnostics.timed('detect'):
            found = self.detector.detect(rgb, self.p.score_threshold, self.class_ids, self.p.max_detections)
        names = [found.names[int(c)] for c in found.class_ids]
        self.pub.publish(detection_2d_array(msg.header, found.boxes, found.scores, names))
        self.diagnostics.output('detections')


def main(args=None):
    spin_node(ObjectDetectorNode, args)


if __name__ == '__main__':
    main()
