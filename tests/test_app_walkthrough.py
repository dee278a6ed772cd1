"""The walkthrough's bugs (issue 33), each with a test that fails before its fix: a partial run's
checkpoint marked as such everywhere and left out of the evidence unless chosen, and a link naming
one checkpoint several times."""

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _partial_run(home: Path, step: int = 3, total: int = 10) -> Path:
    """A run that stopped at ``step`` of ``total``: its last checkpoint, no final one."""
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint
    from relviz.teacher.demo import load_demo_teacher
    from relviz.train.rundir import RunDir

    torch.manual_seed(5)
    model = build_minkunet("MinkUNet14", out_channels=load_demo_teacher().dim, width=0.125, backend="torch")
    run = RunDir(home / "runs" / "cancelled-run")
    save_checkpoint(run.last, model, {"kind": "student", "architecture": model.config.to_dict(),
                                      "loss": "contrastive", "step": step, "total_steps": total})
    return run.last


def test_a_partial_run_is_marked_in_its_label_and_on_home(cold_app_workspace):
    from relviz.config import load_settings
    from relviz.workspace import student_checkpoints

    _partial_run(cold_app_workspace)
    infos = {c.path.parents[1].name if c.partial else c.label: c for c in student_checkpoints(load_settings())}
    partial = infos["cancelled-run"]
    assert partial.label == "cancelled-run (partial, step 3/10)"
    assert partial.partial == "stopped at step 3 of 10 (the run did not finish)"
    assert all(c.partial is None for name, c in infos.items() if name != "cancelled-run")
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value if "checkpoint" in at.dataframe[0].value else at.dataframe[1].value
    row = table.set_index("checkpoint").loc["cancelled-run (partial, step 3/10)"]
    assert row["status"] == "partial: stopped at step 3 of 10 (the run did not finish)"
    assert "cancelled-run (partial, step 3/10)" not in at.multiselect(key="home_active").options


def test_evidence_leaves_a_partial_run_out_unless_chosen(app_workspace):
    _partial_run(app_workspace)
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/evidence.py").run()
    assert not at.exception, at.exception
    toggle = at.toggle(key="ev_partial")
    assert toggle.value is False and "cancelled-run (partial, step 3/10)" in toggle.help
    assert "cancelled-run (partial, step 3/10)" not in at.selectbox(key="ev_student").options


@pytest.mark.parametrize("link", ["relational,relational,relational,relational,relational",
                                  "relational,similarity,relational"])
def test_a_link_naming_a_checkpoint_twice_lists_it_once(app_workspace, link):
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/compare.py")
    at.query_params["ckpts"] = link
    at.run()
    assert not at.exception, at.exception
    chosen = at.multiselect(key="cmp_ckpts").value
    assert chosen == list(dict.fromkeys(link.split(",")))


def test_free_text_query_colours_stay_far_from_every_colour_on_screen():
    """A free-text query once got rgb(28,167,28) beside vegetation's rgb(0,175,0) (CIE76 distance 9):
    every query colour is now at least 20 from every class colour, the greys, the selection colour and
    every other query colour. L*a*b* against the CIE reference values of sRGB red and white."""
    import numpy as np

    from relviz.viz.labelcolors import PALETTE, SCREEN_COLORS, lab, stable_colors

    # the sRGB matrix to 4 decimals (IEC 61966-2-1) puts b* within 0.05 of the reference
    assert lab(np.array([255, 0, 0])) == pytest.approx([53.24, 80.09, 67.20], abs=0.05)
    assert lab(np.array([255, 255, 255])) == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    assert np.linalg.norm(lab(np.array([28, 167, 28])) - lab(np.array([0, 175, 0]))) < 10  # the bug's pair
    queries = lab(PALETTE[16:])
    assert np.linalg.norm(queries[:, None] - lab(SCREEN_COLORS)[None], axis=-1).min() >= 20
    between = np.linalg.norm(queries[:, None] - queries[None], axis=-1)
    assert between[~np.eye(len(queries), dtype=bool)].min() >= 20
    # the walkthrough's five queries: the three free-text ones get query colours, the two mapped ones class colours
    colours = stable_colors(["ambulance", "wet road", "a person walking a dog", "tree", "car"], [0, 0, 0, 16, 4])
    assert [c >= 16 for c in colours] == [True, True, True, False, False]


def test_home_and_zero_shot_say_plainly_that_the_demo_teacher_is_not_clip(cold_app_workspace):
    from relviz.viz.explain import DEMO_TEACHER_NOTE

    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    assert any(i.value == DEMO_TEACHER_NOTE for i in at.info)
    assert "not CLIP" in DEMO_TEACHER_NOTE and "ambulance" in DEMO_TEACHER_NOTE
    source = (Path(APP).parent / "app_pages" / "zeroshot.py").read_text()
    assert "st.info(explain.DEMO_TEACHER_NOTE)" in source  # the same note, first thing on the Zero-shot page


