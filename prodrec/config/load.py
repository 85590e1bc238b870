"""Load a run config: a YAML file (or a built-in recipe's name, or a dict) read once, then
``Section.key=value`` overrides, then checked into a typed :class:`~prodrec.config.Config`.

Example:
    >>> from prodrec.config import load_config
    >>> cfg = load_config("inshop_ce_triplet", overrides=["Global.epochs=2"])
    >>> cfg.Global.epochs, cfg.Arch.Head.name
    (2, 'ArcMargin')
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import yaml

from prodrec.config.schema import ConfigError
from prodrec.config.sections import Config, GlobalConfig

__all__ = ["load_config", "read_config_file", "builtin_config_path", "builtin_config_names", "CONFIG_DIR", "Override"]

CONFIG_DIR = Path(__file__).parent / "builtin"


def builtin_config_names() -> List[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def builtin_config_path(name: str) -> Path:
    """Path of a config shipped with prodrec, by file stem (e.g. ``inshop_ce_triplet``)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no built-in config {name!r}; choose one of {builtin_config_names()} or give a YAML path")
    return path


Override = Union[str, Tuple[str, Any]]
"""``"Section.key=value"`` (the value parsed as YAML, as ``--set`` gives it) or ``("Section.key", value)``
(a typed value, as code and command-line flags give it)."""


def read_config_file(source: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The mapping in a YAML config file, or in the built-in config of that name; the one place a config
    file is read."""
    path = Path(source)
    if not path.is_file() and path.suffix == "" and (CONFIG_DIR / f"{path.name}.yaml").is_file():
        path = CONFIG_DIR / f"{path.name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {str(source)!r} not found; give a YAML path or one of {builtin_config_names()}"
        )
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    source: Union[str, os.PathLike, Dict[str, Any], None] = None,
    overrides: Sequence[Override] = (),
) -> Config:
    """Load a run config.

    Args:
        source: a YAML path, the name of a built-in config, a mapping (e.g. from :func:`read_config_file`),
            or None for the defaults (the seed's In-shop recipe).
        overrides: applied in order: ``"Section.key=value"`` strings (value parsed as YAML), e.g.
            ``["Global.epochs=10", "Arch.Head.name=FC"]``, or ``("Section.key", value)`` pairs.
    """
    if source is None:
        data: Dict[str, Any] = {}
    elif isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        data = read_config_file(source)
    _pin_schedule_length(data)
    for override in overrides:
        _apply_override(data, override)
    return Config.from_dict(data)


def _pin_schedule_length(data: Dict[str, Any]) -> None:
    """Record, before overrides, the run length the schedule was written for: the file's ``Global.epochs``
    when the file writes milestones or a warm-up itself, else the built-in recipe's length."""
    sections = [data.get("Global", {}), data.get("Optimizer", {})]
    if not all(isinstance(section, dict) for section in sections):
        return  # merge_into names the bad section
    lr = sections[1].get("lr", {})
    if not isinstance(lr, dict) or "schedule_epochs" in lr:
        return
    epochs = sections[0].get("epochs", GlobalConfig.epochs)
    if not {"milestones", "warmup_epoch"} & set(lr):
        epochs = GlobalConfig.epochs
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0:
        data.setdefault("Optimizer", {}).setdefault("lr", {})["schedule_epochs"] = epochs


def _apply_override(data: Dict[str, Any], override: Override) -> None:
    if isinstance(override, tuple) and len(override) == 2 and isinstance(override[0], str):
        key, value, shown = override[0], override[1], f"{override[0]}={override[1]!r}"
    elif isinstance(override, str):
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} must look like Section.key=value (e.g. Global.epochs=10)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: the value is not valid YAML ({error})") from None
        shown = override
    else:
        raise ConfigError(f"an override is 'Section.key=value' or ('Section.key', value), got {override!r}")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {shown!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value
