"""Every page of the app under AppTest: no exception, live queries, jobs, broken inputs."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from support import trace_values

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ["app_pages/structure.py", "app_pages/compare.py", "app_pages/evidence.py", "app_pages/zeroshot.py", "app_pages/jobs.py", "app_pages/toy.py",
         "app_pages/fewshot.py"]


def _page(path, timeout=180):
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    at.switch_page(path)
    return at.run()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app_workspace, page):
    at = _page(page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title


def test_zero_shot_query_changes_predictions(app_workspace):
    at = _page("app_pages/zeroshot.py")
    before = [m.value for m in at.metric]
    at.session_state["zs_queries"] = "road = driveable surface\nbuilding = manmade"  # what the live box sends
    at.run()
    assert not at.exception, at.exception
    after = [m.value for m in at.metric]
    assert before[0] != after[0]  # the sample mIoU follows the queries
    at.radio(key="zs_mode").set_value("similarity to a query").run()
    assert not at.exception
    at.session_state["zs_queries"] = "spaceship = vehicle"  # free text is fine; an unknown class is not
    at.run()
    assert "not one of the 16 classes" in at.error[0].value


def _value(cell: str) -> float | None:
    """The value of a table cell "0.368 [0.350, 0.381]" ("-": none)."""
    return None if cell == "-" else float(cell.split()[0])


def test_compare_shows_the_library_numbers_and_computes_fewshot_when_asked(app_workspace):
    from relviz.config import load_settings
    from relviz.workspace import DEFAULT_EVAL_SET, structure, student_checkpoints

    at = _page("app_pages/compare.py", timeout=300)
    pair = ["test-contrastive", "test-relational"]
    at.multiselect(key="cmp_ckpts").set_value(pair).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("checkpoint")
    assert (table["fewshot_miou"] == "-").all()  # nothing computed yet: shown as missing, not invented
    # the numbers shown are the library's for the same inputs (2 keyframes of each of the 2 mini_val
    # scenes, 500 per class, seed 0): 2 scenes give no interval, and the page says why
    s = load_settings()
    infos = {c.label: c for c in student_checkpoints(s)}
    root = s.dataset_root("synthetic-mini")
    libs = {}
    for label in pair:
        lib = libs[label] = structure(s, root, infos[label], DEFAULT_EVAL_SET, 500, 0, None)  # the page's cache
        assert lib["intervals"] is None and "2 scenes" in lib["bootstrap"]["skipped"]
        for m in ("uniformity", "tolerance", "gap", "gap_all_pairs", "zeroshot_miou", "zeroshot_miou_paired"):
            assert table.loc[label, m] == f"{lib[m]:.3f}"
    # the teacher sits only in the paired-points zero-shot column
    assert table.loc["teacher (2D, paired points)", "zeroshot_miou"] == "-"
    assert table.loc["teacher (2D, paired points)", "zeroshot_miou_paired"] != "-"
    assert any("up to 500 per class (seed 0)" in c.value and "No intervals: 2 scenes" in c.value for c in at.caption)
    # which is better: each scene's difference, no interval and no verdict under 10 scenes
    differences = at.dataframe[1].value
    assert set(differences["verdict"]) == {"no interval"} and (differences["p (Holm)"] == "-").all()
    u = differences[differences["metric"] == "uniformity"].iloc[0]
    expected = [a - b for a, b in zip(*(libs[x]["per_scene"]["uniformity"] for x in pair))]
    assert u["per scene"] == ", ".join(f"{v:+.3f}" for v in expected)
    at.button(key="cmp_fewshot").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("checkpoint")
    few = [_value(table.loc[x, "fewshot_miou"]) for x in pair]
    assert all(0 <= f <= 1 for f in few)
    assert table.loc["teacher (2D, paired points)", "fewshot_miou"] == "-"  # no probe of the teacher
    assert not [b for b in at.button if b.key == "cmp_fewshot"]  # nothing left to compute
    # stored: a new session reads the same values without training
    again = _page("app_pages/compare.py")
    again.multiselect(key="cmp_ckpts").set_value(pair).run()
    stored = again.dataframe[0].value.set_index("checkpoint")
    assert [_value(stored.loc[x, "fewshot_miou"]) for x in pair] == few


def test_corrupted_checkpoint_gives_an_error_panel(app_workspace):
    bad = app_workspace / "runs" / "broken" / "student.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00garbage")
    at = _page("app_pages/zeroshot.py")
    assert not at.exception, at.exception
    assert any("broken" in e.value and "cannot be used" in e.value for e in at.error)
    assert at.metric  # the rest of the page still works


def test_job_launched_from_the_form_runs_with_progress(app_workspace):
    at = _page("app_pages/jobs.py")
    at.number_input(key="job_max_steps").set_value(3)
    at.number_input(key="job_pairs").set_value(256)
    at.select_slider(key="job_width").set_value(0.125)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    assert "started" in at.success[0].value
    from relviz.config import load_settings
    from relviz.jobs import JobStore

    store = JobStore(load_settings())
    deadline = time.time() + 240
    while time.time() < deadline and store.list()[0].status == "running":
        time.sleep(1)
    job = store.list()[0]
    assert job.status == "succeeded", store.log_tail(job)
    at.run()
    table = at.dataframe[0].value
    assert table.iloc[0]["status"] == "succeeded" and table.iloc[0]["progress"] == 1.0


def test_every_structure_number_explains_itself_and_is_the_library_s(app_workspace):
    from relviz.config import load_settings
    from relviz.viz.explain import METRICS
    from relviz.workspace import DEFAULT_EVAL_SET, structure, student_checkpoints

    at = _page("app_pages/structure.py")
    assert not at.exception, at.exception
    shown = {m.label: m for m in at.metric}
    s = load_settings()
    info = {c.label: c for c in student_checkpoints(s)}[at.selectbox(key="ckpt").value]
    lib = structure(s, s.dataset_root("synthetic-mini"), info, DEFAULT_EVAL_SET, 500, 0, None)
    for key in ("uniformity", "tolerance", "gap", "gap_all_pairs"):
        label, meaning = METRICS[key]
        assert meaning in shown[label].help and "docs/protocol.md" in shown[label].help
        assert shown[label].value == f"{lib[key]:.3f}"
        assert not shown[label].delta  # 2 scenes: no interval
    assert any(f"Sample: {lib['sample_size']:,} labelled points" in c.value and "up to 500 per class (seed 0)"
               in c.value and "4 mini_val keyframes of 2 scenes" in c.value and "No intervals: 2 scenes" in c.value
               for c in at.caption)
    # the PCA shows exactly the metrics' sample
    import json

    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sum(len(trace_values(t["x"])) for t in figure["data"]) == lib["sample_size"]


def test_compare_starts_from_the_active_checkpoints_chosen_on_home(app_workspace):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    options = at.multiselect(key="home_active").options
    pick = [o for o in options if o.startswith("test-")]
    assert len(pick) == 2
    at.multiselect(key="home_active").set_value(pick).run()
    at.switch_page("app_pages/compare.py")
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="cmp_ckpts").value == pick


def test_evidence_page_shows_the_library_correlations_and_relations(app_workspace):
    """Three students: the correlation table and the CKA equal the library's for the same inputs."""
    import torch

    from relviz.config import load_settings
    from relviz.eval.evidence import gap_vs_performance
    from relviz.eval.relations import class_relations
    from relviz.eval.report import comparison_rows
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint
    from relviz.teacher.demo import load_demo_teacher
    from relviz.viz.evidence import correlation_frame
    from relviz.workspace import DEFAULT_EVAL_SET, configuration_of, structure, student_checkpoints, val_features

    torch.manual_seed(2)
    model = build_minkunet("MinkUNet14", out_channels=load_demo_teacher().dim, width=0.125, backend="torch")
    save_checkpoint(app_workspace / "runs" / "test-similarity" / "student.safetensors", model,
                    {"kind": "student", "architecture": model.config.to_dict(), "loss": "similarity"})
    at = _page("app_pages/evidence.py", timeout=300)
    assert not at.exception, at.exception
    s = load_settings()
    root = s.dataset_root("synthetic-mini")
    infos = {c.label: c for c in student_checkpoints(s)}
    results = {x: structure(s, root, infos[x], DEFAULT_EVAL_SET, 500, 0, None) for x in infos}  # the page's cache
    rows = comparison_rows([{"checkpoint": x, "loss": infos[x].loss, "structure": results[x], "fewshot": None,
                             "configuration": configuration_of(infos[x])}
                            for x in infos], structure(s, root, None, DEFAULT_EVAL_SET, 500, 0, None))
    expected = correlation_frame(gap_vs_performance(rows[:-1], rows[-1]))
    shown = at.dataframe[0].value
    assert shown.equals(expected)
    # each checkpoint is its own configuration; under 5 of them a coefficient alone, with the reason
    for _, row in shown.iterrows():
        assert ("[" in row["Pearson r [95%]"]) == (row["n (configurations)"] >= 5)
        assert bool(row["note"]) == (row["n (configurations)"] < 5)  # the reason, wherever none is printed
    student = at.selectbox(key="ev_student").value
    val = val_features(s, root, infos[student], DEFAULT_EVAL_SET, None)
    assert at.metric[0].value == f"{class_relations(val, 500, 0)['cka']:.3f}"
