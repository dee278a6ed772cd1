"""An experiment file's [[sweep]] tables beside its [grid]: each a product grid with its own seeds and
few-shot fractions; the runs are the grid's cells with the experiment's seeds followed by each
sweep's cells with theirs; a sweep cell that trains as another cell is refused naming both; the loss
claims read the grid's cells while the gap-vs-performance analysis is over every configuration; the
committed demo report re-derives to the claims it stored. No training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fp_bounds import gamma
from relviz.experiment.spec import ExperimentError, spec_from_text

HEADER = """[experiment]
name = "sweeps"
seeds = [0, 1, 2, 3, 4]
preset = "demo"

[train]
max_steps = 800
"""
GRID = """
[grid]
loss = ["contrastive", "similarity", "relational"]
"""
EVALUATE = """
[evaluate]
val_scenes = 12
linear_probe = [0.01, 0.1, 1.0]
finetune = [0.01, 0.1, 1.0]
finetune_steps = 60
finetune_batch = 2
"""
SWEEPS = """
[[sweep]]
seeds = [0, 1, 2]
loss = ["contrastive"]
temperature = [0.03, 0.2, 0.5]
finetune = []

[[sweep]]
loss = ["relational"]
intra_weight = [0.0, 0.25, 4.0]
linear_probe = [0.01]
"""


def _spec(text: str, path: str = "sweeps.toml"):
    return spec_from_text(text, path)


def test_sweeps_follow_the_grid_with_their_own_seeds_and_fractions():
    spec = _spec(HEADER + GRID + SWEEPS + EVALUATE)
    plain = _spec(HEADER + GRID + EVALUATE)
    cells = spec.cells()
    # the grid's cells are exactly the file without sweeps: their indexes, labels and slugs (run keys) unchanged
    assert cells[:3] == plain.cells()
    assert [(c.index, c.label, c.slug, c.table) for c in cells[3:]] == [
        (3, "loss=contrastive,temperature=0.03", "contrastive-temperature0.03", "sweep 1"),
        (4, "loss=contrastive,temperature=0.2", "contrastive-temperature0.2", "sweep 1"),
        (5, "loss=contrastive,temperature=0.5", "contrastive-temperature0.5", "sweep 1"),
        (6, "loss=relational,intra_weight=0.0", "relational-intra_weight0.0", "sweep 2"),
        (7, "loss=relational,intra_weight=0.25", "relational-intra_weight0.25", "sweep 2"),
        (8, "loss=relational,intra_weight=4.0", "relational-intra_weight4.0", "sweep 2")]
    assert {c.table for c in cells[:3]} == {"grid"}

    # runs: each cell with its seeds, in the file's order (sweep 2 declares none: the experiment's)
    expected = [(c.label, s) for c in cells[:3] for s in range(5)]
    expected += [(c.label, s) for c in cells[3:6] for s in range(3)]
    expected += [(c.label, s) for c in cells[6:] for s in range(5)]
    assert [(c.label, s) for c, s in spec.runs()] == expected
    assert plain.runs() == spec.runs()[:15]

    # evaluations: the grid's are [evaluate]; a sweep replaces only the fractions it names
    base = spec.evaluation
    assert all(spec.evaluation_for(c) is base for c in cells[:3])
    first, second = spec.evaluation_for(cells[3]), spec.evaluation_for(cells[6])
    assert (first.linear_probe, first.finetune) == ((0.01, 0.1, 1.0), ())
    assert (second.linear_probe, second.finetune) == ((0.01,), (0.01, 0.1, 1.0))
    for evaluation in (first, second):  # every other key is the experiment's
        assert {**vars(evaluation), "linear_probe": None, "finetune": None} == \
            {**vars(base), "linear_probe": None, "finetune": None}


def test_identity_includes_the_sweeps_but_not_their_seeds_or_fractions():
    spec = _spec(HEADER + GRID + SWEEPS + EVALUATE)
    assert spec.identity()["sweeps"] == [{"loss": ["contrastive"], "temperature": [0.03, 0.2, 0.5]},
                                         {"loss": ["relational"], "intra_weight": [0.0, 0.25, 4.0]}]
    more_seeds = SWEEPS.replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2, 3]").replace("linear_probe = [0.01]",
                                                                                    "linear_probe = [0.1]")
    assert _spec(HEADER.replace("[0, 1, 2, 3, 4]", "[0, 1, 2, 3, 4, 5]") + GRID + more_seeds + EVALUATE).identity() \
        == spec.identity()
    other_cells = SWEEPS.replace("[0.03, 0.2, 0.5]", "[0.03, 0.2]")
    assert _spec(HEADER + GRID + other_cells + EVALUATE).identity() != spec.identity()
    assert _spec(HEADER + GRID + EVALUATE).identity()["sweeps"] == []


def test_a_re_run_must_declare_the_same_sweeps_and_keys_its_runs_by_cell_index(tmp_path):
    from relviz.config import load_settings
    from relviz.experiment import Experiment

    (tmp_path / "data").mkdir()
    train = f'dataset = {json.dumps(str(tmp_path / "data"))}\n'
    text = HEADER.replace("[train]\n", "[train]\n" + train) + GRID + SWEEPS + EVALUATE
    path = tmp_path / "sweeps.toml"
    path.write_text(text)
    settings = load_settings()
    exp = Experiment.from_file(settings, path)
    assert [p.key for p in exp.plans][:5] == [f"c0-contrastive-s{s}" for s in range(5)]
    assert [p.key for p in exp.plans if p.cell.index == 4] == [f"c4-contrastive-temperature0.2-s{s}" for s in range(3)]
    assert [(p.config.loss, p.config.temperature, p.config.intra_weight) for p in exp.plans if p.seed == 0] == [
        ("contrastive", 0.07, 1.0), ("similarity", 0.07, 1.0), ("relational", 0.07, 1.0),
        ("contrastive", 0.03, 1.0), ("contrastive", 0.2, 1.0), ("contrastive", 0.5, 1.0),
        ("relational", 0.07, 0.0), ("relational", 0.07, 0.25), ("relational", 0.07, 4.0)]
    exp.save_grid()
    path.write_text(text.replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2, 3]"))  # seeds may be added
    assert len(Experiment.from_file(settings, path).plans) == len(exp.plans) + 3
    path.write_text(text.replace("[0.03, 0.2, 0.5]", "[0.03, 0.5]"))
    with pytest.raises(ExperimentError, match=r"another declaration \(sweeps differ"):
        Experiment.from_file(settings, path)


def _sweep(body: str) -> str:
    return HEADER + GRID + "\n[[sweep]]\n" + body + "\n" + EVALUATE


@pytest.mark.parametrize("text, where, message", [
    ("sweep = 1\n" + HEADER + GRID + EVALUATE, "[[sweep]]", "must be an array of tables"),
    (HEADER + GRID + "\n[sweep]\nloss = [\"contrastive\"]\n" + EVALUATE, "[[sweep]]", "must be an array of tables"),
    (_sweep('loss = ["contrastive"]\nseed = [1]'), "[[sweep]] 1 'seed'", "seeds are declared as seeds = [...]"),
    (_sweep('loss = ["contrastive"]\nfinetune_steps = 30'), "[[sweep]] 1 'finetune_steps'",
     "sets only the few-shot fractions linear_probe and finetune"),
    (_sweep('loss = ["contrastive"]\nfewshot_frames = "all"'), "[[sweep]] 1 'fewshot_frames'",
     "every other evaluation key is the experiment's"),
    (_sweep('loss = ["contrastive"]\ntemprature = [0.2]'), "[[sweep]] 1 'temprature'", "unknown key"),
    (_sweep('seeds = [0, 1]'), "[[sweep]] 1", "declares no training field"),
    (_sweep('temperature = []'), "[[sweep]] 1 'temperature'", "must be a non-empty list"),
    (_sweep('temperature = 0.2'), "[[sweep]] 1 'temperature'", "must be a non-empty list"),
    (_sweep('temperature = [0.2, 0.2]'), "[[sweep]] 1 'temperature'", "lists a value twice"),
    (_sweep('max_steps = [100]'), "[[sweep]] 1 'max_steps'", "is also set in [train]"),
    (_sweep('temperature = [0.2]\nseeds = []'), "[[sweep]] 1 'seeds'", "must be a non-empty list of whole numbers"),
    (_sweep('temperature = [0.2]\nseeds = [0, -1]'), "[[sweep]] 1 'seeds'", "must be a non-empty list of whole"),
    (_sweep('temperature = [0.2]\nseeds = [1, 1]'), "[[sweep]] 1 'seeds'", "lists a seed twice"),
    (_sweep('temperature = [0.2]\nlinear_probe = [0]'), "[[sweep]] 1 'linear_probe'", "list of fractions in (0, 1]"),
    (_sweep('temperature = [0.2]\nfinetune = [0.1, 0.1]'), "[[sweep]] 1 'finetune'", "lists a fraction twice"),
    (HEADER + GRID + SWEEPS + '\n[[sweep]]\nloss = ["contrastive"]\nvalsamples = [2]\n' + EVALUATE,
     "[[sweep]] 3 'valsamples'", "unknown key"),
])
def test_bad_sweeps_are_refused_naming_the_file_the_sweep_and_the_key(text, where, message):
    with pytest.raises(ExperimentError) as e:
        _spec(text, "bad-sweeps.toml")
    assert str(e.value).startswith(f"experiment file bad-sweeps.toml: {where}: ") and message in str(e.value), e.value


@pytest.mark.parametrize("text, where, cell, twin", [
    # the default temperature (TrainConfig.temperature) is the grid's contrastive cell
    (_sweep('loss = ["contrastive"]\ntemperature = [0.03, 0.07]'), "[[sweep]] 1",
     "loss=contrastive,temperature=0.07", "'loss=contrastive' of [grid]"),
    # the preset's pairs (demo: 2048) likewise
    (_sweep('loss = ["relational"]\npairs = [512, 2048]'), "[[sweep]] 1", "loss=relational,pairs=2048",
     "'loss=relational' of [grid]"),
    # similarity reads neither temperature nor intra_weight: the grid's similarity cell again
    (_sweep('loss = ["similarity"]\ntemperature = [0.2]'), "[[sweep]] 1", "loss=similarity,temperature=0.2",
     "'loss=similarity' of [grid]"),
    # within one sweep: relational ignores temperature, so both temperatures train alike
    (HEADER + '\n[grid]\nloss = ["contrastive"]\n\n[[sweep]]\nloss = ["relational"]\ntemperature = [0.2, 0.5]\n',
     "[[sweep]] 1", "loss=relational,temperature=0.5", "'loss=relational,temperature=0.2' of [[sweep]] 1"),
    # across sweeps
    (HEADER + GRID + SWEEPS + '\n[[sweep]]\ntemperature = [0.2]\nloss = ["contrastive"]\n', "[[sweep]] 3",
     "temperature=0.2,loss=contrastive", "'loss=contrastive,temperature=0.2' of [[sweep]] 1"),
    # [train] is merged: an empty grid trains [train]'s loss at the default temperature
    (HEADER.replace("max_steps = 800", 'max_steps = 800\nloss = "contrastive"') + '\n[[sweep]]\ntemperature = [0.07]\n',
     "[[sweep]] 1", "temperature=0.07", "'base' of [grid]"),
])
def test_a_sweep_cell_that_trains_as_another_cell_is_refused_naming_both(text, where, cell, twin):
    with pytest.raises(ExperimentError) as e:
        _spec(text, "twice.toml")
    message = str(e.value)
    assert message.startswith(f"experiment file twice.toml: {where}: cell {cell!r} trains exactly as cell {twin}"), \
        message
    assert "counted twice" in message
    if "similarity" in cell or "relational,temperature" in cell:
        assert "loss does not read temperature" in message


def test_distinct_sweep_cells_are_accepted():
    """Values the loss reads, a relational weight of 0 (a loss of its own), and fields the machine's
    settings give (the dataset) set in a sweep but left to the settings in the grid are distinct."""
    spec = _spec(_sweep('loss = ["relational"]\nintra_weight = [0.0]\npairs = [1024]'))
    assert len(spec.cells()) == 4
    assert len(_spec(_sweep('loss = ["contrastive"]\ndataset = ["synthetic-evidence"]')).cells()) == 4


# ----------------------------------------------------------------------------------------- claims
TEACHER = {"uniformity": 1.5, "tolerance": 0.8, "gap": 0.0, "zeroshot_miou": 0.55}


def _sweep_report(with_tables: bool = True):
    """The grid's three losses at 5 seeds and two sweep cells at 3 seeds each; each sweep cell is the
    last cell of its loss and far from the grid's cell of that loss (U below the teacher's for the
    contrastive sweep cell, whose grid cell is above it)."""
    from relviz.experiment.aggregate import aggregate

    rng = np.random.default_rng(3)
    cells = [("loss=contrastive", {"loss": "contrastive"}, "grid", 5, (2.0, 0.70, 0.60, 0.30)),
             ("loss=similarity", {"loss": "similarity"}, "grid", 5, (1.3, 0.90, 0.25, 0.33)),
             ("loss=relational", {"loss": "relational"}, "grid", 5, (1.55, 0.81, 0.10, 0.36)),
             ("loss=contrastive,temperature=0.5", {"loss": "contrastive", "temperature": 0.5}, "sweep 1", 3,
              (1.0, 0.95, 0.20, 0.20)),
             ("loss=relational,intra_weight=4.0", {"loss": "relational", "intra_weight": 4.0}, "sweep 2", 3,
              (3.0, 0.50, 0.90, 0.10))]
    runs = []
    for label, _, _, seeds, effect in cells:
        for s in range(seeds):
            u, t, g, z = np.asarray(effect) + rng.normal(0, 0.01, 4)
            runs.append({"key": f"{label}-s{s}", "cell": label, "seed": s, "status": "succeeded",
                         "metrics": {"uniformity": u, "tolerance": t, "gap": g, "zeroshot_miou": z}})
    declared = [{"cell": label, "values": values, **({"table": table} if with_tables else {})}
                for label, values, table, _, _ in cells]
    return aggregate(declared, runs, teacher={"structure": TEACHER}), runs


def _metric(runs, cell, metric):
    return {r["seed"]: r["metrics"][metric] for r in runs if r["cell"] == cell}


def test_loss_claims_read_the_grids_cells_and_the_correlation_every_configuration():
    from relviz.experiment.claims import paper_claims

    report, runs = _sweep_report()
    assert [c["table"] for c in report["cells"]] == ["grid", "grid", "grid", "sweep 1", "sweep 2"]
    claims = {c["claim"]: c for c in paper_claims(report)}

    row = claims["contrastive: U above the teacher's"]
    grid_u = _metric(runs, "loss=contrastive", "uniformity")
    # the same differences (the same operations) averaged in two orders: 4 additions and a division each
    assert row["seeds"] == 5 and row["estimate"] == pytest.approx(np.mean([v - 1.5 for v in grid_u.values()]),
                                                                rel=2 * gamma(5))
    assert row["estimate"] > 0  # the sweep cell (U about 1.0) would have given about -0.5

    row = claims["relational: U closer to the teacher's than contrastive"]
    rel, con = _metric(runs, "loss=relational", "uniformity"), _metric(runs, "loss=contrastive", "uniformity")
    terms = [abs(rel[s] - 1.5) - abs(con[s] - 1.5) for s in range(5)]
    assert row["seeds"] == 5 and row["estimate"] == pytest.approx(np.mean(terms),
                                                                abs=2 * gamma(5) * np.mean(np.abs(terms)))

    # the gap-vs-performance analysis: all five configurations
    correlations = report["gap_vs_performance"]["correlations"]
    zeroshot = [c for c in correlations if c["performance"] == "zeroshot_miou"]
    assert zeroshot and {c["n"] for c in zeroshot} == {5}
    assert {c["configurations"] for c in claims.values() if "over configurations" in c["claim"]
            and "zeroshot" in c["claim"]} == {5}


def test_a_report_without_tables_is_the_grids_alone_with_todays_rule():
    """A report written before sweeps existed: every cell is the grid's, and the last cell of a loss
    is the one the claims read (here the sweep cells, unmarked)."""
    from relviz.experiment.claims import paper_claims

    report, runs = _sweep_report(with_tables=False)
    assert {c["table"] for c in report["cells"]} == {"grid"}
    row = {c["claim"]: c for c in paper_claims(report)}["contrastive: U above the teacher's"]
    terms = [v - 1.5 for v in _metric(runs, "loss=contrastive,temperature=0.5", "uniformity").values()]
    assert row["seeds"] == 3 and row["estimate"] == pytest.approx(np.mean(terms), rel=2 * gamma(3))  # one sign


def test_report_cells_re_aggregate_to_the_same_report():
    """What a re-derivation aggregates again (aggregate.report_cells of the stored rows) keeps the tables,
    so the claims and the correlation come out as the report had them."""
    from relviz.experiment.aggregate import aggregate, report_cells
    from relviz.experiment.claims import paper_claims

    report, runs = _sweep_report()
    again = aggregate(report_cells(report["cells"]), runs, teacher=report["teacher"])
    assert again == report and paper_claims(again) == paper_claims(report)
    assert report_cells([{"cell": "loss=x", "values": {"loss": "x"}, "seeds": []}]) == \
        [{"cell": "loss=x", "values": {"loss": "x"}, "table": "grid"}]


def test_csv_has_every_tables_axes():
    from relviz.experiment.aggregate import to_csv

    report, _ = _sweep_report()
    lines = to_csv(report).splitlines()
    assert lines[0].split(",")[:5] == ["cell", "loss", "temperature", "intra_weight", "seeds"]
    assert lines[1].startswith("loss=contrastive,contrastive,,,5,")
    assert lines[4].startswith('"loss=contrastive,temperature=0.5",contrastive,0.5,,3,')
    assert lines[5].startswith('"loss=relational,intra_weight=4.0",relational,,4.0,3,')


CLAIM_FIELDS = ("sign", "estimate", "seeds", "scenes", "t_interval", "p_t", "p_sign", "two_stage", "p", "test",
                "p_holm", "family", "verdict")


def test_the_committed_demo_report_rederives_to_its_stored_claims():
    """checkpoints/demo's report (written before sweeps: no tables) re-derived: the loss claims read the
    same cells and give the stored numbers and verdicts; the correlation claims the same p and verdicts
    (their text has since gained the unit, which is not compared)."""
    from relviz.experiment.runner import rederive

    stored = json.loads(Path("checkpoints/demo/experiment/report.json").read_text())
    assert all("table" not in c for c in stored["cells"])
    again = rederive(stored)
    assert [c["table"] for c in again["cells"]] == ["grid"] * len(stored["cells"])
    assert len(again["claims"]) == len(stored["claims"])
    for new, old in zip(again["claims"], stored["claims"]):
        assert new["claim"].startswith(old["claim"])
        fields = CLAIM_FIELDS if "over configurations" not in old["claim"] else ("p", "p_holm", "verdict")
        assert {k: new.get(k) for k in fields} == {k: old.get(k) for k in fields}, old["claim"]
    # marking the cells as the grid's explicitly changes nothing
    marked = {**stored, "cells": [{**c, "table": "grid"} for c in stored["cells"]]}
    assert rederive(marked)["claims"] == again["claims"]
