"""Installed versions of the packages relviz is built on (recorded in checkpoints and reports, shown
by ``relviz info``)."""

from __future__ import annotations

import importlib.metadata

# Distribution names of the packages relviz is built on.
KEY_PACKAGES = (
    "torch", "torchvision", "open_clip_torch", "numpy", "safetensors", "nuscenes-devkit", "open3d",
    "scikit-learn", "scikit-image", "streamlit", "plotly", "typer", "MinkowskiEngine",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each key package, None when it is not installed."""
    out: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out
