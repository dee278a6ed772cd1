"""The Experiments page shows an experiment as one thing: its progress, the table of its cells with
intervals over seeds (the library's numbers), the differences paired by seed, the label-efficiency
curve and the runs' curves; and the committed demo report without a workspace experiment."""

import json
from pathlib import Path

import scipy.stats
from streamlit.testing.v1 import AppTest

from support import SMALL_GRID
from relviz.config import load_settings
from relviz.experiment import Experiment
from relviz.experiment.evaluate import evaluation_path

APP = str(Path(__file__).resolve().parents[1] / "app.py")
GRID = SMALL_GRID
# run (loss, seed) -> zero-shot mIoU; contrastive seed 2 is not evaluated yet
ZEROSHOT = {("relational", 0): 0.40, ("relational", 1): 0.44, ("relational", 2): 0.42,
            ("contrastive", 0): 0.30, ("contrastive", 1): 0.33}


def _experiment(home: Path) -> Experiment:
    (home / "datasets" / "synthetic-mini").mkdir(parents=True)
    grid = home / "small.toml"
    grid.write_text(GRID)
    exp = Experiment.from_file(load_settings(), grid)
    exp.save_grid()
    for plan in exp.plans:
        miou = ZEROSHOT.get((plan.config.loss, plan.seed))
        plan.run_dir.mkdir(parents=True)
        events = [{"ts": 1.0 + i, "event": "val", "step": step, "uniformity": 1.0 + step / 100, "tolerance": 0.8,
                   "gap": 0.5, "zeroshot_miou": 0.3} for i, step in enumerate((5, 10))]
        (plan.run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        if miou is None:
            continue
        structure = {"uniformity": 1.5, "tolerance": 0.8, "gap": 0.2 + plan.seed / 10, "zeroshot_miou": miou}
        fewshot = {"linear_probe": {"0.1": {"miou": miou / 2}, "1": {"miou": miou}},
                   "finetune": {"0.1": {"miou": miou / 2 + 0.05}}}
        evaluation_path(plan.run_dir).write_text(json.dumps({
            "protocol": json.loads(json.dumps(exp.spec.evaluation.protocol(plan.config))),
            "structure": structure, **fewshot}))
    return exp


def test_the_page_shows_an_experiments_progress_table_and_curves(workspace_home):
    exp = _experiment(Path(workspace_home))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/experiments.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="exp_name").value == "small"
    runs, table, claims, differences = (d.value for d in at.dataframe[:4])  # page order
    verdicts = dict(zip(claims["claim"], claims["verdict"]))
    # +0.10, +0.11 on seeds 0, 1: too few seeds for a verdict, whatever the p; the p's are shown
    assert verdicts["relational: better zero-shot than contrastive"] == "too few seeds"
    row = claims[claims["claim"] == "relational: better zero-shot than contrastive"].iloc[0]
    assert row["p"] != "-" and row["p (Holm)"] != "-" and float(row["p (Holm)"]) >= float(row["p"])
    assert verdicts["similarity: U below the teacher's"] == "not measured"  # no similarity cell here
    # no jobs here: an evaluated run without one is "carried" (from another machine), the other pending
    assert runs["status"].tolist() == ["carried" if e else "pending" for e in runs["evaluated"]]
    assert runs["evaluated"].sum() == 5
    rows = {r["cell"]: r for r in table.to_dict("records")}
    rel = scipy.stats.t.interval(0.95, 2, loc=0.42, scale=scipy.stats.sem([0.40, 0.44, 0.42]))
    # mean and half-width as the page prints them (3 decimals) from the interval scipy gives
    assert rows["loss=relational"]["zero-shot mIoU"] == f"0.420 ± {(rel[1] - rel[0]) / 2:.3f}"
    assert rows["loss=relational"]["seeds"] == 3 and rows["loss=contrastive"]["seeds"] == 2
    assert rows["loss=relational"]["fine-tuned 10% mIoU"].startswith("0.260 ± ")
    diff = differences.to_dict("records")[0]
    assert diff["a - b"] == "loss=relational - loss=contrastive" and diff["seeds"] == 2
    assert diff["zero-shot mIoU"].startswith("0.105 ± ")
    figure = at.get("plotly_chart")
    label_eff = json.loads(figure[0].proto.spec)
    assert {t["name"] for t in label_eff["data"]} == {
        f"loss={loss}, {method}" for loss in ("relational", "contrastive") for method in ("linear probe", "fine-tuned")}
    curves = json.loads(figure[1].proto.spec)
    assert len([t for t in curves["data"] if t.get("showlegend")]) == 2  # one legend entry per cell, 6 runs
    assert at.get("progress")[0].proto.text.startswith("5/6 runs evaluated; 5 carried, 1 pending; no supervisor running")
    assert [b.label for b in at.button] == ["Continue in the background"]
    assert (exp.folder / "report.md").is_file()  # the page's report is the library's, written where the CLI's is


def test_the_committed_demo_report_is_shown_without_a_workspace_experiment(monkeypatch, tmp_path):
    import relviz.demo
    from relviz.experiment.aggregate import aggregate, write_report

    runs = [{"key": f"r{s}", "cell": "loss=relational", "seed": s, "status": "succeeded",
             "metrics": {"uniformity": 1.4 + s / 100, "zeroshot_miou": 0.4}} for s in range(3)]
    write_report(aggregate([{"cell": "loss=relational", "values": {"loss": "relational"}}], runs), tmp_path, "demo")
    monkeypatch.setattr(relviz.demo, "EXPERIMENT_REPORT_DIR", tmp_path)
    # the evidence experiment's carried runs: their report (relviz experiment carry --to), one seed here
    evidence = tmp_path / "evidence"
    write_report(aggregate([{"cell": "loss=contrastive", "values": {"loss": "contrastive"}}],
                           [{**runs[0], "cell": "loss=contrastive", "status": "carried"}]), evidence / "report", "e")
    monkeypatch.setattr(relviz.demo, "EVIDENCE_CARRIED", evidence)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/experiments.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="exp_name").options == ["demo (committed with the demo checkpoints)",
                                                    "evidence (its runs carried so far, committed)"]
    assert at.selectbox(key="exp_name").value.startswith("demo (committed")
    assert len(at.dataframe) == 1 and not at.get("progress") and not at.button  # nothing of it runs here
    assert at.dataframe[0].value.to_dict("records")[0]["U"].startswith("1.410 ± ")
    at.selectbox(key="exp_name").set_value("evidence (its runs carried so far, committed)").run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value.to_dict("records")[0]["cell"] == "loss=contrastive"
