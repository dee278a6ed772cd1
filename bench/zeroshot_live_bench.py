"""Keystroke-to-recoloured-view latency of the Zero-shot page's live view, in a real browser, and the
time to search the val split for one query.

Live view. The script starts ``python -m relviz app`` on 127.0.0.1 (bench/load_bench.py's ``Server``),
opens the Zero-shot page in headless Chromium (Playwright), waits for the live view to draw its
points, and types one warm-up query (the teacher's text encoder loads once). Then, for each of
``--queries`` free-text queries (all different, so every measured keystroke encodes a new prompt),
it sets the query box to the 16 class names plus the query without its last character, waits until
that text is answered and drawn, and types the last character: one real key press. The live view's
frame timestamps each answered message (``window.relvizTimings``, wall-clock epoch ms from the
browser and from the server, the same clock on one machine):

- ``wait``: key press to the message being posted (the frame holds a message while one is unanswered);
- ``to_server``: posted to the start of the server's fragment run (Streamlit's websocket and scheduling);
- ``text``, ``similarity``, ``colour``: text encoding (cached per prompt), the assignment of every
  point (``assign_by_text``), the colouring; ``server_other``: the rest of the fragment (parsing,
  scores, legend, encoding the component's arguments);
- ``back``: the fragment's end to the frame receiving the answer (Streamlit's delta, websocket, React,
  postMessage);
- ``draw``: received to the recoloured points drawn (one byte per point uploaded, one WebGL draw,
  ``gl.finish``); ``paint``: the legend updated and the next animation frame;
- ``total``: key press to painted.

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

    .venv/bin/python bench/zeroshot_live_bench.py --plotly
    .venv/bin/python bench/zeroshot_live_bench.py --training --out live-training.json
"""

from __future__ import annotations

import argparse
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


def measure_live(server: Server, queries: list[str], plotly: bool) -> dict:
    from playwright.sync_api import sync_playwright

    base = "\n".join(CLASSES)
    records = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(f"{server.url}/zeroshot", timeout=900_000)
        frame = live_frame(page)
        first_view = time.perf_counter() - start
        frame.evaluate(SET_TEXT_JS, base + "\nwarm up query")  # loads the teacher's text encoder
        settle(frame, timeout_s=900)
        for q in queries:
            frame.evaluate(SET_TEXT_JS, f"{base}\n{q[:-1]}")
            count = settle(frame)
            frame.locator("#queries").press("End")
            page.keyboard.type(q[-1])
            record = answered(frame, count + 1)
            records.append({"query": q, "points": record["n"], **{k: round(v, 3) for k, v in parts(record).items()}})
            settle(frame)
        n = records[-1]["points"]
        baseline = plotly_restyle(page, n) if plotly else None
        browser.close()
    return {"first_view_s": round(first_view, 2), "points": n, "keystrokes": len(records),
            "ms": {part: summary([r[part] for r in records]) for part in PARTS}, "records": records,
            "plotly_restyle": baseline}


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
    parser.add_argument("--queries", type=int, default=20)
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
    store = job = job_priority = None
    if args.job:
        from relviz.config import load_settings
        from relviz.jobs import JobStore
        from relviz.train import TrainConfig

        settings = load_settings(env=server_env(args.home))
        store = JobStore(settings)
        job = store.submit(TrainConfig.from_settings(settings, preset="demo", max_steps=100_000,
                                                     checkpoint_every=100_000, val_every=100_000), name="live-bench")
        deadline = time.time() + 600
        while (now := store.get(job.id)).last_step < 1:  # measured while it trains, not while it prepares
            if time.time() > deadline or now.status != "running":
                raise SystemExit(f"the background job did not start training: {store.log_tail(now)}")
            time.sleep(1)
    server = Server(args.home, Path(tempfile.mkdtemp(prefix="live-bench-")) / "server.log")
    try:
        healthy = server.wait_healthy()
        live = measure_live(server, QUERIES[:args.queries], args.plotly)
    finally:
        server.stop()
        if job is not None:
            priority = store.progress_of(store.get(job.id))
            job_priority = {"niceness": priority.niceness, "threads": priority.threads}
            store.cancel(job.id, grace_s=30)
            shutil.rmtree(job.run_dir, ignore_errors=True)
        if trainer is not None:  # by its pid; a trainer busy in a step may not stop at once on SIGTERM
            trainer.terminate()
            try:
                trainer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                trainer.kill()
                trainer.wait(timeout=30)
    search = split_search_time(args.home)
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
