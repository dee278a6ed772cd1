"""An experiment continues on another machine from the runs a first one finished: carried out as
small files with no machine's paths, carried in as runs the supervisor never trains again, giving the
same report; a carried run that is not the run declared here is refused with what differs."""

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import SMALL_GRID
from relviz.cli import app as cli_app
from relviz.config import load_settings
from relviz.errors import InputError
from relviz.experiment import Experiment
from relviz.experiment.carry import carry_in, carry_out
from relviz.experiment.evaluate import _plain, evaluation_path, stored_evaluation, teacher_key
from relviz.jobs import JobStore

# two seeds, the learning rate a placeholder (format)
GRID = SMALL_GRID.replace("seeds = [0, 1, 2]", "seeds = [0, 1]").replace("max_steps = 10", "max_steps = 10\nlr = {lr}")


def _experiment(home: Path, monkeypatch, lr: float = 0.001) -> Experiment:
    """The small experiment in workspace ``home`` (its dataset an empty folder: nothing here trains)."""
    monkeypatch.setenv("RELVIZ_HOME", str(home))
    (home / "datasets" / "synthetic-mini").mkdir(parents=True, exist_ok=True)
    grid = home / "small.toml"
    grid.write_text(GRID.format(lr=lr))
    exp = Experiment.from_file(load_settings(), grid)
    exp.save_grid()
    return exp