@pytest.mark.parametrize("args, message", [
    (["--version", "v1.0-trainval", "--scenes", "0"], "scenes must be in \\[2, 850\\]"),
    (["--version", "v1.0-trainval", "--scenes", "-3"], "scenes must be in \\[2, 850\\]"),
    (["--samples-per-scene", "0"], "samples_per_scene must be in \\[2, 40\\]"),
    (["--beams", "0"], "beams must be in \\[2, 128\\]"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_synth_refuses_zero_and_negative_counts(tmp_path, args, message):
    """`--scenes 0` once wrote 20 scenes (0 read as "the default"): every count is checked, one line, exit 2."""
    import re

    from typer.testing import CliRunner

    from relviz.cli import app

    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "out"), *args], env={"RELVIZ_HOME": str(tmp_path)})
    assert result.exit_code == 2 and re.search(message, result.output), result.output
    assert not (tmp_path / "out").exists()  # nothing written


def test_students_differing_only_in_the_seed_are_one_configuration(tmp_path):
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint
    from relviz.workspace import CheckpointInfo, configuration_of

    model = build_minkunet("MinkUNet14", out_channels=8, width=0.125, backend="torch")

    def student(name: str, **training) -> CheckpointInfo:
        path = tmp_path / f"{name}.safetensors"
        save_checkpoint(path, model, {"kind": "student", "architecture": model.config.to_dict(), "loss": "relational",
                                      "training": {"loss": "relational", "lr": 0.1, **training}})
        return CheckpointInfo(name, path, "relational")

    a, b, c = student("a", seed=0), student("b", seed=1), student("c", seed=0, intra_weight=3.0)
    assert configuration_of(a) == configuration_of(b) != configuration_of(c)
    assert configuration_of(a).startswith("relational ")


def test_out_of_range_numbers_are_said_and_launch_says_why_it_did_not(app_workspace):
    """Streamlit's min and max kept -1 or 9999 in the box while the page used the old value, and the
    form's Launch then did nothing, silently. Now the value shown is the one used: an out-of-range entry
    is named under its box, and Launch says it did not start a job and why."""
    from relviz.config import load_settings
    from relviz.jobs import JobStore

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/jobs.py").run()
    at.number_input(key="job_lr").set_value(-1.0)
    at.number_input(key="job_batch").set_value(9999)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert "learning rate: -1 is outside 1e-05 to 10; not used" in errors
    assert "batch: 9999 is outside 1 to 64; not used" in errors
    assert "Not launched: lr, batch empty or out of range (see the field)" in errors
    assert not at.success and JobStore(load_settings()).list() == []

    at.switch_page("app_pages/zeroshot.py").run()
    at.number_input(key="zs_threshold").set_value(5.0).run()
    assert not at.exception, at.exception
    assert "unassigned below similarity: 5 is outside -1 to 1; not used" in [e.value for e in at.error]

    at.switch_page("app_pages/toy.py").run()
    at.number_input(key="toy_seed").set_value(-5).run()
    assert not at.exception, at.exception
    assert "seed: -5 is outside 0 to 1000; not used" in [e.value for e in at.error]
    assert not at.get("plotly_chart")  # the page stops: nothing is drawn for a seed other than the one shown


@pytest.fixture
def structure_gate(monkeypatch):
    """A function that makes workspace.structure wait for the event it returns before computing: on a
    fast machine the background computation could otherwise end before the page's run draws its
    progress bar. The gate opens at teardown whatever happened, so a failed test never leaves a
    computation holding the server-wide turn for the tests after it."""
    import threading

    from relviz import workspace

    gate, real = threading.Event(), workspace.structure

    def gated(*args, **kwargs):
        if not gate.wait(120):
            raise AssertionError("the test never opened the gate")
        return real(*args, **kwargs)

    def close() -> threading.Event:
        monkeypatch.setattr(workspace, "structure", gated)
        return gate

    yield close
    gate.set()


