"""Study configuration: the typed config (`study`), `--set` overrides, YAML read with limits
(`safe_yaml`) and the task-query language (`query`)."""

from posturescreen.config.study import ConfigError, StudyConfig, load_config

__all__ = ["ConfigError", "StudyConfig", "load_config"]
