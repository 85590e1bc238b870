"""Models: the embedding contract (:class:`ImageEmbedder`), the PyTorch :class:`Embedder`, exported
(ONNX / TorchScript) embedders and on-disk feature stores."""
from prodrec.models.contract import ImageEmbedder, ImageInput
from prodrec.models.embedder import (Embedder, resolve_backbone_name, BACKBONE_ALIASES, EMBEDDER_FORMAT)
from prodrec.models.export import (EXPORT_FORMAT, FORMATS, export_embedder, metadata_path, ExportedEmbedder)
from prodrec.models.feature_store import (FEATURE_DTYPES, FeatureWriter, open_features)

__all__ = ["ImageEmbedder", "ImageInput", "Embedder", "resolve_backbone_name", "BACKBONE_ALIASES", "EMBEDDER_FORMAT", "EXPORT_FORMAT", "FORMATS",
           "export_embedder", "metadata_path", "ExportedEmbedder", "FEATURE_DTYPES", "FeatureWriter", "open_features"]
