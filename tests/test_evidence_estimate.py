"""The evidence experiment's duration estimate (relviz.demo): one run's evaluation from the measured
pieces (docs/evidence.md), and the whole experiment with trainings and evaluations sharing the slots,
against a simulation of the supervisor's schedule (evaluations first, then trainings in plan order)."""

import dataclasses
import heapq
from types import SimpleNamespace

import pytest

from fp_bounds import gamma
from relviz.demo import (DEMO_SECONDS_PER_STEP, EVIDENCE_EXPERIMENT, estimated_minutes, evaluation_seconds,
                         evidence_evaluation_seconds, evidence_split_scenes)
from relviz.experiment.spec import EvaluationSpec, load_spec


def test_the_evidence_worlds_splits_and_one_evaluation_from_the_measured_pieces():
    splits = evidence_split_scenes()
    assert (len(splits["train"]), len(splits["val"])) == (200, 43)
    full = EvaluationSpec(val_scenes=12, val_per_scene=2, linear_probe=(0.01, 0.1, 1.0), finetune=(0.01, 0.1, 1.0),
                          finetune_steps=60, finetune_batch=2, finetune_seeds=3)
    # docs/evidence.md's table: structure 7.9 s per 10 keyframes on 24; the probe 15 s + 0.43 s per labelled
    # frame (8, 80, 800: 2, 20, 200 scenes of 4) + 0.23 s per scored val frame; fine-tuning 1.4 s a step of
    # 2 frames x 60 steps + the scored frames, x 3 seeds x 3 fractions
    for frames, scored in (("all", 43 * 4), ("evaluation_set", 12 * 2)):
        by_hand = (7.9 / 10 * 24 + 3 * 15 + 0.43 * (8 + 80 + 800) + 3 * 0.23 * scored
                   + 3 * 3 * (1.4 * 60 + 0.23 * scored))
        got = evidence_evaluation_seconds(dataclasses.replace(full, fewshot_frames=frames))
        assert got == pytest.approx(by_hand, rel=2 * gamma(40))  # sums of about 30 terms, in another order
    probe_only = dataclasses.replace(full, finetune=(), fewshot_frames="evaluation_set")
    assert evidence_evaluation_seconds(probe_only) == pytest.approx(
        7.9 / 10 * 24 + 3 * 15 + 0.43 * 888 + 3 * 0.23 * 24, rel=2 * gamma(40))
    # without finetune_steps, SLidR's 100 epochs of the labelled frames: 100 x ceil(8 / 2) steps at 1%
    slidr = EvaluationSpec(val_scenes=12, linear_probe=(), finetune=(0.01,), finetune_batch=2, finetune_seeds=1)
    assert evaluation_seconds(slidr, splits["train"], 43, 4) == pytest.approx(
        7.9 / 10 * 24 + 1.4 * 100 * 4 + 0.23 * 172, rel=2 * gamma(40))


def test_an_out_of_distribution_dataset_adds_its_linear_probes():
    """Each ``ood_datasets`` entry adds, per out-of-distribution probe fraction, the probe's fixed part and
    1 s per KITTI scan: the labelled ones (the field's every-k-th rule: 2 of the 200 at 1%, 20 at 10%) and
    the 20 scored scans of sequence 08; its fine-tuning is not counted."""
    base = EvaluationSpec(val_scenes=12, val_per_scene=2, linear_probe=(0.01,), fewshot_frames="evaluation_set")
    ood = dataclasses.replace(base, ood_datasets=("k",), ood_linear_probe=(0.01, 0.1), ood_finetune=(0.1,))
    assert evidence_evaluation_seconds(ood) - evidence_evaluation_seconds(base) == pytest.approx(
        2 * 15 + 1.0 * (2 + 20) + 1.0 * (20 + 20), rel=2 * gamma(20))
    two = dataclasses.replace(ood, ood_datasets=("k", "l"))
    assert evidence_evaluation_seconds(two) - evidence_evaluation_seconds(base) == pytest.approx(
        2 * (2 * 15 + 62.0), rel=2 * gamma(20))


def _experiment(runs: list[tuple[int, float]], slots: int):
    """An experiment-like object: runs of (training steps, evaluation seconds), ``slots`` at once."""
    plans = [SimpleNamespace(config=SimpleNamespace(max_steps=steps), cell=i, key=f"r{i}") for i, (steps, _) in enumerate(runs)]
    return SimpleNamespace(plans=plans, spec=SimpleNamespace(max_running=slots, evaluation_for=lambda cell: cell))


