"""The server's limits and serving settings in one place: defaults here, an optional TOML file, environment overrides.

Where a value comes from, last one wins:
1. the defaults below (`Settings`), chosen for a shared lecture server;
2. a TOML file: `$EXPLORER_SETTINGS`, else `explorer.toml` in the repository (git-ignored; copy
   `explorer.example.toml`, which lists every key with its default and meaning);
3. an environment variable per key, `EXPLORER_<KEY>` in upper case (`max_jobs` -> `EXPLORER_MAX_JOBS`);
   lists (`data_roots`) are separated by the OS path separator (`:` on Linux).

`current()` is cheap (it re-reads only when the file or the environment changed), so code reads it at call time
and a test that sets an environment variable sees it at once. A bad value raises SettingsError naming the key,
where it came from and what is allowed: a server refuses to start on a typo rather than run with a guess.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from explorer.core.provenance import REPO_DIR

ENV_FILE = "EXPLORER_SETTINGS"
DEFAULT_FILE = REPO_DIR / "explorer.toml"
EXAMPLE_FILE = REPO_DIR / "explorer.example.toml"


class SettingsError(ValueError):
    """A setting in the file or the environment is malformed or out of range."""


@dataclass(frozen=True)
class Settings:
    """Every limit and serving setting (units in the names). The docstring of each field is its comment."""

    # jobs: the background runner shared by every visitor
    max_jobs: int = 2  # compute slots: trainings that compute at this instant (sleeping and paused ones hold none)
    max_running: int = 4  # trainings admitted at once (computing, or sleeping between paced epochs); others queue
    slice_s: float = 0.5  # a job that computed this long while others wait for a slot yields it (round robin)
    max_queue: int = 24  # trainings waiting to be admitted; more get "the server is busy, try again in a minute"
    orphan_timeout_s: float = 120.0  # a job whose browser tab stopped polling is cancelled after this
    max_job_s: float = 1800.0  # compute time one job may use (held slot, not sleep); then it is stopped
    status_log_s: float = 60.0  # a status line (queue, jobs, sessions, memory) in the log this often; 0: never
    # visitors' data
    data_roots: tuple[str, ...] = ()  # server folders visitors may open as image folders; empty: none (uploads only)
    max_upload_mb: float = 10.0  # the largest upload accepted (keep <= server.maxUploadSize in .streamlit/config.toml)
    max_archive_mb: float = 200.0  # total uncompressed size of an uploaded zip of images
    max_archive_files: int = 20_000  # files in an uploaded zip
    max_csv_rows: int = 20_000  # points in an uploaded CSV
    # sign-in
    require_login: bool = False  # visitors sign in with st.login first (needs [auth] in .streamlit/secrets.toml)

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, allowed: str) -> None:
            if not ok:
                raise SettingsError(f"setting {key} must be {allowed}, got {getattr(self, key)!r}")

        need(1 <= self.max_jobs <= 1024, "max_jobs", "a whole number from 1 to 1024")
        need(1 <= self.max_running <= 100_000, "max_running", "a whole number from 1 to 100000")
        need(0 <= self.max_queue <= 100_000, "max_queue", "a whole number from 0 to 100000")
        need(0 < self.slice_s <= 3600, "slice_s", "a number of seconds in (0, 3600]")
        for key in ("orphan_timeout_s", "max_job_s", "max_upload_mb", "max_archive_mb"):
            need(0 < getattr(self, key) < float("inf"), key, "a positive number")
        need(0 <= self.status_log_s < float("inf"), "status_log_s", "a number of seconds >= 0 (0: off)")
        need(1 <= self.max_archive_files <= 10_000_000, "max_archive_files", "a whole number from 1 to 10000000")
        need(1 <= self.max_csv_rows <= 10_000_000, "max_csv_rows", "a whole number from 1 to 10000000")
        need(all(isinstance(r, str) and r.strip() for r in self.data_roots), "data_roots", "a list of folder paths")

    def data_root_paths(self) -> tuple[Path, ...]:
        """The allowed server data folders, resolved (symlinks followed), that exist."""
        roots = []
        for raw in self.data_roots:
            path = Path(raw).expanduser().resolve()
            if path.is_dir():
                roots.append(path)
        return tuple(roots)


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def env_name(key: str) -> str:
    """The environment variable that overrides a key."""
    return "EXPLORER_" + key.upper()


def _coerce(key: str, value: Any, origin: str) -> Any:
    """A value from TOML or the environment (a string) as the field's type, or SettingsError."""
    default = FIELDS[key].default
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).strip()) if isinstance(value, str) else float(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                return tuple(p for p in value.split(os.pathsep) if p.strip())
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError
    except (TypeError, ValueError):
        kind = type(default).__name__ if not isinstance(default, tuple) else "list of strings"
        raise SettingsError(f"setting {key} (from {origin}) must be a {kind}, got {value!r}") from None
    raise SettingsError(f"setting {key} has an unsupported type")  # pragma: no cover


def settings_file() -> Path | None:
    """The TOML file in use: $EXPLORER_SETTINGS (which must exist), else explorer.toml if present."""
    env = os.environ.get(ENV_FILE, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise SettingsError(f"{ENV_FILE}={env} is not a file")
        return path
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def load(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file, then the environment; validated."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise SettingsError(f"cannot read the settings file {path}: {err}") from None
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)} in {path}; known: {', '.join(FIELDS)}")
        values.update({k: _coerce(k, v, str(path)) for k, v in data.items()})
    for key in FIELDS:
        raw = environ.get(env_name(key))
        if raw is not None and raw.strip() != "":
            values[key] = _coerce(key, raw, env_name(key))
    return Settings(**values)


_lock = threading.Lock()
_memo: tuple[Any, Settings] | None = None


def current() -> Settings:
    """The settings now in force (re-read when the file or an EXPLORER_ variable changed)."""
    global _memo
    path = settings_file()
    stamp = (path, path.stat().st_mtime_ns if path else None,
             tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("EXPLORER_"))))
    with _lock:
        if _memo is not None and _memo[0] == stamp:
            return _memo[1]
    settings = load(path)
    with _lock:
        _memo = (stamp, settings)
    return settings


def describe(settings: Settings | None = None) -> list[str]:
    """One 'key = value' line per setting (for `python -m explorer info` and the server's first log line)."""
    settings = settings or current()
    return [f"{k} = {getattr(settings, k)!r}" for k in FIELDS]
