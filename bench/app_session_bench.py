"""Every page's first and second visit in a real browser, fully rendered, as a user meets them.

The script starts ``python -m relviz app`` on 127.0.0.1 (bench/load_bench.py's ``Server``) on the
workspace ``--home`` (prepared as ``make app`` does when its dataset is missing), opens headless
Chromium (Playwright) and, for each page in turn:

- **first visit**: a new browser session opened on the page's own URL (a link, a bookmark), the first
  time the server renders that page;
- **second visit**: in that session, a click on Home in the sidebar (Label efficiency for Home), then a
  click on the page's own entry: the page again, the server's caches warm.

A visit is timed from the action (navigation or click) to the page being **fully rendered**: the app
root says no script runs (``data-test-script-state`` is ``notRunning``), the page's title is shown, no
spinner or skeleton is left, every visible Plotly chart has drawn its SVG, every visible Vega chart its
canvas or SVG, and the Zero-shot page's 3D view has drawn its points; and to the **script's end** (the
first two only: what the server did, the rest is the browser drawing). Both are polled every 20 ms in
the page. ``--job`` runs a demo-size training job of the workspace
(``JobStore.submit``, what the Jobs page launches, under the priority rule) meanwhile, measured once it
trains; ``--rounds`` repeats the second visit (the median is reported).

Prints one JSON record (and ``--out FILE``).

Usage::

    .venv/bin/python bench/app_session_bench.py --home /tmp/relviz-load-home
    .venv/bin/python bench/app_session_bench.py --home /tmp/relviz-load-home --job
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from load_bench import CHROMIUM_ARGS, Server, prepare_workspace
from zeroshot_live_bench import background_job

# url path -> (sidebar entry, title)
PAGES = {"": ("Home", "relviz"), "structure": ("Feature structure", "Feature structure"),
         "compare": ("Compare losses", "Compare losses"),
         "evidence": ("Evidence", "Evidence: structure gap vs performance"),
         "fewshot": ("Label efficiency", "Label efficiency"), "zeroshot": ("Zero-shot", "Zero-shot 3D segmentation"),
         "jobs": ("Jobs", "Distillation jobs"), "experiments": ("Experiments", "Experiments"),
         "toy": ("Toy experiment", "Toy experiment")}
RENDERED_JS = """(title) => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return 0;
  const h1 = document.querySelector('h1');
  if (!h1 || !h1.innerText.includes(title)) return 0;
  const visible = (e) => e.offsetParent !== null;
  if ([...document.querySelectorAll("[data-testid='stSpinner'], [data-testid='stSkeleton']")].some(visible)) return 1;
  for (const chart of document.querySelectorAll("[data-testid='stPlotlyChart']")) {
    if (visible(chart) && !chart.querySelector('.main-svg')) return 1;
  }
  for (const chart of document.querySelectorAll("[data-testid='stVegaLiteChart']")) {
    if (visible(chart) && !chart.querySelector('canvas, svg')) return 1;
  }
  for (const frame of document.querySelectorAll("iframe[src*='live_cloud']")) {
    const w = frame.contentWindow;
    if (!w || !w.relvizCloud || !w.relvizCloud.table) return 1;
  }
  return 2;
}"""
# polls RENDERED_JS every 20 ms from now on in this document: when the page's script had finished with its
# title shown (1 or 2), and when everything was drawn (2), in epoch ms
WATCH_JS = """(title) => {
  const rendered = """ + RENDERED_JS + """;
  const stamps = window.__rvStamps = {script: null, rendered: null};
  const timer = setInterval(() => {
    const state = rendered(title), now = performance.timeOrigin + performance.now();
    if (state >= 1 && stamps.script === null) stamps.script = now;
    if (state === 2) { stamps.rendered = now; clearInterval(timer); }
  }, 20);
}"""


def timed(page, title: str, action, timeout_s: float) -> tuple[float, float]:
    """(s to the script's end with the title shown, s to fully rendered) after ``action``, by the watch
    (:data:`WATCH_JS`) installed before it (a navigation starts a new document: there, by an init script)."""
    start = time.time()
    action()
    page.wait_for_function("window.__rvStamps && window.__rvStamps.rendered !== null", polling=50,
                           timeout=timeout_s * 1000)
    stamps = page.evaluate("window.__rvStamps")
    page.evaluate("delete window.__rvStamps")
    return round(stamps["script"] / 1000 - start, 2), round(stamps["rendered"] / 1000 - start, 2)


def visits(server: Server, rounds: int, timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS)
        for path, (entry, title) in PAGES.items():
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.add_init_script(f"window.addEventListener('DOMContentLoaded', () => ({WATCH_JS})({json.dumps(title)}))")
            first = timed(page, title, lambda: page.goto(f"{server.url}/{path}", timeout=timeout_s * 1000), timeout_s)
            second = []
            nav = page.locator("[data-testid='stSidebarNav']")
            away, away_title = PAGES["fewshot" if not path else ""]  # another page, then this one again
            for _ in range(rounds):
                page.evaluate(WATCH_JS, away_title)
                timed(page, away_title, lambda: nav.get_by_text(away, exact=True).click(), timeout_s)
                page.evaluate(WATCH_JS, title)
                second.append(timed(page, title, lambda: nav.get_by_text(entry, exact=True).click(), timeout_s))
            out[path or "home"] = {
                "first_s": first[1], "first_script_s": first[0], "second_s": [r for _, r in second],
                "second_script_s": [sc for sc, _ in second],
                "second_median_s": round(statistics.median(r for _, r in second), 2),
                "second_script_median_s": round(statistics.median(sc for sc, _ in second), 2)}
            print(f"{path or 'home'}: {out[path or 'home']}", flush=True)
            context.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/relviz-load-home"))
    parser.add_argument("--rounds", type=int, default=3, help="second visits per page (the median is reported)")
    parser.add_argument("--job", action="store_true", help="run a demo-size background job (priority rule) meanwhile")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a visit may take")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    prepared = prepare_workspace(args.home)
    jobs = contextlib.ExitStack()
    if args.job:
        jobs.enter_context(background_job(args.home, "page-bench"))
    load_before = os.getloadavg()
    server = Server(args.home, Path(tempfile.mkdtemp(prefix="page-bench-")) / "server.log")
    try:
        healthy = server.wait_healthy()
        pages = visits(server, args.rounds, args.timeout)
    finally:
        server.stop()
        jobs.close()
    record = {"machine": {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
                          "load_after": [round(x, 2) for x in os.getloadavg()]},
              "prepared": prepared, "server_healthy_s": round(healthy, 2), "background_job": args.job, "pages": pages}
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
