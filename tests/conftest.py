"""Shared fixtures: every test runs against its own temporary workspace, seeded."""

import fcntl
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Fault campaigns (``@pytest.mark.campaign``, minutes each) run only when ``-m`` names them: not in
    ``make test``, nor under another ``-m`` such as ``-m 'not slow'``."""
    if "campaign" in (config.option.markexpr or ""):
        return
    campaigns = [item for item in items if item.get_closest_marker("campaign")]
    if campaigns:
        config.hook.pytest_deselected(items=campaigns)
        items[:] = [item for item in items if not item.get_closest_marker("campaign")]


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


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once for the whole run. Under pytest-xdist every worker is a session of its
    own: the first to get the lock builds in the folder the workers' temporary directories share, the
    others wait and reuse it (the app caches hold the dataset's path in their keys, so both workers
    must also share one dataset)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    target, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(target, ignore_errors=True)  # a build cut short by a worker that died
            target.mkdir()
            build(target)
            done.write_text("built\n")
    return target


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic nuScenes v1.0-mini dataset (10 scenes x 2 keyframes, 400x225 images), built once."""
    from relviz.data.synthetic import SynthConfig, generate

    config = SynthConfig(seed=0, samples_per_scene=2, image_size=(400, 225))
    return _built_once(tmp_path_factory, "synthetic",
                       lambda folder: generate(folder / "synthetic-mini", config, workers=2)) / "synthetic-mini"


@pytest.fixture(scope="session")
def nusc(synthetic_root):
    from relviz.data.nuscenes import open_nuscenes

    return open_nuscenes(synthetic_root, "v1.0-mini")


def _app_home(home, synthetic_root, students: bool = True):
    """``home`` as a workspace with the small synthetic dataset and (``students``) two random
    students in runs/."""
    from pathlib import Path

    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint
    from relviz.teacher.demo import load_demo_teacher

    home = Path(home)
    (home / "datasets").mkdir(exist_ok=True)
    os.symlink(synthetic_root, home / "datasets" / "synthetic-mini")
    dim = load_demo_teacher().dim
    for i, loss in enumerate(("relational", "contrastive") if students else ()):
        torch.manual_seed(i)
        model = build_minkunet("MinkUNet14", out_channels=dim, width=0.125, backend="torch")
        save_checkpoint(home / "runs" / f"test-{loss}" / "student.safetensors", model,
                        {"kind": "student", "architecture": model.config.to_dict(), "loss": loss})
    return home


@pytest.fixture(scope="session")
def warm_cache_template(tmp_path_factory, synthetic_root):
    """The disk caches `relviz warm` leaves for the small dataset, computed once per session: the
    dataset index, class embeddings, the teacher's and the committed demo students' validation
    features and metrics, and the default toy run. Their keys hold the dataset's resolved path and
    the checkpoint's path, so they are valid in every test's workspace for the committed students
    (each test's random students have their own paths, hence their own keys: computed by the test)."""
    from relviz.config import load_settings
    from relviz.workspace import warm_caches

    def build(home: Path) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RELVIZ_HOME", str(home))
            _app_home(home, synthetic_root, students=False)  # their caches could serve no test (keys hold paths)
            settings = load_settings()
            warm_caches(settings, settings.dataset_root("synthetic-mini"), log=lambda *_: None)

    return _built_once(tmp_path_factory, "warm-template", build) / "cache"


@pytest.fixture
def cold_app_workspace(workspace_home, synthetic_root):
    """A workspace with the small synthetic dataset and two random students in runs/, nothing cached."""
    return _app_home(workspace_home, synthetic_root)


@pytest.fixture
def app_workspace(cold_app_workspace, warm_cache_template):
    """:func:`cold_app_workspace` with the caches of :func:`warm_cache_template` copied in (copies, not
    links: some tests damage cache files on purpose)."""
    shutil.copytree(warm_cache_template, cold_app_workspace / "cache", dirs_exist_ok=True)
    return cold_app_workspace


@pytest.fixture
def one_thread():
    """One torch thread, as a background job runs (its JobPriority): a reference computation in the test
    process then runs alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
