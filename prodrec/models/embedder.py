"""The product embedder: a timm backbone cut after global pooling, then an FC neck.

This is PaddleClas's ``RecModel`` without its head (heads live with the losses, see
:mod:`prodrec.losses.build`): ``ResNet50_vd`` (timm ``resnet50d``) -> global average pool -> flatten
(the seed's ``BackboneStopLayer``) -> ``Linear(num_features, 512)`` with no BN and no activation.
"""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn.functional as F
from torch import nn

from prodrec import __version__
from prodrec.models.contract import ImageEmbedder
from prodrec.utils import ProdrecError, ProdrecRuntimeError, read_torch_file

__all__ = ["Embedder", "resolve_backbone_name", "BACKBONE_ALIASES", "EMBEDDER_FORMAT"]

EMBEDDER_FORMAT = "prodrec.embedder"
BACKBONE_ALIASES = {
    "ResNet18_vd": "resnet18d",
    "ResNet34_vd": "resnet34d",
    "ResNet50_vd": "resnet50d",
    "ResNet101_vd": "resnet101d",
    "ResNet152_vd": "resnet152d",
    "ResNet50": "resnet50",
}


def resolve_backbone_name(name: str) -> str:
    """timm model name for ``name``; PaddleClas names such as ``ResNet50_vd`` are accepted."""
    resolved = BACKBONE_ALIASES.get(name, name)
    if not timm.is_model(resolved):
        close = timm.list_models(f"*{resolved.lower()[:6]}*")[:8]
        raise ProdrecError(
            f"unknown backbone {name!r}: not a timm model name nor one of the PaddleClas aliases "
            f"{sorted(BACKBONE_ALIASES)}; similar timm names: {close}"
        )
    return resolved


