"""Small things several test files share (tests/ is on the import path, as for fp_bounds)."""

import time

# a tiny training run: a few seconds a step on 2 cores; ``dataset`` is filled in by each test
TINY = dict(dataset="", split="mini_train", arch="MinkUNet14", width=0.125, batch=1, pairs=256, lr=0.05,
            val_scenes=1, val_per_scene=1, val_per_class=50, val_every=1000, checkpoint_every=2, log_every=1, augment=False)


def wait_for(predicate, timeout: float = 240.0, every: float = 0.3, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def trace_values(value) -> list:
    """A plotly trace's values as a page sent them (plotly 6 sends arrays as typed base64 buffers)."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)
