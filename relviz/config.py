"""Workspace paths and settings.

One root (``./workspace`` unless ``RELVIZ_HOME`` says otherwise) holds everything relviz generates:

    <home>/datasets/   synthetic or linked nuScenes-format datasets
    <home>/cache/      teacher features, point features (disk caches)
    <home>/runs/       training runs (checkpoints, events, logs)
    <home>/logs/       job logs
    <home>/jobs.sqlite the job store

Settings come from, lowest priority first: defaults, an optional TOML file (``$RELVIZ_CONFIG``,
else ``./relviz.toml``, else ``<home>/relviz.toml``), then ``RELVIZ_*`` environment variables.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from relviz.errors import RelvizError, shorten

DEVICES = ("auto", "cpu", "cuda")
SPARSE_BACKENDS = ("torch", "minkowski")


class ConfigError(RelvizError):
    """A setting, file or path that relviz cannot use; the message names it and says what is expected."""


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher and its weights, which travel together: ``demo`` (``pretrained``: another demo-teacher
    file, else the shipped one), or an open_clip model name with ``pretrained`` an open_clip tag or a
    local weights file."""

    name: str = "demo"
    pretrained: str | None = None

    def __str__(self) -> str:
        return self.name + (f" ({self.pretrained})" if self.pretrained else "")


@dataclass(frozen=True)
class Settings:
    home: Path
    device: str = "auto"
    sparse_backend: str = "torch"
    dataset: str = "synthetic-mini"  # folder under datasets/ (or an absolute dataroot)
    teacher: str = "demo"  # "demo" or an open_clip model name such as ViT-B-16
    teacher_pretrained: str | None = None  # open_clip pretrained tag or a local weights file
    config_file: Path | None = None

    @property
    def teacher_spec(self) -> TeacherSpec:
        return TeacherSpec(self.teacher, self.teacher_pretrained)

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def features_dir(self) -> Path:
        """Registered feature sets, one folder each (``relviz features import``)."""
        return self.home / "features"

    @property
    def imported_dir(self) -> Path:
        """Published checkpoints put here (OpenScene's, SLidR's) are listed beside relviz's students."""
        return self.home / "imported"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def jobs_db(self) -> Path:
        return self.home / "jobs.sqlite"

    def dataset_root(self, name: str | None = None) -> Path:
        """The dataroot of a dataset given by folder name under ``datasets/`` or by path."""
        name = name or self.dataset
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.datasets_dir / name

    def ensure(self) -> "Settings":
        """Create the workspace folders (idempotent)."""
        for d in (self.home, self.datasets_dir, self.cache_dir, self.runs_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self


# Keys a TOML file or the environment may set, with their types.
_KEYS = {f.name: f for f in fields(Settings) if f.name not in ("home", "config_file")}


def _check_choice(value: Any, choices: tuple[str, ...], source: str) -> None:
    if value not in choices:
        raise ConfigError(f"{source} is {shorten(value)}; expected one of {', '.join(choices)}")


def _validate_home(raw: str, source: str) -> Path:
    if not raw.strip():
        raise ConfigError(f"{source}: the workspace path is empty; expected a directory path")
    home = Path(raw).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"{source}: workspace {home} exists but is not a directory")
    probe = home
    while not probe.exists():  # the nearest existing ancestor must be writable to create it
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{source}: workspace {home} is not writable (no write access to {probe})")
    return home


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot be read ({e.strerror or e})") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: not valid TOML ({e})") from e
    table = data.get("relviz", data)  # settings may sit under [relviz] or at the top level
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [relviz] must be a table")
    unknown = sorted(set(table) - set(_KEYS) - {"home"})
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; known: home, {', '.join(_KEYS)}"
        )
    for key, value in table.items():
        if not isinstance(value, str):
            raise ConfigError(f"config file {path}: '{key}' must be a string, got {type(value).__name__}")
    return table


def _find_config_file(env: Mapping[str, str], cwd: Path) -> Path | None:
    if env.get("RELVIZ_CONFIG"):
        path = Path(env["RELVIZ_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"RELVIZ_CONFIG: {path} does not exist or is not a file")
        return path
    local = cwd / "relviz.toml"
    return local if local.is_file() else None


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Resolve settings from defaults, the TOML file and ``RELVIZ_*`` variables; validate them."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    config_file = _find_config_file(env, cwd)
    table = _read_toml(config_file) if config_file else {}

    if "RELVIZ_HOME" in env:
        home = _validate_home(env["RELVIZ_HOME"], "RELVIZ_HOME")
    elif "home" in table:
        home = _validate_home(str((config_file.parent / table["home"]) if config_file else table["home"]),
                              f"config file {config_file}: 'home'")
    else:
        home = _validate_home(str(cwd / "workspace"), "default workspace ./workspace")
    if config_file is None and (home / "relviz.toml").is_file():
        config_file = home / "relviz.toml"
        table = _read_toml(config_file)

    values: dict[str, Any] = {k: v for k, v in table.items() if k != "home"}
    # where each value came from, so that an error names the variable or the file and key
    sources = {k: f"config file {config_file}: '{k}'" for k in values}
    for key in _KEYS:
        env_key = f"RELVIZ_{key.upper()}"
        if env.get(env_key):
            values[key], sources[key] = env[env_key], env_key
    for key, choices in (("device", DEVICES), ("sparse_backend", SPARSE_BACKENDS)):
        if key in values:
            _check_choice(values[key], choices, sources[key])
    for key in ("dataset", "teacher"):
        if key in values and not values[key].strip():
            raise ConfigError(f"{sources[key]} is empty; expected a name")
    return replace(Settings(home=home, config_file=config_file), **values)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask; the whole machine where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1