class Embedder(nn.Module, ImageEmbedder):
    """Image -> embedding model with its own preprocessing.

    Args:
        backbone: timm model name or PaddleClas alias (``ResNet50_vd`` = ``resnet50d``).
        embedding_size: width of the FC neck, i.e. of the embedding.
        pretrained: ``False``; ``True`` for timm's own pretrained weights (needs its hub or
            ``HF_HUB_OFFLINE=1`` with a filled cache); or a local weights file: a timm/torch
            ``.pth``/``.pt`` or ``.safetensors`` backbone state dict, or a saved prodrec model.
        image_size: square input size; defaults to the backbone's ``pretrained_cfg``.

    Example:
        >>> import torch
        >>> from prodrec import Embedder
        >>> model = Embedder("resnet18d", embedding_size=128, image_size=64)
        >>> model.embed(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        backbone: str = "resnet50d",
        *,
        embedding_size: int = 512,
        pretrained: Union[bool, str, os.PathLike] = False,
        image_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        if not isinstance(embedding_size, int) or embedding_size < 1:
            raise ProdrecError(f"embedding_size must be a positive integer, got {embedding_size!r}")
        self.backbone_name = resolve_backbone_name(backbone)
        init_file = None if isinstance(pretrained, bool) else Path(pretrained)
        self.backbone = _create_backbone(self.backbone_name, pretrained is True)
        self.neck = nn.Linear(self.backbone.num_features, embedding_size)
        cfg = self.backbone.pretrained_cfg
        self.image_size = int(image_size or cfg["input_size"][-1])
        self.mean: Tuple[float, ...] = tuple(float(v) for v in cfg["mean"])
        self.std: Tuple[float, ...] = tuple(float(v) for v in cfg["std"])
        if init_file is not None:
            self.load_weights(init_file)

    @property
    def embedding_size(self) -> int:
        return self.neck.out_features

    @property
    def num_features(self) -> int:
        """Width of the backbone output (the neck's input)."""
        return self.backbone.num_features

    @property
    def embedder_info(self) -> Dict[str, Any]:
        """What identifies the features this model makes: backbone, embedding size, preprocessing and a
        hash of the weights (galleries record it and refuse another model's features)."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.state_dict().items()):
            digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return {"backbone": self.backbone_name, "embedding_size": self.embedding_size,
                "preprocessing": self.preprocessing, "weights_sha256": digest.hexdigest()}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (not normalised) embeddings of a preprocessed ``[N, 3, H, W]`` batch."""
        # Tracing (ONNX/TorchScript export) records shapes symbolically; the check is for eager callers.
        if not torch.jit.is_tracing() and (images.ndim != 4 or images.shape[1] != 3):
            raise ProdrecError(f"expected a [N, 3, H, W] image batch, got shape {tuple(images.shape)}")
        return self.neck(self.backbone(images))

    def embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 CPU features of a preprocessed ``[N, 3, H, W]`` batch, in eval mode on the
        model's device (channels-last; float16 autocast on CUDA); the embedding contract's one method."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16,
                                                        enabled=device.type == "cuda"):
                batch = batch.to(device, non_blocking=True, memory_format=torch.channels_last)
                return F.normalize(self(batch).float(), dim=1).cpu()
        finally:
            self.train(was_training)

    def load_weights(self, path: Union[str, os.PathLike]) -> None:
        """Initialise from a saved prodrec model (backbone + neck) or a timm/torch backbone file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file {str(path)!r} not found")
        if path.suffix != ".safetensors":
            payload = read_torch_file(path)
            if isinstance(payload, dict) and "embedder" in payload:
                payload = payload["embedder"]
            if isinstance(payload, dict) and payload.get("format") == EMBEDDER_FORMAT:
                self._load_prodrec_state(payload["state_dict"], path)
                return
        # timm's loader handles safetensors, wrapper keys ('state_dict', 'model') and 'module.' prefixes.
        state = timm.models.load_state_dict(str(path))
        classifier = self.backbone.pretrained_cfg.get("classifier") or ()
        for name in (classifier,) if isinstance(classifier, str) else classifier:
            state.pop(f"{name}.weight", None)
            state.pop(f"{name}.bias", None)
        result = self.backbone.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ProdrecError(
                f"{path} does not fit backbone {self.backbone_name!r}: missing {_first(result.missing_keys)}, "
                f"unexpected {_first(result.unexpected_keys)}; check the backbone name matches the file"
            )

    def _load_prodrec_state(self, state: Dict[str, torch.Tensor], path: Path) -> None:
        neck = {k: v for k, v in state.items() if k.startswith("neck.")}
        if neck and neck["neck.weight"].shape != self.neck.weight.shape:
            raise ProdrecError(
                f"{path}: its neck is {tuple(neck['neck.weight'].shape)} but this model's is "
                f"{tuple(self.neck.weight.shape)}; set embedding_size={neck['neck.weight'].shape[0]}"
            )
        self.load_state_dict(state, strict=True)

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write architecture, weights and preprocessing to one file (load with :meth:`load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_payload(), path)
        return path

    def to_payload(self) -> Dict[str, Any]:
        return {
            "format": EMBEDDER_FORMAT,
            "format_version": 1,
            "prodrec_version": __version__,
            "backbone": self.backbone_name,
            "embedding_size": self.embedding_size,
            "preprocessing": self.preprocessing,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_payload(cls, payload: Dict[str, Any], *, source: str = "payload") -> "Embedder":
        if not isinstance(payload, dict) or payload.get("format") != EMBEDDER_FORMAT:
            raise ProdrecError(f"{source} is not a prodrec model file (no '{EMBEDDER_FORMAT}' format marker)")
        if payload.get("format_version", 0) > 1:
            raise ProdrecError(f"{source} was written by a newer prodrec ({payload.get('prodrec_version')}); upgrade")
        prep = payload["preprocessing"]
        model = cls(payload["backbone"], embedding_size=payload["embedding_size"], image_size=prep["image_size"])
        model.mean, model.std = tuple(prep["mean"]), tuple(prep["std"])
        model.load_state_dict(payload["state_dict"], strict=True)
        return model

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu") -> "Embedder":
        """Load a file written by :meth:`save` or a training checkpoint (``best.pt``/``last.pt``)."""
        payload = read_torch_file(path, map_location=map_location)
        if isinstance(payload, dict) and "embedder" in payload:
            payload = payload["embedder"]
        return cls.from_payload(payload, source=str(path))


def _first(keys: Sequence[str], count: int = 8) -> str:
    shown = ", ".join(keys[:count])
    return f"{len(keys)} keys [{shown}{', ...' if len(keys) > count else ''}]"


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _create_backbone(name: str, pretrained: bool) -> nn.Module:
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    how_to = (
        f"pass a local weights file instead: Embedder({name!r}, pretrained='path/to/weights.pth' or "
        "'.safetensors') or --set Arch.Backbone.pretrained=PATH"
    )
    if not offline and not _hub_reachable():
        raise ProdrecRuntimeError(f"pretrained=True needs timm's model hub, which cannot be reached from here; "
                                  f"{how_to}")
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as error:  # re-raised with the fix; the original stays chained
        raise ProdrecRuntimeError(f"could not load timm's pretrained weights for {name!r} ({error}); "
                                  f"{how_to}") from error
