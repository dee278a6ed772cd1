"""Experiments: a declared grid of 2 cells x 2 seeds runs as background jobs, is interrupted (a job
killed mid-way, its supervisor gone), resumes as a whole, and aggregates; the intervals over seeds
equal a direct computation; broken experiment files are refused naming the file and the key."""

import json
import math
import os
import signal

import numpy as np
import pytest
import scipy.stats
from typer.testing import CliRunner

from fp_bounds import gamma
from support import TINY, wait_for
from relviz.cli import app as cli_app
from relviz.config import load_settings
from relviz.experiment import Experiment, ExperimentError
from relviz.jobs import JobStore
from relviz.train import read_events


def _toml_table(values: dict) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())  # JSON scalars are TOML scalars


def _grid(root, name: str = "tiny", seeds=(0, 1), evaluate: str = "val_scenes = 1\nval_per_scene = 2\nper_class = 50\nlinear_probe = []",
          **train) -> str:
    # training on mini_val (4 keyframes) fills the teacher cache for everything the jobs and the
    # evaluations read; a checkpoint after every step gives the killed job a step to resume from
    base = {**TINY, "dataset": str(root), "split": "mini_val", "max_steps": 2, "checkpoint_every": 1, **train}
    return (f"[experiment]\nname = {json.dumps(name)}\nseeds = {json.dumps(list(seeds))}\nmax_running = 2\n\n"
            f"[train]\n{_toml_table(base)}\n\n[grid]\nloss = [\"relational\", \"contrastive\"]\n\n"
            f"[evaluate]\n{evaluate}\n")


def _evaluations(exp) -> list[dict]:
    """The runs' evaluation files, read directly (in plan order)."""
    return [json.loads((p.run_dir / "evaluation.json").read_text()) for p in exp.plans]


