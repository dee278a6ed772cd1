"""Load test of the real server: N concurrent browser sessions against ``relviz app`` for a bounded time.

What it measures. The script starts ``python -m relviz app`` as a subprocess on 127.0.0.1 (a free
port, loopback only), drives it with one headless Chromium (Debian's ``chromium``, through
Playwright) holding N browser contexts, one per session, and stops the browser and the server when
done. Each session loops over the app's pages (Home, Feature structure, Compare, Zero-shot, Jobs,
Toy; sessions start at different pages so that all pages are under load at once); on the Zero-shot
page it also types a free-text query into the text area (Ctrl+Enter) and waits for the re-run. A
request's latency runs from the action (``page.goto`` or the key press) to the moment Streamlit's
app root reports that the script finished (``data-test-script-state`` turning to ``notRunning``,
what tests/test_browser.py waits for; the moment is timestamped inside the page by a
MutationObserver, so polling adds nothing). A request is *answered* when the script finished within
the per-request timeout, the page has a title (``h1``), no ``stException`` element and no error box
(``stAlertContentError``). Also recorded: how long after the script's end the page answered those checks
(``browser_render``: the browser drawing the figures; the WebGL plots are drawn in software here).
Sessions do not pause between requests; after ``--seconds`` they start no new page (the request in
flight, each limited by ``--timeout``, finishes, and a Zero-shot visit keeps its query).

Reported as JSON on stdout (and ``--out FILE``): requests and answered requests per kind, median and
p95 latency per kind and overall (over answered requests), the tracebacks in the server's
stdout/stderr log, the peak resident memory of the server process and its children (psutil RSS,
sampled every 0.5 s), the same for the browser, CPU seconds of both, and the load average before
and after (the client runs on the same machine as the server, so its CPU use counts against the
server's).

The workspace is ``--home`` (default /tmp/relviz-load-home, outside the checkout). When its demo
dataset is missing, the script prepares it as ``make app`` does: ``relviz workspace``,
``relviz demo --dataset-only`` (about 90 s) and ``relviz warm`` (about 30 s).

Usage::

    .venv/bin/python bench/load_bench.py                      # 8 sessions, 60 s
    .venv/bin/python bench/load_bench.py --sessions 1 --seconds 30 --out one.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATASET = "synthetic-mini"  # relviz.demo.DEMO_DATASET, the dataset `make app` generates
PAGES: dict[str, str] = {"home": "", "structure": "structure", "compare": "compare", "zeroshot": "zeroshot",
                         "jobs": "jobs", "toy": "toy"}
QUERY = "zeroshot_query"
KINDS = [*PAGES, QUERY]
# Free-text queries (one per line: a class name, or `text = class`); they need the teacher's text encoder.
QUERIES = ["car", "road = driveable surface\nbuilding = manmade", "truck\nbus\npedestrian",
           "tree = vegetation\nsidewalk\nterrain", "a parked car = car\ntraffic cone\nbarrier\nmanmade"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Counts the script runs that finished (the app root's state turning to notRunning) and timestamps the last.
OBSERVER_JS = """
(() => {
  window.__rvDone = 0;
  window.__rvDoneAt = 0;
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      if (m.target.getAttribute('data-test-script-state') === 'notRunning' && m.oldValue !== 'notRunning') {
        window.__rvDone += 1;
        window.__rvDoneAt = Date.now();
      }
    }
  }).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                        attributeFilter: ['data-test-script-state']});
})();
"""
SCRIPT_DONE_JS = """(before) => window.__rvDone > before && document.querySelector("[data-testid='stApp']")
    ?.getAttribute('data-test-script-state') === 'notRunning'"""
MIB = 2 ** 20


@dataclass
class Request:
    session: int
    kind: str
    start_s: float  # seconds since the load phase began
    latency_s: float | None  # action to script finished; None when it did not finish
    answered: bool
    error: str | None = None
    render_s: float | None = None  # script finished -> the page answered our checks (the browser was busy drawing)


# ---------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path) -> dict[str, str]:
    return {**os.environ, "RELVIZ_HOME": str(home)}


def prepare_workspace(home: Path) -> dict[str, float] | None:
    """What `make app` does before it serves, only when the demo dataset is missing. Returns the seconds
    each step took, or None when nothing had to be done."""
    if (home / "datasets" / DEMO_DATASET / "v1.0-mini").is_dir():
        return None
    timings: dict[str, float] = {}
    for name, args in (("workspace", ["workspace"]), ("demo --dataset-only", ["demo", "--dataset-only"]),
                       ("warm", ["warm"])):
        print(f"load_bench: relviz {name} (RELVIZ_HOME={home}) ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        # stdout goes to our stderr so that this script's stdout is only the JSON record
        result = subprocess.run([sys.executable, "-m", "relviz", *args], env=server_env(home), cwd=ROOT,
                                stdout=sys.stderr, stderr=sys.stderr)
        timings[name] = round(time.perf_counter() - start, 1)
        if result.returncode != 0 and name != "warm":  # `make app` also goes on when warm fails
            raise SystemExit(f"load_bench: `relviz {name}` failed with exit status {result.returncode}")
    return timings


class Server:
    """``python -m relviz app`` on 127.0.0.1:port, its stdout and stderr in ``log``."""

    def __init__(self, home: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relviz", "app", "--host", "127.0.0.1", "--port", str(self.port)],
            env=server_env(home), cwd=ROOT, stdout=self._log_file, stderr=subprocess.STDOUT)
        self.process = psutil.Process(self.proc.pid)

    def wait_healthy(self, timeout: float = 120.0) -> float:
        """Seconds until the health endpoint answered ``ok``."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"load_bench: the server exited with status {self.proc.returncode}; see {self.log}")
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.25)
        raise SystemExit(f"load_bench: the server did not answer on {self.url} within {timeout:.0f} s; see {self.log}")

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """Terminate the server and whatever it started (by pid), then close the log."""
        children = self.tree()[1:]
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self._log_file.close()


