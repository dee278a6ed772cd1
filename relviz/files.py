"""Writing files so that nothing is ever half-written: a temporary file next to the target, renamed
onto it only when complete (readers in other processes see the old file or the new one)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder (created if needed) to write to; on a clean exit
    it replaces ``path``, on an error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def new_folder(path: str | Path) -> Iterator[Path]:
    """Write a folder that must not exist yet: the block fills a temporary folder beside it, renamed to
    ``path`` when the block ends; on any error (or a kill before the rename) nothing is at ``path``."""
    import shutil

    from relviz.errors import OutputExistsError

    path = Path(path)
    if path.exists():
        raise OutputExistsError(f"{path} already exists; choose a new folder or remove it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | Path) -> Any | None:
    """The JSON value in ``path``, or None when the file is missing or damaged (a cache entry that
    its owner recomputes)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(value))


def remove_temporaries(folder: str | Path) -> int:
    """Delete what :func:`atomic_path` leaves behind when its process is killed mid-write (nothing
    else names files this way); returns how many were removed."""
    stale = list(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def file_version(path: str | Path) -> str:
    """A short digest that changes whenever the file does (its resolved path, size and modification
    time): a key for what was computed from it."""
    path = Path(path)
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def without_paths(value: Any) -> Any:
    """``value`` (JSON-like) with every absolute path shortened to its last component: what is
    committed names no machine's folders."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and len(value) > 1:
        return Path(value).name
    return value
