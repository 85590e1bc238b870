"""Translating the PaddleClas ``Arch``, ``Loss``, ``Optimizer`` and ``Metric`` sections (see
:mod:`prodrec.paddle.config`). PaddleClas's defaults are written out, so prodrec's never leak in."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

from prodrec.paddle.reader import Notes, Section
from prodrec.utils import brief

__all__ = ["translate_arch", "translate_losses", "translate_optimizer", "translate_metrics", "backbone_mean_std",
           "PADDLECLAS_WEIGHTS_HOME"]

PADDLECLAS_WEIGHTS_HOME = Path("~/.paddleclas/weights")  # where PaddleClas keeps downloaded weights
_HEADS = {"ArcMargin": ("margin", "scale", "easy_margin"), "FC": (), "CosMargin": ("margin", "scale")}


def _weights(value: Any, key: str, notes: Notes, base_dir: Optional[str]) -> Optional[str]:
    """A local weights file for a PaddleClas weights setting (a path with or without ``.pdparams``, or a
    URL already in PaddleClas's download cache)."""
    if not isinstance(value, str) or not value:
        notes.fail(key, f"expected a path or URL, got {brief(value)}")
        return None
    if value.startswith(("http://", "https://")):
        cached = PADDLECLAS_WEIGHTS_HOME.expanduser() / os.path.basename(urlparse(value).path)
        if cached.is_file():
            return str(cached)
        notes.fail(key, f"{value} is a URL and prodrec does not download (it runs offline); download the file and "
                        f"pass it with --set {key}=PATH.pdparams, or put it in {cached.parent} (PaddleClas's cache)")
        return None
    path = os.path.join(base_dir, value) if base_dir else value
    for candidate in (path, f"{path}.pdparams"):
        if os.path.isfile(candidate):
            return candidate
    notes.fail(key, f"neither {path} nor {path}.pdparams exists")
    return None


def translate_arch(arch: Section, g: Section, base_dir: Optional[str]) -> Dict[str, Any]:
    """Native ``Arch`` of a RecModel; ``g`` (``Global``) gives ``pretrained_model``, which wins over
    ``Arch.Backbone.pretrained`` as in PaddleClas (it is loaded last)."""
    notes = arch.notes
    if arch.get("name") != "RecModel":
        notes.fail("Arch.name", f"{arch.get('name')!r}: prodrec builds RecModel (backbone, FC neck, head) only")
    if arch.get("infer_output_key", "features") != "features" or arch.get("infer_add_softmax", False):
        notes.warn("Arch.infer_output_key", "prodrec's inference outputs the features (no softmax)")
    backbone = arch.child("Backbone")
    pretrained = backbone.get("pretrained", False)
    if g.get("pretrained_model") is not None:
        pretrained = _weights(g.get("pretrained_model"), "Global.pretrained_model", notes, base_dir)
    elif isinstance(pretrained, str):
        pretrained = _weights(pretrained, "Arch.Backbone.pretrained", notes, base_dir)
    elif pretrained is True:
        notes.warn("Arch.Backbone.pretrained", "True loads timm's ImageNet weights for the backbone, not "
                                               "PaddleClas's (pass a .pdparams path to use those)")
    if backbone.get("use_ssld", False):
        notes.warn("Arch.Backbone.use_ssld", "not supported (timm has no SSLD weights)")
    native: Dict[str, Any] = {"name": "RecModel", "Backbone": {"name": backbone.get("name"),
                                                              "pretrained": pretrained or False}}
    backbone.finish()
    stop = arch.child("BackboneStopLayer")
    if stop.get("name") not in ("flatten", "flatten_0"):
        notes.fail("Arch.BackboneStopLayer.name", f"{stop.get('name')!r}: prodrec stops the backbone after global "
                                                  "average pooling + flatten ('flatten') only")
    stop.finish()
    neck = arch.child("Neck")
    if neck.get("name") != "FC":
        notes.fail("Arch.Neck.name", f"{neck.get('name')!r}: prodrec's neck is FC (embedding_size -> class_num)")
    native["Neck"] = {"name": "FC", "embedding_size": neck.get("embedding_size", "auto"),
                      "class_num": neck.get("class_num")}
    neck.finish()
    head = arch.child("Head")
    native["Head"] = None
    if head.data:
        name = head.get("name")
        if name not in _HEADS:
            notes.fail("Arch.Head.name", f"{brief(name)} has no prodrec equivalent; use {sorted(_HEADS)} "
                                         "(CosMargin runs as pytorch-metric-learning's CosFaceLoss)")
        elif name != "CosMargin":  # CosMargin becomes a loss (see translate_losses)
            native["Head"] = {"name": name, "embedding_size": head.get("embedding_size", "auto"),
                              "class_num": head.get("class_num", "auto")}
            if name == "ArcMargin":  # PaddleClas ArcMargin's defaults
                native["Head"].update(margin=head.get("margin", 0.5), scale=head.get("scale", 80.0),
                                      easy_margin=head.get("easy_margin", False))
        head.skip("embedding_size", "class_num", *_HEADS.get(name, ()))
        head.finish()
    arch.finish()
    return native


def translate_losses(section: Section, head: Any, notes: Notes) -> Dict[str, Any]:
    """Native ``Loss``; ``head`` is the PaddleClas ``Arch.Head`` (CELoss on CosMargin becomes CosFaceLoss)."""
    cos_margin = isinstance(head, dict) and head.get("name") == "CosMargin"
    train, entries = section.get("Train"), []
    if not isinstance(train, list) or not train:
        notes.fail("Loss.Train", f"a list of losses is required, got {brief(train)}")
        train = []
    for index, entry in enumerate(train):
        if not (isinstance(entry, dict) and len(entry) == 1):
            notes.fail(f"Loss.Train[{index}]", f"each entry is one loss name with its parameters, got {brief(entry)}")
            continue
        ((name, params),) = entry.items()
        loss = Section(params, f"Loss.Train[{index}].{name}", notes)
        weight = loss.get("weight", 1.0)
        if name == "CELoss" and cos_margin:
            # PML's CosFaceLoss takes its sizes through *args, so prodrec cannot fill them in from the data.
            if not isinstance(head.get("class_num"), int):
                notes.fail("Arch.Head.class_num", "CosMargin needs the number of training classes")
            entries.append({"CosFaceLoss": {"weight": weight, "margin": head.get("margin", 0.35),
                                            "scale": head.get("scale", 64.0), "num_classes": head.get("class_num"),
                                            "embedding_size": head.get("embedding_size", 512)}})
            if loss.get("epsilon"):
                notes.warn(f"{loss.key}.epsilon", "label smoothing is not available with the CosMargin head")
        elif name == "CELoss":
            if not isinstance(head, dict):
                notes.fail(loss.key, "CELoss needs Arch.Head (ArcMargin, FC or CosMargin)")
            entries.append({"CELoss": {"weight": weight, **({"epsilon": loss.get("epsilon")}
                                                           if loss.get("epsilon") else {})}})
        elif name in ("TripletLossV2", "TripletLoss"):
            source = loss.get("feature_from", loss.get("feat_from", "features"))
            if source != "features":
                notes.fail(f"{loss.key}.feature_from", f"{brief(source)}: prodrec applies losses to the neck's features")
            v2 = name == "TripletLossV2"  # TripletLoss is TripletLossV2 without normalisation, margin 1.0
            normalize = loss.get("normalize_feature", True) if v2 else False
            entries.append({"TripletLossV2": {"weight": weight, "margin": loss.get("margin", 0.5 if v2 else 1.0),
                                              "normalize_feature": normalize}})
        else:
            notes.fail(loss.key, "no prodrec equivalent for this PaddleClas loss; supported: CELoss, TripletLossV2, "
                                 "TripletLoss (a native prodrec config takes any pytorch-metric-learning loss)")
            continue
        loss.finish()
    native: Dict[str, Any] = {"Train": entries}
    if isinstance(section.get("Eval"), list):
        native["Eval"] = section.get("Eval")
    section.finish()
    return native


def _learning_rate(lr: Section, epochs: int, notes: Notes) -> Dict[str, Any]:
    name = lr.get("name")
    native: Dict[str, Any] = {"name": name, "learning_rate": lr.get("learning_rate"), "warmup_epoch":
                              lr.get("warmup_epoch", 0), "warmup_start_lr": lr.get("warmup_start_lr", 0.0)}
    if name == "MultiStepDecay":
        if not isinstance(lr.get("milestones"), list):
            notes.fail(f"{lr.key}.milestones", f"a list of epochs is required, got {lr.get('milestones')!r}")
        native.update(milestones=lr.get("milestones", []), gamma=lr.get("gamma", 0.1))
    elif name == "Cosine":
        native["eta_min"] = lr.get("eta_min", 0.0)
        if lr.get("by_epoch", False):
            notes.warn(f"{lr.key}.by_epoch", "prodrec updates the cosine learning rate every step")
    elif name == "Step":
        step = lr.get("step_size")
        if not (isinstance(step, int) and step > 0):
            notes.fail(f"{lr.key}.step_size", f"a positive number of epochs is required, got {brief(step)}")
            step = max(epochs, 1)
        native.update(name="MultiStepDecay", milestones=list(range(step, max(epochs, 1), step)), gamma=lr.get("gamma"))
    elif name == "Piecewise":
        epochs_, values = lr.get("decay_epochs"), lr.get("values")
        positive = isinstance(values, list) and all(isinstance(v, (int, float)) and v > 0 for v in values)
        ratios = {round(b / a, 9) for a, b in zip(values, values[1:])} if positive else set()
        if not (isinstance(epochs_, list) and positive and len(values) == len(epochs_) + 1 and len(ratios) == 1):
            notes.fail(lr.key, "Piecewise runs as MultiStepDecay, so values must be one more than decay_epochs and "
                               f"a geometric sequence (each value a fixed multiple of the previous); got {values}")
        else:
            native.update(name="MultiStepDecay", learning_rate=values[0], milestones=epochs_, gamma=ratios.pop())
    elif name != "Constant":
        notes.fail(f"{lr.key}.name", f"{brief(name)} is not supported; use MultiStepDecay, Cosine, Piecewise, Step or "
                                     "Constant")
    if native["warmup_epoch"]:
        notes.warn(f"{lr.key}.warmup_epoch", "prodrec's schedule runs over the epochs after the warm-up (Paddle's "
                                             "LinearWarmup restarts it after the warm-up; milestones shift by it)")
    if lr.get("last_epoch", -1) != -1:
        notes.warn(f"{lr.key}.last_epoch", "not supported; prodrec starts the schedule at the beginning")
    lr.skip("verbose", "by_epoch")
    lr.finish()
    return native


def translate_optimizer(section: Section, epochs: int, notes: Notes) -> Dict[str, Any]:
    """Native ``Optimizer`` (``epochs`` places the milestones of a ``Step`` schedule)."""
    name = section.get("name")
    native: Dict[str, Any] = {"name": name, "lr": _learning_rate(section.child("lr"), epochs, notes)}
    if name == "Momentum":
        native["momentum"] = section.get("momentum", 0.9)
    elif name == "AdamW":
        native["betas"] = [section.get("beta1", 0.9), section.get("beta2", 0.999)]
        if section.get("epsilon", 1e-8) != 1e-8:
            notes.warn("Optimizer.epsilon", "prodrec's AdamW uses epsilon 1e-8")
    elif name != "SGD":
        notes.fail("Optimizer.name", f"{brief(name)} is not supported; use Momentum, SGD or AdamW")
    for key in ("use_nesterov", "no_weight_decay_name", "one_dim_param_no_weight_decay", "clip_norm"):
        if section.get(key):
            notes.warn(f"Optimizer.{key}", "not supported (ignored)")
    regularizer = section.child("regularizer")
    native["regularizer"] = None
    if name == "AdamW" and section.get("weight_decay") is not None:
        native["regularizer"] = {"name": "L2", "coeff": section.get("weight_decay")}
    elif regularizer.data:
        if regularizer.get("name") != "L2":
            notes.fail("Optimizer.regularizer.name", f"{regularizer.get('name')!r}: only L2 is supported")
        native["regularizer"] = {"name": "L2", "coeff": regularizer.get("coeff")}
    regularizer.finish()
    section.skip("multi_precision")
    section.finish()
    return native


def translate_metrics(section: Section, notes: Notes) -> Dict[str, Any]:
    """Native ``Metric``: Recallk and mAP; TopkAcc becomes Recallk with the same K (with a warning)."""
    entries = section.get("Eval", [])
    native: List[Dict[str, Any]] = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        name, params = next(iter(entry.items())) if isinstance(entry, dict) and len(entry) == 1 else (entry, None)
        topk = params.get("topk", [1, 5]) if isinstance(params, dict) else [1, 5]
        topk = sorted(topk) if isinstance(topk, list) else [topk]
        if name == "Recallk" or (name == "TopkAcc" and not any("Recallk" in e for e in native)):
            native.append({"Recallk": {"topk": topk}})
        if name == "TopkAcc":
            notes.warn(f"Metric.Eval[{index}].TopkAcc", "classification accuracy is not computed; prodrec reports "
                                                        f"retrieval Recall@{topk} instead")
        elif name == "mAP":
            native.append({"mAP": {}})
        elif name != "Recallk":
            notes.warn(f"Metric.Eval[{index}]", f"{brief(name)} is not supported (ignored); prodrec computes Recallk, mAP")
    if section.get("Train"):
        notes.warn("Metric.Train", "training metrics are not computed (prodrec logs the losses)")
    section.finish()
    return {"Eval": native}


def backbone_mean_std(name: Any) -> Optional[tuple]:
    """The mean and std prodrec normalises with for this backbone (timm's), or None if timm lacks it."""
    import timm

    from prodrec.models import BACKBONE_ALIASES

    cfg = timm.models.get_pretrained_cfg(BACKBONE_ALIASES.get(name, name)) if isinstance(name, str) else None
    return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else None
