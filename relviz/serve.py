"""Starting the Streamlit app: import the modules every page shares before the server listens, then
hand over to Streamlit's own command line in this process.

Streamlit runs the app's scripts only when a browser connects, so without this the first visitor
would wait for torch, pandas and plotly to import (about 3 s on a 2-core CPU). Imported here, once,
they are in ``sys.modules`` when the first page runs.
"""

from __future__ import annotations

import gc
import importlib
import sys
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"
# What the pages import at their top, heaviest first; open_clip is left out: only free-text queries
# need it, and the zero-shot page loads the teacher in the background.
PRELOAD = ("torch", "numpy", "pandas", "plotly.express", "plotly.graph_objects", "plotly.subplots",
           "relviz.workspace", "relviz.models.checkpoint", "relviz.eval", "relviz.eval.features",
           "relviz.eval.zeroshot", "relviz.metrics", "relviz.viz.points", "relviz.viz.toy", "relviz.toy",
           "relviz.jobs", "relviz.train.config", "relviz.info", "relviz.viz.zeroshot_view", "relviz.viz.live_cloud",
           "relviz.eval.search", "relviz.eval.structure", "relviz.eval.report", "relviz.viz.pca")


def preload() -> float:
    """Import :data:`PRELOAD`; returns the seconds it took."""
    start = time.perf_counter()
    for name in PRELOAD:
        importlib.import_module(name)
    return time.perf_counter() - start


_modules_when_frozen: frozenset[str] = frozenset()


def freeze_imports() -> bool:
    """Move every object the garbage collector tracks into its permanent generation (``gc.freeze``)
    when modules were imported since the last call; True if it froze. Call it after the imports and
    at the end of each script run. Why: the app process holds about 430k tracked objects after its
    imports (torch, pandas, plotly, streamlit; nearly all functions, dicts and tuples that live as
    long as the process), and a full collection scans them all: 270-360 ms on this 2-core CPU,
    measured in the server every ~0.5 s while a user typed into the Zero-shot page, each one a stall
    of the keystroke being answered. Frozen objects are never scanned; what the process creates
    later is collected as usual. Freezing only when a module was imported keeps it to the few runs
    that import something (a first page, the teacher's open_clip)."""
    global _modules_when_frozen
    modules = frozenset(sys.modules)
    if modules <= _modules_when_frozen:
        return False
    gc.freeze()
    _modules_when_frozen = modules
    return True


def start() -> float:
    """What the server does before it listens: :func:`preload`, then the teacher's loading in the
    background (ready by the time a first free-text query comes). Returns the preload seconds."""
    from relviz.config import ConfigError, load_settings
    from relviz.teacher import load_teacher_async

    seconds = preload()
    freeze_imports()
    try:
        settings = load_settings()
    except ConfigError:
        return seconds  # the pages show the settings error
    load_teacher_async(settings.teacher_spec)
    return seconds


def run(host: str = "127.0.0.1", port: int = 8501, extra: list[str] | None = None) -> None:
    """``streamlit run app.py`` on ``host``:``port`` (127.0.0.1 unless asked), after :func:`start`."""
    from streamlit.web import cli as streamlit_cli

    seconds = start()
    print(f"relviz: modules loaded in {seconds:.1f} s; starting the app on http://{host}:{port}", flush=True)
    sys.argv = ["streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
                "--server.fileWatcherType", "none", "--server.headless", "true",
                "--browser.gatherUsageStats", "false", *(extra or [])]
    streamlit_cli.main(prog_name="streamlit")
