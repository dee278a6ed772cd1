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
