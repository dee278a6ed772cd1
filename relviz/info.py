"""Facts about this installation: package versions, compute device, sparse backends, workspace.

Shared by ``relviz info`` and the app's Home page so both always say the same thing.
"""

from __future__ import annotations

import importlib.util
import platform
import sqlite3
from pathlib import Path
from typing import Any

from relviz.config import Settings
from relviz.versions import package_versions

def device_info() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch_cuda_build": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
    }


def sparse_backends() -> dict[str, bool]:
    """Which sparse-convolution backends can be used here ('torch' always can)."""
    return {"torch": True, "minkowski": importlib.util.find_spec("MinkowskiEngine") is not None}


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _count_jobs(db: Path) -> dict[str, int]:
    if not db.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return dict(con.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
    except sqlite3.Error:
        return {}


def workspace_info(settings: Settings) -> dict[str, Any]:
    """What the workspace holds: datasets (by version folder), cache size, runs, jobs."""
    datasets = {}
    if settings.datasets_dir.is_dir():
        for d in sorted(p for p in settings.datasets_dir.iterdir() if p.is_dir()):
            versions = sorted(v.name for v in d.iterdir() if v.is_dir() and v.name.startswith("v1.0-"))
            datasets[d.name] = versions
    runs = sorted(p.name for p in settings.runs_dir.iterdir() if p.is_dir()) if settings.runs_dir.is_dir() else []
    return {
        "home": str(settings.home),
        "exists": settings.home.is_dir(),
        "config_file": str(settings.config_file) if settings.config_file else None,
        "datasets": datasets,
        "cache_bytes": _dir_size(settings.cache_dir),
        "runs": runs,
        "jobs": _count_jobs(settings.jobs_db),
    }


def collect_info(settings: Settings) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "packages": package_versions(),
        "device": device_info(),
        "sparse_backends": sparse_backends(),
        "settings": {"device": settings.device, "sparse_backend": settings.sparse_backend,
                     "dataset": settings.dataset, "teacher": str(settings.teacher_spec)},
        "workspace": workspace_info(settings),
    }


def _datasets_line(datasets: dict[str, list[str]]) -> str:
    parts = [f"{name} ({', '.join(versions) or 'no version folder'})" for name, versions in datasets.items()]
    return ", ".join(parts) or "none"


def format_info(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`collect_info`'s result."""
    dev = info["device"]
    ws = info["workspace"]
    lines = [f"python            {info['python']}", "packages:"]
    lines += [f"  {k:<17} {v or 'not installed'}" for k, v in info["packages"].items()]
    gpu = f"yes ({dev['gpu']})" if dev["cuda_available"] else "no"
    lines += [
        "device:",
        f"  cuda available   {gpu}",
        f"  torch cuda build {dev['torch_cuda_build'] or 'none (CPU-only build)'}",
        f"  cpu threads      {dev['cpu_threads']}",
        "sparse backends:",
    ]
    lines += [f"  {k:<17} {'available' if v else 'not installed'}" for k, v in info["sparse_backends"].items()]
    lines += ["settings:"] + [f"  {k:<17} {v}" for k, v in info["settings"].items()]
    lines += [
        "workspace:",
        f"  home             {ws['home']}{'' if ws['exists'] else ' (not created yet)'}",
        f"  config file      {ws['config_file'] or 'none'}",
        f"  datasets         {_datasets_line(ws['datasets'])}",
        f"  cache            {ws['cache_bytes'] / 2**20:.1f} MiB",
        f"  runs             {len(ws['runs'])}",
        f"  jobs             {', '.join(f'{k}: {v}' for k, v in ws['jobs'].items()) or 'none'}",
    ]
    return "\n".join(lines)
