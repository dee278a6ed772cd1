"""Keystroke-to-recoloured-view latency of the Zero-shot page's live view, in a real browser, by two
clocks on the same key presses, and the time to search the val split for one query.

Live view. The script starts ``python -m relviz app`` on 127.0.0.1 (bench/load_bench.py's ``Server``),
opens the Zero-shot page in headless Chromium (Playwright), waits for the live view to draw its
points, types one warm-up query (the teacher's text encoder loads once) and sets the page's colour
mode (``--mode``; default the heat map of the query on the cursor's line, which every new prompt
recolours). Then it types words one key at a time into a new last line under the 16 class names
(each key a new prompt, so its text is encoded), ``--keys`` keys in all, each sent ``--gap`` s after
the previous key's answer was drawn. Two clocks time each key:

- **visible** (independent of the app, bench/screencast.py): from ``time.time()`` just before Playwright
  sends the key to the first frame of Chrome's screencast, stamped when the compositor swapped it, whose
  crop of the 3D view differs from the frame before the key; keys that changed no pixel of the view
  have no visible time (counted). ``calibration``: a recolour made by script in the same frame (no
  server) to its screencast frame, what the method and the browser's frame cadence add.
- **the app's own** (``window.relvizTimings``, epoch ms from the browser and from the server, the same
  clock on one machine): ``total`` from the key press to two animation frames after the draw call,
  and its parts:

- ``wait``: key press to the message being posted (the frame holds a message while one is unanswered);
- ``to_server``: posted to the start of the server's answer (the direct channel's HTTP request, or
  Streamlit's websocket and scheduling of the fragment run with ``RELVIZ_LIVE_CHANNEL=off``);
- ``text``, ``similarity``, ``colour``: text encoding (cached per prompt), the assignment of every
  point (``assign_by_text``), the colouring; ``server_other``: the rest (parsing, scores, legend,
  encoding the answer);
- ``back``: the answer's end to the frame receiving it (the HTTP response; through Streamlit: its
  delta, websocket, React and postMessage);
- ``draw``: received to the recoloured points drawn (one byte per point uploaded, one WebGL draw,
  ``gl.finish``); ``paint``: the legend updated and two animation frames;
- ``press_to_key``: Playwright's send to the page's input event (what the visible clock includes and
  the app's does not).

``--plotly`` also measures what the first design would have cost: ``Plotly.restyle`` of a scatter3d's
marker colours (uint8 indices, discrete colour scale) on the same number of points, in the same
browser, with the plotly.js bundled with the installed ``plotly`` package.

``--training`` runs a demo-size training (``relviz train``, MinkUNet14 x0.5, in a temporary run
folder, killed at the end) during the measurement: a plain process at niceness 0 with torch's default
threads. ``--job`` runs the same as a background job of the workspace (``JobStore.submit``, what the
Jobs page launches), under the priority rule (niceness 10, the thread rule, its session's autogroup
niceness); measured once it trains, cancelled and its run folder removed at the end.

Split search: ``relviz.eval.search.search_split`` over every val keyframe's cached features (the demo
relational student, the 16 class names plus one free-text query), median of 5 after one run that
fills the feature cache and the OS page cache.

Prints one JSON record (and ``--out FILE``). The workspace is ``--home`` (default
/tmp/relviz-load-home, prepared as ``make app`` does when its dataset is missing).

Usage::

    .venv/bin/python bench/zeroshot_live_bench.py --no-search --out live.json
    .venv/bin/python bench/zeroshot_live_bench.py --no-search --job --out live-job.json
    RELVIZ_LIVE_CHANNEL=off .venv/bin/python bench/zeroshot_live_bench.py --no-search   # through Streamlit
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from load_bench import CHROMIUM_ARGS, ROOT, Server, prepare_workspace, server_env

CLASSES = ["barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "pedestrian", "traffic cone",
           "trailer", "truck", "driveable surface", "other flat", "sidewalk", "terrain", "manmade", "vegetation"]
QUERIES = ["parked car", "wet road", "a person on a bicycle", "ambulance", "tall tree", "road marking", "bus stop",
           "concrete wall", "traffic light", "green grass", "delivery van", "street lamp", "low bush",
           "orange cone", "building facade", "fire truck", "empty sidewalk", "metal fence", "pickup truck",
           "shrub near the road", "cyclist", "scooter", "dump truck", "trailer hitch"]
PARTS = ["total", "wait", "to_server", "text", "similarity", "colour", "server_other", "back", "draw", "paint"]
SET_TEXT_JS = """(text) => { const box = document.getElementById('queries'); box.focus(); box.value = text;
  box.setSelectionRange(text.length, text.length); box.dispatchEvent(new Event('input')); }"""


class BackgroundJob:
    """A demo-size training job of the workspace ``home`` (``JobStore.submit``, what the Jobs page launches,
    under the priority rule), running."""

    def __init__(self, home: Path, name: str) -> None:
        from relviz.config import load_settings
        from relviz.jobs import JobStore
        from relviz.train import TrainConfig

        settings = load_settings(env=server_env(home))
        self.store = JobStore(settings)
        self.job = self.store.submit(TrainConfig.from_settings(settings, preset="demo", max_steps=100_000,
                                                               checkpoint_every=100_000, val_every=100_000), name=name)

    def priority(self) -> dict:
        """The niceness and torch threads the job runs with (its progress says them)."""
        progress = self.store.progress_of(self.store.get(self.job.id))
        return {"niceness": progress.niceness, "threads": progress.threads}

    def stop(self) -> None:
        if self.store.get(self.job.id).status == "running":
            self.store.cancel(self.job.id, grace_s=30)
        shutil.rmtree(self.job.run_dir, ignore_errors=True)


@contextlib.contextmanager
def background_job(home: Path, name: str):
    """A :class:`BackgroundJob` once it trains (the teacher's features of the train split are prepared
    first: what is measured beside it is measured beside training, not preparing); cancelled and its run
    folder removed at the end. Used by this bench and bench/app_session_bench.py."""
    job = BackgroundJob(home, name)
    try:
        deadline = time.time() + 1800
        while (now := job.store.get(job.job.id)).last_step < 1:
            if time.time() > deadline or now.status != "running":
                raise SystemExit(f"the background job did not start training: {job.store.log_tail(now)}")
            time.sleep(1)
        yield job
    finally:
        job.stop()


def parts(record: dict) -> dict[str, float]:
    server = record["end"] - record["start"]
    return {"total": record["painted"] - record["key"], "wait": record["sent"] - record["key"],
            "to_server": record["start"] - record["sent"], "text": record["text_ms"],
            "similarity": record["similarity_ms"], "colour": record["colour_ms"],
            "server_other": server - record["text_ms"] - record["similarity_ms"] - record["colour_ms"],
            "back": record["received"] - record["end"], "draw": record["drawn"] - record["received"],
            "paint": record["painted"] - record["drawn"]}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = float(np.percentile(ordered, 95)) if ordered else float("nan")
    return {"median": round(statistics.median(ordered), 2), "p95": round(p95, 2), "min": round(ordered[0], 2),
            "max": round(ordered[-1], 2)}


def answered(frame, count: int, timeout_s: float = 600) -> dict:
    """Wait for the frame's ``count``-th answered message that left nothing pending; returns its record."""
    frame.wait_for_function(f"window.relvizTimings.length >= {count}", timeout=timeout_s * 1000)
    return frame.evaluate(f"window.relvizTimings[{count - 1}]")


