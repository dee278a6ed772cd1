"""Distillation training: configuration, the resumable trainer, and its event log."""

from relviz.train.config import TrainConfig, TrainConfigError, from_dict, load_config
from relviz.train.trainer import EventLog, Trainer, read_events

__all__ = ["TrainConfig", "TrainConfigError", "from_dict", "load_config", "EventLog", "Trainer", "read_events"]
