"""One configuration path: the settings (RELVIZ_* variables, relviz.toml) reach every surface that
trains or evaluates, and a configured CLIP teacher is never silently replaced by random weights."""

import json
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from relviz.cli import app as cli_app
from relviz.config import TeacherSpec, load_settings
from relviz.train.config import TrainConfig

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _cli(args, env=None):
    return CliRunner().invoke(cli_app, args, env=env)


def test_from_settings_precedence(tmp_path):
    s = load_settings(env={"RELVIZ_HOME": str(tmp_path), "RELVIZ_DATASET": "mine", "RELVIZ_DEVICE": "cpu",
                           "RELVIZ_TEACHER": "ViT-B-16", "RELVIZ_TEACHER_PRETRAINED": "/w/vit.bin"}, cwd=tmp_path)
    cfg = TrainConfig.from_settings(s)
    assert (cfg.dataset, cfg.device, cfg.teacher, cfg.teacher_pretrained) == ("mine", "cpu", "ViT-B-16", "/w/vit.bin")
    over = TrainConfig.from_settings(s, dataset="other", epochs=3, lr=None)
    assert (over.dataset, over.epochs, over.lr) == ("other", 3, TrainConfig().lr)
    # a teacher named explicitly does not borrow the weights the settings give another teacher
    demo = TrainConfig.from_settings(s, teacher="demo")
    assert (demo.teacher, demo.teacher_pretrained) == ("demo", None)
    # naming the settings' own teacher keeps its weights
    assert TrainConfig.from_settings(s, teacher="ViT-B-16").teacher_pretrained == "/w/vit.bin"


def test_settings_flow_into_relviz_train(synthetic_root, tmp_path):
    run = ["train", "--max-steps", "1", "--run-dir", str(tmp_path / "run")]
    out = _cli(run, env={"RELVIZ_DATASET": str(tmp_path / "nowhere")})
    assert out.exit_code == 2 and str(tmp_path / "nowhere") in out.output
    if not torch.cuda.is_available():
        out = _cli([*run, "--dataset", str(synthetic_root)], env={"RELVIZ_DEVICE": "cuda"})
        assert out.exit_code == 2 and "no CUDA device" in out.output
    weights = tmp_path / "vit-b-16.bin"
    out = _cli([*run, "--dataset", str(synthetic_root)],
               env={"RELVIZ_TEACHER": "ViT-B-16", "RELVIZ_TEACHER_PRETRAINED": str(weights)})
    assert out.exit_code == 2 and f"{weights} not found" in out.output, out.output


def test_eval_uses_the_configured_teacher_weights(synthetic_root, tmp_path):
    """Before: `relviz eval zeroshot` built ViT-B-16 with random weights whatever the settings said."""
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint

    model = build_minkunet("MinkUNet14", out_channels=512, width=0.125, backend="torch")
    ckpt = save_checkpoint(tmp_path / "s.safetensors", model,
                           {"kind": "student", "architecture": model.config.to_dict()})
    weights = tmp_path / "openai-vit-b-16.bin"
    out = _cli(["eval", "zeroshot", "--checkpoint", str(ckpt), "--dataset", str(synthetic_root)],
               env={"RELVIZ_TEACHER": "ViT-B-16", "RELVIZ_TEACHER_PRETRAINED": str(weights)})
    assert out.exit_code == 2 and f"{weights} not found" in out.output, out.output
    out = _cli(["eval", "zeroshot", "--checkpoint", str(ckpt), "--dataset", str(synthetic_root)],
               env={"RELVIZ_TEACHER": "ViT-B-16"})
    assert out.exit_code == 2 and "has no weights" in out.output, out.output


def test_jobs_page_passes_the_teacher_weights(app_workspace, monkeypatch, tmp_path):
    """Before: the Jobs page passed the teacher's name but not its weights (random ViT-B-16)."""
    weights = tmp_path / "vit-b-16.bin"
    monkeypatch.setenv("RELVIZ_TEACHER", "ViT-B-16")
    monkeypatch.setenv("RELVIZ_TEACHER_PRETRAINED", str(weights))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/jobs.py")
    at.run()
    assert at.number_input(key="job_epochs").value == TrainConfig().epochs  # widget defaults: TrainConfig's
    at.number_input(key="job_max_steps").set_value(1)
    at.button[0].click().run()
    assert not at.exception, at.exception
    from relviz.jobs import JobStore

    store = JobStore(load_settings())
    job = store.list()[0]
    cfg = json.loads((job.run_dir / "config.json").read_text())
    assert (cfg["teacher"], cfg["teacher_pretrained"]) == ("ViT-B-16", str(weights))
    deadline = time.time() + 120
    while time.time() < deadline and store.get(job.id).status == "running":
        time.sleep(0.5)
    done = store.get(job.id)
    assert done.status == "failed" and f"{weights} not found" in (done.error + store.log_tail(done)), done.error


def test_a_config_file_is_not_overridden_by_unset_flags(tmp_path):
    from relviz.cli.train import train_config as _train_config

    path = tmp_path / "run.toml"
    path.write_text('loss = "contrastive"\nepochs = 3\n')
    cfg = _train_config(str(path), ["lr=0.2"], loss=None, epochs=None, lr=None, dataset=None)
    assert (cfg.loss, cfg.epochs, cfg.lr) == ("contrastive", 3, 0.2)
    assert _train_config(str(path), None, loss="similarity", epochs=None).loss == "similarity"  # a given flag wins
    # a teacher flag does not borrow the weights the file gives another teacher
    path.write_text('teacher = "ViT-B-16"\nteacher_pretrained = "openai"\n')
    assert _train_config(str(path), None, teacher="demo").teacher_spec == TeacherSpec("demo", None)
    assert _train_config(str(path), None).teacher_spec == TeacherSpec("ViT-B-16", "openai")
