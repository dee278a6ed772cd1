"""Background training jobs: detached process groups recorded in SQLite, reconciled on every read,
run at a lower priority than the app, with their phase and curves read from the run folder."""

from relviz.jobs.priority import (DEFAULT_NICENESS, RULE, UNMANAGED, JobPriority, available_cores, choose_priority,
                                   describe_rule)
from relviz.jobs.progress import (PHASES, VALIDATION_METRICS, JobProgress, job_progress, loss_curve,
                                  read_validation_curve, validation_curve)
from relviz.jobs.store import STATES, TERMINAL, Job, JobError, JobStore

__all__ = ["STATES", "TERMINAL", "Job", "JobError", "JobStore", "DEFAULT_NICENESS", "RULE", "UNMANAGED",
           "JobPriority", "available_cores", "choose_priority", "describe_rule", "PHASES", "VALIDATION_METRICS", "JobProgress",
           "job_progress", "loss_curve", "read_validation_curve", "validation_curve"]
