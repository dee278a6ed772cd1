"""First render of every page within one running app session, as a user navigates (the server's
preload as ``relviz app`` does it, the Home page, then each page visited once), with the demo
workspace and its disk caches as ``make app`` leaves them.

Usage: RELVIZ_HOME=workspace .venv/bin/python bench/app_session_bench.py
"""

import json
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["app_pages/structure.py", "app_pages/compare.py", "app_pages/zeroshot.py", "app_pages/jobs.py", "app_pages/toy.py"]


def main() -> None:
    from relviz.serve import start

    out = {"server preload (before the server listens)": round(start(), 2)}
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    t = time.perf_counter()
    at.run()
    out["app_pages/home.py"] = round(time.perf_counter() - t, 2)
    for page in PAGES:
        t = time.perf_counter()
        at.switch_page(page).run()
        assert not at.exception, at.exception
        out[page] = round(time.perf_counter() - t, 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
