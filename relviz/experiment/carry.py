"""Carrying an experiment's finished runs from one machine to another.

An experiment that needs more hours than one machine keeps (the evidence experiment: about 8 hours,
where a working session's machine lasts 3) continues on the next machine from what the last one
finished. :func:`carry_out` writes, for every evaluated run, one small JSON file: its training fields
and its evaluation with no machine's paths, its validation curve, and the machine that produced it
(its weights stay behind: the report needs none). :func:`carry_in` puts those files back as runs of
the same experiment in another workspace; the supervisor treats a run whose evaluation is stored as
finished (status ``carried``) and trains only the others.

    <run folder>/carried.json      a carried run's validation curve and the machine it ran on

    <directory>/<run key>.json.gz  one evaluated run (gzipped JSON)
    <directory>/teacher.json.gz    the teacher's reference on the evaluation keyframes
    <directory>/report/            the report of the runs carried so far (report.json, .csv, .md; the
                                   runs' scene replicates are in their own files)

A carried run is taken only when it is the run the experiment declares now: the same training fields
and an evaluation holding everything its cell asks for, under the same protocol (paths compared by
name). Nothing a workspace already holds is replaced.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
from pathlib import Path

from relviz.errors import InputError
from relviz.experiment.evaluate import (EVALUATION_FILE, _plain, evaluation_complete, file_lock, stored_evaluation,
                                       teacher_key)
from relviz.experiment.aggregate import write_report
from relviz.experiment.runner import CARRIED_FILE, Experiment
from relviz.files import atomic_path, read_json, without_paths, write_json
from relviz.train.rundir import RunDir

CARRIED_FORMAT = "relviz-carried-run/1"
SUFFIX = ".json.gz"
TEACHER_FILE = "teacher.json"  # the experiment's folder's (relviz.experiment.evaluate.teacher_reference)
CARRIED_TEACHER = f"teacher{SUFFIX}"
REPORT_FOLDER = "report"  # <directory>/report/report.{json,csv,md}: the report of the carried runs


def _write_gz(path: Path, value) -> None:
    """``value`` as gzipped JSON (about a third of the bytes: a run's evaluation holds its scene
    replicates and per-frame confusion matrices), written atomically, byte-identical for the same value
    (no time stamp or file name in the gzip header: a run carried again changes no file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as out:
            out.write(json.dumps(value, sort_keys=True).encode())


def read_gz(path: Path):
    """The JSON value of a gzipped file; None when it is not gzip or not JSON."""
    try:
        return json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, ValueError):
        return None


