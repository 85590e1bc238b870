"""Run PaddleClas product-recognition configs: translate them into prodrec's native config.

``translate_ppcls_config`` maps every key of a PaddleClas YAML (``Global``, ``Arch``, ``Loss``,
``Optimizer``, ``DataLoader``, ``Metric``) onto :class:`prodrec.config.Config` and returns a warning
for every key prodrec cannot honour; what cannot be translated at all is an error listing every
such key. PaddleClas's defaults are written out explicitly, so prodrec's own defaults never leak in.
The mapping is documented in ``docs/paddleclas.md``.

Example:
    >>> from prodrec.paddle.config import load_ppcls_config  # doctest: +SKIP
    >>> config, warnings = load_ppcls_config("ResNet50_vd_Inshop.yaml", overrides=[
    ...     "DataLoader.Train.dataset.image_root=./Inshop/"])  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from prodrec.config import MAX_CONFIG_BYTES, Config, ConfigError, load_config, parse_yaml, read_text_file
from prodrec.paddle.data import translate_dataloader
from prodrec.paddle.reader import Notes, Section
from prodrec.paddle.recipe import (backbone_mean_std, translate_arch, translate_losses, translate_metrics,
                                  translate_optimizer)
from prodrec.utils import ProdrecError, brief

__all__ = ["is_ppcls_config", "read_ppcls_yaml", "apply_ppcls_overrides", "translate_ppcls_config",
           "load_ppcls_config", "convert_paddle_pretrained", "native_yaml"]

_PADDLECLAS_ONLY_GLOBAL = {"image_shape", "pretrained_model", "checkpoints", "class_num", "save_inference_dir",
                           "use_visualdl", "eval_during_train"}
_NATIVE_ONLY_GLOBAL = ("seed", "deterministic", "amp", "channels_last", "eval_before_train")


def is_ppcls_config(data: Any) -> bool:
    """Whether a loaded YAML mapping is laid out as a PaddleClas config (``DataLoader.Train`` /
    ``DataLoader.Eval`` blocks, or ``Global`` keys that only PaddleClas has, e.g. ``image_shape``)."""
    if not isinstance(data, dict):
        return False
    loader, global_ = data.get("DataLoader"), data.get("Global")
    return (isinstance(loader, dict) and bool({"Train", "Eval"} & set(loader))) or (
        isinstance(global_, dict) and bool(_PADDLECLAS_ONLY_GLOBAL & set(global_)))


def read_ppcls_yaml(source: Union[str, os.PathLike, None]) -> Optional[Dict[str, Any]]:
    """The mapping in ``source`` when it is a YAML file in PaddleClas layout, else None."""
    if source is None or not Path(source).is_file():
        return None
    data = parse_yaml(read_text_file(source, MAX_CONFIG_BYTES), str(source))
    return data if is_ppcls_config(data) else None


def apply_ppcls_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """A copy of ``data`` with ``Section.key=value`` overrides applied, as PaddleClas's ``-o`` does:
    a number in the path indexes a list (``DataLoader.Train.dataset.transform_ops.1.ResizeImage.size=64``).
    Values are parsed as YAML (never evaluated as code)."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, raw = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {brief(override)} must look like Section.key=value (e.g. Global.epochs=10)")
        value = parse_yaml(raw, f"override {brief(override)}") if raw.strip() else None
        node: Any = data
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the config"
            if isinstance(node, list):
                if not (part.isdigit() and int(part) < len(node)):
                    raise ConfigError(f"override {brief(override)}: {where} is a list of {len(node)}; "
                                      f"index it with 0..{len(node) - 1}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"override {brief(override)}: {where} is not a section")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return data


def translate_ppcls_config(data: Dict[str, Any], *, base_dir: Union[str, os.PathLike, None] = None,
                           schedule_epochs: Optional[int] = None) -> Tuple[Dict[str, Any], List[str]]:
    """Translate a PaddleClas config mapping into a native prodrec config mapping.

    Args:
        data: The PaddleClas config (after overrides).
        base_dir: Folder that relative paths (image roots, lists, weights) are relative to; None for
            the working directory, PaddleClas's rule.
        schedule_epochs: The run length the file's LR schedule was written for (its ``Global.epochs``
            before overrides); a run of another length scales milestones and warm-up. None: ``Global.epochs``.

    Returns:
        ``(native, warnings)``: ``native`` loads with ``Config.from_dict``; ``warnings`` name every
        PaddleClas key prodrec does not honour and say what it does instead.

    Raises:
        ConfigError: Listing every key that cannot be translated (e.g. an unsupported loss, a
            ``pretrained_model`` URL that is not in PaddleClas's download cache).
    """
    notes = Notes()
    root = Section(data, "", notes)
    base = os.fspath(base_dir) if base_dir is not None else None
    g, arch = root.child("Global"), root.child("Arch")
    native: Dict[str, Any] = {"Global": _global(g, arch.data.get("name"), "AMP" in root)}
    native["Arch"] = translate_arch(arch, g, base)
    native["Loss"] = translate_losses(root.child("Loss"), arch.data.get("Head"), notes)
    written = schedule_epochs or native["Global"]["epochs"]
    native["Optimizer"] = translate_optimizer(root.child("Optimizer"), written, notes)
    if written:
        native["Optimizer"]["lr"]["schedule_epochs"] = written
    image_shape = g.get("image_shape")
    side = image_shape[-1] if isinstance(image_shape, list) and len(image_shape) == 3 else None
    if side is not None and image_shape[1] != image_shape[2]:
        notes.warn("Global.image_shape", f"{image_shape} is not square; prodrec uses square inputs")
    mean_std = backbone_mean_std(native["Arch"]["Backbone"]["name"])
    native["DataLoader"], native["Global"]["image_size"] = translate_dataloader(
        root.child("DataLoader"), image_shape=side, mean_std=mean_std, base_dir=base)
    native["Metric"] = translate_metrics(root.child("Metric"), notes)
    g.finish()
    root.skip("Global", "Arch", "Loss", "Optimizer", "DataLoader", "Metric", "AMP")
    for name in root.data:
        if name not in root.read:
            notes.warn(name, "not used: prodrec embeds with the evaluation preprocessing" if name == "Infer"
                       else "section not used by prodrec (ignored)")
    notes.raise_errors("PaddleClas config")
    try:
        Config.from_dict(native)
    except ConfigError as error:
        raise ConfigError(f"the PaddleClas config translates to an invalid prodrec config: {error}") from None
    return native, notes.warnings


def _global(g: Section, arch_name: Any, amp: bool) -> Dict[str, Any]:
    notes = g.notes
    epochs = g.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        notes.fail("Global.epochs", f"the number of epochs is required, got {brief(epochs)}")
        epochs = 0
    native: Dict[str, Any] = {
        # Without eval_during_train PaddleClas never evaluates; prodrec evaluates once, after the last epoch.
        "epochs": epochs,
        "eval_interval": g.get("eval_interval", 1) if g.get("eval_during_train", True) else max(epochs, 1),
        "save_interval": g.get("save_interval", 1), "print_batch_step": g.get("print_batch_step", 10),
        # PaddleClas writes its run into output_dir/<Arch.name>/.
        "output_dir": os.path.join(g.get("output_dir", "./output/"), str(arch_name or "")),
        "device": {"gpu": "auto", "cpu": "cpu"}.get(g.get("device", "gpu"), "auto"),
        "eval_mode": "retrieval", "amp": "auto" if amp else "off",
    }
    if g.get("device", "gpu") not in ("gpu", "cpu"):
        notes.warn("Global.device", f"{g.get('device')!r} is not supported; prodrec uses CUDA when present, else CPU")
    if g.get("eval_mode", "classification") != "retrieval":
        notes.warn("Global.eval_mode", f"{g.get('eval_mode', 'classification')!r}: prodrec evaluates retrieval "
                                       "(Recall@K / mAP of query vs gallery), not classification accuracy")
    if g.get("checkpoints") is not None:
        notes.warn("Global.checkpoints", "resuming a PaddleClas run is not supported; prodrec resumes its own runs "
                                         "with --resume (set Global.pretrained_model to start from the weights)")
    for key in ("use_visualdl", "use_dali", "to_static"):
        if g.get(key, False):
            notes.warn(f"Global.{key}", "not supported (ignored)")
    native.update({key: g.get(key) for key in _NATIVE_ONLY_GLOBAL if g.get(key) is not None})
    g.skip("image_shape", "pretrained_model", "class_num", "save_inference_dir")
    return native


def load_ppcls_config(source: Union[str, os.PathLike, Dict[str, Any]], *, overrides: Sequence[str] = (),
                      native_overrides: Sequence[str] = ()) -> Tuple[Config, List[str]]:
    """Load a PaddleClas config as a :class:`Config`: apply ``overrides`` to its PaddleClas keys, translate,
    then apply ``native_overrides`` (prodrec keys). Returns the config and the translation warnings."""
    if not isinstance(source, dict) and not Path(source).is_file():
        raise FileNotFoundError(f"PaddleClas config {os.fspath(source)!r} not found")
    data = source if isinstance(source, dict) else read_ppcls_yaml(source)
    if data is None:
        raise ConfigError(f"{source} is not a PaddleClas config (no DataLoader.Train/Eval, no Global.image_shape)")
    written = data.get("Global", {}).get("epochs") if isinstance(data.get("Global"), dict) else None
    written = written if isinstance(written, int) and not isinstance(written, bool) and written > 0 else None
    native, warnings = translate_ppcls_config(apply_ppcls_overrides(data, overrides), schedule_epochs=written)
    return load_config(native, overrides=native_overrides), warnings


def convert_paddle_pretrained(config: Config, directory: Union[str, os.PathLike, None]) -> Tuple[Config, List[str]]:
    """If ``Arch.Backbone.pretrained`` is a ``.pdparams`` file, convert it (see :mod:`prodrec.paddle.weights`) into
    ``directory`` and point the config at the converted file. Returns the config and notes to show.

    Raises:
        ValueError: The weights need converting but ``directory`` is None.
    """
    source = config.Arch.Backbone.pretrained
    if not (isinstance(source, str) and source.endswith(".pdparams")):
        return config, []
    if directory is None:
        raise ProdrecError(f"the PaddleClas weights {source} must be converted for prodrec; give a folder to write the "
                           "converted file to (prodrec export-config: --output)")
    import torch

    from prodrec.paddle.weights import load_paddleclas

    model, info = load_paddleclas(source, image_size=config.Global.image_size)
    target = Path(directory) / f"{Path(source).stem}.pt"
    if info["embedding_size"] is None:  # a bare backbone: save it as a timm state dict
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save({name[len("backbone."):]: tensor for name, tensor in model.state_dict().items()
                    if name.startswith("backbone.")}, target)
    else:
        model.save(target)
    notes = [f"converted the PaddleClas weights {source} ({info['kind']}) to {target}"]
    if info["head"]:
        notes.append(f"the file's head ({info['head']['type']}, {info['head']['num_classes']} classes) is not "
                     "loaded: prodrec starts the head afresh (PaddleClas loads it when its shape fits)")
    data = config.to_dict()
    data["Arch"]["Backbone"]["pretrained"] = str(target)
    return Config.from_dict(data), notes


def native_yaml(config: Config, *, source: str, warnings: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    """The native config as YAML, headed by comments: where it came from, every warning and note."""
    lines = [f"# prodrec config translated from the PaddleClas config {source} (prodrec export-config)."]
    lines += [f"# {kind}: {' '.join(str(text).split())}" for kind, texts in (("warning", warnings), ("note", notes))
              for text in texts]
    return "\n".join(lines) + "\n" + yaml.safe_dump(config.to_dict(), sort_keys=False)
