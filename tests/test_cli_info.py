"""`relviz info` reports versions, device, backends and the workspace."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from relviz.cli import app


def test_info_text(workspace_home):
    Path(workspace_home, "datasets", "demo", "v1.0-mini").mkdir(parents=True)
    Path(workspace_home, "runs", "run1").mkdir(parents=True)
    res = CliRunner().invoke(app, ["info"])
    assert res.exit_code == 0, res.output
    out = res.output
    for needle in ("torch", "2.13.0", "torchvision", "0.28.0", "nuscenes-devkit", "1.2.0", "open_clip_torch",
                   "cuda available", "sparse backends", "minkowski", workspace_home, "demo (v1.0-mini)"):
        assert needle in out, needle
    assert "runs             1" in out


def test_info_json(workspace_home):
    res = CliRunner().invoke(app, ["info", "--json"])
    assert res.exit_code == 0, res.output
    facts = json.loads(res.output)
    assert facts["packages"]["torch"].startswith("2.13.0")
    assert facts["sparse_backends"]["torch"] is True
    assert facts["workspace"]["home"] == workspace_home
    assert set(facts["device"]) >= {"cuda_available", "gpu", "cpu_threads"}


def test_info_bad_home_is_a_clear_error(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("")
    monkeypatch.setenv("RELVIZ_HOME", str(f))
    res = CliRunner().invoke(app, ["info"])
    assert res.exit_code == 2
    assert "not a directory" in res.output


def test_console_script_installed():
    exe = shutil.which("relviz") or str(Path(sys.executable).parent / "relviz")
    out = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sparse backends" in out.stdout