def test_experiment_runs_is_interrupted_resumes_and_aggregates(synthetic_root, tmp_path):
    grid = tmp_path / "tiny.toml"
    grid.write_text(_grid(synthetic_root))
    settings = load_settings()
    exp = Experiment.from_file(settings, grid)
    assert [(p.cell.values["loss"], p.seed) for p in exp.plans] == [("relational", 0), ("relational", 1),
                                                                    ("contrastive", 0), ("contrastive", 1)]
    first = exp.plans[0]
    checkpoint = first.run_dir / "checkpoints" / "last.safetensors"

    # a first supervisor launches two runs (max_running) and goes away once the first has a checkpoint
    exp.supervise(JobStore(settings), poll_s=0.1, stop=lambda state: state["runs"][first.key]["step"] >= 1
                  and checkpoint.is_file())
    store = JobStore(settings)
    state = exp.read_state()
    # seed by seed: both cells' seed 0 first, so a stopped experiment has every configuration
    assert [state["runs"][p.key]["job_id"] is not None for p in exp.plans] == [True, False, True, False]
    assert [(p.cell.values["loss"], p.seed) for p in exp.launch_order()] == [("relational", 0), ("contrastive", 0),
                                                                             ("relational", 1), ("contrastive", 1)]
    killed = store.get(state["runs"][first.key]["job_id"])
    os.killpg(killed.pgid, signal.SIGKILL)  # the job, mid-way
    lost = wait_for(lambda: (j := store.get(killed.id)).status != "running" and j, timeout=60, what="the kill")
    assert lost.status == "lost", f"the job ended as {lost.status} before it could be killed"
    killed_at = max(e["step"] for e in read_events(killed.events_path)[0] if e["event"] == "checkpoint")

    # a re-run: resumes the killed run, leaves the other started one alone, launches the two missing
    lines: list[str] = []
    report = Experiment.from_file(settings, grid).supervise(JobStore(settings), poll_s=0.2, log=lines.append)
    launched = [line.split(":")[0] for line in lines if ": launched" in line or ": resumed" in line]
    assert sorted(launched) == sorted([first.key, exp.plans[1].key, exp.plans[3].key]), lines
    assert f"{first.key}: resumed from step {killed_at} (job {killed.id})" in lines
    jobs = JobStore(settings).list()
    assert len(jobs) == 4 and {j.status for j in jobs} == {"succeeded"}, [(j.name, j.status, j.error) for j in jobs]
    events, _ = read_events(killed.events_path)
    resumed = [e for e in events if e["event"] == "resumed"]
    assert [e["step"] for e in resumed] == [killed_at]
    after = [e["step"] for e in events[events.index(resumed[0]):] if e["event"] == "step"]
    assert after == list(range(killed_at + 1, 3))  # to max_steps (none left when killed after the last)

    # the report: per cell, the per-seed values of the runs' evaluation files, their mean and t interval
    assert report["missing"] == [] and [c["cell"] for c in report["cells"]] == ["loss=relational", "loss=contrastive"]
    for cell in report["cells"]:
        runs = [p for p in exp.plans if p.cell.label == cell["cell"]]
        evaluations = [json.loads((p.run_dir / "evaluation.json").read_text()) for p in runs]
        assert all("structure" in e and e["protocol"]["val_scenes"] == 1 for e in evaluations)
        for metric in ("uniformity", "tolerance", "gap", "zeroshot_miou"):
            x = [e["structure"][metric] for e in evaluations]
            n = len(x)
            mean = sum(x) / n
            s = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
            half = scipy.stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
            got = cell["metrics"][metric]
            assert got["values"] == x and got["n"] == 2 and cell["seeds"] == [0, 1]
            # Both sides compute the mean, s and t*s/sqrt(n) of the same float64 values in a different
            # order: each is a handful of roundings (2-term sums, a square, a square root, divisions,
            # one product), at most 10 per side, so they differ by at most 2 gamma(10) relative to the
            # magnitudes involved, |mean| + half (t.ppf is the same function on the same arguments).
            tol = 2 * gamma(10) * (abs(mean) + half)
            assert abs(got["mean"] - mean) <= tol and abs(got["low"] - (mean - half)) <= tol \
                and abs(got["high"] - (mean + half)) <= tol, (metric, got, mean, half)
            assert half > 0  # two seeds gave two different students
    # the teacher's structure on the same keyframes and sample, the reference of the gap measures
    assert report["teacher"]["protocol"] == _evaluations(exp)[0]["protocol"] and \
        math.isfinite(report["teacher"]["structure"]["uniformity"])
    # gap vs performance is over configurations: 2 cells are refused (3 needed), whatever the run count
    assert "at least 3 configurations" in report["gap_vs_performance"]["skipped"]
    assert set(report["curves"]) == {p.key for p in exp.plans}
    folder = settings.home / "experiments" / "tiny"
    # the cell table, the run table, the one difference between the two cells and the curve rows
    assert (folder / "report.md").read_text().count("| loss=") == 2 + 4 + 1 + len(report["curve_means"])
    assert "## The paper's claims, here" in (folder / "report.md").read_text()
    assert (folder / "report.csv").read_text().splitlines()[0].startswith("cell,loss,seeds,uniformity_mean")

    # once complete, a re-run changes nothing, and the CLI reads the same state and report
    again: list[str] = []
    Experiment.from_file(settings, grid).supervise(JobStore(settings), poll_s=0.1, log=again.append)
    assert again == [] and len(JobStore(settings).list()) == 4
    status = CliRunner().invoke(cli_app, ["experiment", "status", "tiny", "--json"])
    assert status.exit_code == 0, status.output
    facts = json.loads(status.output)
    assert facts["complete"] and facts["counts"] == {"succeeded": 4} and facts["supervisor_pid"] is None
    printed = CliRunner().invoke(cli_app, ["experiment", "report", "tiny", "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["cells"] == json.loads(json.dumps(report["cells"]))


@pytest.mark.parametrize("change, message", [
    (lambda t: t + "\n[extra]\nx = 1\n", r"tables: unknown table\(s\) 'extra'"),
    (lambda t: t.replace("seeds = [0, 1]", ""), r"\[experiment\] 'seeds': is missing"),
    (lambda t: t.replace("seeds = [0, 1]", "seeds = [0, 0]"), r"\[experiment\] 'seeds': lists a seed twice"),
    (lambda t: t.replace('loss = ["relational", "contrastive"]', 'loss = "relational"'),
     r"\[grid\] 'loss': must be a non-empty list"),
    (lambda t: t.replace("[grid]", "[grid]\nlrr = [0.1]"), r"\[grid\]: unknown training field\(s\) 'lrr'"),
    (lambda t: t.replace("[grid]", "[grid]\ntemperature = [0.07, -1]"),
     r"cell temperature=-1,loss=relational: config field 'temperature': must be > 0"),
    (lambda t: t.replace("[grid]", "[grid]\nseed = [1]"), r"\[grid\] 'seed': seeds are declared once"),
    (lambda t: t.replace("per_class = 50", "per_class = 0"), r"\[evaluate\] 'per_class': must be a whole number"),
    (lambda t: t.replace("linear_probe = []", "linear_probe = []\nfinetune_seeds = 0"),
     r"\[evaluate\] 'finetune_seeds': must be a whole number >= 1, got 0"),
    (lambda t: t.replace("linear_probe = []", "linear_probe = []\nfinetune_seeds = 2.5"),
     r"\[evaluate\] 'finetune_seeds': must be a whole number >= 1, got 2.5"),
    (lambda t: t.replace("linear_probe = []", "linear_probe = []\nfinetune_seeds = \"3\""),
     r"\[evaluate\] 'finetune_seeds': must be a whole number >= 1, got '3'"),
    (lambda t: t.replace("linear_probe = []", "linear_probe = [2]"), r"'linear_probe': must be a list of fractions"),
    (lambda t: t.replace("linear_probe = []", 'linear_probe = []\nood_datasets = "synthetic-kitti"'),
     r"\[evaluate\] 'ood_datasets': must be a list of dataset folders .*got 'synthetic-kitti'"),
    (lambda t: t.replace("linear_probe = []", 'linear_probe = []\nood_datasets = ["kitti@2"]'),
     r"\[evaluate\] 'ood_datasets': must be a list of dataset folders .*without '@'"),
    (lambda t: t.replace("linear_probe = []", 'linear_probe = []\nood_datasets = ["k", "k"]'),
     r"\[evaluate\] 'ood_datasets': lists a dataset twice"),
    (lambda t: t.replace("linear_probe = []", 'linear_probe = []\nood_datasets = ["no-such-world"]'),
     r"\[evaluate\] 'ood_datasets': 'no-such-world': "),  # refused when declared, before any training
    (lambda t: t.replace("[evaluate]", "[evaluate]\nvalsamples = 1"), r"\[evaluate\]: unknown key\(s\) 'valsamples'"),
    (lambda t: t.replace('name = "tiny"', 'name = "../x"'), r"\[experiment\] 'name': must be"),
    (lambda t: t + "[[", r"not valid TOML"),
    (lambda t: t.replace('name = "tiny"', 'name = "tiny"\npreset = "slidrr"'),
     r"\[experiment\] 'preset': unknown preset 'slidrr'; known: demo"),
])
def test_bad_experiment_files_are_refused_naming_file_and_key(tmp_path, change, message):
    grid = tmp_path / "bad.toml"
    (tmp_path / "data").mkdir()  # a dataset folder: the files are refused before anything reads it
    grid.write_text(change(_grid(tmp_path / "data")))
    with pytest.raises(ExperimentError, match=message) as e:
        Experiment.from_file(load_settings(), grid)
    assert str(e.value).startswith(f"experiment file {grid}")


def test_a_changed_declaration_and_unknown_names_are_refused(tmp_path):
    grid = tmp_path / "tiny.toml"
    (tmp_path / "data").mkdir()
    grid.write_text(_grid(tmp_path / "data"))
    settings = load_settings()
    Experiment.from_file(settings, grid).save_grid()  # as a first run stores it
    grid.write_text(_grid(tmp_path / "data", max_steps=5))
    with pytest.raises(ExperimentError, match=r"exists .* with another declaration \(train differ"):
        Experiment.from_file(settings, grid)
    # another seed and another evaluation keep the cells: the same experiment, one more run per cell
    grid.write_text(_grid(tmp_path / "data", seeds=(0, 1, 2), evaluate="val_scenes = 2"))
    assert len(Experiment.from_file(settings, grid).plans) == 6
    res = CliRunner().invoke(cli_app, ["experiment", "status", "nothing"])
    assert res.exit_code == 2 and "error: no experiment 'nothing'" in res.output and "known: tiny" in res.output
    res = CliRunner().invoke(cli_app, ["experiment", "run", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and f"error: experiment file {tmp_path / 'missing.toml'}: cannot be read" in res.output


def test_a_stored_evaluation_counts_only_for_its_protocol_and_every_fraction_asked(tmp_path):
    from relviz.experiment import EvaluationSpec, stored_evaluation
    from relviz.train import from_dict

    config = from_dict({"dataset": str(tmp_path)})
    asked = EvaluationSpec(val_scenes=1, linear_probe=(0.5,))
    (tmp_path / "evaluation.json").write_text(json.dumps({
        "protocol": asked.protocol(config), "structure": {"uniformity": 1.0}, "linear_probe": {"0.5": {"miou": 0.1}}}))
    assert stored_evaluation(tmp_path, config, asked)["linear_probe"]["0.5"]["miou"] == 0.1
    assert stored_evaluation(tmp_path, config, EvaluationSpec(val_scenes=1, linear_probe=())) is not None
    # a fraction added later, another fine-tuning fraction, or another protocol: not evaluated yet
    assert stored_evaluation(tmp_path, config, EvaluationSpec(val_scenes=1, linear_probe=(0.5, 0.1))) is None
    assert stored_evaluation(tmp_path, config, EvaluationSpec(val_scenes=1, linear_probe=(0.5,),
                                                              finetune=(0.5,))) is None
    assert stored_evaluation(tmp_path, config, EvaluationSpec(val_scenes=2, linear_probe=(0.5,))) is None
    # fine-tuning seeds decide fine-tuned results only: the protocol names them when the runs are fine-tuned
    assert stored_evaluation(tmp_path, config, EvaluationSpec(val_scenes=1, linear_probe=(0.5,),
                                                              finetune_seeds=5)) is not None
    tuned = EvaluationSpec(val_scenes=1, linear_probe=(), finetune=(0.5,), finetune_seeds=3)
    (tmp_path / "evaluation.json").write_text(json.dumps({
        "protocol": tuned.protocol(config), "structure": {"uniformity": 1.0}, "finetune": {"0.5": {"miou": 0.2}}}))
    assert tuned.protocol(config)["finetune_seeds"] == 3 and "finetune_seeds" not in asked.protocol(config)
    assert stored_evaluation(tmp_path, config, tuned)["finetune"]["0.5"]["miou"] == 0.2
    assert stored_evaluation(tmp_path, config, EvaluationSpec(val_scenes=1, linear_probe=(), finetune=(0.5,),
                                                              finetune_seeds=5)) is None


def test_the_default_fine_tuning_seeds_of_an_experiment_are_the_librarys():
    from relviz.eval.finetune import FINETUNE_SEEDS
    from relviz.experiment import EvaluationSpec

    assert EvaluationSpec().finetune_seeds == FINETUNE_SEEDS >= 3


def test_cell_differences_are_paired_by_seed_and_match_scipys_paired_t_interval():
    """a - b over the seeds both cells have: the interval is scipy's paired t-test interval, a seed
    only one cell has is left out, and "significant" means the interval excludes 0."""
    from relviz.experiment.aggregate import aggregate, to_markdown

    a = {0: 0.50, 1: 0.47, 2: 0.52, 3: 0.40}  # seed 3 only in a: not paired
    b = {0: 0.41, 1: 0.40, 2: 0.44}
    c = {0: 0.50, 1: 0.30, 2: 0.62}
    runs = [{"key": f"{cell}{s}", "cell": cell, "seed": s, "status": "succeeded", "metrics": {"zeroshot_miou": v}}
            for cell, values in (("a", a), ("b", b), ("c", c)) for s, v in values.items()]
    report = aggregate([{"cell": n, "values": {}} for n in "abc"], runs)
    by_pair = {(d["a"], d["b"]): d for d in report["differences"]}
    assert list(by_pair) == [("a", "b"), ("a", "c"), ("b", "c")]
    ab = by_pair[("a", "b")]
    assert ab["seeds"] == [0, 1, 2]
    reference = scipy.stats.ttest_rel([a[s] for s in (0, 1, 2)], [b[s] for s in (0, 1, 2)]).confidence_interval(0.95)
    m = ab["metrics"]["zeroshot_miou"]
    # three differences of numbers near 0.5 and a t quantile: a few ulps of float64 at most
    assert m["mean"] == pytest.approx(0.08, abs=1e-12)
    assert (m["low"], m["high"]) == pytest.approx((reference.low, reference.high), abs=1e-12)
    assert m["significant"] is True and by_pair[("b", "c")]["metrics"]["zeroshot_miou"]["significant"] is False
    assert "| a - b | 3 | 0.080 ± " in to_markdown(report, "t")


def test_curve_means_average_the_steps_every_run_of_a_cell_reached():
    from relviz.experiment.aggregate import aggregate

    curves = {"a0": [{"step": 100, "uniformity": 1.0, "tolerance": 0.9, "gap": 0.5, "zeroshot_miou": 0.2},
                     {"step": 200, "uniformity": 1.4, "tolerance": 0.8, "gap": 0.4, "zeroshot_miou": 0.3}],
              "a1": [{"step": 100, "uniformity": 1.2, "tolerance": 0.7, "gap": 0.7, "zeroshot_miou": 0.4}]}
    runs = [{"key": k, "cell": "a", "seed": i, "status": "running", "metrics": None} for i, k in enumerate(curves)]
    report = aggregate([{"cell": "a", "values": {}}], runs, curves=curves)
    (row,) = report["curve_means"]  # step 200: only one of the two runs got there, so it is left out
    # one addition and one division or subtraction of float64 numbers near 1: an ulp or two
    assert (row["step"], row["n"]) == (100, 2)
    assert row["uniformity"] == pytest.approx(1.1, abs=1e-15) and row["uniformity_spread"] == pytest.approx(0.2, abs=1e-15)
    assert row["zeroshot_miou"] == pytest.approx(0.3, abs=1e-15)


def _claims_report(seeds: int, scenes: int | None, resamples: int = 400):
    """Three losses x ``seeds`` runs with U, T, G and zero-shot built from a loss effect, a seed effect
    and scene effects shared by every run and the teacher; with ``scenes``, each run's (and the
    teacher's) metrics on the same scene resamples, as the experiment's evaluation stores them."""
    from relviz.experiment.aggregate import aggregate
    from relviz.stats import resample_multiplicities

    rng = np.random.default_rng(7)
    effects = {"contrastive": (2.00, 0.70, 0.60, 0.30), "similarity": (1.30, 0.90, 0.25, 0.33),
               "relational": (1.55, 0.81, 0.10, 0.36)}
    teacher_values = (1.50, 0.80, 0.0, 0.55)
    names = ("uniformity", "tolerance", "gap", "zeroshot_miou")
    n_scenes = scenes or 2
    scene = rng.normal(0, 0.02, (n_scenes, 4))  # shared: which scenes are hard
    m = resample_multiplicities(n_scenes, resamples, seed=0)

    def record(values, noise):
        per_scene = np.asarray(values) + scene + noise  # [S, 4]
        metrics = dict(zip(names, per_scene.mean(0)))
        reps = (m @ per_scene) / n_scenes
        return metrics, {"seed": 0, "n": resamples, "values": {k: reps[:, i].tolist() for i, k in enumerate(names)}}

    runs = []
    for loss, values in effects.items():
        for s in range(seeds):
            metrics, reps = record(np.asarray(values) + rng.normal(0, 0.01, 4), rng.normal(0, 0.005, (n_scenes, 4)))
            runs.append({"key": f"{loss}{s}", "cell": f"loss={loss}", "seed": s, "status": "succeeded",
                         "metrics": metrics, "replicates": reps if scenes else None})
    t_metrics, t_reps = record(teacher_values, 0.0)
    teacher = {"structure": {**t_metrics, "sample": {"scenes": n_scenes, "keyframes": 2 * n_scenes},
                             **({"replicates": t_reps} if scenes else {})}}
    return aggregate([{"cell": f"loss={x}", "values": {"loss": x}} for x in effects], runs, teacher=teacher)


def test_paper_claims_are_one_family_with_holm_and_say_too_few_seeds_or_scenes():
    """Verdicts follow the Holm-adjusted p of the two-stage bootstrap over seeds and scenes (teacher's
    scene noise included); 3 seeds give "too few seeds" and 2 scenes "too few scenes", whatever the p."""
    from relviz.experiment.claims import (FEW_CONFIGURATIONS, FEW_SCENES, FEW_SEEDS, HOLDS, MISSING, NO_SCENE_VARIANCE, NOISE,
                                         REVERSED, paper_claims)
    from relviz.stats import holm

    claims = paper_claims(_claims_report(seeds=6, scenes=12))
    verdicts = {c["claim"]: c for c in claims}
    assert verdicts["contrastive: U above the teacher's"]["verdict"] == HOLDS  # 2.00 vs 1.50
    assert verdicts["similarity: U below the teacher's"]["verdict"] == HOLDS  # 1.30 vs 1.50
    assert verdicts["similarity: T above the teacher's"]["verdict"] == HOLDS  # 0.90 vs 0.80
    assert verdicts["relational: smaller G than contrastive"]["verdict"] == HOLDS
    assert verdicts["relational: better zero-shot than similarity"]["verdict"] == HOLDS  # +0.03, seed sd 0.014
    assert verdicts["relational: T closer to the teacher's than contrastive"]["verdict"] == HOLDS  # 0.01 vs 0.10
    tested = [c for c in claims if c["verdict"] != MISSING]
    assert all(c["test"].startswith("two-stage") for c in tested if c.get("seeds"))
    # Holm over the family, independently: the adjusted p's are holm() of the raw ones, in order
    assert [c["p_holm"] for c in tested] == pytest.approx(holm([c["p"] for c in tested]))
    for c in tested:
        if c.get("seeds"):
            expected = (HOLDS if np.sign(c["estimate"]) == c["sign"] else REVERSED) if c["p_holm"] < 0.05 else NOISE
            assert c["verdict"] == expected, c
    # the correlation claims: 3 configurations give no p ("too few configurations"); without a few-shot
    # metric, "not measured"
    correlation = [c for c in claims if "over configurations" in c["claim"]]
    assert {c["verdict"] for c in correlation if "zeroshot" in c["claim"]} == {FEW_CONFIGURATIONS}
    assert {c["verdict"] for c in correlation if "fewshot" in c["claim"]} == {MISSING}
    assert all(c["p"] is None for c in correlation if c["verdict"] == FEW_CONFIGURATIONS)

    few_seeds = {c["claim"]: c for c in paper_claims(_claims_report(seeds=3, scenes=12))}
    assert few_seeds["contrastive: U above the teacher's"]["verdict"] == FEW_SEEDS
    assert few_seeds["contrastive: U above the teacher's"]["p_sign"] == pytest.approx(0.25)  # 2 of 2^3 patterns
    few_scenes = {c["claim"]: c for c in paper_claims(_claims_report(seeds=6, scenes=None))}
    row = few_scenes["contrastive: U above the teacher's"]
    assert row["verdict"] == FEW_SCENES and row["two_stage"] is None and row["test"].startswith("t test")
    # 12 scenes but no stored scene resamples (as few-shot results): the t test over seeds alone gives no verdict
    report = _claims_report(seeds=6, scenes=12)
    for run in report["runs"]:
        run["replicates"] = None
    row = {c["claim"]: c for c in paper_claims(report)}["contrastive: U above the teacher's"]
    assert row["verdict"] == NO_SCENE_VARIANCE and row["p"] < 0.05  # the seeds alone would have said "holds"


def test_paper_claims_say_not_measured_for_a_cell_without_evaluated_runs():
    from relviz.experiment.aggregate import aggregate
    from relviz.experiment.claims import MISSING, paper_claims

    runs = [{"key": "c0", "cell": "loss=contrastive", "seed": 0, "status": "succeeded",
             "metrics": {"uniformity": 2.0, "zeroshot_miou": float("nan")}},
            {"key": "r0", "cell": "loss=relational", "seed": 0, "status": "failed", "metrics": None}]
    report = aggregate([{"cell": f"loss={x}", "values": {"loss": x}} for x in ("contrastive", "relational")], runs,
                       teacher={"structure": {"uniformity": 1.5, "tolerance": 0.8, "gap": 0.0, "zeroshot_miou": 0.5}})
    verdicts = {c["claim"]: c["verdict"] for c in paper_claims(report)}  # no crash on None or NaN
    assert verdicts["contrastive: T below the teacher's"] == MISSING
    assert verdicts["relational: better zero-shot than contrastive"] == MISSING


def test_fine_tuned_few_shot_claims_use_student_and_fine_tuning_seeds_and_name_the_unit():
    """Each run's fine-tuned mIoU is the mean over its 3 fine-tuning seeds, stored with that mean on the
    shared scene resamples: the claim's test is the two-stage bootstrap over student seeds and scenes of
    those means, and its text names the unit; without the resamples, no verdict."""
    from relviz.experiment.aggregate import aggregate, run_metrics, run_replicates
    from relviz.experiment.claims import HOLDS, NO_SCENE_VARIANCE, paper_claims
    from relviz.stats import resample_multiplicities, two_stage_bootstrap

    base = _claims_report(seeds=6, scenes=12)
    rng = np.random.default_rng(11)
    m = resample_multiplicities(12, 400, seed=0)  # the structure replicates' draws (seed 0, 400)
    scene = rng.normal(0, 0.02, 12)
    effect = {"contrastive": 0.30, "similarity": 0.25, "relational": 0.32}
    evaluations = {}
    for run in base["runs"]:
        student = effect[run["cell"].split("=")[1]] + rng.normal(0, 0.01)
        per_scene = (student + scene + rng.normal(0, 0.01, (3, 12))).mean(0)  # 3 fine-tuning seeds x 12 scenes
        evaluations[run["key"]] = {
            "structure": {**run["metrics"], "replicates": run["replicates"]},
            "finetune": {"0.1": {"miou": float(per_scene.mean()), "seeds": [0, 1, 2],
                                 "replicates": {"seed": 0, "n": 400, "values": {"miou": (m @ per_scene / 12).tolist()}}}}}

    def claims_with(evaluations):
        runs = [{**r, "metrics": run_metrics(evaluations[r["key"]]), "replicates": run_replicates(evaluations[r["key"]])}
                for r in base["runs"]]
        report = aggregate([{"cell": f"loss={x}", "values": {"loss": x}} for x in effect], runs,
                           teacher=base["teacher"], protocol={"finetune_seeds": 3})
        return {c["claim"]: c for c in paper_claims(report)}, runs

    claims, runs = claims_with(evaluations)
    unit = "student seeds, each the mean over 3 fine-tuning seeds"
    row = claims[f"few-shot (fine-tuned 10% mIoU): relational above similarity (unit: {unit})"]
    assert row["test"].startswith("two-stage") and row["evidence"].endswith(f"over 6 {unit}")
    # the same test from the runs' stored means, paired by student seed, directly
    value = {(r["cell"], r["seed"]): r["metrics"]["finetune@0.1"] for r in runs}
    reps = {(r["cell"], r["seed"]): np.array(r["replicates"]["values"]["finetune@0.1"]) for r in runs}
    diffs = [value["loss=relational", s] - value["loss=similarity", s] for s in range(6)]
    two = two_stage_bootstrap(diffs, np.stack([reps["loss=relational", s] - reps["loss=similarity", s]
                                               for s in range(6)]))
    assert row["estimate"] == pytest.approx(np.mean(diffs), abs=2 * gamma(6))
    assert row["p"] == two.p and row["two_stage"]["low"] == two.low  # the same numbers, the same operations
    assert row["verdict"] == HOLDS  # +0.07 against seed noise of about 0.01
    # fine-tuning resamples drawn otherwise (another count) are not paired with the structure's: left out
    other = {k: {**e, "finetune": {"0.1": {**e["finetune"]["0.1"], "replicates": {
        "seed": 0, "n": 10, "values": {"miou": [0.3] * 10}}}}} for k, e in evaluations.items()}
    assert "finetune@0.1" not in claims_with(other)[1][0]["replicates"]["values"]
    # without stored resamples the existing rule: no verdict from seeds alone
    bare = {k: {**e, "finetune": {"0.1": {"miou": e["finetune"]["0.1"]["miou"]}}} for k, e in evaluations.items()}
    row = claims_with(bare)[0][f"few-shot (fine-tuned 10% mIoU): relational above similarity (unit: {unit})"]
    assert row["verdict"] == NO_SCENE_VARIANCE and row["test"].startswith("t test")


def test_linear_probe_claims_pair_runs_on_the_structures_scene_resamples():
    """The linear probe stores its per-frame confusions, not resamples: each run's probe mIoU on the
    structure's shared scene resamples is derived from them (checked against a sum of the frames'
    confusions by hand), so a probe claim gets the two-stage test over student seeds and scenes
    instead of "no scene resamples"; with fewer scenes than the rule's minimum, none is derived."""
    from relviz.eval.fewshot import miou_on_scene_resamples
    from relviz.experiment.aggregate import aggregate, run_metrics, run_replicates
    from relviz.experiment.claims import HOLDS, NO_SCENE_VARIANCE, paper_claims
    from relviz.segmentation import classes_with_ground_truth, mean_iou_over
    from relviz.stats import MIN_SCENES, resample_multiplicities

    rng = np.random.default_rng(5)
    frame_scenes = [s for s in range(12) for _ in range(2)]  # 12 scenes x 2 frames, as the evidence set

    def probe(accuracy: float) -> dict:
        frames = []
        for _ in frame_scenes:
            cm = np.zeros((5, 5), dtype=np.int64)
            for c in (1, 2, 3):  # class 4 never in the ground truth: outside the fixed list
                n = int(rng.integers(50, 100))
                right = int(rng.binomial(n, np.clip(accuracy + rng.normal(0, 0.05), 0, 1)))
                cm[c, c], cm[c, 4 if c == 3 else c % 3 + 1] = right, n - right
            frames.append(cm)
        total = np.sum(frames, axis=0)
        return {"miou": mean_iou_over(total, classes_with_ground_truth(total)), "frame_scenes": frame_scenes,
                "confusion_per_frame": np.stack(frames).tolist()}

    result = probe(0.7)
    drawn = miou_on_scene_resamples(result, 50, seed=3)
    m = resample_multiplicities(12, 50, 3)
    per_frame = np.array(result["confusion_per_frame"])
    classes = classes_with_ground_truth(per_frame.sum(0))
    assert classes == (1, 2, 3)
    for b in range(50):  # the resample's frames summed by hand, mIoU over the fixed list
        total = sum(m[b, frame_scenes[k]] * per_frame[k] for k in range(24))
        assert drawn[b] == pytest.approx(mean_iou_over(total, classes), abs=8 * gamma(3 * 24))
    assert miou_on_scene_resamples({**result, "frame_scenes": [s % (MIN_SCENES - 1) for s in range(24)]}, 50) is None
    assert miou_on_scene_resamples({"miou": 0.5}, 50) is None

    base = _claims_report(seeds=6, scenes=12)
    accuracy = {"contrastive": 0.6, "similarity": 0.5, "relational": 0.8}
    runs = []
    for run in base["runs"]:
        ood = {"miou": accuracy[run["cell"].split("=")[1]] / 2 + rng.normal(0, 0.01)}  # no scenes to resample
        evaluation = {"structure": {**run["metrics"], "replicates": run["replicates"]},
                      "linear_probe": {"0.01": probe(accuracy[run["cell"].split("=")[1]])},
                      "ood": {"kitti": {"linear_probe": {"0.01": ood}}}}
        replicates = run_replicates(evaluation)
        assert replicates["values"]["linear_probe@0.01"] == miou_on_scene_resamples(
            evaluation["linear_probe"]["0.01"], run["replicates"]["n"], run["replicates"]["seed"])
        runs.append({**run, "metrics": run_metrics(evaluation), "replicates": replicates})
    report = aggregate([{"cell": f"loss={x}", "values": {"loss": x}} for x in accuracy], runs, teacher=base["teacher"])
    # each cell's interval over seeds and scenes: the two-stage bootstrap of its runs' values and resamples
    from relviz.experiment.aggregate import to_csv, to_markdown
    from relviz.stats import two_stage_bootstrap

    cell = next(c for c in report["cells"] if c["cell"] == "loss=relational")
    mine = [r for r in runs if r["cell"] == "loss=relational"]
    direct = two_stage_bootstrap([r["metrics"]["linear_probe@0.01"] for r in mine],
                                 np.array([r["replicates"]["values"]["linear_probe@0.01"] for r in mine]))
    both = cell["metrics"]["linear_probe@0.01"]["scenes_and_seeds"]
    assert (both["mean"], both["low"], both["high"], both["n"]) == (direct.value, direct.low, direct.high, 6)
    assert cell["metrics"]["linear_probe@0.01@kitti"]["scenes_and_seeds"] is None  # no resamples: over seeds only
    assert f"{both['mean']:.3f} ± {(both['high'] - both['low']) / 2:.3f} †" in to_markdown(report, "t")
    assert f"{both['low']}" in to_csv(report)
    one_run = [{**mine[0], "replicates": None}, *mine[1:]]
    from relviz.experiment.aggregate import interval_over_seeds_and_scenes
    assert interval_over_seeds_and_scenes(one_run, "linear_probe@0.01") is None  # a run without resamples
    other_draws = [{**mine[0], "replicates": {**mine[0]["replicates"], "seed": 9}}, *mine[1:]]
    assert interval_over_seeds_and_scenes(other_draws, "linear_probe@0.01") is None  # not paired: drawn otherwise

    claims = {c["claim"]: c for c in paper_claims(report)}
    row = claims["few-shot (linear probe 1% mIoU): relational above similarity (unit: student seeds)"]
    assert row["test"].startswith("two-stage") and row["verdict"] == HOLDS, row
    # out of distribution without scene resamples: in the family (its t test's p counts in Holm's
    # adjustment of every claim), no verdict from the seeds alone
    row = claims["few-shot (linear probe 1% mIoU on kitti): relational above similarity (unit: student seeds)"]
    assert row["verdict"] == NO_SCENE_VARIANCE and row["p_holm"] is not None and row["test"].startswith("t test")


def test_out_of_distribution_metrics_are_named_by_dataset_and_old_reports_rederive(tmp_path):
    """``<method>@<fraction>@<dataset>`` beside the in-distribution names: its own heading, in the claims,
    not the correlation's few-shot metric; the published demo report still rederives alike."""
    import shutil

    from relviz.eval.report import parse_fewshot_metric, split_fewshot_metric
    from relviz.experiment import aggregate, run_metrics
    from relviz.experiment.claims import paper_claims

    evaluation = {"structure": {"uniformity": 1.5}, "linear_probe": {"0.01": {"miou": 0.4}},
                  "ood": {"synthetic-kitti": {"format": "semantickitti", "linear_probe": {"0.01": {"miou": 0.2}},
                                              "finetune": {"0.1": {"miou": 0.25}}}}}
    assert run_metrics(evaluation) == {"uniformity": 1.5, "linear_probe@0.01": 0.4,
                                       "linear_probe@0.01@synthetic-kitti": 0.2, "finetune@0.1@synthetic-kitti": 0.25}
    assert split_fewshot_metric("finetune@0.1@synthetic-kitti") == ("finetune", 0.1, "synthetic-kitti")
    assert parse_fewshot_metric("finetune@0.1@synthetic-kitti") is None
    assert parse_fewshot_metric("finetune@0.1") == ("finetune", 0.1) and split_fewshot_metric("U@x") is None
    runs = [{"key": f"r{s}", "cell": "loss=relational", "seed": s, "status": "succeeded",
             "metrics": run_metrics(evaluation)} for s in (0, 1)]
    report = aggregate([{"cell": "loss=relational", "values": {"loss": "relational"}}], runs)
    assert report["headings"]["linear_probe@0.01@synthetic-kitti"] == "linear probe 1% mIoU on synthetic-kitti"
    assert report["gap_vs_performance"].get("fewshot_metric") in (None, "linear_probe@0.01")
    # the paper claims few-shot out of distribution too: its rows are in the family (here missing: one cell)
    ood_rows = [c for c in paper_claims({**report, "claims": None}) if "synthetic-kitti" in c["claim"]]
    assert ood_rows and all(c.get("p_holm") is None for c in ood_rows)

    shutil.copy("checkpoints/demo/experiment/report.json", tmp_path / "report.json")
    stored = json.loads((tmp_path / "report.json").read_text())
    res = CliRunner().invoke(cli_app, ["experiment", "rederive", str(tmp_path / "report.json"), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["metrics"] == stored["metrics"] and again["headings"] == stored["headings"]
    assert [c["verdict"] for c in again["claims"]] == [c["verdict"] for c in stored["claims"]]


def test_a_stopped_job_still_holds_its_slot(synthetic_root, tmp_path, monkeypatch):
    """A job whose process is stopped (SIGSTOP) goes "lost" by its stale heartbeat while the process
    still exists: it still holds its slot (no run is launched beside it past max_running) and is not
    resumed (never two trainers), until it runs again."""
    import relviz.jobs.store

    grid = tmp_path / "slot.toml"
    grid.write_text(_grid(synthetic_root, name="slot", max_steps=50).replace("max_running = 2", "max_running = 1"))
    settings = load_settings()
    exp = Experiment.from_file(settings, grid)
    first, second = exp.launch_order()[:2]
    exp.supervise(JobStore(settings), poll_s=0.1, stop=lambda state: state["runs"][first.key]["step"] >= 1)
    store = JobStore(settings)
    job = store.get(exp.read_state()["runs"][first.key]["job_id"])
    os.killpg(job.pgid, signal.SIGSTOP)
    try:
        monkeypatch.setattr(relviz.jobs.store, "HEARTBEAT_STALE_S", 0.5)
        wait_for(lambda: store.get(job.id).status == "lost", timeout=30, what="the stale heartbeat")
        state = exp._advance(store, resume={first.key}, log=None)
        assert state["runs"][first.key]["status"] == "lost" and state["runs"][second.key]["job_id"] is None, state
        assert store.get(job.id).pid == job.pid  # not resumed in a second process
    finally:
        os.killpg(job.pgid, signal.SIGCONT)
        store.cancel(job.id)


def test_a_holm_p_of_exactly_five_percent_is_not_a_verdict():
    """The verdict needs the Holm-adjusted p strictly under 5%: the committed evidence report once said
    "holds" at an adjusted p of exactly 0.05 (4 x an exact permutation p of 63/5040) because 1 - 0.95 is
    0.050000000000000044 in floating point."""
    from relviz.experiment.claims import ALPHA, HOLDS, NOISE, _verdict

    row = {"claim": "c", "sign": -1, "estimate": -0.9, "configurations": 7, "p": 63 / 5040}
    assert 4 * row["p"] == 0.05 and ALPHA == 0.05
    assert _verdict({**row, "p_holm": 4 * row["p"]}) == NOISE
    assert _verdict({**row, "p_holm": 0.0499}) == HOLDS
