"""Shared fixtures: every test runs against its own temporary workspace, seeded."""

import os
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("workspace")
    monkeypatch.setenv("RELVIZ_HOME", str(home))
    for key in ("RELVIZ_CONFIG", "RELVIZ_DEVICE", "RELVIZ_SPARSE_BACKEND", "RELVIZ_DATASET", "RELVIZ_TEACHER"):
        monkeypatch.delenv(key, raising=False)
    yield home


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def workspace_home() -> str:
    return os.environ["RELVIZ_HOME"]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic nuScenes v1.0-mini dataset (10 scenes x 2 keyframes, 400x225 images), built once."""
    from relviz.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("synthetic") / "synthetic-mini"
    return generate(root, SynthConfig(seed=0, samples_per_scene=2, image_size=(400, 225)), workers=2)


@pytest.fixture(scope="session")
def nusc(synthetic_root):
    from relviz.data.nuscenes import open_nuscenes

    return open_nuscenes(synthetic_root, "v1.0-mini")


@pytest.fixture
def app_workspace(workspace_home, synthetic_root):
    """A workspace with the small synthetic dataset and two random students in runs/."""
    from pathlib import Path

    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint

    home = Path(workspace_home)
    (home / "datasets").mkdir(exist_ok=True)
    os.symlink(synthetic_root, home / "datasets" / "synthetic-mini")
    from relviz.teacher.demo import load_demo_teacher

    dim = load_demo_teacher().dim
    for i, loss in enumerate(("relational", "contrastive")):
        torch.manual_seed(i)
        model = build_minkunet("MinkUNet14", out_channels=dim, width=0.125, backend="torch")
        save_checkpoint(home / "runs" / f"test-{loss}" / "student.safetensors", model,
                        {"kind": "student", "architecture": model.config.to_dict(), "loss": loss})
    return home