# ------------------------------------------------------------------------------------------- sampling


def rss(processes: list[psutil.Process]) -> int:
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def client_processes(server: Server) -> list[psutil.Process]:
    """This script's descendants other than the server's tree: Playwright's driver and Chromium."""
    server_pids = {p.pid for p in server.tree()} | {server.proc.pid}
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in server_pids]


class MemorySampler(threading.Thread):
    """Peak RSS (sum over processes) of the server's tree and of the client, every ``interval`` seconds; also
    the last CPU seconds seen per client process (Chromium's processes come and go)."""

    def __init__(self, server: Server, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.server_peak = self.client_peak = 0
        self.samples = 0
        self.client_cpu: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        with self._lock:
            self.server_peak = max(self.server_peak, rss(self.server.tree()))
            clients = client_processes(self.server)
            self.client_peak = max(self.client_peak, rss(clients))
            for p in clients:
                self.client_cpu[p.pid] = max(self.client_cpu.get(p.pid, 0.0), cpu_seconds([p]))
            self.samples += 1

    def client_cpu_total(self) -> float:
        self.sample()
        with self._lock:
            return sum(self.client_cpu.values())

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# -------------------------------------------------------------------------------------------- browser


async def page_problem(page: Any) -> str | None:
    """Why the page does not count as answered, or None."""
    exc = page.locator("[data-testid='stException']")
    if await exc.count():
        return "stException: " + (await exc.first.inner_text())[:600]
    err = page.locator("[data-testid='stAlertContentError']")
    if await err.count():
        return "error box: " + (await err.first.inner_text())[:600]
    if await page.locator("h1").count() == 0:
        return "no title (h1) on the page"
    return None


async def timed(page: Any, action: Any, before: int | None, timeout_s: float
                ) -> tuple[float | None, str | None, float | None]:
    """Run ``action``, then wait until the page's count of finished script runs exceeds ``before`` (read from
    the page when None) and the app is not running; returns (latency in seconds or None, problem or None,
    seconds from the script's end until the page answered the checks)."""
    if before is None:
        before = await page.evaluate("window.__rvDone ?? 0")
    t0_wall, t0 = time.time(), time.perf_counter()
    try:
        await action()
        await page.wait_for_function(SCRIPT_DONE_JS, arg=before, timeout=timeout_s * 1000, polling=100)
    except Exception as e:  # a timeout, or a page that broke: not answered
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}", None
    elapsed = time.perf_counter() - t0
    try:
        done_at = await page.evaluate("window.__rvDoneAt") / 1000
        problem = await page_problem(page)
    except Exception as e:  # the page went away after its script finished
        return elapsed, f"checks failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}", None
    # the in-page timestamp of the state change (same clock); the poll's time if the two disagree
    latency = done_at - t0_wall if 0 <= done_at - t0_wall <= elapsed + 0.05 else elapsed
    return latency, problem, time.perf_counter() - t0 - latency