def _finish(exp: Experiment, skip: set[str] = frozenset()) -> None:
    """Every run but ``skip`` evaluated, as an evaluation process writes it, with a validation curve."""
    for i, plan in enumerate(exp.plans):
        if plan.key in skip:
            continue
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        events = [{"ts": 1.0 + k, "event": "val", "step": step, "uniformity": 1.0 + i / 10, "tolerance": 0.8,
                   "gap": 0.5, "zeroshot_miou": 0.3 + step / 100} for k, step in enumerate((5, 10))]
        (plan.run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        q = i + i * i / 7  # not linear in i: the paired differences between cells vary over seeds
        miou = 0.3 + 0.05 * q
        evaluation_path(plan.run_dir).write_text(json.dumps({
            "protocol": _plain(exp.spec.evaluation.protocol(plan.config)),
            "structure": {"uniformity": 1.5 + q / 30, "tolerance": 0.8 - q / 40, "gap": 0.2 + q / 20, "zeroshot_miou": miou},
            "linear_probe": {"0.1": {"miou": miou / 2}, "1": {"miou": miou}},
            "finetune": {"0.1": {"miou": miou / 2 + 0.05}}}))
    key = teacher_key(exp.plans[0].config, exp.spec.evaluation)
    (exp.folder / "teacher.json").write_text(json.dumps({key: {
        "teacher": exp.plans[0].config.teacher, "protocol": _plain(exp.spec.evaluation.protocol(exp.plans[0].config)),
        "structure": {"uniformity": 2.0, "tolerance": 0.6}}}))


def _load(path: Path):
    return json.loads(gzip.decompress(path.read_bytes()))


def _save(path: Path, value) -> None:
    path.write_bytes(gzip.compress(json.dumps(value).encode()))


def _comparable(report: dict) -> dict:
    return {"cells": report["cells"], "claims": report["claims"], "teacher": report.get("teacher"),
            "runs": [{k: r[k] for k in ("key", "metrics")} for r in report["runs"]], "curves": report.get("curves")}


def test_a_second_machine_continues_from_the_carried_runs_and_reports_the_same(tmp_path, monkeypatch):
    first = _experiment(tmp_path / "first", monkeypatch)
    unfinished = first.plans[-1].key
    _finish(first, skip={unfinished})
    carried = tmp_path / "carried"
    written = carry_out(first, carried)
    assert sorted(p.name for p in written if p.parent == carried) == \
        sorted([f"{p.key}.json.gz" for p in first.plans[:-1]] + ["teacher.json.gz"])
    stored = json.loads((carried / "report" / "report.json").read_text())  # the report so far, committed with them
    assert [r["key"] for r in stored["runs"] if r["metrics"] is None] == [unfinished]
    for path in written:  # nothing names the first machine's folders
        text = json.dumps(_load(path)) if path.suffix == ".gz" else path.read_text()
        assert str(tmp_path) not in text, path
    before = {p: p.read_bytes() for p in written if p.suffix == ".gz"}
    assert carry_out(first, carried) == written  # carried again: the runs' files the same, byte for byte
    assert {p: p.read_bytes() for p in written if p.suffix == ".gz"} == before
    assert all(r.get("replicates") is None for r in stored["runs"])  # in the runs' files, not the report
    record = _load(carried / f"{first.plans[0].key}.json.gz")
    assert record["trained_on"]["cores"] >= 1 and record["curve"][-1]["step"] == 10

    second = _experiment(tmp_path / "second", monkeypatch)
    assert second.plans[0].run_dir != first.plans[0].run_dir  # another workspace
    assert carry_in(second, carried) == [p.key for p in first.plans[:-1]]
    for a, b in zip(first.plans[:-1], second.plans[:-1]):
        theirs = stored_evaluation(b.run_dir, b.config, second.spec.evaluation_for(b.cell))
        ours = stored_evaluation(a.run_dir, a.config, first.spec.evaluation_for(a.cell))
        assert theirs is not None and {k: v for k, v in theirs.items() if k != "protocol"} == \
            {k: v for k, v in ours.items() if k != "protocol"}
    status = second.status(JobStore(load_settings()))
    assert [r["status"] for r in status["runs"]] == ["carried"] * 3 + ["pending"]
    assert [r["status"] for r in second.report()["runs"]] == ["carried"] * 3 + ["pending"]  # no supervisor yet
    assert json.loads((second.plans[0].run_dir / "carried.json").read_text())["trained_on"] == record["trained_on"]
    assert _comparable(second.report()) == _comparable(first.report().copy())

    # the supervisor trains only what is missing: one job, for the run the first machine did not finish
    launched = []
    second.supervise(JobStore(load_settings()), poll_s=0.05, log=launched.append, stop=lambda state: True)
    jobs = JobStore(load_settings()).list()
    assert [j.run_dir for j in jobs] == [second.plans[-1].run_dir] and unfinished in launched[0], launched
    for job in jobs:
        JobStore(load_settings()).cancel(job.id)

    # carried on from the second machine: the runs keep the machine they ran on
    again = _load(next(p for p in carry_out(second, tmp_path / "again") if p.name == record["key"] + ".json.gz"))
    assert again["trained_on"] == record["trained_on"] and again["evaluation"] == record["evaluation"]

    # carried in again: nothing changes, nothing held here is replaced
    before = {p.key: evaluation_path(p.run_dir).read_text() for p in second.plans[:-1]}
    assert carry_in(second, carried) == []
    assert {p.key: evaluation_path(p.run_dir).read_text() for p in second.plans[:-1]} == before


def test_a_carried_run_that_is_not_the_declared_run_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    first = _experiment(tmp_path / "first", monkeypatch, lr=0.001)
    _finish(first)
    carried = tmp_path / "carried"
    carry_out(first, carried)
    other = _experiment(tmp_path / "other", monkeypatch, lr=0.002)  # the same keys, another learning rate
    with pytest.raises(InputError, match=r"lr: 0.001 carried, 0.002 here"):
        carry_in(other, carried)
    assert not any(evaluation_path(p.run_dir).is_file() for p in other.plans)

    # each refusal below comes from the LAST file read (sorted by key), after the valid others were
    # checked: none of them is written, nor the teacher's reference
    last = carried / f"{sorted(p.key for p in first.plans)[-1]}.json.gz"
    record = _load(last)
    same = _experiment(tmp_path / "same", monkeypatch)

    def refused(match: str) -> None:
        with pytest.raises(InputError, match=match):
            carry_in(same, carried)
        assert not any(evaluation_path(p.run_dir).is_file() or p.run_dir.is_dir() for p in same.plans)
        assert not (same.folder / "teacher.json").is_file()

    record["evaluation"]["protocol"]["val_scenes"] = 5  # evaluated on other keyframes
    _save(last, record)
    refused("another protocol")
    record["evaluation"]["protocol"]["val_scenes"] = 2
    del record["evaluation"]["finetune"]  # incomplete: its cell asks for fine-tuning at 10%
    _save(last, record)
    refused("lacks results")
    record["evaluation"]["finetune"] = {"0.1": {"miou": 0.2}}
    _save(last, record)

    teacher = _load(carried / "teacher.json.gz")
    other_teacher = json.loads(teacher["key"])
    other_teacher["teacher"][0] = "another-teacher"
    _save(carried / "teacher.json.gz", {**teacher, "key": json.dumps(other_teacher, sort_keys=True)})
    refused("the teacher's reference of experiment 'small' under")
    (carried / "teacher.json.gz").write_text("not gzip")
    refused("teacher.json.gz: not a carried teacher's reference")
    _save(carried / "teacher.json.gz", teacher)

    (carried / "zz-junk.json.gz").write_text("[1, 2]")  # not gzip
    refused("zz-junk.json.gz: not a carried run")
    (carried / "zz-junk.json.gz").unlink()
    with pytest.raises(InputError, match="no carried runs"):
        carry_in(same, tmp_path / "nowhere")

    # a run with a training of its own here (begun, interrupted or done) keeps it: not carried over it
    own = same.plans[0]
    own.run_dir.mkdir(parents=True)
    (own.run_dir / "events.jsonl").write_text(json.dumps({"ts": 1.0, "event": "start", "step": 0}) + "\n")
    assert carry_in(same, carried) == [p.key for p in same.plans[1:]]
    assert not evaluation_path(own.run_dir).is_file()
    assert json.loads((same.folder / "teacher.json").read_text())[
        teacher_key(own.config, same.spec.evaluation)]["teacher"] == own.config.teacher


def test_the_cli_carries_out_and_in(tmp_path, monkeypatch):
    first = _experiment(tmp_path / "first", monkeypatch)
    _finish(first)
    out = CliRunner().invoke(cli_app, ["experiment", "carry", "small", "--to", str(tmp_path / "carried"), "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)) == len(first.plans) + 1 + 3  # the runs, the teacher's reference, the report
    second = _experiment(tmp_path / "second", monkeypatch)
    into = CliRunner().invoke(cli_app, ["experiment", "carry", str(tmp_path / "second" / "small.toml"),
                                        "--from", str(tmp_path / "carried"), "--json"])
    assert into.exit_code == 0 and json.loads(into.output) == [p.key for p in second.plans], into.output
    both = CliRunner().invoke(cli_app, ["experiment", "carry", "small"])
    assert both.exit_code == 2 and "give one of --to DIR" in both.output


def test_the_committed_evidence_runs_carry_into_the_evidence_experiment_as_declared(tmp_path, monkeypatch):
    """What a new machine's `relviz demo --evidence` does first: the runs committed in
    checkpoints/demo/evidence/ must be complete under the evidence file as it is now (its protocol, its
    out-of-distribution pieces), or the command stops before anything runs. A change of the evidence
    file that asks for more than the committed runs hold fails here, not on the next machine."""
    from relviz.data.synthetic_kitti import KittiSynthConfig, generate_kitti
    from relviz.demo import EVIDENCE_CARRIED, EVIDENCE_DATASET, EVIDENCE_EXPERIMENT, EVIDENCE_KITTI_DATASET

    monkeypatch.setenv("RELVIZ_HOME", str(tmp_path))
    (tmp_path / "datasets" / EVIDENCE_DATASET).mkdir(parents=True)  # nothing here trains or reads it
    generate_kitti(tmp_path / "datasets" / EVIDENCE_KITTI_DATASET,  # any KITTI-layout folder: its format is checked
                   KittiSynthConfig(sequences=2, scans_per_sequence=1, azimuth_steps=64, beams=8))
    exp = Experiment.from_file(load_settings(), EVIDENCE_EXPERIMENT)
    exp.save_grid()
    committed = sorted(p.name for p in EVIDENCE_CARRIED.glob("*.json.gz") if p.name != "teacher.json.gz")
    carried = carry_in(exp, EVIDENCE_CARRIED)
    assert committed and sorted(f"{k}.json.gz" for k in carried) == committed
    for plan in exp.plans:
        if plan.key in carried:
            assert stored_evaluation(plan.run_dir, plan.config, exp.spec.evaluation_for(plan.cell)) is not None