def machine() -> dict:
    """What produced a run: its numbers differ between machines only in floating-point rounding."""
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    import torch

    return {"machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}


def carry_out(experiment: Experiment, directory: str | Path) -> list[Path]:
    """One ``<key>.json`` in ``directory`` for every evaluated run of ``experiment`` (rewritten when
    present: a run's evaluation only grows), the teacher's reference and the report of the runs
    evaluated so far (``report/``). Returns the files written."""
    directory = Path(directory)
    report = experiment.report()  # its curves are the runs' (a carried run's as it came), read once
    here = None  # this machine, for the runs trained here
    written = []
    for plan in experiment.plans:
        evaluation = stored_evaluation(plan.run_dir, plan.config, experiment.spec.evaluation_for(plan.cell))
        if evaluation is None:
            continue
        came = read_json(plan.run_dir / CARRIED_FILE)
        if isinstance(came, dict):  # carried in earlier: its origin as it came
            trained_on = came.get("trained_on")
        else:
            trained_on = here = here or machine()
        path = directory / f"{plan.key}{SUFFIX}"
        _write_gz(path, without_paths(_plain({
            "format": CARRIED_FORMAT, "experiment": experiment.spec.name, "key": plan.key, "cell": plan.cell.label,
            "seed": plan.seed, "config": plan.config.to_dict(), "evaluation": evaluation,
            "curve": (report.get("curves") or {}).get(plan.key) or [], "trained_on": trained_on})))
        written.append(path)
    key, reference = _teacher(experiment)
    if reference is not None:
        _write_gz(directory / CARRIED_TEACHER, {"experiment": experiment.spec.name, "key": _portable(key),
                                                "reference": without_paths(reference)})
        written.append(directory / CARRIED_TEACHER)
    if written:  # the report of the runs evaluated so far, as the Experiments page reads a committed one
        report = without_paths(report)
        report.pop("files", None)
        for run in report["runs"]:  # the scene replicates stay in the runs' files (the report is re-derived from them)
            run.pop("replicates", None)
        files = write_report(report, directory / REPORT_FOLDER, f"{experiment.spec.name} (carried runs)")
        written += list(files.values())
    return written


def _portable(key: str) -> str:
    """A teacher key (JSON naming the teacher, its weights and the protocol) with no machine's paths."""
    return json.dumps(without_paths(json.loads(key)), sort_keys=True)


def _teacher(experiment: Experiment) -> tuple[str, dict | None]:
    """The experiment's teacher key here and its stored reference (None when not computed yet)."""
    plan = experiment.plans[0]  # every run shares the teacher and the protocol (the report reads one)
    key = teacher_key(plan.config, experiment.spec.evaluation)
    return key, (read_json(experiment.folder / TEACHER_FILE) or {}).get(key)


def carry_in(experiment: Experiment, directory: str | Path) -> list[str]:
    """Put the runs carried in ``directory`` into ``experiment``'s workspace: each file naming a run
    the experiment declares, with the same training fields and a complete evaluation under the same
    protocol, becomes that run's ``evaluation.json`` and ``carried.json`` (its curve and origin; paths
    restored to this workspace's). A run evaluated here, or with a training of its own here (begun,
    interrupted or finished), is left as it is. A file that names a run of this experiment but does
    not match it, or a teacher's reference of another teacher or protocol, is refused with what
    differs, before anything is written. Returns the keys carried in."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"no carried runs at {directory} (a folder written by `relviz experiment carry`)")
    plans = {p.key: p for p in experiment.plans}
    taken = []  # every file checked before any is written: a refusal leaves the workspace as it was
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name == CARRIED_TEACHER:
            continue
        record = read_gz(path)
        if not isinstance(record, dict) or record.get("format") != CARRIED_FORMAT:
            raise InputError(f"{path}: not a carried run (its 'format' should be {CARRIED_FORMAT!r})")
        if record.get("experiment") != experiment.spec.name:
            continue
        plan = plans.get(record.get("key"))
        if plan is None:
            raise InputError(f"{path}: run {record.get('key')!r} is not a run of experiment {experiment.spec.name} "
                             f"as declared now")
        evaluation_spec = experiment.spec.evaluation_for(plan.cell)
        if stored_evaluation(plan.run_dir, plan.config, evaluation_spec) is not None \
                or RunDir(plan.run_dir).events.is_file():  # its own training here goes on
            continue
        config = without_paths(_plain(plan.config.to_dict()))
        if record.get("config") != config:
            changed = ", ".join(f"{k}: {(record.get('config') or {}).get(k)!r} carried, {v!r} here"
                                for k, v in config.items() if (record.get("config") or {}).get(k) != v)
            raise InputError(f"{path}: run {plan.key} was trained with other fields ({changed})")
        protocol = _plain(evaluation_spec.protocol(plan.config))
        evaluation = record.get("evaluation")
        if not isinstance(evaluation, dict) or evaluation.get("protocol") != without_paths(protocol):
            raise InputError(f"{path}: run {plan.key} was evaluated under another protocol "
                             f"({(evaluation or {}).get('protocol')!r}, here {without_paths(protocol)!r})")
        evaluation = {**evaluation, "protocol": protocol}  # this workspace's paths
        if not evaluation_complete(evaluation, plan.config, evaluation_spec):
            raise InputError(f"{path}: run {plan.key}'s evaluation lacks results its cell asks for "
                             f"({evaluation_spec.wanted()}"
                             + (f"; on {', '.join(evaluation_spec.ood_datasets)}: {evaluation_spec.wanted_ood()}"
                                if evaluation_spec.ood_datasets else "") + ")")
        taken.append((plan, evaluation, {"curve": record.get("curve") or [], "trained_on": record.get("trained_on"),
                                         "carried_from": path.name}))
    key, reference = _carried_teacher(experiment, directory)
    for plan, evaluation, came in taken:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(plan.run_dir / CARRIED_FILE, came)
        write_json(plan.run_dir / EVALUATION_FILE, evaluation)  # last: the run counts as evaluated from here
    if reference is not None:
        with file_lock(experiment.folder / f"{TEACHER_FILE}.lock"):  # evaluations may write it meanwhile
            stored = read_json(experiment.folder / TEACHER_FILE) or {}
            stored.setdefault(key, reference)
            write_json(experiment.folder / TEACHER_FILE, stored)
    return [plan.key for plan, _, _ in taken]


def _carried_teacher(experiment: Experiment, directory: Path) -> tuple[str, dict | None]:
    """(the experiment's teacher key here, the teacher's reference carried in ``directory`` with this
    workspace's paths when this experiment has none yet, else None); refused when it is another
    experiment's, teacher's or protocol's."""
    path = directory / CARRIED_TEACHER
    key, here = _teacher(experiment)
    if not path.is_file() or here is not None:
        return key, None
    carried = read_gz(path)
    if not isinstance(carried, dict) or not isinstance(carried.get("reference"), dict):
        raise InputError(f"{path}: not a carried teacher's reference (an object with 'experiment', 'key' and "
                         f"'reference')")
    if carried.get("experiment") != experiment.spec.name or carried.get("key") != _portable(key):
        raise InputError(f"{path}: the teacher's reference of experiment {carried.get('experiment')!r} under "
                         f"{carried.get('key')}, not this experiment's under {_portable(key)}")
    config = experiment.plans[0].config
    return key, {**carried["reference"], "teacher": config.teacher,
                 "protocol": _plain(experiment.spec.evaluation.protocol(config))}