def test_a_structure_control_that_needs_new_features_computes_them_in_the_background(app_workspace, monkeypatch,
                                                                                     structure_gate):
    """4 -> 8 keyframes froze the page for 80 s. Now the page keeps the last result on screen, says what is
    being computed with a count, and shows the new result when the background thread has stored it; a
    cancelled computation is said and not restarted for the same settings."""
    import time

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/structure.py")
    at.query_params["ckpt"] = "teacher"
    at.run()
    assert not at.exception, at.exception
    assert at.slider(key="st_k").value == 2 and not [i for i in at.info if "Showing" in i.value]  # warm: at once
    before = {m.label: m.value for m in at.metric}

    gate = structure_gate()  # the computation waits until the page's state is checked
    at.query_params["k"] = "3"  # as the browser's URL follows the slider (AppTest keeps its own)
    at.slider(key="st_k").set_value(3).run()
    assert not at.exception, at.exception
    assert any("Showing teacher on every scene x 2 keyframes per scene" in i.value for i in at.info)
    assert {m.label: m.value for m in at.metric} == before  # the last result stays on screen meanwhile
    assert at.get("progress") and "teacher on every scene x 3 keyframes" in at.get("progress")[0].proto.text
    gate.set()
    deadline = time.time() + 240
    while time.time() < deadline and any("Showing teacher" in i.value for i in at.info):
        time.sleep(1)
        at.run()
    assert not any("Showing teacher" in i.value for i in at.info), "the background result never arrived"
    # the new sample's result, computed without blocking the page, is the one the library gives
    from relviz.config import load_settings
    from relviz.eval.selection import EvalSet
    from relviz.workspace import structure, structure_on_disk

    s = load_settings()
    assert structure_on_disk(s, s.dataset_root(), None, EvalSet(None, 3, 0), 500, 0)
    stored = structure(s, s.dataset_root(), None, EvalSet(None, 3, 0), 500, 0, teacher_fn=None)  # read, not computed
    assert stored is not None and stored["sample"]["keyframe_index"] is not None
    assert any(f"from {stored['sample']['keyframes']} mini_val keyframes" in c.value for c in at.caption)

    # Cancel: a computation that runs until it is cancelled (the real one may end before the click)
    from relviz import workspace

    def endless(*args, progress=None, **kwargs):
        for i in range(600):
            progress(i, 600)
            time.sleep(0.1)
        raise AssertionError("never cancelled")

    monkeypatch.setattr(workspace, "structure", endless)
    at.query_params["k"] = "5"
    at.slider(key="st_k").set_value(5).run()
    assert at.get("progress") and "computing teacher on every scene x 5 keyframes" in at.get("progress")[0].proto.text
    at.button(key="background_cancel").click().run()
    deadline = time.time() + 60
    while time.time() < deadline and not at.error:
        time.sleep(0.5)
        at.run()
    assert any("was not computed" in e.value and "cancelled at keyframe" in e.value for e in at.error)
    at.run()  # not restarted: still the reason, and the last result
    assert any("cancelled at keyframe" in e.value for e in at.error) and not at.get("progress")
    assert any("Showing teacher on every scene x 3 keyframes per scene" in i.value for i in at.info)


@pytest.mark.parametrize("page, prefix", [("app_pages/compare.py", "cmp"), ("app_pages/evidence.py", "ev")])
def test_compare_and_evidence_keep_the_last_result_while_a_new_one_is_computed(app_workspace, page, prefix,
                                                                               structure_gate):
    """Compare and Evidence computed every missing result in the page's run (a minute and more for new
    keyframes). Now, as Feature structure: the last result stays on screen with a note and a progress bar per
    result being computed, and the page shows the new one when the background threads have stored it."""
    import time

    from relviz.config import load_settings
    from relviz.workspace import DEFAULT_EVAL_SET, structure, structure_on_disk

    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page(page).run()  # the first visit waits for what it lacks, then shows it
    assert not at.exception, at.exception
    before = at.dataframe[0].value
    gate = structure_gate()  # the computations wait until the page's state is checked
    at.select_slider(key=f"{prefix}_pc").set_value(250).run()  # 250 points per class: not computed yet
    assert not at.exception, at.exception
    assert any(i.value.startswith("Showing ") and "(points per class 500, seed 0)" in i.value for i in at.info)
    assert at.dataframe[0].value.equals(before)  # the last result stays on screen meanwhile
    assert at.get("progress") and all("on every scene x 2 keyframes per scene" in p.proto.text
                                      for p in at.get("progress"))
    gate.set()
    deadline = time.time() + 300
    while time.time() < deadline and at.get("progress"):
        time.sleep(1)
        at.run()
    assert not at.get("progress") and not [i for i in at.info if i.value.startswith("Showing ")]
    s = load_settings()
    root = s.dataset_root("synthetic-mini")
    assert structure_on_disk(s, root, None, DEFAULT_EVAL_SET, 250, 0)
    teacher = structure(s, root, None, DEFAULT_EVAL_SET, 250, 0, teacher_fn=None)  # stored: read, not computed
    assert teacher["sample"]["per_class"] == 250
    assert any("up to 250" in c.value for c in at.caption)
