"""Experiments: a declared grid of training configurations x seeds (a TOML file, :mod:`.spec`),
run as background jobs with a bounded number at once and resumable as a whole (:mod:`.runner`),
every finished run evaluated (:mod:`.evaluate`), and one report of means and intervals over seeds
per cell (:mod:`.aggregate`)."""

from relviz.experiment.aggregate import aggregate, interval_over_seeds, run_metrics, to_csv, to_markdown
from relviz.experiment.evaluate import evaluate_run, stored_evaluation, teacher_key, teacher_reference
from relviz.experiment.runner import Experiment, RunPlan, experiments_dir, list_experiments
from relviz.experiment.spec import (Cell, EvaluationSpec, ExperimentError, ExperimentSpec, load_spec, parse_spec,
                                    spec_from_text)

__all__ = ["Cell", "EvaluationSpec", "Experiment", "ExperimentError", "ExperimentSpec", "RunPlan", "aggregate",
           "evaluate_run", "experiments_dir", "interval_over_seeds", "list_experiments", "load_spec", "parse_spec",
           "run_metrics", "spec_from_text", "stored_evaluation", "teacher_key", "teacher_reference", "to_csv",
           "to_markdown"]
