"""Heads and losses as thin adapters over pytorch-metric-learning (PML).

The seed's ``Loss.Train`` list (``- Name: {weight: w, ...params}``) becomes a weighted sum:

* ``CELoss`` is cross-entropy on the configured head: ``ArcMargin`` -> PML ``ArcFaceLoss``
  (margin given in radians as in PaddleClas, converted once in :class:`ArcMarginLoss`),
  ``FC`` -> :class:`FCClassifierLoss`. ``epsilon`` is label smoothing, as in PaddleClas.
* ``TripletLossV2`` -> PML ``TripletMarginLoss`` on L2-normalised features with a
  ``BatchHardMiner`` and a ``MeanReducer`` (PaddleClas averages over all anchors).
* Any other name is a PML loss class with its PML keyword arguments; ``miner: {Name: {...}}``
  adds a PML miner, and ``{ClassName: {...}}`` values build PML distances, reducers and
  regularizers, e.g. ``- MultiSimilarityLoss: {weight: 1, miner: {MultiSimilarityMiner: {}}}``.

All losses take ``(embeddings, labels)``; embeddings are the raw neck outputs. :data:`LOSSES` holds the
names prodrec builds itself (``CELoss``, ``TripletLossV2``); ``LOSSES.register(name, builder)`` adds one
(``docs/extend.md``), and a name it lacks is looked up among PML's losses.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers, regularizers
from torch import nn

from prodrec.config import HeadConfig
from prodrec.utils import ProdrecError, Registry

__all__ = [
    "ArcMarginLoss",
    "FCClassifierLoss",
    "MinedLoss",
    "WeightedLoss",
    "triplet_loss_v2",
    "build_loss",
    "build_pml_object",
    "LOSSES",
]

PML_COMPONENT_MODULES = (distances, reducers, regularizers, miners, losses)
ARCMARGIN_DEFAULTS = {"margin": 0.5, "scale": 80.0}  # PaddleClas ArcMargin's own defaults


class ArcMarginLoss(losses.ArcFaceLoss):
    """PaddleClas's ``ArcMargin`` head + cross-entropy, on PML's ``ArcFaceLoss``.

    Args:
        num_classes: training classes.
        embedding_size: width of the embeddings.
        margin: additive angular margin in **radians** (PaddleClas's unit; PML uses degrees).
        scale: logit scale.
        easy_margin: apply the margin only where the target cosine is positive.
        label_smoothing: PaddleClas CELoss ``epsilon``.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        margin: float = ARCMARGIN_DEFAULTS["margin"],
        scale: float = ARCMARGIN_DEFAULTS["scale"],
        easy_margin: bool = False,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_size, margin=math.degrees(margin), scale=scale, **kwargs)
        self.easy_margin = easy_margin
        self.cross_entropy = nn.CrossEntropyLoss(reduction="none", label_smoothing=label_smoothing)

    def logits(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """PaddleClas ArcMargin outputs: with labels the scaled training logits (margin on the
        target class); without, the plain unscaled cosine that PaddleClas returns in eval mode."""
        cosine = self.get_cosine(embeddings)
        if labels is None:
            return cosine
        mask = self.get_target_mask(embeddings, labels)
        target = self.modify_cosine_of_target_classes(cosine[mask == 1])
        return self.scale_logits(torch.where(mask == 1, target.unsqueeze(1).expand_as(cosine), cosine))

    def modify_cosine_of_target_classes(self, cosine_of_target_classes: torch.Tensor) -> torch.Tensor:
        if not self.easy_margin:
            return super().modify_cosine_of_target_classes(cosine_of_target_classes)
        angles = self.get_angles(cosine_of_target_classes)
        return torch.where(cosine_of_target_classes > 0, torch.cos(angles + self.margin), cosine_of_target_classes)


class FCClassifierLoss(nn.Module):
    """PaddleClas's ``FC`` head (``Linear(embedding_size, num_classes)``) + cross-entropy."""

    def __init__(self, num_classes: int, embedding_size: int, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes)
        self.label_smoothing = label_smoothing

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.fc(embeddings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.fc(embeddings), labels, label_smoothing=self.label_smoothing)


class MinedLoss(nn.Module):
    """A PML loss fed by an optional PML miner: ``loss(emb, labels, miner(emb, labels))``."""

    def __init__(self, loss: nn.Module, miner: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        indices = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, indices)


def triplet_loss_v2(*, margin: float = 0.5, normalize_feature: bool = True) -> MinedLoss:
    """PaddleClas ``TripletLossV2``: batch-hard triplets, Euclidean distance, mean over anchors."""
    distance = distances.LpDistance(normalize_embeddings=normalize_feature)
    loss = losses.TripletMarginLoss(margin=margin, distance=distance, reducer=reducers.MeanReducer())
    return MinedLoss(loss, miners.BatchHardMiner(distance=distance))


class WeightedLoss(nn.Module):
    """Weighted sum of named losses; ``forward`` returns ``(total, {name: term})``.

    Its parameters (e.g. the ArcMargin class weights) must be trained with the model.
    """

    def __init__(self, terms: Dict[str, nn.Module], weights: Dict[str, float]) -> None:
        super().__init__()
        if not terms or set(terms) != set(weights):
            raise ProdrecError("WeightedLoss needs at least one loss and one weight per loss")
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
            raise ProdrecError(
                f"expected embeddings [N, D] and labels [N], got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        embeddings = embeddings.float()  # PML casts its own weights to the input dtype; keep them float32
        values = {name: term(embeddings, labels) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        return total, values



def build_pml_object(spec: Any, where: str) -> Any:
    """Instantiate ``{PMLClassName: {kwargs}}`` from PML's distances, reducers, regularizers, miners, losses."""
    if not (isinstance(spec, dict) and len(spec) == 1):
        return spec
    ((name, kwargs),) = spec.items()
    for module in PML_COMPONENT_MODULES:
        cls = getattr(module, str(name), None)
        if isinstance(cls, type):
            kwargs = {key: build_pml_object(value, f"{where}.{key}") for key, value in (kwargs or {}).items()}
            try:
                return cls(**kwargs)
            except TypeError as error:
                raise ProdrecError(f"{where}: cannot build PML {name}({kwargs}): {error}") from None
    return spec


LOSSES: Registry = Registry("loss")
"""``Loss.Train`` names prodrec builds: name -> ``builder(params, *, head, num_classes, embedding_size, where)``
returning the loss module (``params``: the entry's keyword arguments without ``weight``)."""


@LOSSES.register("CELoss")
def _classification_loss(params: Dict[str, Any], *, head: Optional[HeadConfig], num_classes: int,
                         embedding_size: int, where: str) -> nn.Module:
    if head is None:
        raise ProdrecError("Loss CELoss needs a classification head: set Arch.Head (ArcMargin or FC)")
    unknown = set(params) - {"epsilon"}
    if unknown:
        raise ProdrecError(f"Loss.Train CELoss: unknown parameters {sorted(unknown)}; CELoss takes weight and epsilon")
    smoothing = float(params.get("epsilon") or 0.0)
    if head.name == "FC":
        return FCClassifierLoss(num_classes, embedding_size, label_smoothing=smoothing)
    return ArcMarginLoss(
        num_classes,
        embedding_size,
        margin=ARCMARGIN_DEFAULTS["margin"] if head.margin is None else head.margin,
        scale=ARCMARGIN_DEFAULTS["scale"] if head.scale is None else head.scale,
        easy_margin=head.easy_margin,
        label_smoothing=smoothing,
    )


def _init_takes(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` takes ``name``, following ``*args``/``**kwargs`` up to the base classes."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and name in inspect.signature(klass.__init__).parameters:
            return True
    return False


@LOSSES.register("TripletLossV2")
def _triplet_loss_v2(params: Dict[str, Any], *, where: str, **_: Any) -> nn.Module:
    params = dict(params)
    unknown = set(params) - {"margin", "normalize_feature", "feature_from"}
    if unknown or params.pop("feature_from", "features") != "features":
        raise ProdrecError(f"{where}: unsupported parameters {sorted(unknown) or ['feature_from']}")
    return triplet_loss_v2(**params)


def _pml_loss(name: str, params: Dict[str, Any], *, head: Optional[HeadConfig], num_classes: int,
              embedding_size: int, where: str) -> nn.Module:
    cls = getattr(losses, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        known = sorted(n for n in dir(losses) if n.endswith("Loss") and n != "BaseMetricLossFunction")
        raise ProdrecError(f"{where}: unknown loss {name!r}; use one of {sorted(LOSSES)} or a PML loss: {known}")
    params = dict(params)
    miner = build_pml_object(params.pop("miner"), f"{where}.miner") if "miner" in params else None
    if miner is not None and not isinstance(miner, miners.BaseMiner):
        raise ProdrecError(f"{where}.miner must be a PML miner by name, e.g. miner: {{BatchHardMiner: {{}}}}")
    kwargs = {key: build_pml_object(value, f"{where}.{key}") for key, value in params.items()}
    for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if key not in kwargs and _init_takes(cls, key):
            kwargs[key] = value
    try:
        return MinedLoss(cls(**kwargs), miner)
    except TypeError as error:
        raise ProdrecError(f"{where}: cannot build PML {name}({kwargs}): {error}") from None


def build_loss(
    entries: List[Dict[str, Optional[Dict[str, Any]]]],
    *,
    head: Optional[HeadConfig],
    num_classes: int,
    embedding_size: int,
) -> WeightedLoss:
    """Turn a ``Loss.Train`` list into a :class:`WeightedLoss`.

    Example:
        >>> from prodrec.config import HeadConfig
        >>> loss = build_loss([{"CELoss": {"weight": 1.0}}, {"TripletLossV2": {"weight": 1.0, "margin": 0.5}}],
        ...                   head=HeadConfig(name="ArcMargin", margin=0.15, scale=30), num_classes=10,
        ...                   embedding_size=8)
        >>> sorted(loss.terms)
        ['CELoss', 'TripletLossV2']
    """
    terms: Dict[str, nn.Module] = {}
    weights: Dict[str, float] = {}
    for index, entry in enumerate(entries):
        ((name, raw),) = entry.items()
        where = f"Loss.Train[{index}].{name}"
        params = dict(raw or {})
        weight = params.pop("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ProdrecError(f"{where}.weight must be a number, got {weight!r}")
        builder = LOSSES[name] if name in LOSSES else functools.partial(_pml_loss, name)
        term = builder(params, head=head, num_classes=num_classes, embedding_size=embedding_size, where=where)
        key = name if name not in terms else f"{name}_{index}"
        terms[key], weights[key] = term, float(weight)
    return WeightedLoss(terms, weights)
