"""The model a gallery command loads: the gallery folder's copy (``embedder.pt``) or ``--checkpoint``."""
from __future__ import annotations

import os

__all__ = ["MODEL_FILE", "load_model", "load_detector_model"]

MODEL_FILE = "embedder.pt"


def load_model(path: str, device: str):
    """An Embedder from a checkpoint or saved model, or an ExportedEmbedder when its export JSON lies beside it."""
    from prodrec.models import ExportedEmbedder, metadata_path
    from prodrec.models import Embedder
    from prodrec.train import resolve_device

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} not found; pass --checkpoint with the gallery's model")
    if metadata_path(path).is_file():
        return ExportedEmbedder(path, device=resolve_device(device).type)
    return Embedder.load(path).to(resolve_device(device))


def load_detector_model(path: str, device: str):
    """A ProductDetector (on ``device``) from a detector file or checkpoint, or an ExportedDetector (ONNX)."""
    from prodrec.models import ProductDetector, load_detector
    from prodrec.train import resolve_device

    detector = load_detector(path)
    return detector.to(resolve_device(device)) if isinstance(detector, ProductDetector) else detector
