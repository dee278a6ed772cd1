"""Faults from outside: a job database held by another writer or damaged, cache files cut short
mid-write, and the app server killed (kill -9) while a background job runs."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from support import TINY, wait_for
from relviz.config import load_settings
from relviz.eval.selection import EvalSet
from relviz.jobs import JobError, JobStore
from relviz.train.config import TrainConfig, from_dict

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


_wait = wait_for


def _gone(pid: int, start: float | None = None) -> bool:
    """The process (started at ``start``, when given) has exited: reaped, or a zombie nobody reaped yet."""
    try:
        p = psutil.Process(pid)
        return p.status() == psutil.STATUS_ZOMBIE or (start is not None and abs(p.create_time() - start) > 1)
    except psutil.NoSuchProcess:
        return True


# ------------------------------------------------------------------------------- the job database
@pytest.fixture
def sleeper_jobs(monkeypatch, tmp_path):
    """JobStore whose jobs run ``sleep`` instead of training (the database is what is under test);
    every process group they started is ended afterwards."""
    monkeypatch.setattr(JobStore, "_command", lambda self, *args, **kwargs: [
        sys.executable, "-c", "import time; time.sleep(120)"])
    dataset = tmp_path / "dataset"  # submit only checks that the folder exists; nothing reads it
    dataset.mkdir()
    cfg = TrainConfig(**{**TINY, "dataset": str(dataset)})
    started: list[int] = []
    yield cfg, started
    for pgid in started:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _lock(db: Path) -> sqlite3.Connection:
    """Another writer: a connection of its own holding ``BEGIN EXCLUSIVE`` until it is closed."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


def _rows(db: Path) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        return con.execute("SELECT id, status, pid FROM jobs ORDER BY id").fetchall()


def test_a_locked_job_database_is_reported_and_loses_nothing(sleeper_jobs, workspace_home):
    cfg, started = sleeper_jobs
    store = JobStore(load_settings(), timeout_s=0.3)
    jobs = [store.submit(cfg, name=f"job-{i}") for i in range(3)]
    started += [j.pgid for j in jobs]
    assert [j.status for j in jobs] == ["running"] * 3
    store.cancel(jobs[2].id, grace_s=5)  # one terminal row too
    before = _rows(store.db_path)
    runs_before = sorted(p.name for p in store.settings.runs_dir.iterdir())
    locked = f"job database {re.escape(str(store.db_path))} is locked.*more than 0.3 s.*nothing was changed"

    other = _lock(store.db_path)
    try:
        t = time.perf_counter()
        with pytest.raises(JobError, match=locked):
            store.submit(cfg, name="while-locked")
        assert time.perf_counter() - t < 5  # it waited for the store's timeout, not forever
        with pytest.raises(JobError, match=locked):
            store.cancel(jobs[0].id, grace_s=5)
        assert not _gone(jobs[0].pid)  # refused before the job was touched: it still runs
        with pytest.raises(JobError, match=locked):
            store.resume(jobs[2].id)
        # readers are not blocked by a writer (WAL): a list that has nothing to record answers
        assert sorted((j.id, j.status) for j in store.list()) == [(i, status) for i, status, _ in before]
        # a list that must record a change (this job's process died) cannot, and says so
        os.killpg(jobs[1].pgid, signal.SIGKILL)
        _wait(lambda: _gone(jobs[1].pid), what="the killed job to exit")
        with pytest.raises(JobError, match=locked):
            store.list()
        with pytest.raises(JobError, match=locked):
            JobStore(load_settings(), timeout_s=0.3).get(jobs[1].id)
    finally:
        other.close()  # the other writer lets go (its transaction is rolled back)

    # nothing was lost or half-recorded: the same rows, no folder or process for the refused submit
    assert _rows(store.db_path) == before
    assert sorted(p.name for p in store.settings.runs_dir.iterdir()) == runs_before
    listed = {j.id: j.status for j in store.list()}
    assert listed == {jobs[0].id: "running", jobs[1].id: "lost", jobs[2].id: "cancelled"}
    retried = store.submit(cfg, name="while-locked")  # the retry works
    started.append(retried.pgid)
    assert retried.status == "running" and len(store.list()) == 4
    assert store.cancel(jobs[0].id, grace_s=5).status == "cancelled"


