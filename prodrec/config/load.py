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
from prodrec.utils import brief
from prodrec.config.sections import Config

__all__ = ["load_config", "read_config_file", "parse_yaml", "builtin_config_path", "builtin_config_names",
           "read_text_file", "CONFIG_DIR", "Override", "MAX_CONFIG_BYTES", "MAX_CONFIG_VALUES"]

CONFIG_DIR = Path(__file__).parent / "builtin"
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few kilobytes; the seed's largest is 4 KiB
MAX_CONFIG_VALUES = 100_000  # values of a document with its aliases expanded; the seed's have ~300


def parse_yaml(text: str, where: str) -> Any:
    """The value of a YAML document, parsed safely (``yaml.SafeLoader``) and bounded: a text over
    :data:`MAX_CONFIG_BYTES`, or one whose aliases expand to over :data:`MAX_CONFIG_VALUES` values (a
    "billion laughs" document), is refused before any value is built. ``where`` names the text in errors."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters is over the {MAX_CONFIG_BYTES:,} a config may have")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_size(node, {})
        if values > MAX_CONFIG_VALUES:
            raise ConfigError(f"{where}: with its aliases (&name / *name) expanded, the document holds "
                              f"{values:,} values, over the {MAX_CONFIG_VALUES:,} a config may have")
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {str(error)[:500]}") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: Dict[int, int]) -> int:
    """Values in ``node`` with every alias expanded, counted once per shared node (so in linear time)."""
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a recursive alias counts as nothing more (the constructor refuses it anyway)
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else [])
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def builtin_config_names() -> List[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def builtin_config_path(name: str) -> Path:
    """Path of a config shipped with prodrec, by file stem (e.g. ``inshop_ce_triplet``)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no built-in config {brief(name)}; choose one of {builtin_config_names()} or give a YAML path")
    return path


Override = Union[str, Tuple[str, Any]]
"""``"Section.key=value"`` (the value parsed as YAML, as ``--set`` gives it) or ``("Section.key", value)``
(a typed value, as code and command-line flags give it)."""


def read_text_file(path: Union[str, os.PathLike], limit: int) -> str:
    """A UTF-8 text file of at most ``limit`` bytes (a config); ConfigError if larger or not text."""
    size = os.path.getsize(path)
    if size > limit:
        raise ConfigError(f"{path}: {size:,} bytes is over the {limit:,} a config file may have; is it a config?")
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); is it a config?") from None


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
    data = parse_yaml(read_text_file(path, MAX_CONFIG_BYTES), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    source: Union[str, os.PathLike, Dict[str, Any], None] = None,
    overrides: Sequence[Override] = (),
    *,
    schema: Any = Config,
) -> Any:
    """Load a run config.

    Args:
        source: a YAML path, the name of a built-in config, a mapping (e.g. from :func:`read_config_file`),
            or None for the defaults (the seed's In-shop recipe).
        overrides: applied in order: ``"Section.key=value"`` strings (value parsed as YAML), e.g.
            ``["Global.epochs=10", "Arch.Head.name=FC"]``, or ``("Section.key", value)`` pairs.
        schema: the config class: :class:`Config` (an embedder run) or
            :class:`~prodrec.config.DetectionConfig` (a detector run).
    """
    if source is None:
        data: Dict[str, Any] = {}
    elif isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        data = read_config_file(source)
    _pin_schedule_length(data, schema().Global.epochs)
    for override in overrides:
        _apply_override(data, override)
    return schema.from_dict(data)


def _pin_schedule_length(data: Dict[str, Any], default_epochs: int) -> None:
    """Record, before overrides, the run length the schedule was written for: the file's ``Global.epochs``
    when the file writes milestones or a warm-up itself, else the built-in recipe's length."""
    sections = [data.get("Global", {}), data.get("Optimizer", {})]
    if not all(isinstance(section, dict) for section in sections):
        return  # merge_into names the bad section
    lr = sections[1].get("lr", {})
    if not isinstance(lr, dict) or "schedule_epochs" in lr:
        return
    epochs = sections[0].get("epochs", default_epochs)
    if not {"milestones", "warmup_epoch"} & set(lr):
        epochs = default_epochs
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0:
        data.setdefault("Optimizer", {}).setdefault("lr", {})["schedule_epochs"] = epochs


def _apply_override(data: Dict[str, Any], override: Override) -> None:
    if isinstance(override, tuple) and len(override) == 2 and isinstance(override[0], str):
        key, value, shown = override[0], override[1], f"{override[0]}={brief(override[1])}"
    elif isinstance(override, str):
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {brief(override)} must look like Section.key=value (e.g. Global.epochs=10)")
        value = parse_yaml(raw, f"override {brief(override)}") if raw.strip() else None
        shown = override
    else:
        raise ConfigError(f"an override is 'Section.key=value' or ('Section.key', value), got {brief(override)}")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {brief(shown)}: {brief(part)} is not a section")
        node = child
    node[parts[-1]] = value
