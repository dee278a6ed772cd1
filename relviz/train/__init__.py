"""Distillation training: configuration, the run folder, and the resumable trainer (imported on
first use, so that readers of run folders, such as the job store, do not load the training stack)."""

from relviz.train.config import TrainConfig, TrainConfigError, from_dict, load_config
from relviz.train.rundir import EventLog, RunDir, read_events


def __getattr__(name: str):
    if name == "Trainer":
        from relviz.train.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'relviz.train' has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainConfigError", "from_dict", "load_config", "EventLog", "RunDir", "Trainer",
           "read_events"]