async def visit(page: Any, url: str, timeout_s: float) -> tuple[float | None, str | None, float | None]:
    """Load ``url``: a fresh document, whose count of finished runs starts at 0."""
    return await timed(page, lambda: page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000),
                       0, timeout_s)


async def query(page: Any, text: str, timeout_s: float) -> tuple[float | None, str | None, float | None]:
    """Type ``text`` into the Zero-shot page's query box and submit it (Ctrl+Enter), as tests/test_browser.py does."""
    area = page.frame_locator("iframe[src*='live_cloud']").locator("#queries")  # the live query box
    try:
        await area.fill(text, timeout=timeout_s * 1000)
    except Exception as e:
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}", None
    return await timed(page, lambda: area.press("Control+Enter", timeout=timeout_s * 1000), None, timeout_s)


async def session(browser: Any, index: int, base: str, deadline: float, t_begin: float, timeout_s: float,
                  out: list[Request], pages: list[str] | None = None) -> None:
    """One user: a browser context that loops over the pages (starting at page ``index``) until ``deadline``
    (perf_counter seconds; the request in flight then finishes), with ``pages`` given, visits those once
    instead. A visit of the Zero-shot page is followed by a free-text query."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(timeout_s * 1000)  # every browser action, not only the waits, gets --timeout
    await context.add_init_script(OBSERVER_JS)
    page = await context.new_page()
    order = list(PAGES)
    order = order[index % len(order):] + order[:index % len(order)]
    step = 0
    try:
        while (time.perf_counter() < deadline) if pages is None else (step < len(pages)):
            kind = order[step % len(order)] if pages is None else pages[step]
            start = time.perf_counter() - t_begin
            latency, problem, render = await visit(page, f"{base}/{PAGES[kind]}", timeout_s)
            out.append(Request(index, kind, round(start, 3), latency, latency is not None and problem is None,
                               problem, render))
            if kind == "zeroshot" and latency is not None:  # the query belongs to the visit, even past the deadline
                start = time.perf_counter() - t_begin
                latency, problem, render = await query(page, QUERIES[(index + step) % len(QUERIES)], timeout_s)
                out.append(Request(index, QUERY, round(start, 3), latency,
                                   latency is not None and problem is None, problem, render))
            step += 1
    finally:
        await context.close()


async def drive(base: str, sessions: int, seconds: float, timeout_s: float, warmup: bool, webgl: bool,
                mark: Callable[[str], None]) -> tuple[list[Request], list[Request], float, list[str]]:
    """The warm-up pass (one session, every page once) and the load phase; (warmup, load, load wall seconds,
    the sessions that stopped on an error outside a request).
    ``mark("start")`` and ``mark("end")`` are called right before and after the load phase, browser open."""
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("load_bench: Chromium is not installed (apt-get install -y chromium)")
    warm: list[Request] = []
    load: list[Request] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium,
                                          args=CHROMIUM_ARGS + ([] if webgl else ["--disable-3d-apis"]))
        try:
            if warmup:
                t = time.perf_counter()
                await session(browser, 0, base, 0.0, t, timeout_s, warm, pages=list(PAGES))
            mark("start")
            t_begin = time.perf_counter()
            deadline = t_begin + seconds
            results = await asyncio.gather(*(session(browser, i, base, deadline, t_begin, timeout_s, load)
                                             for i in range(sessions)), return_exceptions=True)
            wall = time.perf_counter() - t_begin
            mark("end")
        finally:
            await browser.close()
    crashed = [f"session {i}: {type(r).__name__}: {r}"[:600]
               for i, r in enumerate(results) if isinstance(r, BaseException)]
    return warm, load, wall, crashed


# -------------------------------------------------------------------------------------------- results


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def as_dict(r: Request) -> dict[str, Any]:
    return {**asdict(r), "latency_s": rounded(r.latency_s), "render_s": rounded(r.render_s)}


def summarize(requests: list[Request]) -> dict[str, Any]:
    latencies = [r.latency_s for r in requests if r.answered and r.latency_s is not None]
    out: dict[str, Any] = {"requests": len(requests), "answered": sum(r.answered for r in requests)}
    if latencies:
        renders = [r.render_s for r in requests if r.answered and r.render_s is not None]
        out |= {"median_s": round(statistics.median(latencies), 3), "p95_s": round(percentile(latencies, 0.95), 3),
                "max_s": round(max(latencies), 3), "browser_render_median_s": round(statistics.median(renders), 3)}
    return out


def log_tracebacks(log: Path) -> dict[str, Any]:
    """Tracebacks in the server's log: how many, the exception lines with counts, and the first few in full."""
    lines = log.read_text(errors="replace").splitlines()
    blocks: list[list[str]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("Traceback (most recent call last)"):
            block = [lines[i]]
            i += 1
            # the frames are indented; the exception line is the first one that is not (chained ones repeat)
            while i < len(lines) and (lines[i].startswith((" ", "\t")) or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            if i < len(lines):
                block.append(lines[i])
            blocks.append(block)
        i += 1
    finals = Counter(b[-1].strip() for b in blocks)
    return {"tracebacks": len(blocks), "lines_with_Traceback": sum("Traceback" in line for line in lines),
            "exceptions": dict(finals.most_common()), "first": ["\n".join(b[-40:]) for b in blocks[:3]],
            "log_lines": len(lines)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions (default 8)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the load phase (default 60)")
    ap.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "relviz-load-home",
                    help="RELVIZ_HOME for the server, prepared when its dataset is missing "
                         "(default /tmp/relviz-load-home)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds (default 120)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the single-session pass over every page before the load phase")
    ap.add_argument("--no-webgl", dest="webgl", action="store_false",
                    help="start Chromium with --disable-3d-apis (no WebGL: the 3D and WebGL plots are not drawn; "
                         "the server's work is the same)")
    ap.add_argument("--log", type=Path, default=None, help="server log file (default: a temporary file, kept)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON record to this file")
    ap.add_argument("--requests", action="store_true", help="include every request in the record")
    args = ap.parse_args()
    if args.sessions < 1 or args.seconds <= 0:
        ap.error("--sessions must be >= 1 and --seconds > 0")

    home = args.home.resolve()
    if home == ROOT or ROOT in home.parents:
        ap.error(f"--home must be outside the checkout ({ROOT})")
    preparation = prepare_workspace(home)
    log = args.log or Path(tempfile.mkdtemp(prefix="relviz-load-")) / "server.log"

    record: dict[str, Any] = {
        "bench": "load", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1)},
        "sessions": args.sessions, "seconds": args.seconds, "webgl": args.webgl, "home": str(home),
        "workspace_preparation_s": preparation,
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
    }
    server = Server(home, log)
    sampler = MemorySampler(server)
    marks: dict[str, float] = {}

    def mark(when: str) -> None:
        marks[f"server_cpu_{when}"] = cpu_seconds(server.tree())
        marks[f"client_cpu_{when}"] = sampler.client_cpu_total()
        marks[f"server_rss_{when}"] = rss(server.tree())

    try:
        record["server_startup_s"] = round(server.wait_healthy(), 2)
        record["server_rss_idle_mib"] = round(rss(server.tree()) / MIB, 1)
        sampler.start()
        warm, load, wall, crashed = asyncio.run(drive(server.url, args.sessions, args.seconds, args.timeout,
                                                      args.warmup, args.webgl, mark))
        sampler.stop()
        record["load_wall_s"] = round(wall, 1)
        record["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        record["server_rss_mib"] = {"idle_after_start": record.pop("server_rss_idle_mib"),
                                    "before_load": round(marks["server_rss_start"] / MIB, 1),
                                    "peak": round(sampler.server_peak / MIB, 1),
                                    "after_load": round(marks["server_rss_end"] / MIB, 1),
                                    "samples": sampler.samples}
        # CPU seconds of the load phase; over load_wall_s seconds the machine could give at most cores x that
        record["cpu_s_during_load"] = {
            "server": round(marks["server_cpu_end"] - marks["server_cpu_start"], 1),
            "browser": round(marks["client_cpu_end"] - marks["client_cpu_start"], 1)}
        record["browser_rss_peak_mib"] = round(sampler.client_peak / MIB, 1)
        record["warmup"] = {r.kind: {"latency_s": rounded(r.latency_s), "browser_render_s": rounded(r.render_s),
                                     "answered": r.answered, **({"error": r.error} if r.error else {})}
                            for r in warm}
        record["load"] = {"total": summarize(load),
                          "per_kind": {k: summarize([r for r in load if r.kind == k]) for k in KINDS},
                          "per_session": {i: len([r for r in load if r.session == i]) for i in range(args.sessions)}}
        record["sessions_stopped_by_an_error"] = crashed
        record["failures"] = [as_dict(r) for r in load + warm if not r.answered]
        if args.requests:
            record["requests"] = [as_dict(r) for r in load]
    finally:
        if sampler.is_alive():
            sampler.stop()
        server.stop()
    record["server_log"] = {"path": str(log), **log_tracebacks(log)}
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
