"""The one module that owns the disk: content-addressed, verified, atomically written results.

An entry lives at `<root>/<kind>/<key[:2]>/<key>/` with `config.json`, `metrics.json`,
`meta.json`, optional `tensors.safetensors`, and `manifest.json` (written last) holding the
sha256 and size of every other file. Anything that fails verification is treated as missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from explorer.core.provenance import REPO_DIR, provenance

try:
    import fcntl
except ImportError:  # Windows: fall back to in-process locking only.
    fcntl = None

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the entry layout changes; old entries then simply miss
CONFIG, METRICS, META, TENSORS, MANIFEST = (
    "config.json",
    "metrics.json",
    "meta.json",
    "tensors.safetensors",
    "manifest.json",
)
REQUIRED_FILES = frozenset({CONFIG, METRICS, META})
KIND_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
KEY_PATTERN = re.compile(r"[0-9a-f]{64}")


class CorruptEntry(Exception):
    """An entry on disk that does not match its manifest or cannot be parsed."""


@dataclasses.dataclass(frozen=True)
class ComputeResult:
    """What a compute function hands to `Cache.get_or_compute`."""

    metrics: dict[str, Any]
    tensors: dict[str, torch.Tensor] | None = None
    meta: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One verified cache entry; tensors are loaded only on request."""

    key: str
    kind: str
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    meta: dict[str, Any]
    shipped: bool = False

    def tensors(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Load the saved tensors (safetensors, never pickle) onto `device`, default cpu."""
        file = self.path / TENSORS
        if not file.exists():
            return {}
        return load_file(file, device=str(device) if device is not None else "cpu")


def to_plain(obj: Any) -> Any:
    """Convert a config (dataclass, dict, enum, tuple, ...) to JSON-ready plain data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, dict):
        return {str(to_plain(k)): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return obj.as_posix()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot turn {type(obj).__name__} into plain data for a cache key")


def _canonical_json(data: Any) -> str:
    """One spelling per value: sorted keys, no spaces, repr floats."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def key_for(kind: str, config: Any) -> str:
    """The content address of (kind, config) under the current FORMAT_VERSION."""
    payload = {"kind": kind, "format": FORMAT_VERSION, "config": to_plain(config)}
    return hashlib.sha256(_canonical_json(payload).encode()).hexdigest()


def default_root() -> Path:
    """Runtime cache dir: $EXPLORER_CACHE_DIR, else <repo>/cache/runtime."""
    env = os.environ.get("EXPLORER_CACHE_DIR", "").strip()
    return Path(env) if env else REPO_DIR / "cache" / "runtime"


def default_shipped_root() -> Path:
    """Read-only results committed with the app."""
    return REPO_DIR / "cache" / "shipped"


def _check_kind(kind: str) -> str:
    """Kinds become directory names, so keep them to a safe alphabet."""
    if not KIND_PATTERN.fullmatch(kind):
        raise ValueError(f"invalid cache kind {kind!r}")
    return kind


def _file_digest(path: Path) -> dict[str, Any]:
    """sha256 and size of one file, as stored in the manifest."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def _write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    """Write JSON; NaN and inf are allowed (Python reads them back)."""
    path.write_text(json.dumps(data, indent=indent, allow_nan=True) + "\n")


def _read_json(path: Path) -> Any:
    """Parse one JSON file of an entry, or raise CorruptEntry."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptEntry(f"{path.name}: {err}") from err


def _load(path: Path, kind: str, key: str, shipped: bool) -> Entry:
    """Verify an entry against its manifest and read it, or raise CorruptEntry."""
    manifest = _read_json(path / MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("key") != key:
        raise CorruptEntry("manifest is malformed or names another key")
    on_disk = {p.name for p in path.iterdir()} - {MANIFEST}
    if on_disk != set(files) or not REQUIRED_FILES <= on_disk:
        raise CorruptEntry(f"files {sorted(on_disk)} do not match manifest {sorted(files)}")
    for name, expected in files.items():
        if _file_digest(path / name) != expected:
            raise CorruptEntry(f"{name} does not match its manifest checksum")
    header = _read_json(path / CONFIG)
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise CorruptEntry("config.json is malformed or names another kind")
    metrics, meta = _read_json(path / METRICS), _read_json(path / META)
    if not isinstance(metrics, dict) or not isinstance(meta, dict):
        raise CorruptEntry("metrics.json and meta.json must hold objects")
    return Entry(key, kind, path, header.get("config"), metrics, meta, shipped)


_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(lock_file: Path) -> threading.Lock:
    """One in-process lock per key, shared by every Cache instance."""
    with _thread_locks_guard:
        return _thread_locks.setdefault(lock_file, threading.Lock())


class Cache:
    """Content-addressed results on disk: a writable runtime root over a read-only shipped root."""

    def __init__(self, root: Path | None = None, shipped_root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.shipped_root = (
            Path(shipped_root) if shipped_root is not None else default_shipped_root()
        )

    def get(self, kind: str, config: Any) -> Entry | None:
        """The verified entry for (kind, config), runtime root first, else None."""
        key = key_for(_check_kind(kind), config)
        for root, shipped in ((self.root, False), (self.shipped_root, True)):
            entry = self._read(self._entry_dir(root, kind, key), kind, key, shipped)
            if entry is not None:
                return entry
        return None

    def put(
        self,
        kind: str,
        config: Any,
        metrics: dict[str, Any],
        tensors: dict[str, torch.Tensor] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Entry:
        """Write an entry atomically; if another writer got there first, keep theirs."""
        key = key_for(_check_kind(kind), config)
        full_meta = {**provenance(), **to_plain(meta or {})}
        tmp = Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", dir=self._scratch(kind)))
        try:
            header = {"kind": kind, "format": FORMAT_VERSION, "config": to_plain(config)}
            _write_json(tmp / CONFIG, header)
            _write_json(tmp / METRICS, to_plain(metrics), indent=None)
            _write_json(tmp / META, full_meta)
            if tensors:
                # Copy to cpu: safetensors refuses tensors that share storage.
                cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
                save_file(cpu, tmp / TENSORS)
            files = {p.name: _file_digest(p) for p in sorted(tmp.iterdir())}
            manifest = {"format": FORMAT_VERSION, "kind": kind, "key": key, "files": files}
            _write_json(tmp / MANIFEST, manifest)
            return self._publish(tmp, kind, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def get_or_compute(self, kind: str, config: Any, compute: Callable[[], ComputeResult]) -> Entry:
        """The cached entry, else run `compute` exactly once across threads and processes."""
        entry = self.get(kind, config)
        if entry is not None:
            return entry
        with self._lock(kind, key_for(kind, config)):
            entry = self.get(kind, config)
            if entry is not None:
                return entry
            start = time.perf_counter()
            result = compute()
            wall_time_s = time.perf_counter() - start
            if not isinstance(result, ComputeResult):
                raise TypeError(f"compute must return ComputeResult, got {type(result).__name__}")
            meta = {"wall_time_s": wall_time_s, **(result.meta or {})}
            return self.put(kind, config, result.metrics, result.tensors, meta)

    def entries(self, kind: str, where: Callable[[Any], bool] | None = None) -> list[Entry]:
        """Every valid entry of `kind`, runtime first, then shipped ones not shadowed by runtime.

        `where(config)` picks entries by their config before they are verified (verifying reads
        every file), so a filtered listing of a large kind stays cheap; only picked ones are returned.
        """
        found: dict[str, Entry] = {}
        for root, shipped in ((self.root, False), (self.shipped_root, True)):
            kind_dir = root / _check_kind(kind)
            if not kind_dir.is_dir():
                continue
            for path in sorted(kind_dir.glob("??/*")):
                if path.name in found or not KEY_PATTERN.fullmatch(path.name):
                    continue
                if where is not None and not self._picked(path, where):
                    continue
                entry = self._read(path, kind, path.name, shipped)
                if entry is not None:
                    found[entry.key] = entry
        return list(found.values())

    def by_key(self, kind: str, key: str) -> Entry | None:
        """The verified entry with this content address (runtime root first), else None."""
        _check_kind(kind)
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            return None
        for root, shipped in ((self.root, False), (self.shipped_root, True)):
            entry = self._read(self._entry_dir(root, kind, key), kind, key, shipped)
            if entry is not None:
                return entry
        return None

    def delete(self, kind: str, config: Any) -> bool:
        """Remove the runtime entry for (kind, config); shipped entries are never touched."""
        path = self._entry_dir(self.root, _check_kind(kind), key_for(kind, config))
        if not path.exists():
            return False
        self._remove(path)
        return True

    def _entry_dir(self, root: Path, kind: str, key: str) -> Path:
        """Where the entry for `key` lives under `root`."""
        return root / kind / key[:2] / key

    def _scratch(self, kind: str) -> Path:
        """Temp space on the same filesystem as the entries, so rename is atomic."""
        scratch = self.root / kind / ".tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch

    def _picked(self, path: Path, where: Callable[[Any], bool]) -> bool:
        """`where` on an entry's unverified config; an unreadable one is picked, so _read judges it."""
        try:
            header = _read_json(path / CONFIG)
        except (CorruptEntry, OSError):
            return True
        return not isinstance(header, dict) or bool(where(header.get("config")))

    def _read(self, path: Path, kind: str, key: str, shipped: bool) -> Entry | None:
        """Load an entry if present and valid; corrupt runtime entries are removed."""
        if not path.is_dir():
            return None
        try:
            return _load(path, kind, key, shipped)
        except (CorruptEntry, OSError) as err:
            if shipped:
                log.warning("ignoring corrupt shipped cache entry %s: %s", path, err)
            else:
                log.warning("removing corrupt cache entry %s: %s", path, err)
                self._remove(path)
            return None

    def _publish(self, tmp: Path, kind: str, key: str) -> Entry:
        """Rename a finished temp dir into place, unless a valid entry is already there."""
        dest = self._entry_dir(self.root, kind, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                os.rename(tmp, dest)
                return _load(dest, kind, key, shipped=False)
            except OSError:
                if not dest.is_dir():
                    raise
            # Another writer won; keep theirs, unless it is corrupt (then it is removed).
            existing = self._read(dest, kind, key, shipped=False)
            if existing is not None:
                return existing
        raise RuntimeError(f"could not publish cache entry {dest}")

    def _remove(self, path: Path) -> None:
        """Move an entry aside atomically, then delete it, so readers never see half of one."""
        kind = path.parent.parent.name
        trash = self._scratch(kind) / f"trash-{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold the per-key thread lock and, where available, an flock on its lock file."""
        lock_dir = self.root / kind / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock_file = (lock_dir / f"{key}.lock").resolve()
        with _thread_lock(lock_file), lock_file.open("a") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield


@functools.cache
def default_cache() -> Cache:
    """The process's one Cache ($EXPLORER_CACHE_DIR read once, at the first call): the only place that builds one.

    Command-line entry points and the app (views.widgets.app_cache) pass it to every lab function that reads or
    writes results; tests build their own Cache(tmp_path) and pass that.
    """
    return Cache()


def shipped_cache() -> Cache:
    """A Cache that writes into the shipped folder: for commands that produce results to commit with the app."""
    return Cache(default_shipped_root())