def settle(frame, timeout_s: float = 600) -> int:
    """Wait until no message is unanswered; returns how many answers the frame has recorded."""
    frame.wait_for_function("() => { const s = window.relvizState; return s && s.inflight === null && !s.pending; }",
                            timeout=timeout_s * 1000)
    frame.wait_for_timeout(200)
    return frame.evaluate("window.relvizTimings.length")


def live_frame(page, timeout_s: float = 900):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        frame = next((f for f in page.frames if "live_cloud" in f.url), None)
        if frame is not None and frame.evaluate("!!(window.relvizCloud && window.relvizCloud.table)"):
            return frame
        page.wait_for_timeout(250)  # lets Playwright take in new frames (time.sleep would not)
    raise SystemExit("zeroshot_live_bench: the live view did not draw its points")


def plotly_restyle(page, n: int, repeats: int = 8) -> dict:
    """ms per ``Plotly.restyle`` of marker colours (resolved, and to the next frame) on n random points."""
    import plotly

    page.set_content("<div id='p' style='width:800px;height:560px'></div>")
    page.add_script_tag(path=str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js"))
    times = page.evaluate("""async ([n, repeats]) => {
      const x = new Float32Array(n), y = new Float32Array(n), z = new Float32Array(n);
      for (let i = 0; i < n; i++) { x[i] = Math.random() * 100; y[i] = Math.random() * 100; z[i] = Math.random() * 5; }
      const T = 17, scale = [];
      for (let i = 0; i < T; i++) { const c = `hsl(${i * 20},80%,50%)`; scale.push([i / T, c], [(i + 1) / T, c]); }
      const p = document.getElementById('p');
      await Plotly.newPlot(p, [{type: 'scatter3d', mode: 'markers', x, y, z, hoverinfo: 'skip',
        marker: {size: 1.5, color: new Uint8Array(n), colorscale: scale, cmin: -0.5, cmax: T - 0.5}}]);
      const out = [];
      for (let k = 0; k < repeats; k++) {
        const c = new Uint8Array(n); for (let i = 0; i < n; i++) c[i] = (i + k) % T;
        const t0 = performance.now();
        await Plotly.restyle(p, {'marker.color': [c]}, [0]);
        const t1 = performance.now();
        await new Promise((r) => requestAnimationFrame(r));
        out.push([t1 - t0, performance.now() - t0]);
      }
      return out;
    }""", [n, repeats])
    return {"points": n, "restyle_ms": summary([t[0] for t in times]),
            "to_next_frame_ms": summary([t[1] for t in times])}


def type_words(page, frame, words: list[str], keys: int, gap_s: float) -> list[dict]:
    """Type ``words`` one key at a time into a new last line under the 16 class names (each key a new
    prompt), at most ``keys`` keys; each key is sent after the previous one's answer is drawn and
    ``gap_s`` has passed (so that the screen is still before it). Returns, per key, the epoch s just
    before Playwright sent it and the app's record of its answer."""
    base = "\n".join(CLASSES)
    presses = []
    for word in words:
        frame.evaluate(SET_TEXT_JS, f"{base}\n")
        settle(frame)
        for letter in word:
            if len(presses) >= keys:
                return presses
            count = settle(frame)
            time.sleep(gap_s)
            pressed = time.time()
            page.keyboard.press(letter if letter != " " else "Space")
            record = answered(frame, count + 1)
            presses.append({"pressed": pressed, "record": record})
    return presses


def measure_live(server: Server, words: list[str], keys: int, mode: str, gap_s: float, plotly: bool) -> dict:
    from playwright.sync_api import sync_playwright
    from screencast import Screencast, calibrate, canvas_box, visible_at

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(f"{server.url}/zeroshot", timeout=900_000)
        frame = live_frame(page)
        first_view = time.perf_counter() - start
        frame.evaluate(SET_TEXT_JS, "\n".join(CLASSES) + "\nwarm up query")  # loads the teacher's text encoder
        settle(frame, timeout_s=900)
        if mode != "prediction":  # the page's radio: a rerun of the page, the frame kept
            page.get_by_text(mode, exact=True).click()
            page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=600_000)
            settle(frame)
        frame.locator("#plot").scroll_into_view_if_needed()
        box = canvas_box(frame.locator("#plot"))
        frame.click("#queries")
        screencast = Screencast(page)
        screencast.start()
        load = os.getloadavg()
        presses = type_words(page, frame, words, keys, gap_s)
        time.sleep(gap_s)
        load_after = os.getloadavg()
        calibration = calibrate(frame, screencast, box)  # last: it draws colours of its own
        screencast.stop()
        seen = visible_at(screencast.frames, [k["pressed"] for k in presses], box)
        n = frame.evaluate("window.relvizCloud.n")
        baseline = plotly_restyle(page, n) if plotly else None
        browser.close()
    records = []
    for press, visible in zip(presses, seen):
        r = press["record"]
        row = {"points": r["n"], **{k: round(v, 3) for k, v in parts(r).items()},
               "press_to_key": round(r["key"] - 1000 * press["pressed"], 3), "redrawn": r.get("redrawn"),
               "channel": r.get("channel")}
        if visible is not None:
            row["visible"] = round(1000 * (visible - press["pressed"]), 3)
            row["visible_after_painted"] = round(1000 * visible - r["painted"], 3)
        records.append(row)
    shown = [r for r in records if "visible" in r]
    return {"first_view_s": round(first_view, 2), "points": n, "mode": mode, "keys": len(records),
            "keys_seen_recoloured": len(shown), "frames": len(screencast.frames),
            "load_during": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in load_after],
            "visible_ms": summary([r["visible"] for r in shown]) if shown else None,
            "app_ms_same_keys": summary([r["total"] for r in shown]) if shown else None,
            "visible_minus_app_ms": summary([r["visible_after_painted"] for r in shown]) if shown else None,
            "ms": {part: summary([r[part] for r in records]) for part in PARTS},
            "calibration_ms": summary(calibration) if calibration else None,
            "records": records, "plotly_restyle": baseline}


