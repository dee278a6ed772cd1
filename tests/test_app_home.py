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
