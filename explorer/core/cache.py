"""The one module that owns the disk: content-addressed, verified, atomically written results.

Layout. An entry lives at `<root>/<kind>/<key[:2]>/<key>/` with `config.json`, `metrics.json`, `meta.json`,
optional `tensors.safetensors`, and `manifest.json` (written last) holding the sha256 and size of every other
file. A writer builds the entry in `<root>/<kind>/.tmp/` and renames it into place, so a reader sees a whole entry
or none; `<root>/<kind>/.locks/` holds the lock files that make `get_or_compute` compute a key once. Anything that
fails verification is treated as missing.

Trust model (one server, many visitors, other users on the machine):
- Two roots. The runtime root (`cache/runtime`, or $EXPLORER_CACHE_DIR) is the server's own: only this server's
  jobs write it, so it must be writable by the server's user alone (the start-up sweep logs a warning when its
  group or others may write it). The shipped root (`cache/shipped`) is committed with the code and read-only while
  serving: the server never writes, repairs or removes anything in it.
- Nothing in an entry is ever unpickled or executed: the JSON files are parsed as JSON, tensors are read with
  safetensors (never torch.load), and an entry holding any file other than the five above is refused. The worst a
  planted entry can do is show wrong numbers, and the next two rules decide which entries are believed.
- Runtime entries are verified against their manifest (every file's sha256 and size, a well-formed safetensors
  header); one that fails is logged, removed and recomputed. A manifest proves an entry is whole, not who wrote it:
  a runtime entry is believed because only the server can write its folder.
- Shipped entries must also be named in the trust list `cache/shipped/TRUSTED.json` ("<kind>/<key>" -> sha256 of
  the entry's manifest.json, which pins every file's sha256), committed and reviewed with the entries. An entry the
  list does not name, or whose manifest differs from the listed one (e.g. edited, with a recomputed manifest), is
  ignored with a log warning and left in place. Writing into the shipped root (`shipped_cache().put/delete`, used by
  the `--ship`/`--shipped` commands) updates the list; `python -m explorer shiplist` checks that list and folder
  agree (`--write` relists the entries there, after a review). A shipped root elsewhere (as tests build) is checked
  against its list when it has one.
- Faults. A writer killed at any moment leaves at most a temp or trash folder, named after its pid and process start
  (`<key12>-<pid>-<start id>-...`, `trash-<pid>-<start id>-...`), and a lock file. The first `default_cache()` of a
  process runs `Cache.sweep_temp()`, which removes the folders whose writer is gone (and any over a day old) and the
  lock files nobody holds; a lock file is removed by its holder when done, so they do not pile up. A stray file
  where the runtime root needs a folder (or a folder where a lock file goes) is logged and removed.
- Cost. A hit re-hashes an entry's files only if one changed since this process last verified it (inode, size,
  mtime or ctime differ, or it was written in the last RACY_S seconds), so `get` on a page rerun stays cheap.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import enum
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
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
ENTRY_FILES = REQUIRED_FILES | {TENSORS}  # what a manifest may list: any other file makes the entry corrupt
KIND_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
TEMP_DIR, LOCK_DIR = ".tmp", ".locks"  # per kind (and at the root, for the trust list): never entries
TRUST_LIST = "TRUSTED.json"  # in a shipped root: "<kind>/<key>" -> sha256 of the entry's manifest.json
TRUST_ABOUT = ("Shipped cache entries the app trusts: <kind>/<key> -> sha256 of the entry's manifest.json. "
               "Updated by shipped_cache().put/delete (the --ship commands); check with `python -m explorer shiplist`.")
STALE_S = 86400.0  # a temp or trash folder over a day old is removed even if its writer seems alive
STALE_UNKNOWN_S = 600.0  # one whose name does not say its writer (older code) is removed after 10 minutes
RACY_S = 2.0  # files changed this recently are re-hashed on every read (a change within a clock tick is invisible)
_TEMP_NAME = re.compile(r"(?:[0-9a-f]{12}|trash|trust)-(\d+)-([0-9a-f]{8})-")
_PROC = Path("/proc")
_MEMO_MAX = 4096


class CorruptEntry(Exception):
    """An entry on disk that does not match its manifest or cannot be parsed."""


class UntrustedEntry(CorruptEntry):
    """A shipped entry that its root's trust list does not name with this manifest."""


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
        """Load the saved tensors (safetensors, never pickle) onto `device`, default cpu; CorruptEntry if unreadable.

        The header was checked when the entry was verified, so this fails only if the file changed since then.
        """
        file = self.path / TENSORS
        if not file.exists():
            return {}
        try:
            return load_file(file, device=str(device) if device is not None else "cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CorruptEntry(f"{TENSORS}: {err}") from err


@dataclasses.dataclass(frozen=True)
class Swept:
    """What `Cache.sweep_temp` did in a root's temp, trash and lock folders."""

    removed: int = 0  # temp and trash folders (or stray files there) of writers that are gone, or over a day old
    kept: int = 0  # those of writers still running
    locks_removed: int = 0  # lock files nobody held
    bytes_freed: int = 0


@dataclasses.dataclass(frozen=True)
class TrustAudit:
    """How a shipped root's entries and its trust list agree, as sorted "<kind>/<key>" names."""

    listed: list[str]  # on disk, whole, and listed with this manifest
    unlisted: list[str]  # on disk and whole, but not listed, or listed with another manifest
    missing: list[str]  # listed, not on disk
    corrupt: list[str]  # on disk, but do not match their own manifest

    @property
    def ok(self) -> bool:
        """Every entry there is listed and every listed entry is there."""
        return not (self.unlisted or self.missing or self.corrupt)


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


def manifest_digest(entry_dir: Path) -> str:
    """sha256 of an entry's manifest.json: what a trust list records (the manifest pins every other file)."""
    return hashlib.sha256((Path(entry_dir) / MANIFEST).read_bytes()).hexdigest()


def _write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    """Write JSON; NaN and inf are allowed (Python reads them back)."""
    path.write_text(json.dumps(data, indent=indent, allow_nan=True) + "\n")


def _parse_json(data: bytes, name: str) -> Any:
    """Parse one JSON file of an entry, or raise CorruptEntry."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as err:
        raise CorruptEntry(f"{name}: {err}") from err


def _read_json(path: Path) -> Any:
    """Read and parse one JSON file of an entry, or raise CorruptEntry."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CorruptEntry(f"{path.name}: {err}") from err
    return _parse_json(data, path.name)


def _is_real_dir(path: Path) -> bool:
    """A directory, not a symlink to one (entries and cache folders are never links)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


_warned: set[str] = set()


def _warn_once(message: str, *args: Any) -> None:
    """Log a warning once per process (a bad shipped entry would otherwise be logged on every page rerun)."""
    text = message % args
    if text not in _warned:
        if len(_warned) > _MEMO_MAX:
            _warned.clear()
        _warned.add(text)
        log.warning(text)


# -- verification --------------------------------------------------------------------------------------------------

_verified: dict[Path, tuple] = {}  # entry dir -> the file signature it had when this process last verified it


def _signature(path: Path, names: set[str]) -> tuple:
    """Inode, size and times of an entry's folder and files; CorruptEntry if one is not a regular file."""
    parts = [(os.lstat(path).st_ino,)]
    for name in sorted(names | {MANIFEST}):
        st = os.lstat(path / name)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptEntry(f"{name} is not a regular file")
        parts.append((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(parts)


def _remember(path: Path, signature: tuple) -> None:
    """Remember a verified signature, unless a file is so new that a change could still hide in its clock tick."""
    newest = max(max(p[3], p[4]) for p in signature[1:])
    if newest < time.time_ns() - RACY_S * 1e9:
        if len(_verified) >= _MEMO_MAX:
            _verified.clear()
        _verified[path] = signature


def _check_tensors(file: Path) -> None:
    """The safetensors header parses and covers the file exactly (reads the header only), or CorruptEntry."""
    try:
        with safe_open(file, framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptEntry(f"{TENSORS}: {err}") from err


def _load(path: Path, kind: str, key: str, shipped: bool, trusted: dict[str, str] | None = None) -> Entry:
    """Verify an entry against its manifest (and against `trusted`, a trust list, if given) and read it, or raise
    CorruptEntry (UntrustedEntry if the list does not name it)."""
    try:
        raw = (path / MANIFEST).read_bytes()
    except OSError as err:
        raise CorruptEntry(f"{MANIFEST}: {err}") from err
    if trusted is not None:
        listed = trusted.get(f"{kind}/{key}")
        if listed is None:
            raise UntrustedEntry(f"not in the trust list {TRUST_LIST}")
        if hashlib.sha256(raw).hexdigest() != listed:
            raise UntrustedEntry(f"its manifest.json is not the one in the trust list {TRUST_LIST}")
    manifest = _parse_json(raw, MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("key") != key:
        raise CorruptEntry("manifest is malformed or names another key")
    on_disk = {p.name for p in path.iterdir()} - {MANIFEST}
    if on_disk != set(files) or not REQUIRED_FILES <= on_disk or not on_disk <= ENTRY_FILES:
        raise CorruptEntry(f"files {sorted(on_disk)} do not match manifest {sorted(files)}")
    signature = _signature(path, on_disk)
    if _verified.get(path) != signature:
        for name, expected in files.items():
            if _file_digest(path / name) != expected:
                raise CorruptEntry(f"{name} does not match its manifest checksum")
        if TENSORS in files:
            _check_tensors(path / TENSORS)
        _remember(path, signature)
    header = _read_json(path / CONFIG)
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise CorruptEntry("config.json is malformed or names another kind")
    metrics, meta = _read_json(path / METRICS), _read_json(path / META)
    if not isinstance(metrics, dict) or not isinstance(meta, dict):
        raise CorruptEntry("metrics.json and meta.json must hold objects")
    return Entry(key, kind, path, header.get("config"), metrics, meta, shipped)


# -- trust lists ---------------------------------------------------------------------------------------------------

_trust_memo: dict[Path, tuple[tuple, dict[str, str]]] = {}


def _read_trust_list(root: Path) -> dict[str, str] | None:
    """A root's trust list as written, None if it has none; ValueError (naming the file) if it is malformed."""
    file = Path(root) / TRUST_LIST
    try:
        st = os.stat(file)
    except FileNotFoundError:
        return None
    signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    memo = _trust_memo.get(file)
    if memo is not None and memo[0] == signature:
        return memo[1]
    try:
        entries = json.loads(file.read_bytes())["entries"]
        if not isinstance(entries, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and KEY_PATTERN.fullmatch(v) for k, v in entries.items()):
            raise ValueError("'entries' must map '<kind>/<key>' to a sha256")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{file} is malformed: {err}") from err
    _trust_memo[file] = (signature, entries)
    return entries


def trust_list(root: Path) -> dict[str, str] | None:
    """A shipped root's trust list ("<kind>/<key>" -> sha256 of manifest.json): None if it has none, {} (trust
    nothing, with a warning) if it is unreadable. Do not modify the dict returned (it is shared)."""
    try:
        return _read_trust_list(root)
    except ValueError as err:
        _warn_once("%s: no shipped cache entry there is trusted", err)
        return {}


def write_trust_list(root: Path, entries: dict[str, str]) -> None:
    """Write a root's trust list atomically, sorted with one entry a line (diffs stay readable)."""
    root = Path(root)
    scratch = root / TEMP_DIR
    scratch.mkdir(parents=True, exist_ok=True)
    data = {"about": TRUST_ABOUT, "format": 1, "entries": dict(sorted(entries.items()))}
    fd, tmp = tempfile.mkstemp(prefix=f"trust-{_own_tag()}-", suffix=".json", dir=scratch)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, root / TRUST_LIST)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):
        scratch.rmdir()  # only if empty: a committed folder should not keep an empty scratch folder


def _entry_dirs(root: Path) -> dict[str, Path]:
    """Every entry folder under a root by "<kind>/<key>" (by name: not verified)."""
    found = {}
    for kind_dir in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if KIND_PATTERN.fullmatch(kind_dir.name) and _is_real_dir(kind_dir):
            for path in sorted(kind_dir.glob("??/*")):
                if KEY_PATTERN.fullmatch(path.name) and path.parent.name == path.name[:2]:
                    found[f"{kind_dir.name}/{path.name}"] = path
    return found


def audit_trust(root: Path) -> TrustAudit:
    """Compare a shipped root's entries with its trust list (each entry verified against its own manifest)."""
    listed = trust_list(root) or {}
    good, unlisted, corrupt = [], [], []
    found = _entry_dirs(root)
    for name, path in found.items():
        kind, key = name.split("/")
        try:
            _load(path, kind, key, shipped=True)
        except (CorruptEntry, OSError):
            corrupt.append(name)
            continue
        (good if listed.get(name) == manifest_digest(path) else unlisted).append(name)
    return TrustAudit(good, unlisted, sorted(set(listed) - set(found)), corrupt)


def rebuild_trust_list(root: Path) -> TrustAudit:
    """List every entry under `root` that matches its own manifest (run after reviewing them); the new audit."""
    with _hold(Path(root) / LOCK_DIR / "trust.lock"):
        found = _entry_dirs(root)
        entries = {}
        for name, path in found.items():
            kind, key = name.split("/")
            try:
                _load(path, kind, key, shipped=True)
            except (CorruptEntry, OSError) as err:
                log.warning("not listing corrupt shipped entry %s: %s", path, err)
                continue
            entries[name] = manifest_digest(path)
        write_trust_list(root, entries)
    with contextlib.suppress(OSError):
        (Path(root) / LOCK_DIR).rmdir()  # only if empty
    return audit_trust(root)


# -- writers, temp folders and locks -------------------------------------------------------------------------------

@functools.cache
def _has_proc() -> bool:
    """Whether /proc tells pids and start times (Linux)."""
    return (_PROC / "self" / "stat").exists()


@functools.cache
def _boot_id() -> str:
    """This boot's id (Linux), so a folder left before a reboot never looks like a live writer's."""
    try:
        return (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def _process_token(pid: int) -> str | None:
    """A short id of the process running now as `pid` (boot and start time: a reused pid gets another); None if none."""
    if pid <= 0:
        return None
    if not _has_proc():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        except OSError:
            return None
        return "0" * 8
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie is dead: it writes nothing more
        return None
    return hashlib.sha256(f"{_boot_id()}:{pid}:{fields[19]}".encode()).hexdigest()[:8]


_own: dict[int, str] = {}


def _own_tag() -> str:
    """`<pid>-<start id>` of this process, in its temp and trash names (per pid: a forked child gets its own)."""
    pid = os.getpid()
    if pid not in _own:
        _own[pid] = f"{pid}-{_process_token(pid) or '0' * 8}"
    return _own[pid]


def _writer_alive(name: str, age_s: float) -> bool:
    """Whether the writer of a temp or trash folder called `name`, last changed `age_s` ago, may still use it."""
    if age_s > STALE_S:
        return False
    match = _TEMP_NAME.match(name)
    if match is None:
        return age_s <= STALE_UNKNOWN_S
    return _process_token(int(match[1])) == match[2]


def _tree_size(path: Path) -> int:
    """Bytes in the files under `path` (or of `path`), not following links."""
    if not _is_real_dir(path):
        with contextlib.suppress(OSError):
            return os.lstat(path).st_size
        return 0
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _delete(path: Path) -> bool:
    """Remove a folder tree or a file (a link itself, never its target); whether it is gone."""
    if _is_real_dir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return not os.path.lexists(path)


def _listdir(folder: Path) -> list[Path]:
    """The items of a real folder, [] if it is missing or not a folder."""
    if not _is_real_dir(folder):
        return []
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(lock_file: Path) -> threading.Lock:
    """One in-process lock per key, shared by every Cache instance."""
    with _thread_locks_guard:
        return _thread_locks.setdefault(lock_file, threading.Lock())


_OPEN_LOCK = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)


def _flock(lock_file: Path) -> int:
    """Open and flock `lock_file`, retrying until the locked file is still the one at that path; the descriptor.

    A holder unlinks the file before it lets go, so a waiter that wakes on an unlinked file starts again.
    """
    for _ in range(10000):
        try:
            fd = os.open(lock_file, _OPEN_LOCK, 0o644)
        except OSError as err:
            if err.errno not in (errno.EISDIR, errno.ELOOP) or not os.path.lexists(lock_file):
                raise
            log.warning("removing stray %s: it blocks a cache lock file", lock_file)
            _delete(lock_file)
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock_file, follow_symlinks=False)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise RuntimeError(f"could not lock {lock_file}")


@contextlib.contextmanager
def _hold(lock_file: Path) -> Iterator[None]:
    """Hold the in-process lock and, where there is flock, the file lock of `lock_file` (removed when released)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock_file = lock_file.parent.resolve() / lock_file.name  # not lock_file.resolve(): a planted link is not followed
    with _thread_lock(lock_file):
        if fcntl is None:
            yield
            return
        fd = _flock(lock_file)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.stat(lock_file, follow_symlinks=False)):
                    os.unlink(lock_file)
            os.close(fd)


def _remove_unheld_lock(lock_file: Path) -> bool:
    """Remove a lock file if nobody holds it (taking it first, so no waiter is cut off); whether it was removed."""
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(lock_file, follow_symlinks=False)):
            os.unlink(lock_file)
            return True
        return False
    except OSError:  # held by a live process (or gone meanwhile)
        return False
    finally:
        os.close(fd)


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder (spelled differently, or through a link)."""
    return a == b or a.resolve() == b.resolve()


class Cache:
    """Content-addressed results on disk: a writable runtime root over a read-only shipped root."""

    def __init__(self, root: Path | None = None, shipped_root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.shipped_root = (
            Path(shipped_root) if shipped_root is not None else default_shipped_root()
        )
        app_shipped = default_shipped_root()
        # A Cache whose root is a shipped folder (shipped_cache(), the --ship commands) reads it as shipped, keeps
        # its trust list, and removes nothing there except what a write of the same key replaces.
        self._root_shipped = _same_folder(self.root, self.shipped_root) or _same_folder(self.root, app_shipped)
        self._roots: tuple[tuple[Path, bool], ...] = ((self.root, self._root_shipped),)
        if not _same_folder(self.root, self.shipped_root):
            self._roots += ((self.shipped_root, True),)
        self._app_shipped = {r for r, _ in self._roots if _same_folder(r, app_shipped)}

    def ships(self, kind: str, key: str) -> bool:
        """True when a shipped root holds an entry of (kind, key) (listed, not verified): a runtime entry with that
        key shadows it in entries() and get(), and is then a recomputed copy of a shipped result."""
        _check_kind(kind)
        return bool(KEY_PATTERN.fullmatch(key)) and any(
            shipped and self._entry_dir(root, kind, key).is_dir() for root, shipped in self._roots)

    def get(self, kind: str, config: Any) -> Entry | None:
        """The verified entry for (kind, config), runtime root first, else None."""
        key = key_for(_check_kind(kind), config)
        for root, shipped in self._roots:
            entry = self._read(root, self._entry_dir(root, kind, key), kind, key, shipped)
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
        tmp = Path(tempfile.mkdtemp(prefix=f"{key[:12]}-{_own_tag()}-", dir=self._scratch(kind)))
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
            if not self._keeps_trust_list():
                return self._publish(tmp, kind, key)
            with self._trust_lock():
                entry = self._publish(tmp, kind, key)
                self._relist({f"{kind}/{key}": manifest_digest(entry.path)})
                return entry
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
        for root, shipped in self._roots:
            kind_dir = root / _check_kind(kind)
            if not kind_dir.is_dir():
                continue
            for path in sorted(kind_dir.glob("??/*")):
                if path.name in found or not KEY_PATTERN.fullmatch(path.name):
                    continue
                if where is not None and not self._picked(path, where):
                    continue
                entry = self._read(root, path, kind, path.name, shipped)
                if entry is not None:
                    found[entry.key] = entry
        return list(found.values())

    def by_key(self, kind: str, key: str) -> Entry | None:
        """The verified entry with this content address (runtime root first), else None."""
        _check_kind(kind)
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            return None
        for root, shipped in self._roots:
            entry = self._read(root, self._entry_dir(root, kind, key), kind, key, shipped)
            if entry is not None:
                return entry
        return None

    def delete(self, kind: str, config: Any) -> bool:
        """Remove the entry for (kind, config) from the writable root (and its trust list, if it keeps one);
        a Cache over a runtime root never touches its shipped root."""
        key = key_for(_check_kind(kind), config)
        path = self._entry_dir(self.root, kind, key)
        if not self._keeps_trust_list():
            if not os.path.lexists(path):
                return False
            self._remove(path)
            return True
        with self._trust_lock():
            name, existed = f"{kind}/{key}", os.path.lexists(path)
            listed = name in (trust_list(self.root) or {})
            if existed:
                self._remove(path)
            if listed:
                self._relist({name: None})
            return existed or listed

    def sweep_temp(self) -> Swept:
        """Remove what killed writers left in the writable root: temp and trash folders whose writer is gone (or
        that are over a day old) and lock files nobody holds. Run by the first default_cache() of a process; never
        raises (a failure is logged)."""
        removed = kept = locks = freed = 0
        try:
            self._warn_if_shared()
            kinds = [p for p in _listdir(self.root) if KIND_PATTERN.fullmatch(p.name) and _is_real_dir(p)]
            now = time.time()
            for scratch in [self.root / TEMP_DIR, *(k / TEMP_DIR for k in kinds)]:
                for item in _listdir(scratch):
                    with contextlib.suppress(FileNotFoundError):
                        if _writer_alive(item.name, now - os.lstat(item).st_mtime):
                            kept += 1
                            continue
                        size = _tree_size(item)
                        if _delete(item):
                            removed, freed = removed + 1, freed + size
            for lock_dir in [self.root / LOCK_DIR, *(k / LOCK_DIR for k in kinds)]:
                for item in _listdir(lock_dir):
                    if item.name.endswith(".lock") and not item.is_symlink():
                        locks += _remove_unheld_lock(item)
                    elif now - os.lstat(item).st_mtime > STALE_UNKNOWN_S and _delete(item):
                        removed += 1
        except OSError as err:
            log.warning("sweeping the cache folder %s stopped: %s", self.root, err)
        if removed or locks:
            log.info("cache sweep of %s: removed %d temp/trash folders (%.1f MB) of gone writers and %d unheld lock "
                     "files; kept %d in use", self.root, removed, freed / 1e6, locks, kept)
        return Swept(removed, kept, locks, freed)

    def _warn_if_shared(self) -> None:
        """Log a warning if other users of this machine may write the runtime root (they could plant entries)."""
        if self._root_shipped or not self.root.is_dir():
            return
        mode = self.root.stat().st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            log.warning("the cache folder %s is writable by its group or other users; only the server should "
                        "write it (chmod go-w)", self.root)

    def _entry_dir(self, root: Path, kind: str, key: str) -> Path:
        """Where the entry for `key` lives under `root`."""
        return root / kind / key[:2] / key

    def _ensure_dir(self, path: Path) -> Path:
        """mkdir -p `path` under the writable root, removing (and logging) stray files in the way."""
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except (FileExistsError, NotADirectoryError):
            pass
        part = self.root
        for name in path.relative_to(self.root).parts:
            part = part / name
            if os.path.lexists(part) and not _is_real_dir(part):
                log.warning("removing stray file %s: the cache needs a folder there", part)
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _scratch(self, kind: str) -> Path:
        """Temp space on the same filesystem as the entries, so rename is atomic."""
        return self._ensure_dir(self.root / kind / TEMP_DIR)

    def _picked(self, path: Path, where: Callable[[Any], bool]) -> bool:
        """`where` on an entry's unverified config; an unreadable one is picked, so _read judges it."""
        try:
            header = _read_json(path / CONFIG)
        except (CorruptEntry, OSError):
            return True
        return not isinstance(header, dict) or bool(where(header.get("config")))

    def _trusted(self, root: Path) -> dict[str, str] | None:
        """The trust list a shipped root is checked against: its own; none for another root without one."""
        listed = trust_list(root)
        if listed is None and root in self._app_shipped:
            _warn_once("%s has no %s: none of its shipped cache entries is trusted", root, TRUST_LIST)
            return {}
        return listed

    def _read(self, root: Path, path: Path, kind: str, key: str, shipped: bool,
              remove: bool | None = None) -> Entry | None:
        """Load an entry if present and valid; a bad one is removed if `remove` (default: runtime entries only),
        else logged and left (shipped entries)."""
        if not _is_real_dir(path):
            return None  # missing, or a stray file or link: a miss (a put removes the stray)
        remove = not shipped if remove is None else remove
        try:
            return _load(path, kind, key, shipped, self._trusted(root) if shipped else None)
        except (CorruptEntry, OSError) as err:
            what = "untrusted" if isinstance(err, UntrustedEntry) else "corrupt"
            if remove:
                log.warning("removing %s cache entry %s: %s", what, path, err)
                self._remove(path)
            else:
                _warn_once("ignoring %s shipped cache entry %s: %s", what, path, err)
            return None

    def _publish(self, tmp: Path, kind: str, key: str) -> Entry:
        """Rename a finished temp dir into place, unless a valid entry is already there."""
        dest = self._entry_dir(self.root, kind, key)
        self._ensure_dir(dest.parent)
        for _ in range(5):
            try:
                os.rename(tmp, dest)
                return _load(dest, kind, key, shipped=self._root_shipped)
            except OSError:
                if not os.path.lexists(dest):
                    raise
                if not _is_real_dir(dest):
                    log.warning("removing stray file %s: it blocks a cache entry", dest)
                    _delete(dest)
                    continue
            # Another writer won; keep theirs, unless it is corrupt or untrusted (then it is removed).
            existing = self._read(self.root, dest, kind, key, self._root_shipped, remove=True)
            if existing is not None:
                return existing
        raise RuntimeError(f"could not publish cache entry {dest}")

    def _remove(self, path: Path) -> None:
        """Move an entry aside atomically, then delete it, so readers never see half of one."""
        kind = path.parent.parent.name
        trash = self._scratch(kind) / f"trash-{_own_tag()}-{uuid.uuid4().hex[:12]}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        _verified.pop(path, None)
        if _is_real_dir(trash):
            shutil.rmtree(trash, ignore_errors=True)
        else:
            _delete(trash)

    def _keeps_trust_list(self) -> bool:
        """Whether writes to this root update its trust list: a shipped root, or any root that has a list."""
        return self._root_shipped or (self.root / TRUST_LIST).exists()

    @contextlib.contextmanager
    def _trust_lock(self) -> Iterator[None]:
        """Hold the lock around changes to the writable root's trust list (and to the entries it names)."""
        lock_dir = self._ensure_dir(self.root / LOCK_DIR)
        try:
            with _hold(lock_dir / "trust.lock"):
                yield
        finally:
            with contextlib.suppress(OSError):
                lock_dir.rmdir()  # only if empty: a committed folder keeps no empty lock folder

    def _relist(self, changes: dict[str, str | None]) -> None:
        """Apply changes ("<kind>/<key>" -> manifest sha256, None to drop) to the root's trust list (lock held)."""
        listed = dict(_read_trust_list(self.root) or {})  # a malformed list raises: fix or rebuild it first
        for name, digest in changes.items():
            if digest is None:
                listed.pop(name, None)
            else:
                listed[name] = digest
        write_trust_list(self.root, listed)

    @contextlib.contextmanager
    def _lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold the per-key thread lock and, where available, an flock on its lock file (removed when done)."""
        with _hold(self._ensure_dir(self.root / kind / LOCK_DIR) / f"{key}.lock"):
            yield


@functools.cache
def default_cache() -> Cache:
    """The process's one Cache ($EXPLORER_CACHE_DIR read once, at the first call): the only place that builds one.

    Its first call sweeps what killed writers left (Cache.sweep_temp). Command-line entry points and the app
    (views.widgets.app_cache) pass it to every lab function that reads or writes results; tests build their own
    Cache(tmp_path) and pass that.
    """
    cache = Cache()
    cache.sweep_temp()
    return cache


_swept_shipped: set[Path] = set()


def drop_shipped_scratch(root: Path | None = None) -> None:
    """Remove every writer's scratch and lock folders (<kind>/.tmp, <kind>/.locks) from the shipped folder, so only
    entries are committed. A process that opened shipped_cache() does it on exit."""
    root = Path(root) if root is not None else default_shipped_root()
    for scratch in (*root.glob("*/.tmp"), *root.glob("*/.locks")):
        shutil.rmtree(scratch, ignore_errors=True)


def shipped_cache() -> Cache:
    """A Cache that writes into the shipped folder: for commands that produce results to commit with the app.

    Its writes update the folder's trust list; the first call of a process sweeps the folder's temp space, and
    registers drop_shipped_scratch for the process's exit (so no shipping command leaves scratch to commit).
    """
    cache = Cache(default_shipped_root())
    if cache.root not in _swept_shipped:
        _swept_shipped.add(cache.root)
        cache.sweep_temp()
        atexit.register(drop_shipped_scratch, cache.root)
    return cache
