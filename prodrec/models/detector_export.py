"""A product detector as ONNX, with its settings beside it, checked against PyTorch before it is kept, and
:class:`ExportedDetector`, which runs it on onnxruntime with the :class:`~prodrec.models.ProductDetector`'s
``detect`` contract (``prodrec detect export``; ``--detector det.onnx`` wherever a detector is taken).

The graph takes one float RGB photo ``[3, H, W]`` in [0, 1] of any size and returns its ``boxes`` ``[n, 4]``
(pixels of that photo) and ``scores`` ``[n]``: torchvision's own resizing, normalisation and NMS are inside.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from prodrec import __version__
from prodrec.data import as_rgb_array
from prodrec.models.detector import DETECTOR_FORMAT, Detections, DetectorSettings, ProductDetector
from prodrec.models.export import metadata_path
from prodrec.utils import ProdrecError, ProdrecRuntimeError, atomic_write, file_sha256

__all__ = ["DETECTOR_EXPORT_FORMAT", "export_detector", "ExportedDetector", "load_detector"]

DETECTOR_EXPORT_FORMAT = "prodrec.detector-export"
_CHECK_SIZES = ((480, 640), (300, 500))


class _OnePhoto(nn.Module):
    """The detector as a graph of one photo in, boxes and scores out."""

    def __init__(self, detector: ProductDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        found = self.detector.model([image])[0]
        return found["boxes"], found["scores"]


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ImportError("exporting a detector needs onnx and onnxruntime: pip install 'prodrec[export]'") from error
    return onnx, onnxruntime


def export_detector(detector: ProductDetector, path: Union[str, os.PathLike], *, opset: int = 17,
                    atol: float = 0.05) -> Path:
    """Write ``detector`` to ``path`` (ONNX) and ``path.json`` (settings, checksum, parity), after checking
    that onnxruntime finds the same boxes as PyTorch (same count, corners within ``atol`` pixels) on two
    photos of other sizes; a failed check writes nothing."""
    onnx, onnxruntime = _require_onnx()
    path = Path(path)
    graph = _OnePhoto(detector.eval().cpu()).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(3, *_CHECK_SIZES[0], generator=generator)
    checked: Dict[str, float] = {}

    def write(temporary: Path) -> None:
        # torchvision's box scaling warns that sizes become trace constants; the parity check on two other
        # photo sizes is what tells whether the graph is right.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="To copy construct from a tensor")
            torch.onnx.export(graph, (example,), str(temporary), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["boxes", "scores"],
                              dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "found"},
                                            "scores": {0: "found"}})
        onnx.checker.check_model(onnx.load(str(temporary)))
        session = onnxruntime.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        checked["worst"] = _parity(graph, session, generator, atol)

    atomic_write(path, write)
    meta = {"format": DETECTOR_EXPORT_FORMAT, "version": 1, "prodrec_version": __version__,
            "detector_format": DETECTOR_FORMAT, "settings": asdict(detector.settings), "onnx_opset": opset,
            "model_file": path.name, "model_sha256": file_sha256(path),
            "input": {"name": "image", "shape": [3, "height", "width"], "dtype": "float32", "range": [0, 1],
                      "color": "RGB"},
            "outputs": {"boxes": ["found", 4], "scores": ["found"]},
            "check": {"sizes": [list(size) for size in _CHECK_SIZES], "max_abs_diff_pixels": checked["worst"],
                      "atol": atol}}
    atomic_write(metadata_path(path), lambda temporary: Path(temporary).write_text(json.dumps(meta, indent=2)))
    return path


def _parity(graph: nn.Module, session: Any, generator: torch.Generator, atol: float) -> float:
    worst = 0.0
    for height, width in _CHECK_SIZES:
        image = torch.rand(3, height, width, generator=generator)
        with torch.no_grad():
            boxes, scores = (value.numpy() for value in graph(image))
        got_boxes, got_scores = session.run(None, {"image": image.numpy()})
        if got_boxes.shape != boxes.shape:
            raise ProdrecRuntimeError(f"the exported detector found {len(got_boxes)} boxes in a {width}x{height} photo, "
                                      f"PyTorch {len(boxes)}; nothing was written. Try another opset")
        worst = max(worst, _set_distance(boxes, got_boxes))
        if not worst <= atol or not np.allclose(np.sort(got_scores), np.sort(scores), atol=1e-3):
            raise ProdrecRuntimeError(f"the exported detector's boxes differ from PyTorch's by up to {worst:.3g} px "
                                      f"(> atol={atol:g}) or its scores by more than 1e-3; nothing was written")
    return worst


def _set_distance(first: np.ndarray, second: np.ndarray) -> float:
    """The largest corner distance (pixels) from a box of either set to its nearest box in the other: boxes of
    nearly equal score may come out in either order."""
    if not len(first):
        return 0.0
    distances = np.abs(first[:, None, :] - second[None, :, :]).max(axis=2)
    return float(max(distances.min(axis=1).max(), distances.min(axis=0).max()))


class ExportedDetector:
    """An exported detector on onnxruntime, with :meth:`ProductDetector.detect`'s contract."""

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        _, onnxruntime = _require_onnx()
        self.path = Path(path)
        meta_file = metadata_path(self.path)
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ProdrecError(f"{meta_file} is missing or not JSON ({error}); export the detector again with "
                               "prodrec detect export") from None
        if meta.get("format") != DETECTOR_EXPORT_FORMAT:
            raise ProdrecError(f"{meta_file} does not describe an exported prodrec detector")
        if file_sha256(self.path) != meta.get("model_sha256"):
            raise ProdrecError(f"{self.path} is not the file {meta_file} describes (checksum differs); export again")
        self.settings = DetectorSettings(**meta["settings"])
        self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])

    def detect(self, images: Sequence[Any], *, batch_size: int = 8) -> List[Detections]:
        """The products in each photo (a path, PIL image or HxWx3 uint8 RGB array), in its pixels."""
        found = []
        for image in images:
            pixels = np.ascontiguousarray(as_rgb_array(image).transpose(2, 0, 1), dtype=np.float32) / 255
            boxes, scores = self.session.run(None, {"image": pixels})
            found.append(Detections(boxes.astype(np.float32), scores.astype(np.float32)))
        return found


def load_detector(path: Union[str, os.PathLike]) -> Union[ProductDetector, ExportedDetector]:
    """A detector file or checkpoint, or an export (when its ``.json`` lies beside it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"detector file {path} not found")
    if metadata_path(path).is_file():
        return ExportedDetector(path)
    return ProductDetector.load(path).eval()
