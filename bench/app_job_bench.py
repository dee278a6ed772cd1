"""Is the app still interactive while a job trains? The time of a page update (a rerun of the page in
one AppTest session, Streamlit and disk caches warm) of the Structure and Jobs pages: idle, then with
a demo training job running (the demo student's config, launched through JobStore) before the job
priority rule (niceness 0, torch's default threads: ``relviz.jobs.UNMANAGED``) and after it
(``relviz.jobs.choose_priority``). The median of ``--runs`` updates per page; each job is measured
once it trains (past the teacher-cache preparation), and its own speed in that window is reported
too (what the lower priority costs it).

The workspace's datasets, cache and settings are used through links in a temporary home, so the
bench's jobs and runs never appear in the workspace.

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/app_job_bench.py [--runs 7] [--warmup-steps 3]
(on a quiet machine: anything else running on the cores changes every number)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = ("app_pages/structure.py", "app_pages/jobs.py")


def bench_home(base: Path, into: Path) -> Path:
    """A home with ``base``'s datasets, cache and settings, and its own runs and job database."""
    into.mkdir()
    for name in ("datasets", "cache", "relviz.toml"):
        if (base / name).exists():
            (into / name).symlink_to((base / name).resolve())
    return into


def page_session(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page(page).run()  # the first render (disk caches read, Streamlit caches filled): not measured
    assert not at.exception, at.exception
    return at


def time_updates(sessions: dict, runs: int) -> dict[str, list[float]]:
    """Seconds of ``runs`` reruns of each page, the pages interleaved."""
    out: dict[str, list[float]] = {p: [] for p in sessions}
    for _ in range(runs):
        for page, at in sessions.items():
            start = time.perf_counter()
            at.run()
            out[page].append(round(time.perf_counter() - start, 3))
            assert not at.exception, at.exception
    return out


def _step_at(job, ts: float) -> int:
    """The job's last logged step at time ``ts`` (it logs every step here)."""
    from relviz.train import read_events

    return max([e["step"] for e in read_events(job.events_path, job.events_offset)[0]
                if e["event"] == "step" and e["ts"] <= ts], default=0)


def measure_with_job(settings, config, priority, sessions: dict, runs: int, warmup_steps: int) -> dict:
    """Page updates while a job of ``config`` at ``priority`` (None: the rule) trains."""
    from relviz.jobs import JobStore

    store = JobStore(settings, priority=priority)
    job = store.submit(config, name="bench")
    try:
        started = time.perf_counter()
        while True:  # past the teacher-cache preparation, a few steps in
            job = store.get(job.id)
            p = store.progress_of(job)
            if p.phase == "training" and (p.done or 0) >= warmup_steps:
                break
            if job.status != "running":
                raise SystemExit(f"the bench job ended ({job.status}): {store.log_tail(job, 20)}")
            time.sleep(1)
        prepared_s = time.perf_counter() - started
        window = time.time()
        updates = time_updates(sessions, runs)
        end = time.time()
        return {"updates_s": updates, "job_niceness": p.niceness, "job_threads": p.threads,
                # the job's own speed while the pages updated (steps it logged in the window)
                "job_steps_per_s": round((_step_at(job, end) - _step_at(job, window)) / (end - window), 4),
                "job_ready_after_s": round(prepared_s, 1)}
    finally:
        os.killpg(job.pgid, signal.SIGKILL)  # nothing of it is kept: its home is temporary
        while store.get(job.id).status == "running":
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="page updates measured per page and scenario")
    ap.add_argument("--warmup-steps", type=int, default=3, help="training steps a job has done before measuring")
    ap.add_argument("--loss", default="relational")
    args = ap.parse_args()
    base = Path(os.environ.get("RELVIZ_HOME", ROOT / "workspace")).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RELVIZ_HOME"] = str(bench_home(base, Path(tmp) / "home"))
        from relviz.config import load_settings
        from relviz.jobs import UNMANAGED, available_cores, choose_priority
        from relviz.train import TrainConfig

        settings = load_settings()
        config = TrainConfig.from_settings(settings, preset="demo", loss=args.loss, teacher="demo", log_every=1,
                                           max_steps=100_000)
        sessions = {page: page_session(page) for page in PAGES}
        time_updates(sessions, 1)  # one more rerun each before measuring
        result = {"cores": available_cores(), "rule": asdict(choose_priority()), "runs": args.runs,
                  "idle": {"updates_s": time_updates(sessions, args.runs)}}
        for name, priority in (("job_before", UNMANAGED), ("job_after", None)):
            result[name] = measure_with_job(settings, config, priority, sessions, args.runs, args.warmup_steps)
    idle = {p: statistics.median(v) for p, v in result["idle"]["updates_s"].items()}
    result["median_s"] = {name: {p: round(statistics.median(v), 3) for p, v in result[name]["updates_s"].items()}
                          for name in ("idle", "job_before", "job_after")}
    result["ratio_to_idle"] = {name: {p: round(m / idle[p], 2) for p, m in result["median_s"][name].items()}
                               for name in ("job_before", "job_after")}
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
