"""Export an :class:`~prodrec.models.Embedder` for deployment (ONNX or TorchScript) and run the exported file.

The exported graph maps a preprocessed float32 batch ``images`` ``[N, 3, S, S]`` (NCHW, RGB, ``S`` =
``model.image_size``, any ``N``) to L2-normalised float32 ``embeddings`` ``[N, D]``. Preprocessing stays
outside the graph and is written as JSON next to the model (``OUT.json`` beside ``OUT``):

1. decode to RGB (not OpenCV's BGR), uint8;
2. resize to ``S x S`` (both sides, aspect ratio not kept) with bilinear interpolation (OpenCV ``INTER_LINEAR``);
3. ``(pixel / 255 - mean) / std`` per channel with the model's ``mean`` and ``std``;
4. HWC -> CHW, then stack images into a batch.

:class:`ExportedEmbedder` reads the model and its JSON and embeds images exactly like ``Embedder.embed``.
ONNX needs ``pip install "prodrec[export]"`` (onnx, onnxruntime).
"""
from __future__ import annotations

import copy
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prodrec import __version__
from prodrec.data import eval_transform
from prodrec.models.contract import ImageEmbedder
from prodrec.models.embedder import Embedder
from prodrec.utils import atomic_write, file_sha256, replace_durably, temporary_path
from prodrec.utils import ProdrecError, ProdrecTypeError, ProdrecRuntimeError

__all__ = ["EXPORT_FORMAT", "FORMATS", "export_embedder", "metadata_path", "ExportedEmbedder"]

EXPORT_FORMAT = "prodrec.exported_embedder"
FORMATS = ("onnx", "torchscript")
_VERSION = 1
_INPUT, _OUTPUT = "images", "embeddings"
_REQUIRED_KEYS = ("model_format", "model_sha256", "preprocessing", "output", "embedder")
_CHECK_BATCHES = (2, 3)
_INTERPOLATIONS = {cv2.INTER_NEAREST: "nearest", cv2.INTER_LINEAR: "bilinear", cv2.INTER_CUBIC: "bicubic",
                   cv2.INTER_AREA: "area", cv2.INTER_LANCZOS4: "lanczos4"}


class _Normalized(nn.Module):
    """The graph that is exported: the embedder followed by L2 normalisation (as ``Embedder.embed``)."""

    def __init__(self, model: Embedder) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images), dim=1)