def _supervised(runs: list[tuple[int, float]], slots: int) -> float:
    """The makespan of the supervisor's schedule with these constant durations: whenever slots are
    free, evaluations of finished trainings start first (plan order), then trainings (plan order)."""
    now, busy, trained, evaluating, started = 0.0, [], [], set(), 0
    while True:
        for i in [i for i in trained if i not in evaluating]:
            if len(busy) < slots:
                evaluating.add(i)
                heapq.heappush(busy, (now + runs[i][1], "evaluation", i))
        while len(busy) < slots and started < len(runs):
            heapq.heappush(busy, (now + runs[started][0] * DEMO_SECONDS_PER_STEP, "training", started))
            started += 1
        if not busy:
            return now
        now, kind, i = heapq.heappop(busy)
        if kind == "training":
            trained.append(i)


@pytest.mark.parametrize("runs, slots", [
    ([(800, 1268.0)] * 15 + [(800, 462.0)] * 18, 2),  # the 33-run design: fine-tuned grid runs, probe-only sweeps
    ([(800, 240.0)] * 9, 2),  # the demo experiment
    ([(100, 50.0), (10, 900.0), (300, 5.0)], 2),
    ([(800, 1690.0)] * 5, 1),  # one slot: everything in a row
])
def test_the_estimate_is_grahams_bound_and_bounds_the_supervisors_schedule(runs, slots):
    work = [steps * DEMO_SECONDS_PER_STEP + seconds for steps, seconds in runs]
    bound = sum(work) / slots + (1 - 1 / slots) * max(work)
    got = estimated_minutes(_experiment(runs, slots), seconds_per_evaluation=lambda cell: runs[cell][1])
    assert got * 60 == pytest.approx(bound, rel=2 * gamma(len(runs) + 4))
    simulated = _supervised(runs, slots)
    assert sum(work) / slots <= simulated <= got * 60 * (1 + 2 * gamma(len(runs) + 4))
    if slots == 1:
        assert simulated == pytest.approx(got * 60, rel=2 * gamma(len(runs) + 4))  # one slot: the sum, exactly the bound


def test_the_evidence_file_is_estimated_per_run_from_its_own_evaluation():
    """Each run is estimated with its cell's evaluation (the sweeps' probe-only runs cost less), and a
    number still works as one evaluation's seconds for every run (the demo's)."""
    spec = load_spec(EVIDENCE_EXPERIMENT)
    experiment = SimpleNamespace(plans=[SimpleNamespace(config=SimpleNamespace(max_steps=800), cell=cell, key=f"r{i}")
                                        for i, (cell, _) in enumerate(spec.runs())], spec=spec)
    per_run = [800 * DEMO_SECONDS_PER_STEP + evidence_evaluation_seconds(spec.evaluation_for(p.cell))
               for p in experiment.plans]
    slots = spec.max_running
    assert estimated_minutes(experiment, seconds_per_evaluation=evidence_evaluation_seconds) * 60 == pytest.approx(
        sum(per_run) / slots + (1 - 1 / slots) * max(per_run), rel=2 * gamma(len(per_run) + 4))
    constant = estimated_minutes(experiment, seconds_per_evaluation=240.0) * 60
    assert constant == pytest.approx(len(per_run) * 1040.0 / slots + (1 - 1 / slots) * 1040.0,
                                     rel=2 * gamma(len(per_run) + 4))


def test_a_trained_run_counts_its_evaluation_only_and_an_evaluated_one_nothing():
    """Runs keyed in ``done`` cost nothing; runs keyed in ``trained`` (a finished training whose evaluation
    is left, e.g. a new out-of-distribution piece) cost their evaluation only."""
    runs = [(800, 600.0), (800, 300.0), (800, 900.0), (800, 100.0)]
    experiment = _experiment(runs, 2)
    evaluation = lambda cell: runs[cell][1]  # noqa: E731
    work = [0.0 + 300.0, 800 * DEMO_SECONDS_PER_STEP + 900.0, 800 * DEMO_SECONDS_PER_STEP + 100.0]  # r0 done, r1 trained
    got = estimated_minutes(experiment, seconds_per_evaluation=evaluation, done=["r0"], trained=["r1", "r0"])
    assert got * 60 == pytest.approx(sum(work) / 2 + 0.5 * max(work), rel=2 * gamma(len(work) + 4))