def split_search_time(home: Path, repeats: int = 5) -> dict:
    os.environ["RELVIZ_HOME"] = str(home)
    from relviz import workspace
    from relviz.config import load_settings
    from relviz.eval.search import missing_split_features, search_split, split_features
    from relviz.teacher import load_teacher
    from relviz.viz.zeroshot_view import embed_prompts

    s = load_settings()
    ds = workspace.open_val_dataset(s, s.dataset_root(s.dataset))
    info = next(c for c in workspace.student_checkpoints(s) if c.error is None and "relational" in c.label)
    from relviz.models.checkpoint import load_student

    model, _ = load_student(str(info.path), backend="torch")
    teacher = load_teacher(s.teacher_spec)
    text = embed_prompts([*CLASSES, "parked car"], workspace.class_embeddings(s, lambda: teacher), lambda: teacher)
    missing = len(missing_split_features(model, info.key, ds, s.cache_dir))
    start = time.perf_counter()
    result = search_split(split_features(model, info.key, ds, s.cache_dir), text, len(CLASSES), top_points=20)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search_split(split_features(model, info.key, ds, s.cache_dir), text, len(CLASSES), top_points=20)
        times.append(1000 * (time.perf_counter() - start))
    return {"checkpoint": info.label, "keyframes": len(ds), "points": sum(m.total for m in result.keyframes),
            "queries": len(text), "features_computed_first": missing, "first_s": round(first, 2),
            "warm_ms": summary(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/relviz-load-home"))
    parser.add_argument("--keys", type=int, default=120, help="key presses measured (words typed one key at a time)")
    parser.add_argument("--mode", default="similarity to a query",
                        help="the page's colour mode: the heat map of the typed query (default: every key recolours) "
                             "or 'prediction' (most keys change no pixel: a partial word wins no points)")
    parser.add_argument("--gap", type=float, default=0.35, help="seconds between a key's drawn answer and the next key")
    parser.add_argument("--no-search", action="store_true", help="skip the split search timing")
    parser.add_argument("--plotly", action="store_true", help="also time Plotly.restyle on the same points")
    parser.add_argument("--training", action="store_true", help="run a plain demo-size `relviz train` meanwhile")
    parser.add_argument("--job", action="store_true", help="run a demo-size background job (priority rule) meanwhile")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    prepared = prepare_workspace(args.home)
    load_before = os.getloadavg()
    trainer = None
    if args.training:
        # outside the workspace's runs/, so that its checkpoints are not offered on the page
        run_dir = Path(tempfile.mkdtemp(prefix="live-bench-train-"))
        trainer = subprocess.Popen([sys.executable, "-m", "relviz", "train", "--loss", "relational", "--arch",
                                    "MinkUNet14", "--width", "0.5", "--max-steps", "100000", "--run-dir", str(run_dir)],
                                   env=server_env(args.home), cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    jobs = contextlib.ExitStack()
    job = jobs.enter_context(background_job(args.home, "live-bench")) if args.job else None
    server = Server(args.home, Path(tempfile.mkdtemp(prefix="live-bench-")) / "server.log")
    try:
        healthy = server.wait_healthy()
        live = measure_live(server, QUERIES, args.keys, args.mode, args.gap, args.plotly)
    finally:
        server.stop()
        job_priority = job.priority() if job is not None else None
        jobs.close()
        if trainer is not None:  # by its pid; a trainer busy in a step may not stop at once on SIGTERM
            trainer.terminate()
            try:
                trainer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                trainer.kill()
                trainer.wait(timeout=30)
    search = None if args.no_search else split_search_time(args.home)
    record = {"machine": {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
                          "load_after": [round(x, 2) for x in os.getloadavg()]},
              "prepared": prepared, "server_healthy_s": round(healthy, 2), "training_process": args.training,
              "background_job": job_priority if args.job else None,
              "live": live, "split_search": search}
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
