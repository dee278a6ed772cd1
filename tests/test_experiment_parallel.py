"""An experiment's evaluations are work in its ``max_running`` slots, beside its trainings: each runs in
a process of its own holding the run's evaluation lock; a slot taken by an evaluation keeps a
training waiting; an evaluation killed (kill -9), with its supervisor gone or watching, is evaluated
again from the pieces it stored; a failed one is reported in the state as ``evaluation_error`` and
tried again by the next supervision; the teacher's reference is computed once, under a lock."""

import json
import os
import shutil
import signal
import threading
import time

import pytest

from support import TINY, wait_for
from relviz.config import load_settings
from relviz.experiment import Experiment, EvaluationSpec, stored_evaluation, teacher_key, teacher_reference
from relviz.experiment.evaluate import file_lock
from relviz.experiment.runner import (EVALUATION_LOG, evaluation_holder, settings_from_json, settings_to_json)
from relviz.files import read_json, write_json
from relviz.jobs import JobStore
from relviz.train import from_dict

ACTIVE = ("queued", "running")


def _grid(root) -> str:
    # one cell, two seeds of one step; few-shot by fine-tuning, long enough (8 steps, seconds) for a kill
    # to land between the structure (stored first) and the fine-tuning
    train = {**TINY, "dataset": str(root), "split": "mini_val", "max_steps": 1, "checkpoint_every": 1}
    return ("[experiment]\nname = \"slots\"\nseeds = [0, 1]\nmax_running = 1\n\n[train]\n"
            + "\n".join(f"{k} = {json.dumps(v)}" for k, v in train.items())
            + "\n\n[grid]\nloss = [\"relational\"]\n\n[evaluate]\nval_scenes = 1\nval_per_scene = 2\nper_class = 50\n"
              "linear_probe = []\nfinetune = [1.0]\nfinetune_steps = 8\nfinetune_batch = 1\nfinetune_seeds = 1\n"
              "train_split = \"mini_val\"\n")


def _busy(state: dict) -> int:
    """Slots in use in a supervision step's state: active trainings and running evaluations."""
    return sum(r["status"] in ACTIVE for r in state["runs"].values()) + sum(
        bool(r.get("evaluating")) for r in state["runs"].values())


def _supervise_to_a_reported_failure(exp: Experiment, grid, settings, key: str) -> None:
    """Supervise once; the evaluation of run ``key`` fails and is reported in the state, the status
    and the log, and the supervision ends."""
    lines: list[str] = []
    Experiment.from_file(settings, grid).supervise(JobStore(settings), poll_s=0.1, log=lines.append)
    entry = exp.read_state()["runs"][key]
    assert entry["evaluated"] is False and entry["evaluation_error"], entry
    assert [r["evaluation_error"] for r in exp.status(JobStore(settings))["runs"]] == [entry["evaluation_error"], None]
    assert any(f"{key}: evaluation failed" in line for line in lines), lines


def _kill(run_dir) -> int:
    """kill -9 the process group of the process evaluating ``run_dir``, wait until its lock is free."""
    pid = wait_for(lambda: (p := evaluation_holder(run_dir)) not in (None, -1) and p, timeout=30, what="the pid")
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: evaluation_holder(run_dir) is None, timeout=30, what="the lock's release")
    return pid