def metadata_path(path: Union[str, os.PathLike]) -> Path:
    """The preprocessing JSON that belongs to an exported model: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def export_embedder(model: Embedder, path: Union[str, os.PathLike], *, format: str = "onnx",
                    opset: Optional[int] = None, check: bool = True, atol: float = 1e-4) -> Path:
    """Write ``model`` as an ONNX or TorchScript file with a dynamic batch axis, plus its JSON metadata.

    The JSON (:func:`metadata_path`) holds the input/output contract, the preprocessing, the source model's
    identity (backbone, weights hash), the model file's SHA-256 and, with ``check``, the measured difference.
    Both files are written atomically, and only after the check passed.

    Args:
        model: The embedder (exported from a CPU copy in eval mode; ``model`` itself is not changed).
        path: Output file, e.g. ``embedder.onnx`` or ``embedder.pt``.
        format: ``"onnx"`` or ``"torchscript"``.
        opset: ONNX opset version; None takes torch's default. ONNX only.
        check: Run the exported file (onnxruntime / ``torch.jit.load``) and PyTorch on random batches of
            2 and 3 images and compare the embeddings.
        atol: Largest accepted absolute difference of any embedding value.

    Returns:
        ``path``.

    Raises:
        ValueError: Bad arguments.
        RuntimeError: The exported model's embeddings differ from PyTorch's by more than ``atol``.
        ImportError: onnx (or onnxruntime, for the check) is not installed.
    """
    if not isinstance(model, Embedder):
        raise ProdrecTypeError(f"model must be a prodrec Embedder, got {type(model).__name__}")
    if format not in FORMATS:
        raise ProdrecError(f"format must be one of {FORMATS}, got {format!r}")
    if opset is not None and (format != "onnx" or isinstance(opset, bool) or not isinstance(opset, int)):
        raise ProdrecError(f"opset applies to format='onnx' only and must be an integer, got {opset!r}")
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol > 0:
        raise ProdrecError(f"atol must be a positive number, got {atol!r}")
    path = Path(path)
    if path.is_dir():
        example = path / ("embedder.onnx" if format == "onnx" else "embedder.pt")
        raise ProdrecError(f"{path} is a folder; pass a file name such as {example}")
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = _Normalized(copy.deepcopy(model).cpu()).eval()
    example = torch.zeros(_CHECK_BATCHES[0], 3, model.image_size, model.image_size)
    with _temporary(path) as model_file:
        if format == "onnx":
            opset = _export_onnx(graph, example, model_file, opset)
        else:
            with torch.inference_mode(False), torch.no_grad():
                torch.jit.save(torch.jit.trace(graph, example, check_trace=False), model_file)
        meta = _metadata(model, format, opset, path.name, model_file)
        if check:
            meta["check"] = _check(graph, ExportedEmbedder._open(format, model_file, "cpu"), model.image_size, atol)
        text = json.dumps(meta, indent=2) + "\n"
        # The model first, then the JSON naming its checksum: a crash between them leaves a JSON that refuses
        # the new model (checksum), never a model without its checks.
        replace_durably(model_file, path)
    atomic_write(metadata_path(path), lambda temporary: temporary.write_text(text, encoding="utf-8"))
    return path


class ExportedEmbedder(ImageEmbedder):
    """An exported embedder (ONNX via onnxruntime, TorchScript via ``torch.jit.load``) with its preprocessing.

    Args:
        path: The model file written by :func:`export_embedder`; its JSON must lie beside it.
        device: ``"cpu"`` or ``"cuda"`` (onnxruntime's CUDA provider, or the TorchScript module's device).

    Attributes:
        metadata: The JSON written at export (see :func:`export_embedder`).
        format, image_size, mean, std, embedding_size: From the metadata.

    Example:
        >>> exported = ExportedEmbedder("embedder.onnx")  # doctest: +SKIP
        >>> exported.embed(["photo.jpg"]).shape  # doctest: +SKIP
        torch.Size([1, 512])
    """

    def __init__(self, path: Union[str, os.PathLike], *, device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ProdrecError(f"device must be 'cpu' or 'cuda', got {device!r}")
        path = Path(path)
        meta_file = metadata_path(path)
        for required in (path, meta_file):
            if not required.is_file():
                raise FileNotFoundError(f"{required} not found: export_embedder / `prodrec export` writes the "
                                        f"model and its metadata ({path.name}.json) side by side")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ProdrecError(f"{meta_file} is not valid JSON ({error}); export the model again") from error
        if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
            raise ProdrecError(f"{meta_file} is not a prodrec export metadata file (no '{EXPORT_FORMAT}' format)")
        if meta.get("version", 0) > _VERSION:
            raise ProdrecError(f"{meta_file} was written by a newer prodrec ({meta.get('prodrec_version')}); upgrade")
        missing = [key for key in _REQUIRED_KEYS if key not in meta]
        if missing:
            raise ProdrecError(f"{meta_file} lacks the keys {missing}; export the model again")
        if meta["model_format"] not in FORMATS:
            raise ProdrecError(f"{meta_file}: unknown model_format {meta['model_format']!r}, expected one of {FORMATS}")
        if file_sha256(path) != meta["model_sha256"]:
            raise ProdrecError(f"{path} does not match the SHA-256 recorded in {meta_file}: the file was changed "
                               "or truncated after export; export the model again")
        prep = meta["preprocessing"]
        self.metadata: Dict[str, Any] = meta
        self.format: str = meta["model_format"]
        self.image_size: int = prep["image_size"]
        self.mean = tuple(prep["mean"])
        self.std = tuple(prep["std"])
        self.input_size: int = prep["image_size"]  # exported with a fixed input size
        self._run = self._open(self.format, str(path), device)

    @property
    def embedding_size(self) -> int:
        return self.metadata["output"]["shape"][1]

    @property
    def embedder_info(self) -> Dict[str, Any]:
        """The source model's :attr:`Embedder.embedder_info` (the same features, within the check's atol)."""
        return self.metadata["embedder"]

    def embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 CPU features of a preprocessed ``[N, 3, S, S]`` batch (S: the exported input
        size); the embedding contract's one method."""
        return torch.from_numpy(np.ascontiguousarray(self._run(batch.float()), dtype=np.float32))

    @staticmethod
    def _open(format: str, path: str, device: str) -> Callable[[torch.Tensor], np.ndarray]:
        """A function from a preprocessed batch to the exported model's embeddings."""
        if format == "onnx":
            ort = _require("onnxruntime")
            wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
            if wanted[0] not in ort.get_available_providers():
                raise ProdrecRuntimeError(f"onnxruntime has no {wanted[0]} here (available: {ort.get_available_providers()}); "
                                          "install onnxruntime-gpu for device='cuda'")
            session = ort.InferenceSession(path, providers=wanted)
            return lambda batch: session.run([_OUTPUT], {_INPUT: batch.numpy()})[0]
        module = torch.jit.load(path, map_location=device).eval()

        def run(batch: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return module(batch.to(device)).float().cpu().numpy()
        return run


def _export_onnx(graph: nn.Module, example: torch.Tensor, path: str, opset: Optional[int]) -> int:
    """Export with torch's TorchScript-based ONNX exporter (no onnxscript needed); returns the opset written."""
    onnx = _require("onnx")
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(graph, (example,), path, dynamo=False, opset_version=opset, input_names=[_INPUT],
                          output_names=[_OUTPUT], dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}})
    written = onnx.load(path)
    onnx.checker.check_model(written)
    return next(entry.version for entry in written.opset_import if entry.domain in ("", "ai.onnx"))


