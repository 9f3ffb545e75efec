"""Typed experiment configuration: one YAML per experiment, one frozen dataclass per stage (``sections``), read and
checked by ``load_config`` (``load``)."""

from scotd.config.load import (apply_override, check_students, describe, dump_config, from_dict, greedy_run_names,
                               load_config, to_dict)
from scotd.config.added import with_eval_tasks
from scotd.config.sections import (ConfigError, CorpusConfig, EngineConfig, EvalConfig, ExperimentConfig,
                                   LoraSettings, OutputConfig, ResourcesConfig, StudentConfig, TaskConfig,
                                   TeacherConfig, TrackingConfig)

__all__ = ["ConfigError", "CorpusConfig", "EngineConfig", "EvalConfig", "ExperimentConfig", "LoraSettings",
           "OutputConfig", "ResourcesConfig", "StudentConfig", "TaskConfig", "TeacherConfig", "TrackingConfig", "apply_override",
           "check_students", "describe", "dump_config", "from_dict", "greedy_run_names", "load_config", "to_dict",
           "with_eval_tasks"]