def test_evaluations_run_in_processes_in_the_slots_and_report_failures(synthetic_root, tmp_path):
    """The suite's check (5 processes, structure only): with one slot the second training waits while
    the first run's evaluation process holds the slot; each evaluation is a process with its log; the
    teacher's reference is computed once; a failed evaluation is reported in the state and ends the
    supervision. The kill -9 campaign below (``-m campaign``) kills evaluations mid-way."""
    grid = tmp_path / "slots.toml"
    grid.write_text(_grid(synthetic_root).replace("finetune = [1.0]", "finetune = []"))
    settings = load_settings()
    exp = Experiment.from_file(settings, grid)
    first, second = exp.plans
    busy: list[int] = []
    waited: list[bool] = []

    def watch(state: dict) -> bool:
        busy.append(_busy(state))
        if state["runs"][first.key].get("evaluating"):
            waited.append(state["runs"][second.key]["job_id"] is None)
        return False

    lines: list[str] = []
    report = exp.supervise(JobStore(settings), poll_s=0.1, log=lines.append, stop=watch)
    assert max(busy) == 1 and waited and all(waited), (busy, waited)
    assert report["missing"] == [] and all(stored_evaluation(p.run_dir, p.config, exp.spec.evaluation) is not None
                                           for p in exp.plans)
    for p in exp.plans:
        assert sum(f"{p.key}: evaluating in process" in line for line in lines) == 1, lines
        assert "structure and zero-shot on" in (p.run_dir / EVALUATION_LOG).read_text()
    logs = "".join((p.run_dir / EVALUATION_LOG).read_text() for p in exp.plans)
    assert logs.count("teacher's structure computed") == 1, logs
    assert report["teacher"] is not None and len(read_json(exp.folder / "teacher.json")) == 1

    # a failed evaluation (the student damaged, its evaluation to compute again) is reported in the
    # state and the status, and the supervision ends
    (first.run_dir / "evaluation.json").unlink()
    (first.run_dir / "student.safetensors").write_bytes(b"not a checkpoint")
    _supervise_to_a_reported_failure(exp, grid, settings, first.key)


# the kill -9 campaign: 2 one-step trainings and 6 evaluation processes, about 2.5 CPU-minutes; not in
# `make test` (pyproject's addopts deselect `campaign`): `pytest -m campaign` (bench/README.md)
@pytest.mark.campaign
def test_evaluations_share_the_slots_survive_kill_9_and_report_failures(synthetic_root, tmp_path):
    grid = tmp_path / "slots.toml"
    grid.write_text(_grid(synthetic_root))
    settings = load_settings()
    exp = Experiment.from_file(settings, grid)
    first, second = exp.plans
    busy: list[int] = []

    # one slot: the first run trains, then its evaluation takes the slot, and the second run waits
    def first_evaluating(state: dict) -> bool:
        busy.append(_busy(state))
        return state["runs"][first.key].get("evaluating", False)

    exp.supervise(JobStore(settings), poll_s=0.1, stop=first_evaluating)
    state = exp.read_state()
    assert max(busy) == 1 and state["runs"][second.key]["job_id"] is None, (busy, state["runs"][second.key])
    # the supervisor is gone; its evaluation is killed once the structure is stored, before the fine-tuning ends
    wait_for(lambda: "structure" in (read_json(first.run_dir / "evaluation.json") or {}), timeout=300,
             what="the structure")
    assert stored_evaluation(first.run_dir, first.config, exp.spec.evaluation) is None, "finished before the kill"
    _kill(first.run_dir)
    structure = read_json(first.run_dir / "evaluation.json")["structure"]

    # two slots: the killed evaluation is launched again beside the second training; the second run's
    # evaluation is killed while this supervisor watches, and launched again by it
    killed: list[int] = []

    def kill_second_once(state: dict) -> bool:
        busy.append(_busy(state))
        if not killed and state["runs"][second.key].get("evaluating"):
            killed.append(_kill(second.run_dir))
        return False

    busy.clear()
    lines: list[str] = []
    report = Experiment.from_file(settings, grid).supervise(JobStore(settings), max_running=2, poll_s=0.1,
                                                            log=lines.append, stop=kill_second_once)
    assert killed and max(busy) <= 2, busy
    assert report["missing"] == [] and all(stored_evaluation(p.run_dir, p.config, exp.spec.evaluation) is not None
                                           for p in exp.plans)
    assert sum(f"{first.key}: evaluating in process" in line for line in lines) == 1, lines
    assert sum(f"{second.key}: evaluating in process" in line for line in lines) == 2, lines
    assert any(f"{second.key}: the evaluation process ended without its results" in line for line in lines), lines
    # evaluated again from the pieces stored: the structure kept, computed once
    log = (first.run_dir / EVALUATION_LOG).read_text()
    assert read_json(first.run_dir / "evaluation.json")["structure"] == structure
    assert log.count("structure and zero-shot on") == 1, log
    # the teacher's reference: computed once for the experiment, by one of the evaluation processes
    logs = "".join((p.run_dir / EVALUATION_LOG).read_text() for p in exp.plans)
    assert logs.count("teacher's structure computed") == 1, logs
    assert report["teacher"] is not None and len(read_json(exp.folder / "teacher.json")) == 1
    assert all(r["evaluation_error"] is None for r in exp.read_state()["runs"].values())

    # a failed evaluation (its fine-tuning to compute again, the student damaged) is reported in the state
    # and the status, and the supervision ends; the next one evaluates it again
    student = first.run_dir / "student.safetensors"
    kept = tmp_path / "student.safetensors"
    shutil.copy(student, kept)
    done = read_json(first.run_dir / "evaluation.json")
    write_json(first.run_dir / "evaluation.json", {k: v for k, v in done.items() if k != "finetune"})
    student.write_bytes(b"not a checkpoint")
    _supervise_to_a_reported_failure(exp, grid, settings, first.key)
    shutil.copy(kept, student)
    Experiment.from_file(settings, grid).supervise(JobStore(settings), poll_s=0.1)
    entry = exp.read_state()["runs"][first.key]
    again = read_json(first.run_dir / "evaluation.json")
    assert entry["evaluated"] and entry["evaluation_error"] is None
    assert again["structure"] == structure  # kept; the fine-tuning computed again, to the same scores (one thread)
    assert [again["finetune"]["1"][k] for k in ("miou", "confusion_per_frame")] == \
        [done["finetune"]["1"][k] for k in ("miou", "confusion_per_frame")]


