"""An app left alone runs nothing (issue #31: "Home goes idle when nothing changes"): a page asks the
browser to rerun it periodically (Streamlit's ``auto_rerun`` message, sent when a fragment with
``run_every`` is drawn) only while something it shows can change by itself, a job that is queued or
running. Observed at the protocol: the messages the app sends, not the pages' code."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _record_auto_reruns(monkeypatch) -> list[float]:
    """The interval of every ``auto_rerun`` message the app sends from now on."""
    from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

    sent: list[float] = []
    enqueue = ForwardMsgQueue.enqueue

    def recording(self, msg):
        if msg.WhichOneof("type") == "auto_rerun":
            sent.append(msg.auto_rerun.interval)
        return enqueue(self, msg)

    monkeypatch.setattr(ForwardMsgQueue, "enqueue", recording)
    return sent


def _running_job(home: Path, tmp_path: Path) -> subprocess.Popen:
    """A job recorded as the job store records a running one, whose process is alive (it sleeps)."""
    from relviz.config import load_settings
    from relviz.jobs import JobStore

    store = JobStore(load_settings())
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with store._connect() as con:
        con.execute("INSERT INTO jobs (id, name, status, config_json, run_dir, pid, pgid, proc_start, nproc, "
                    "created_at, started_at) VALUES ('sleeper', 'sleeper', 'running', '{}', ?, ?, ?, ?, 1, ?, ?)",
                    (str(run_dir), proc.pid, proc.pid, psutil.Process(proc.pid).create_time(), time.time(), time.time()))
    return proc


def test_pages_ask_for_periodic_reruns_only_while_a_job_runs(app_workspace, tmp_path, monkeypatch):
    sent = _record_auto_reruns(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=120).run()  # Home
    assert not at.exception, at.exception
    for page in ("app_pages/jobs.py", "app_pages/fewshot.py", "app_pages/structure.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not sent, f"{page} asks to be rerun every {sent} s with nothing running"

    proc = _running_job(app_workspace, tmp_path)
    try:
        at.switch_page("app_pages/jobs.py").run()
        assert not at.exception, at.exception
        assert "running" in [m.value for m in at.metric]
        assert sent == [2.0, 2.0], sent  # the jobs table and the running job's view follow it
        sent.clear()
        at.switch_page("app_pages/fewshot.py").run()
        assert not sent, sent  # a training job: not the curves' business
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    at.switch_page("app_pages/jobs.py").run()  # the job ended (lost: no final event): nothing to follow
    assert not at.exception, at.exception
    assert "lost" in [m.value for m in at.metric]
    assert not sent, sent
