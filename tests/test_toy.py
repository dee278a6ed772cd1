"""The paper's toy experiment reproduces its trend at default settings (fixed seed)."""

import json

import pytest
from typer.testing import CliRunner

from relviz.cli import app
from relviz.toy import ToyConfig, run_toy


@pytest.fixture(scope="module")
def default_run():
    return run_toy(ToyConfig(), snapshot_iters=(0, 100))


def test_toy_trend_at_defaults(default_run):
    s = default_run.summary()
    src = s["source"]["uniformity"]
    assert s["contrastive"]["uniformity"] > src  # more uniform than the source
    assert s["similarity"]["uniformity"] < src  # collapses toward cluster means
    assert s["similarity"]["tolerance"] > s["source"]["tolerance"]
    assert s["contrastive"]["tolerance"] < s["source"]["tolerance"]
    gaps = {k: abs(s[k]["uniformity"] - src) for k in ("contrastive", "similarity", "relational")}
    assert min(gaps, key=gaps.get) == "relational"


def test_toy_records_curves_and_snapshots(default_run):
    run = default_run.runs["relational"]
    assert run.iterations[0] == 0 and run.iterations[-1] == ToyConfig().iters
    assert len(run.uniformity) == len(run.iterations) == len(run.tolerance)
    assert set(run.snapshots) == {0, 100, ToyConfig().iters}
    assert run.snapshots[0].shape == (ToyConfig().eval_points, 3)
    # every loss starts from the same initialisation: deep copies of one MLP on the same inputs, in
    # the same process and thread count, give bitwise equal outputs and U (no rounding needed)
    assert len({r.uniformity[0] for r in default_run.runs.values()}) == 1


def test_toy_cli_json_keys():
    res = CliRunner().invoke(app, ["toy", "--clusters", "1", "--iters", "20", "--seed", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out) == {"source", "contrastive", "similarity", "relational"}
    assert all(set(v) == {"uniformity", "tolerance"} for v in out.values())


def test_toy_rejects_bad_config():
    res = CliRunner().invoke(app, ["toy", "--clusters", "2"])
    assert res.exit_code == 2 and "clusters must be 1 or 3" in res.output


def test_toy_figures(default_run):
    from relviz.viz.toy import toy_sphere_figure, toy_uniformity_figure

    fig = toy_sphere_figure(default_run, iteration=100)
    assert len(fig.layout.annotations) == 3 and "iteration 100" in fig.layout.annotations[0].text
    curves = toy_uniformity_figure(default_run)
    assert [t.name for t in curves.data] == ["contrastive", "similarity", "relational"]
    assert list(curves.data[2].y) == default_run.runs["relational"].uniformity
    with pytest.raises(ValueError):
        toy_uniformity_figure(default_run, metric="gap")
