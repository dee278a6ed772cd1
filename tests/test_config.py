"""Workspace resolution and settings validation."""

import os

import pytest

from relviz.config import ConfigError, load_settings


def test_defaults_use_cwd_workspace(tmp_path):
    s = load_settings(env={}, cwd=tmp_path)
    assert s.home == (tmp_path / "workspace").resolve()
    assert (s.device, s.sparse_backend) == ("auto", "torch")
    assert not s.home.exists()  # resolving never creates anything
    s.ensure()
    for d in ("datasets", "cache", "runs", "logs"):
        assert (s.home / d).is_dir()
    assert s.jobs_db == s.home / "jobs.sqlite"


def test_relviz_home_env_wins(tmp_path):
    s = load_settings(env={"RELVIZ_HOME": str(tmp_path / "ws")}, cwd=tmp_path)
    assert s.home == (tmp_path / "ws").resolve()
    assert s.dataset_root("synthetic-mini") == s.home / "datasets" / "synthetic-mini"
    assert s.dataset_root(str(tmp_path / "nuscenes")) == tmp_path / "nuscenes"


def test_home_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"RELVIZ_HOME: workspace .*afile exists but is not a directory"):
        load_settings(env={"RELVIZ_HOME": str(f)}, cwd=tmp_path)


def test_home_empty(tmp_path):
    with pytest.raises(ConfigError, match="RELVIZ_HOME: the workspace path is empty"):
        load_settings(env={"RELVIZ_HOME": "  "}, cwd=tmp_path)


def test_home_under_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    # the nearest existing ancestor is a file: not a writable directory
    with pytest.raises(ConfigError, match="not writable"):
        load_settings(env={"RELVIZ_HOME": str(f / "ws")}, cwd=tmp_path)


def test_toml_settings_and_env_override(tmp_path):
    (tmp_path / "relviz.toml").write_text('[relviz]\nhome = "ws"\ndevice = "cpu"\nteacher = "ViT-B-16"\n')
    s = load_settings(env={}, cwd=tmp_path)
    assert s.home == (tmp_path / "ws").resolve()
    assert (s.device, s.teacher, s.config_file) == ("cpu", "ViT-B-16", tmp_path / "relviz.toml")
    s = load_settings(env={"RELVIZ_DEVICE": "cuda"}, cwd=tmp_path)
    assert s.device == "cuda"


def test_unparsable_toml_names_file(tmp_path):
    (tmp_path / "relviz.toml").write_text("device = \n")
    with pytest.raises(ConfigError, match=r"config file .*relviz.toml: not valid TOML"):
        load_settings(env={}, cwd=tmp_path)


def test_binary_toml_names_file(tmp_path):
    (tmp_path / "relviz.toml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, cwd=tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_toml(tmp_path):
    p = tmp_path / "relviz.toml"
    p.write_text('device = "cpu"\n')
    p.chmod(0)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(env={}, cwd=tmp_path)


def test_missing_config_env_file(tmp_path):
    with pytest.raises(ConfigError, match=r"RELVIZ_CONFIG: .*nope.toml does not exist"):
        load_settings(env={"RELVIZ_CONFIG": str(tmp_path / "nope.toml")}, cwd=tmp_path)


def test_unknown_key_and_bad_type_and_bad_choice(tmp_path):
    p = tmp_path / "relviz.toml"
    p.write_text('devcie = "cpu"\n')
    with pytest.raises(ConfigError, match="unknown setting.*devcie"):
        load_settings(env={}, cwd=tmp_path)
    p.write_text("device = 3\n")
    with pytest.raises(ConfigError, match="'device' must be a string"):
        load_settings(env={}, cwd=tmp_path)
    p.write_text('sparse_backend = "spconv"\n')
    with pytest.raises(ConfigError, match=r"config file .*relviz.toml: 'sparse_backend' is 'spconv'; expected one of torch, minkowski"):
        load_settings(env={}, cwd=tmp_path)
    p.unlink()
    with pytest.raises(ConfigError, match="RELVIZ_DEVICE is 'tpu'; expected one of auto, cpu, cuda"):
        load_settings(env={"RELVIZ_DEVICE": "tpu"}, cwd=tmp_path)


def test_toml_in_workspace_is_read(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "relviz.toml").write_text('dataset = "mine"\n')
    s = load_settings(env={"RELVIZ_HOME": str(ws)}, cwd=tmp_path)
    assert s.dataset == "mine" and s.config_file == ws / "relviz.toml"
