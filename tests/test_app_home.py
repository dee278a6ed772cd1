"""The app shell renders (headless AppTest)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_home_renders(workspace_home):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "relviz"
    assert any("Root:" in m.value and workspace_home in m.value for m in at.markdown)
    assert [m.label for m in at.metric][:2] == ["Device", "Sparse backend"]


def test_home_shows_bad_settings(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("RELVIZ_HOME", str(tmp_path / "f"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "not a directory" in at.error[0].value


def test_home_says_what_is_still_being_prepared(cold_app_workspace):
    """Before `relviz warm` the Home page names the missing caches; after it, says nothing."""
    from relviz.config import load_settings
    from relviz.workspace import pending_caches, student_checkpoints

    s = load_settings()
    root = s.dataset_root("synthetic-mini")
    pending = pending_caches(s, root)
    students = [c.label for c in student_checkpoints(s)]
    assert pending == ["the teacher's validation features"] + [f"validation features of {x}" for x in students]
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    shown = " ".join(i.value for i in at.info)
    assert "Still being prepared" in shown and all(p in shown for p in pending)
    assert pending_caches(s, Path(cold_app_workspace) / "datasets" / "absent") == [
        "the dataset absent (`relviz demo --dataset-only` generates it)"]


def test_the_url_carries_the_active_checkpoints(app_workspace):
    """A link with ?active= sets the session's active checkpoints; choosing on Home rewrites the URL."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["active"] = "test-contrastive"
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="home_active").value == ["test-contrastive"]
    at.multiselect(key="home_active").set_value(["test-relational", "test-contrastive"]).run()
    assert at.session_state["active_checkpoints"] == ["test-relational", "test-contrastive"]
    assert at.query_params["active"] == "test-relational,test-contrastive"