def _metadata(model: Embedder, format: str, opset: Optional[int], name: str, model_file: str) -> Dict[str, Any]:
    resize = eval_transform(model.image_size, model.mean, model.std).pipeline.transforms[0]
    size = model.image_size
    return {
        "format": EXPORT_FORMAT, "version": _VERSION, "prodrec_version": __version__,
        "torch_version": torch.__version__, "model_format": format, "model_file": name,
        "model_sha256": file_sha256(Path(model_file)), "onnx_opset": opset,
        "input": {"name": _INPUT, "shape": ["batch", 3, size, size], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": _OUTPUT, "shape": ["batch", model.embedding_size], "dtype": "float32",
                   "l2_normalized": True},
        "preprocessing": {**model.preprocessing, "resize": {"height": size, "width": size, "keep_aspect_ratio": False,
                                                            "interpolation": _INTERPOLATIONS[resize.interpolation]},
                          "scale": 1 / 255, "normalize": "(pixel * scale - mean) / std, per RGB channel"},
        "embedder": model.embedder_info,
    }


def _check(graph: nn.Module, run: Callable[[torch.Tensor], np.ndarray], image_size: int,
           atol: float) -> Dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for size in _CHECK_BATCHES:
        batch = torch.randn(size, 3, image_size, image_size, generator=generator)
        with torch.inference_mode():
            expected = graph(batch).numpy()
        got = run(batch)
        if got.shape != expected.shape:
            raise ProdrecRuntimeError(f"the exported model returned shape {got.shape} for a batch of {size}, PyTorch "
                                      f"{expected.shape}: the batch axis is not dynamic")
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= atol:
        raise ProdrecRuntimeError(f"the exported model's embeddings differ from PyTorch's by up to {worst:.3g} "
                                  f"(> atol={atol:g}) on random batches of {_CHECK_BATCHES}; nothing was written. Try the "
                                  "other format or another opset, or pass a larger atol if that difference is acceptable")
    return {"batch_sizes": list(_CHECK_BATCHES), "max_abs_diff": worst, "atol": atol}


@contextmanager
def _temporary(path: Path) -> Iterator[str]:
    """A temporary file beside ``path`` (:func:`prodrec.utils.temporary_path`), removed on exit unless it was
    renamed meanwhile."""
    name = temporary_path(path)
    try:
        yield str(name)
    finally:
        name.unlink(missing_ok=True)


def _require(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError as error:
        raise ImportError(f"ONNX export and inference need {name}: pip install \"prodrec[export]\" "
                          "(or pip install onnx onnxruntime)") from error
