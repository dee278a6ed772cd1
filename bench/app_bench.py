"""App responsiveness with the demo workspace: each page's first render in a fresh process started
as ``relviz app`` starts the server (shared modules imported first), with cold Streamlit caches and
the disk caches as ``make app`` leaves them (after ``relviz warm``); and the zero-shot
query update: right after the page is drawn (the teacher is still loading in the background) and
once it is loaded.

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/app_bench.py [--cold]
(--cold: each page once with an empty disk cache, as for a run nobody has looked at yet)
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["app_pages/home.py", "app_pages/structure.py", "app_pages/compare.py", "app_pages/zeroshot.py", "app_pages/jobs.py",
         "app_pages/toy.py"]

CHILD = """
import sys, time
from streamlit.testing.v1 import AppTest
from relviz.serve import start
out = {"server_preload_s": round(start(), 3)}  # what `relviz app` does before it listens
t = time.perf_counter()
at = AppTest.from_file(sys.argv[1], default_timeout=600)
at.run()  # the app's first script run: Home, with the imports every page shares
out["home_first_run_s"] = round(time.perf_counter() - t, 3)
assert not at.exception, at.exception
if not sys.argv[2].endswith("home.py"):
    t = time.perf_counter()
    at.switch_page(sys.argv[2]).run()
    out["first_render_s"] = round(time.perf_counter() - t, 3)
    assert not at.exception, at.exception
if sys.argv[2].endswith("zeroshot.py"):
    queries = ["road = driveable surface\\ncar\\nbuilding = manmade\\ntree = vegetation",
               "street = driveable surface\\nvehicle = car\\nwall = manmade\\nplant = vegetation"]
    for name, q in zip(("query_update_immediate_s", "query_update_s"), queries):
        t = time.perf_counter()
        at.session_state["zs_queries"] = q  # what the live query box sends
        at.run()
        out[name] = round(time.perf_counter() - t, 3)
        assert not at.exception, at.exception
    out["metrics"] = {m.label: m.value for m in at.metric}
print(out)
"""


def _cold_home(base: Path, into: Path) -> Path:
    """A workspace with ``base``'s datasets, runs and settings but an empty cache."""
    into.mkdir()
    for name in ("datasets", "runs", "relviz.toml"):
        if (base / name).exists():
            (into / name).symlink_to((base / name).resolve())
    (into / "cache").mkdir()
    return into


def main() -> None:
    cold = "--cold" in sys.argv  # every page with an empty disk cache (nothing warmed, no earlier visit)
    base = Path(os.environ.get("RELVIZ_HOME", ROOT / "workspace"))
    out = {}
    for page in PAGES:
        runs = []
        for _ in range(1 if cold else 2):  # two fresh processes: the spread between runs
            with tempfile.TemporaryDirectory() as tmp:
                home = _cold_home(base, Path(tmp) / "home") if cold else base
                res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "app.py"), page], capture_output=True,
                                     text=True, cwd=ROOT, env={**os.environ, "RELVIZ_HOME": str(home)})
            if res.returncode:
                raise SystemExit(res.stderr[-2000:])
            runs.append(eval(res.stdout.strip().splitlines()[-1]))
        out[page] = runs
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
