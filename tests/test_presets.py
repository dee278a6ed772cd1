"""Presets: they load and validate, `--dry-run` prints the values docs/presets.md documents, the
layers resolve as documented (defaults < preset < settings < file < --set < flags), and the memory
estimate's measure agrees with a hand count. The estimates on a dataset (steps, cache images,
activations) are tested on a tiny trainval set in tests/test_trainval_synth.py."""

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from relviz.cli import app as cli_app
from relviz.config import load_settings
from relviz.train.config import (PRESETS_DIR, SITE_FIELDS, TrainConfig, TrainConfigError, from_dict, preset_names,
                                 read_config_table, read_preset)
from relviz.train.estimate import saved_tensor_bytes

DOC = Path(__file__).resolve().parents[1] / "docs" / "presets.md"


def documented(preset: str) -> dict:
    """The ``| `field` | `value` | source |`` rows of the doc's section on ``preset``, values as JSON."""
    text = DOC.read_text()
    section = text.split(f"\n## `{preset}`\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert rows, f"no table in the {preset} section of {DOC}"
    return {field: json.loads(value) for field, value in rows}


def dry_run(args: list[str], env: dict | None = None) -> dict:
    out = CliRunner().invoke(cli_app, [*args, "--dry-run"], env=env)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_the_presets_load_validate_and_leave_the_machine_to_the_settings():
    assert {"slidr", "demo"} <= set(preset_names())
    for name in preset_names():
        table = read_preset(name)
        from_dict(table)  # every value is a valid config value
        assert not set(SITE_FIELDS) & set(table), name
        # the preset file is also a --config file with the same fields
        assert read_config_table(PRESETS_DIR / f"{name}.toml") == table


@pytest.mark.parametrize("preset", preset_names())
def test_dry_run_prints_the_documented_values(preset, tmp_path):
    """The doc's table and the preset file agree, and the dry run prints exactly those values
    (a dataset that does not exist yet: the config and the teacher-side estimates still print)."""
    doc = documented(preset)
    assert set(doc) == set(read_preset(preset)), "docs/presets.md must list every field the preset sets"
    printed = dry_run(["train", "--preset", preset, "--dataset", str(tmp_path / "not-yet")])
    assert printed["preset"] == preset
    assert {k: printed["config"][k] for k in doc} == doc
    est = printed["estimate"]
    assert str(tmp_path / "not-yet") in est["dataset_error"] and "total_steps" not in est


def test_slidr_teacher_cache_bytes_are_vit_b16s_dense_map(tmp_path):
    """ViT-B/16 at 224x416: a float16 [512, 14, 26] map per image, with the .npy header that
    numpy writes for it (the reference: numpy's own writer of such an array)."""
    import io

    import numpy as np

    est = dry_run(["train", "--preset", "slidr", "--dataset", str(tmp_path / "none")])["estimate"]
    assert est["teacher"]["grid"] == [224 // 16, 416 // 16] and est["teacher"]["dim"] == 512
    buf = io.BytesIO()
    np.save(buf, np.zeros((512, 14, 26), dtype=np.float16))
    assert est["teacher_cache"]["bytes_per_image"] == buf.tell() == 512 * 14 * 26 * 2 + 128


def test_settings_sit_above_a_preset_and_flags_above_all(tmp_path):
    env = {"RELVIZ_HOME": str(tmp_path)}
    plain = TrainConfig.from_settings(load_settings(env=env, cwd=tmp_path), preset="slidr")
    assert (plain.teacher, plain.teacher_pretrained, plain.arch, plain.dataset) == \
        ("ViT-B-16", "openai", "MinkUNet34", TrainConfig().dataset)
    site = load_settings(env={**env, "RELVIZ_DATASET": "/data/nuscenes", "RELVIZ_DEVICE": "cpu",
                              "RELVIZ_TEACHER": "ViT-B-16", "RELVIZ_TEACHER_PRETRAINED": "/w/vit.bin"}, cwd=tmp_path)
    cfg = TrainConfig.from_settings(site, preset="slidr")
    assert (cfg.dataset, cfg.device, cfg.teacher_pretrained) == ("/data/nuscenes", "cpu", "/w/vit.bin")
    assert (cfg.arch, cfg.epochs, cfg.batch, cfg.version) == ("MinkUNet34", 50, 4, "v1.0-trainval")
    over = TrainConfig.from_settings(site, preset="slidr", batch=8, teacher="demo")
    assert (over.batch, over.teacher, over.teacher_pretrained) == (8, "demo", None)
    # a flag naming another teacher does not borrow the preset's weights
    other = TrainConfig.from_settings(load_settings(env=env, cwd=tmp_path), preset="slidr", teacher="ViT-L-14")
    assert (other.teacher, other.teacher_pretrained) == ("ViT-L-14", None)


def test_a_config_file_and_flags_override_the_preset_in_the_cli(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("epochs = 3\nlr = 0.25\n")
    cfg = dry_run(["train", "--preset", "slidr", "--config", str(path), "--set", "pairs=1024", "--lr", "0.125",
                   "--dataset", str(tmp_path / "none")])["config"]
    assert (cfg["epochs"], cfg["pairs"], cfg["lr"], cfg["arch"]) == (3, 1024, 0.125, "MinkUNet34")


@pytest.mark.parametrize("args, expected", [
    (["--preset", "paper"], ["unknown preset 'paper'", "demo", "slidr"]),
    (["--preset", "slidr", "--set", "arch=\"MinkUNet99\""], ["arch", "MinkUNet99"]),
])
def test_bad_presets_are_refused_by_name(args, expected):
    out = CliRunner().invoke(cli_app, ["train", *args, "--dry-run"])
    assert out.exit_code == 2, out.output
    assert all(e in out.output for e in expected), out.output


def test_a_preset_that_sets_the_machines_dataset_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("relviz.train.config.PRESETS_DIR", tmp_path)
    (tmp_path / "mine.toml").write_text('arch = "MinkUNet18"\ndataset = "/data/x"\n')
    with pytest.raises(TrainConfigError, match=r"mine.toml: sets dataset"):
        read_preset("mine")


def test_saved_tensor_bytes_is_what_a_linear_and_relu_keep_for_backward():
    """Linear(a, b) keeps its input [N, a] (its weight is a parameter, excluded), ReLU its output
    [N, b]: 4 bytes x N x (a + b) in float32."""
    n, a, b = 37, 11, 5
    layer = torch.nn.Linear(a, b)
    x = torch.randn(n, a)
    out, nbytes = saved_tensor_bytes(lambda: torch.relu(layer(x)), exclude=tuple(layer.parameters()))
    assert out.shape == (n, b) and nbytes == 4 * n * (a + b)


def test_the_demo_experiment_builds_on_the_demo_preset(tmp_path):
    """relviz demo trains the demo experiment: every run is the demo preset with the schedule the
    experiment file sets, and the preset's values are the runs' values (one place for the setting)."""
    from relviz.config import Settings
    from relviz.demo import DEMO_EXPERIMENT, demo_settings
    from relviz.experiment import Experiment

    # settings that name another dataset and teacher: the demo still trains on its own
    settings = demo_settings(Settings(home=tmp_path, dataset="my-nuscenes", teacher="ViT-B-16",
                                      teacher_pretrained="openai"))
    settings.dataset_root("synthetic-mini").mkdir(parents=True)
    exp = Experiment.from_file(settings, DEMO_EXPERIMENT)
    preset = read_preset("demo")
    assert exp.spec.preset == "demo" and len(exp.plans) == 9
    assert {p.config.loss for p in exp.plans} == {"contrastive", "similarity", "relational"}
    assert sorted({p.seed for p in exp.plans}) == [0, 1, 2]
    for plan in exp.plans:
        config = plan.config.to_dict()
        differing = {k for k in preset if config[k] != preset[k]}
        assert differing == set(exp.spec.train), differing  # only what the experiment file says
        assert (config["teacher"], config["teacher_pretrained"], config["dataset"]) == ("demo", None, "synthetic-mini")
