"""Config: the typed sections of a run (seed / PaddleClas section names), loaded once from YAML.

Example:
    >>> from prodrec.config import load_config
    >>> load_config("inshop_ce_triplet", overrides=["Global.epochs=2"]).Global.epochs
    2
"""
from prodrec.config.arguments import ModelSpec, model_spec
from prodrec.config.load import (CONFIG_DIR, MAX_CONFIG_BYTES, MAX_CONFIG_VALUES, Override, builtin_config_names,
                                 builtin_config_path, load_config, parse_yaml, read_config_file, read_text_file)
from prodrec.config.schema import ConfigError, merge_into
from prodrec.config.detection import DetectionConfig, DetectionDataConfig, DetectorArchConfig
from prodrec.config.sections import (SPLITS, ArchConfig, BackboneConfig, Config, DataLoaderConfig, GlobalConfig,
                                     HeadConfig, LossConfig, LRConfig, MetricConfig, NeckConfig, OptimizerConfig,
                                     RegularizerConfig, StopLayerConfig)

__all__ = ["Config", "GlobalConfig", "ArchConfig", "BackboneConfig", "StopLayerConfig", "NeckConfig", "HeadConfig",
           "LossConfig", "OptimizerConfig", "LRConfig", "RegularizerConfig", "DataLoaderConfig", "MetricConfig",
           "ConfigError", "SPLITS", "CONFIG_DIR", "load_config", "builtin_config_path", "builtin_config_names",
           "merge_into", "ModelSpec", "model_spec", "Override", "read_config_file", "parse_yaml", "read_text_file",
           "MAX_CONFIG_BYTES", "MAX_CONFIG_VALUES", "DetectionConfig", "DetectionDataConfig", "DetectorArchConfig"]
