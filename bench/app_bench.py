"""App responsiveness with the demo workspace: each page's first render (fresh process per page,
cold Streamlit caches, warm disk caches after a first visit) and the zero-shot query update.

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/app_bench.py
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["pages/home.py", "pages/structure.py", "pages/compare.py", "pages/zeroshot.py", "pages/jobs.py",
         "pages/toy.py"]

CHILD = """
import sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=600)
at.run()
t = time.perf_counter()
at.switch_page(sys.argv[2]).run()
first = time.perf_counter() - t
assert not at.exception, at.exception
extra = {}
if sys.argv[2].endswith("zeroshot.py"):
    t = time.perf_counter()
    at.text_area(key="zs_queries").input("road = driveable surface\\ncar\\nbuilding = manmade\\ntree = vegetation").run()
    extra["query_update_s"] = round(time.perf_counter() - t, 3)
    extra["points"] = at.metric[2].value
    extra["reported_query_latency"] = at.metric[1].value
print({"first_render_s": round(first, 3), **extra})
"""


def main() -> None:
    out = {}
    for page in PAGES:
        runs = []
        for _ in range(2):  # the first visit fills the disk caches (teacher and student features)
            res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "app.py"), page], capture_output=True,
                                 text=True, cwd=ROOT)
            if res.returncode:
                raise SystemExit(res.stderr[-2000:])
            runs.append(eval(res.stdout.strip().splitlines()[-1]))
        out[page] = {"cold_disk_caches": runs[0], "warm_disk_caches": runs[1]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
