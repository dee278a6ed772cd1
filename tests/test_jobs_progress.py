"""A job's phase, count and estimate from its events; its priority (niceness, threads) in the
launched process; its validation curve; and what the Jobs page shows of them."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from support import TINY, trace_values, wait_for
from relviz.config import load_settings
from relviz.jobs import (JobStore, available_cores, choose_priority, job_progress, loss_curve,
                         read_validation_curve)
from relviz.train import EventLog, TrainConfig, from_dict, read_events

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _events() -> list[dict]:
    """One launch: prepare 0 -> 12 of 384 images in 3 s, train, validate twice, finish."""
    return [
        {"ts": 1.0, "event": "priority", "niceness": 10, "threads": 1, "cores": 2, "pid": 7},
        {"ts": 2.0, "event": "phase", "phase": "prepare"},
        {"ts": 10.0, "event": "prepare", "done": 0, "total": 384},
        {"ts": 11.0, "event": "heartbeat"},
        {"ts": 13.0, "event": "prepare", "done": 12, "total": 384},
        {"ts": 20.0, "event": "start", "step": 0, "total_steps": 400},
        {"ts": 100.0, "event": "step", "step": 40, "loss": 2.0, "it_s": 0.5, "eta_s": 720.0, "total_steps": 400},
        {"ts": 101.0, "event": "phase", "phase": "validate", "step": 40},
        {"ts": 111.0, "event": "val", "step": 40, "uniformity": 1.5, "tolerance": 0.6, "gap": 0.3,
         "zeroshot_miou": 0.1},
        {"ts": 112.0, "event": "checkpoint", "step": 40},
        {"ts": 200.0, "event": "step", "step": 80, "loss": 1.5, "it_s": 0.5, "eta_s": 640.0, "total_steps": 400},
        {"ts": 201.0, "event": "phase", "phase": "validate", "step": 80},
        {"ts": 221.0, "event": "val", "step": 80, "uniformity": 1.4, "tolerance": 0.65, "gap": 0.25,
         "zeroshot_miou": 0.2},
        {"ts": 900.0, "event": "phase", "phase": "finalize", "step": 400},
        {"ts": 910.0, "event": "app_cache", "seconds": 10.0},
        {"ts": 911.0, "event": "done", "step": 400},
    ]


def _upto(ts: float) -> list[dict]:
    return [e for e in _events() if e["ts"] <= ts]


def test_phase_count_and_estimate_from_a_fixed_event_list():
    assert job_progress([], "queued", now=0.5).phase == "queued"
    assert job_progress([], "running", now=0.5).label == "starting the process"
    started = job_progress(_upto(1.0), "running", now=1.5)
    assert (started.phase, started.niceness, started.threads, started.cores) == ("starting", 10, 1, 2)
    assert job_progress(_upto(2.0), "running", now=5.0).label == "loading the teacher and the dataset"
    # preparing: 12 images in the 3 s since the first prepare event -> 4 images/s; 372 left, 2 s after the last event
    p = job_progress(_upto(13.0), "running", now=15.0)
    assert (p.phase, p.done, p.total, p.label) == ("preparing", 12, 384, "preparing teacher features 12/384")
    assert p.eta_s == pytest.approx((384 - 12) / (12 / 3.0) - 2.0)
    assert job_progress(_upto(11.0), "running", now=11.0).eta_s is None  # no rate yet: no estimate
    # training: the trainer's own estimate at the last step event, less the time since it
    t = job_progress(_upto(100.0), "running", now=105.0)
    assert (t.phase, t.label, t.fraction) == ("training", "training step 40/400", 40 / 400)
    assert t.eta_s == pytest.approx(720.0 - 5.0)
    assert job_progress(_upto(20.0), "running", now=21.0).eta_s is None
    # evaluating: the first has no earlier one to go by; the second expects as long as the first (10 s)
    first = job_progress(_upto(101.0), "running", now=103.0)
    assert (first.phase, first.done, first.eta_s) == ("evaluating", 40, None)
    second = job_progress(_upto(201.0), "running", now=204.0)
    assert (second.phase, second.eta_s) == ("evaluating", pytest.approx((111.0 - 101.0) - 3.0))
    assert job_progress(_upto(221.0), "running", now=222.0).phase == "training"  # back after the val event
    assert job_progress(_upto(910.0), "running", now=912.0).phase == "saving"  # app_cache is inside it
    # ended: the status decides, nothing has an estimate
    done = job_progress(_events(), "succeeded", now=1000.0)
    assert (done.phase, done.eta_s, done.fraction, done.label) == ("finished", None, 1.0, "finished (step 400/400)")
    lost = job_progress(_upto(100.0), "lost", now=105.0)
    assert (lost.phase, lost.eta_s, lost.label) == ("lost", None, "lost (step 40/400)")
    assert job_progress(_upto(13.0), "cancelled", now=20.0).text() == "cancelled (step 0/?)"
    assert json.loads(json.dumps(done.to_dict()))["label"] == done.label


def test_validation_curve_equals_the_events_values(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    written = {}  # step -> values, the last write of a step wins (a resumed run validates a step again)
    for step, u in [(10, 1.1), (20, 1.2), (30, 1.3), (20, 1.25), (40, 1.4)]:
        values = {"uniformity": u, "tolerance": u / 3, "gap": 1 / u, "zeroshot_miou": u / 10}
        log.write("val", step=step, **values, sample_size=99)
        log.write("step", step=step, loss=u * 2, eta_s=1.0)
        written[step] = values
    curve = read_validation_curve(tmp_path)
    assert curve["step"].tolist() == sorted(written)
    for _, row in curve.iterrows():  # the events' floats round-trip through JSON exactly
        assert {k: row[k] for k in written[row["step"]]} == written[row["step"]]
    losses = loss_curve(read_events(tmp_path / "events.jsonl")[0])
    assert dict(zip(losses["step"], losses["loss"])) == {s: v["uniformity"] * 2 for s, v in written.items()}


def test_thread_rule_keeps_cores_for_the_app():
    for cores in range(1, 65):
        kept = max(1, cores // 8)
        for nproc in (1, 2, 3, 4):
            # the largest thread count that fits the cores left to the job, at least one per process
            fits = [t for t in range(1, cores + 1) if t * nproc <= cores - kept]
            assert choose_priority(nproc, cores).threads == (max(fits) if fits else 1), (cores, nproc)


@pytest.fixture
def sleeping_job(monkeypatch, tmp_path, workspace_home):
    """A job whose process sleeps (its events are written by the test), ended afterwards."""
    monkeypatch.setattr(JobStore, "_command", lambda self, *a, **k: [sys.executable, "-c", "import time; time.sleep(60)"])
    (tmp_path / "data").mkdir()
    store = JobStore(load_settings())
    job = store.submit(TrainConfig(**{**TINY, "dataset": str(tmp_path / "data")}), name="by-hand")
    yield store, job
    try:
        os.killpg(job.pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_jobs_page_shows_the_phase_priority_and_validation_curves(sleeping_job):
    store, job = sleeping_job
    now = time.time()  # 120 images in the last 9 s: an estimate of about 264 / (120 / 9) - 1 = 19 s
    events = [dict(ts=now - 12, event="priority", niceness=10, threads=1, cores=2, pid=job.pid),
              dict(ts=now - 11, event="phase", phase="prepare"), dict(ts=now - 10, event="prepare", done=0, total=384),
              dict(ts=now - 1, event="prepare", done=120, total=384)]
    job.events_path.write_text("".join(json.dumps(e) + "\n" for e in events))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/jobs.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[job.id, "phase"].startswith("preparing teacher features 120/384")
    bar = at.get("progress")[0]
    assert bar.text.startswith("preparing teacher features 120/384 · about") and bar.value == int(100 * 120 / 384)
    assert any("niceness 10 with 1 torch thread(s) per process on 2 cores" in c.value for c in at.caption)
    # then it trains and validates: the curves on the page are the events' values
    values = {2: {"uniformity": 1.5, "tolerance": 0.61, "gap": 0.3, "zeroshot_miou": 0.12},
              4: {"uniformity": 1.4, "tolerance": 0.65, "gap": 0.25, "zeroshot_miou": 0.2}}
    log = EventLog(job.events_path)
    log.write("start", step=0, total_steps=4)
    for step, v in values.items():
        log.write("step", step=step, loss=3.0 / step, it_s=1.0, eta_s=4.0 - step, total_steps=4)
        log.write("val", step=step, **v)
    at.run()
    assert at.get("progress")[0].text.startswith("training step 4/4")
    figure = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "uniformity" in c.proto.spec.lower())
    for key, trace in zip(("uniformity", "tolerance", "gap", "zeroshot_miou"), figure["data"]):
        assert (trace_values(trace["x"]), trace_values(trace["y"])) == (list(values), [values[s][key] for s in values]), key
    store.cancel(job.id, grace_s=5)  # the sleeper dies of SIGTERM without a final event
    at.run()
    assert at.dataframe[0].value.set_index("id").loc[job.id, "phase"] == "cancelled (step 4/4)"
    assert "left" not in at.get("progress")[0].text  # an ended job has no estimate


def test_launched_job_runs_at_the_recorded_niceness_and_threads(synthetic_root, workspace_home):
    store = JobStore(load_settings())
    job = store.submit(from_dict({**TINY, "dataset": str(synthetic_root), "max_steps": 500}))
    try:
        recorded = wait_for(lambda: next((e for e in read_events(job.events_path)[0] if e["event"] == "priority"),
                                         None), timeout=120, every=0.1, what="the priority event")
        expected = choose_priority(1, available_cores())
        assert os.getpriority(os.PRIO_PROCESS, job.pid) == recorded["niceness"] == expected.niceness == 10
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{job.pid}/environ").read_text().split("\0") if "=" in item)
        assert environ["OMP_NUM_THREADS"] == str(recorded["threads"]) == str(expected.threads)
        assert (recorded["pid"], recorded["cores"]) == (job.pid, available_cores())
        group, enabled = Path(f"/proc/{job.pid}/autogroup"), Path("/proc/sys/kernel/sched_autogroup_enabled")
        if enabled.is_file() and enabled.read_text().strip() == "1":  # the job's session is nicer, not only its process
            assert int(group.read_text().split("nice")[1]) == recorded["autogroup_niceness"] == 10
            # empty for a process in the root task group (a session no setsid made, as under some CI
            # runners): then it shares no autogroup with the job by construction
            ours = Path("/proc/self/autogroup").read_text().split()
            assert not ours or group.read_text().split()[0] != ours[0]
        progress = store.progress_of(store.get(job.id))
        assert (progress.niceness, progress.threads) == (10, expected.threads)
    finally:
        os.killpg(job.pgid, signal.SIGKILL)  # what is under test is done: no graceful cancel to wait for


def test_the_autogroup_niceness_is_raised_never_lowered(tmp_path, monkeypatch):
    """The autogroup file as Linux shows it: raised to the job's niceness; a group already nicer keeps
    its value; no file (no autogroups) is None."""
    from relviz.jobs.priority import renice_autogroup

    group, enabled = tmp_path / "autogroup", tmp_path / "sched_autogroup_enabled"
    group.write_text("/autogroup-17 nice 0\n")
    enabled.write_text("1\n")
    written, original_write = [], Path.write_text

    def write_like_the_kernel(self, text, *args, **kwargs):  # reads then give the formatted line
        written.append(text)
        return original_write(self, f"/autogroup-17 nice {int(text)}\n")

    monkeypatch.setattr(Path, "write_text", write_like_the_kernel)
    assert renice_autogroup(10, group, enabled) == 10 and written == ["10"]
    assert renice_autogroup(5, group, enabled) == 10 and written == ["10"]  # never lowered
    assert renice_autogroup(10, tmp_path / "absent", enabled) is None
    monkeypatch.setattr(Path, "write_text", original_write)
    enabled.write_text("0\n")  # autogroup scheduling off: the group's niceness orders nothing
    assert renice_autogroup(15, group, enabled) is None and written == ["10"]
