"""Config sections turned into the arguments of the parts they configure, with names that say what
they hold (as timm's ``scheduler_kwargs(cfg)``). The YAML keeps the seed's and PaddleClas's names,
some of which say the opposite: ``Arch.Neck.class_num`` is the embedding width and
``Arch.Neck.embedding_size`` the backbone's output width. Inside prodrec only these names are used.

Example:
    >>> from prodrec.config import load_config, model_spec
    >>> model_spec(load_config()).embedding_size
    512
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from prodrec.config.sections import Config

__all__ = ["ModelSpec", "model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """What to build for ``Arch`` (and ``Global.image_size``); ``None`` widths and classes follow the
    backbone or the data ("auto")."""

    backbone: str
    embedding_size: int
    backbone_width: Optional[int]
    pretrained: Union[bool, str]
    image_size: int
    head: Optional[str]
    head_input_width: Optional[int]
    head_classes: Optional[int]

    def embedder_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :class:`prodrec.models.Embedder`."""
        return {"backbone": self.backbone, "embedding_size": self.embedding_size, "pretrained": self.pretrained,
                "image_size": self.image_size}


def model_spec(config: Config) -> ModelSpec:
    """The :class:`ModelSpec` of a run's config."""
    arch, head = config.Arch, config.Arch.Head

    def auto(value: Any) -> Optional[int]:
        return None if value == "auto" else value

    return ModelSpec(
        backbone=arch.Backbone.name, embedding_size=arch.Neck.class_num, backbone_width=auto(arch.Neck.embedding_size),
        pretrained=arch.Backbone.pretrained, image_size=config.Global.image_size,
        head=None if head is None else head.name, head_input_width=None if head is None else auto(head.embedding_size),
        head_classes=None if head is None else auto(head.class_num))
