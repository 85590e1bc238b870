"""Detection: product detectors trained with the embedder's training run, their COCO metrics, and the end-to-end
evaluation of detect -> recognise."""
from prodrec.detection.evaluate import DETECTION_METRICS, detection_metrics, evaluate_detector
from prodrec.detection.task import DetectionTask, DetectorWithLoss, detector_settings
from prodrec.detection.train import detection_data, read_boxes, train_detector
from prodrec.detection.pipeline_eval import evaluate_pipeline, match_pairs

__all__ = ["DETECTION_METRICS", "detection_metrics", "evaluate_detector", "DetectionTask", "DetectorWithLoss", "detector_settings",
           "detection_data", "read_boxes", "train_detector", "evaluate_pipeline", "match_pairs"]