def test_the_teacher_reference_is_read_under_its_lock_not_computed_twice(tmp_path, synthetic_root):
    """A second evaluation waits on ``teacher.json.lock`` while the first computes, then reads what the
    first wrote (here: an entry the test writes while holding the lock; computing it would fail, the
    dataset being absent)."""
    config = from_dict({"dataset": str(tmp_path / "no-dataset")})
    evaluation = EvaluationSpec(val_scenes=1)
    path = tmp_path / "teacher.json"
    written = {"teacher": "demo", "structure": {"uniformity": -1.0}}
    got: list = []
    with file_lock(f"{path}.lock"):
        waiting = threading.Thread(target=lambda: got.append(teacher_reference(path, config, evaluation,
                                                                               load_settings())))
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive() and not got  # waits for the lock
        write_json(path, {teacher_key(config, evaluation): written})
    waiting.join(timeout=30)
    assert got == [written]


def test_an_evaluation_process_gets_the_supervisors_settings_exactly(tmp_path):
    """The demo supervises over settings that replace the file's (dataset, teacher): an evaluation
    process builds the runs' configs over the same ones, None and paths included."""
    import dataclasses

    settings = dataclasses.replace(load_settings(), dataset="synthetic-mini", teacher="demo", teacher_pretrained=None,
                                   config_file=tmp_path / "relviz.toml")
    assert settings_from_json(settings_to_json(settings)) == settings


def test_a_lock_holder_is_the_pid_written_by_the_process_holding_the_flock(tmp_path):
    import subprocess
    import sys

    from relviz.experiment.runner import lock_holder

    path = tmp_path / "x.lock"
    assert lock_holder(path) is None  # no file
    path.write_text("4242")
    assert lock_holder(path) is None  # a file nobody holds
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_holder(path) == 4242
        path.write_text("not a pid")
        assert lock_holder(path) == -1
    finally:
        holder.kill()
        holder.wait()
    assert lock_holder(path) is None  # released with its process
