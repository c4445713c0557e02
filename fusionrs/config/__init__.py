"""Configs: sectioned dataclasses for build, training and evaluation, one loader and one
override syntax (`dotted.key=value`) for all of them (loader.py)."""

from fusionrs.config.build import BuildConfig, SourceConfig, StorageConfig
from fusionrs.config.eval import EvalConfig
from fusionrs.config.loader import ConfigError, describe, load_config, parse_job_args, stable_hash, to_yaml
from fusionrs.config.train import ClipTrainConfig, TrainConfig, VlmTrainConfig

__all__ = ["BuildConfig", "SourceConfig", "StorageConfig", "EvalConfig", "ClipTrainConfig", "TrainConfig",
           "VlmTrainConfig", "ConfigError", "describe", "load_config", "parse_job_args", "stable_hash", "to_yaml"]
