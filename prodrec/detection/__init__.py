"""Detection: product detectors trained with the embedder's training run, their COCO metrics, and (next) the
detect -> recognise pipeline."""
from prodrec.detection.evaluate import DETECTION_METRICS, detection_metrics, evaluate_detector
from prodrec.detection.task import DetectionTask, DetectorWithLoss
from prodrec.detection.train import detection_data, read_boxes, train_detector

__all__ = ["DETECTION_METRICS", "detection_metrics", "evaluate_detector", "DetectionTask", "DetectorWithLoss",
           "detection_data", "read_boxes", "train_detector"]
