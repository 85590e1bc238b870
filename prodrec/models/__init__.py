"""Models: the embedding contract (:class:`ImageEmbedder`), the PyTorch :class:`Embedder`, exported
(ONNX / TorchScript) embedders, on-disk feature stores and product detectors."""
from prodrec.models.contract import ImageEmbedder, ImageInput
from prodrec.models.embedder import (Embedder, resolve_backbone_name, BACKBONE_ALIASES, EMBEDDER_FORMAT)
from prodrec.models.export import (EXPORT_FORMAT, FORMATS, export_embedder, metadata_path, ExportedEmbedder)
from prodrec.models.feature_store import (FEATURE_DTYPES, FeatureWriter, open_features)
from prodrec.models.detector import (DETECTORS, DETECTOR_FORMAT, DetectorSettings, Detections, ProductDetector)
from prodrec.models.detector_export import (DETECTOR_EXPORT_FORMAT, export_detector, ExportedDetector, load_detector)

__all__ = ["ImageEmbedder", "ImageInput", "Embedder", "resolve_backbone_name", "BACKBONE_ALIASES", "EMBEDDER_FORMAT", "EXPORT_FORMAT", "FORMATS",
           "export_embedder", "metadata_path", "ExportedEmbedder", "FEATURE_DTYPES", "FeatureWriter", "open_features",
           "DETECTORS", "DETECTOR_FORMAT", "DetectorSettings", "Detections", "ProductDetector",
           "DETECTOR_EXPORT_FORMAT", "export_detector", "ExportedDetector", "load_detector"]
