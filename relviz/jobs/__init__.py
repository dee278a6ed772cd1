"""Background training jobs: detached process groups recorded in SQLite, reconciled on every read."""

from relviz.jobs.store import STATES, TERMINAL, Job, JobError, JobStore

__all__ = ["STATES", "TERMINAL", "Job", "JobError", "JobStore"]