def test_a_cancelled_job_is_no_zombie_of_the_process_that_launched_it(sleeper_jobs, workspace_home):
    """The app makes a JobStore per rerun: the one that cancels (or sees the job end) is not the one
    that launched it, and the ended child must still be reaped, not left <defunct> under the server."""
    cfg, started = sleeper_jobs
    launched = JobStore(load_settings()).submit(cfg, name="to-cancel")
    ends_alone = JobStore(load_settings()).submit(cfg, name="ends-alone")
    started += [launched.pgid, ends_alone.pgid]
    assert JobStore(load_settings()).cancel(launched.id, grace_s=5).status == "cancelled"
    os.killpg(ends_alone.pgid, signal.SIGKILL)  # a job that ends without anyone cancelling it
    for job in (launched, ends_alone):
        # reaped: gone from the process table (a zombie stays there, with status "zombie", until reaped)
        wait_for(lambda: not psutil.pid_exists(job.pid), timeout=10, what=f"{job.name}'s process to be reaped")
        with pytest.raises(ChildProcessError):
            os.waitpid(job.pid, os.WNOHANG)  # nothing left for this process to reap


def test_the_cli_reports_a_locked_database_in_one_line(sleeper_jobs, workspace_home):
    cfg, started = sleeper_jobs
    store = JobStore(load_settings())
    job = store.submit(cfg)
    started.append(job.pgid)
    os.killpg(job.pgid, signal.SIGKILL)  # the next list must record it as lost: a write
    _wait(lambda: _gone(job.pid), what="the killed job to exit")
    code = ("import sys, relviz.jobs.store as s; s.BUSY_TIMEOUT_S = 0.3; from relviz.cli import main; "
            "sys.argv = ['relviz', 'jobs', 'list']; main()")
    other = _lock(store.db_path)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "RELVIZ_HOME": workspace_home})
    finally:
        other.close()
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(store.db_path) in lines[0] and "locked" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert store.get(job.id).status == "lost"  # and it is recorded once the database is free


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a_damaged_job_database_is_reported_and_left_as_it_is(sleeper_jobs, damage):
    cfg, started = sleeper_jobs
    store = JobStore(load_settings())
    for _ in range(2):
        job = store.submit(cfg)
        started.append(job.pgid)
        store.cancel(job.id, grace_s=5)
    db = store.db_path
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0  # all of it is in the file
    whole = db.read_bytes()
    damaged = np.random.default_rng(0).bytes(len(whole)) if damage == "random bytes" else whole[: len(whole) // 2]
    db.write_bytes(damaged)
    what = f"job database {re.escape(str(db))} is damaged.*left as it is.*Move it aside " + \
        re.escape(f"(mv {db} {db}.damaged)")
    with pytest.raises(JobError, match=what):
        JobStore(load_settings())
    with pytest.raises(JobError, match=what):
        store.list()
    with pytest.raises(JobError, match=what):
        store.submit(cfg)
    assert db.read_bytes() == damaged  # not repaired, replaced or emptied behind the user's back
    assert len(list(store.settings.runs_dir.iterdir())) == 2  # the refused submit made no run folder
    # what the message says to do works: moved aside, a new database starts empty; the old file is kept
    db.rename(f"{db}.damaged")
    assert JobStore(load_settings()).list() == []
    assert Path(f"{db}.damaged").read_bytes() == damaged


# ---------------------------------------------------------------------------- caches cut short
def _cut(path: Path) -> bytes:
    """Truncate ``path`` to half its size (a write that stopped midway); returns the whole content."""
    whole = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(len(whole) // 2)
    return whole


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*.tmp")], "a temporary file was left behind"


@pytest.fixture(scope="module")
def teacher():
    from relviz.teacher import load_teacher

    return load_teacher()  # the default settings' teacher


def test_a_truncated_teacher_feature_cache_file_is_recomputed(synthetic_root, teacher, tmp_path):
    from relviz import workspace
    from relviz.data.dataset import collate
    from relviz.eval.features import camera_images
    from relviz.teacher import cached_class_embeddings
    from relviz.teacher.cache import FeatureCache

    ds = workspace.open_val_dataset(load_settings(), synthetic_root)
    tokens = collate([ds[0]])["camera_tokens"][:2]
    cache = FeatureCache(tmp_path, teacher.identity)
    calls = []

    def images(idx):
        calls.append(list(idx))
        return camera_images(ds, [tokens[i] for i in idx])

    first = cache.features(teacher, tokens, images)
    path = cache.path(tokens[1])
    whole = _cut(path)
    again = cache.features(teacher, tokens, images)  # reads the damaged file: a miss, not an error
    assert calls == [[0, 1], [1]]  # only the damaged entry was computed again
    fresh = teacher.image_features(camera_images(ds, [tokens[1]]))[0].half().float()  # computed directly
    torch.testing.assert_close(again[1], fresh, rtol=0, atol=0)
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)
    assert path.stat().st_size == len(whole)  # rewritten whole, and it reads back
    torch.testing.assert_close(torch.from_numpy(np.load(path)).float(), fresh, rtol=0, atol=0)
    assert cache.get(tokens[1]) is not None
    _no_temporaries(tmp_path)

    # the class embeddings are stored the same way
    text = cached_class_embeddings(tmp_path, teacher.identity, lambda: teacher)
    [text_file] = cache.dir.glob("text-classes-*.npy")
    whole = _cut(text_file)
    recomputed = cached_class_embeddings(tmp_path, teacher.identity, lambda: teacher)
    torch.testing.assert_close(recomputed, teacher.class_embeddings(), rtol=0, atol=0)
    torch.testing.assert_close(recomputed, text, rtol=0, atol=0)
    assert text_file.stat().st_size == len(whole)


def test_truncated_validation_feature_and_metric_caches_are_recomputed(synthetic_root, teacher):
    from safetensors.torch import load_file

    from relviz import workspace

    s = load_settings()
    assert (s.teacher, s.teacher_pretrained) == ("demo", None)
    loads = []

    def teacher_fn():
        loads.append(1)
        return teacher

    first = workspace.val_features(s, synthetic_root, None, EvalSet(1, 1), teacher_fn)
    metrics = workspace.structure(s, synthetic_root, None, EvalSet(1, 1), 50, 0, teacher_fn)
    [features_file] = (s.cache_dir / "valfeatures").rglob("*.safetensors")
    [metrics_file] = (s.cache_dir / "valfeatures").rglob("*-metrics-*.json")
    loads.clear()

    whole = _cut(features_file)
    again = workspace.val_features(s, synthetic_root, None, EvalSet(1, 1), teacher_fn)
    assert loads == [1]  # computed again, not an error
    from relviz.eval.features import VAL_KEYS

    for key in VAL_KEYS:
        torch.testing.assert_close(again[key], first[key], rtol=0, atol=0)
    assert features_file.stat().st_size == len(whole) and set(load_file(features_file)) == set(VAL_KEYS)

    _cut(metrics_file)
    assert workspace.structure(s, synthetic_root, None, EvalSet(1, 1), 50, 0, teacher_fn) == metrics
    assert json.loads(metrics_file.read_text()).keys() == metrics.keys()  # rewritten whole
    _no_temporaries(s.cache_dir)


def test_a_truncated_point_feature_cache_file_is_recomputed(synthetic_root, tmp_path):
    from relviz import workspace
    from relviz.data.dataset import collate
    from relviz.eval.features import point_features_cached, student_voxel_features
    from relviz.models import build_minkunet

    model = build_minkunet("MinkUNet14", out_channels=16, width=0.125, backend="torch").eval()
    ds = workspace.open_val_dataset(load_settings(), synthetic_root)
    first = np.array(point_features_cached(model, "ckpt-key", ds, 0, tmp_path))
    [path] = (tmp_path / "student" / "ckpt-key").glob("*.npy")
    whole = _cut(path)
    again = np.array(point_features_cached(model, "ckpt-key", ds, 0, tmp_path))
    batch = collate([ds[0]])
    with torch.inference_mode():
        fresh = student_voxel_features(model, batch)[batch["inverse"]].half().numpy()
    assert again.dtype == np.float16 and np.array_equal(again, fresh) and np.array_equal(again, first)
    assert path.stat().st_size == len(whole) and np.array_equal(np.load(path), fresh)
    _no_temporaries(tmp_path)


# ------------------------------------------------------------------- kill -9 of the app server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok"
    except OSError:
        return False


# The server as `relviz app` runs it (relviz.serve.run), which also launches the job itself once it
# serves, as its Jobs page does: the job is the server's child, so killing the server is the fault.
SERVER_THAT_LAUNCHES = """
import json, sys, threading, time, urllib.request
from pathlib import Path

port, config, job_file = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])


def launch():
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.2)
    from relviz.config import load_settings
    from relviz.jobs import JobStore
    from relviz.train.config import from_dict

    job = JobStore(load_settings()).submit(from_dict(json.loads(Path(config).read_text())))
    job_file.write_text(job.id)


threading.Thread(target=launch, daemon=True).start()
from relviz.serve import run

run("127.0.0.1", port)
"""


def test_a_job_outlives_kill_9_of_the_app_server(synthetic_root, workspace_home, tmp_path):
    from streamlit.testing.v1 import AppTest

    from relviz.train import read_events

    env = {**os.environ, "RELVIZ_HOME": workspace_home}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(from_dict({**TINY, "dataset": str(synthetic_root), "split": "mini_val",
                                            "max_steps": 2}).to_dict()))
    job_file = tmp_path / "job-id"
    port = _free_port()
    # its own session, like a server started from a terminal: kill -9 reaches its whole process group
    server = subprocess.Popen([sys.executable, "-c", SERVER_THAT_LAUNCHES, str(port), str(config), str(job_file)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        _wait(lambda: job_file.is_file() and job_file.read_text(), timeout=180, what="the server to launch the job")
        assert _healthy(port)
        job_id = job_file.read_text()
        store = JobStore(load_settings())
        job = store.get(job_id)
        assert job.status == "running" and psutil.Process(job.pid).ppid() == server.pid
        assert os.getpgid(job.pid) == job.pid != os.getpgid(server.pid)
        _wait(lambda: read_events(job.events_path)[0], timeout=120, what="the trainer's first event")

        os.killpg(server.pid, signal.SIGKILL)
        assert server.wait(timeout=30) == -signal.SIGKILL
        assert not _healthy(port)
        assert not _gone(job.pid, job.proc_start), "the job died with the server"
        assert store.get(job_id).status == "running"
        _wait(lambda: _gone(job.pid, job.proc_start), timeout=300, what="the job to finish")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    events, _ = read_events(job.events_path)
    assert events[-1]["event"] == "done", store.log_tail(job)

    # Nobody has read the job since it ended. The app started again (its Jobs page in a new session)
    # is the first to see it: as succeeded, complete, without an error.
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/jobs.py")
    at.run()
    assert not at.exception, at.exception
    row = at.dataframe[0].value.set_index("id").loc[job_id]
    assert (row["status"], row["progress"], row["step"], row["error"]) == ("succeeded", 1.0, "2/2", "")
    assert {m.label: m.value for m in at.metric}["status"] == "succeeded"

    # and a fresh process reads the same from the store
    code = (f"from relviz.config import load_settings; from relviz.jobs import JobStore; "
            f"j = JobStore(load_settings()).get({job_id!r}); "
            "print(j.status, j.last_step, j.total_steps, j.checkpoint.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.split() == ["succeeded", "2", "2", "student.safetensors"], out.stderr
