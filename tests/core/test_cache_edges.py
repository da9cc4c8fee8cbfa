"""The cache on a hostile shared server: stray files, bad tensor files, leaked temp folders and lock files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from explorer.core import cache as cache_module
from explorer.core.cache import Cache, ComputeResult, CorruptEntry, key_for

ROOT = Path(__file__).resolve().parents[2]
KIND = "edge"
CFG = {"n": 1}


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(root=tmp_path / "runtime", shipped_root=tmp_path / "shipped")


def _compute(calls: list[int], value: float = 1.0):
    """A compute with a tensor that records each call."""

    def compute() -> ComputeResult:
        calls.append(1)
        return ComputeResult(metrics={"v": value}, tensors={"w": torch.full((4,), value)})

    return compute


def _entry_dir(cache: Cache, kind: str = KIND, config: object = CFG) -> Path:
    key = key_for(kind, config)
    return cache.root / kind / key[:2] / key


def _rehash_manifest(path: Path) -> None:
    """Recompute manifest.json over whatever is in the entry now (what a forger or a buggy writer would do)."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
                         for p in sorted(path.iterdir()) if p.name != "manifest.json"}
    (path / "manifest.json").write_text(json.dumps(manifest))


# -- 1. stray files where the cache needs a folder ----------------------------------------------------------------

def test_a_stray_file_at_the_entry_path_is_removed_and_the_entry_written(cache: Cache, caplog) -> None:
    dest = _entry_dir(cache)
    dest.parent.mkdir(parents=True)
    dest.write_text("stray")
    calls: list[int] = []
    assert cache.get(KIND, CFG) is None
    with caplog.at_level(logging.WARNING, logger="explorer.core.cache"):
        entry = cache.get_or_compute(KIND, CFG, _compute(calls))
    assert "stray" in caplog.text and calls == [1]
    assert entry.path == dest and dest.is_dir() and cache.get(KIND, CFG).metrics == {"v": 1.0}


@pytest.mark.parametrize("where", ["shard", "kind", "tmp", "locks"])
def test_a_stray_file_above_the_entry_is_removed(cache: Cache, where: str, caplog) -> None:
    dest = _entry_dir(cache)
    stray = {"shard": dest.parent, "kind": cache.root / KIND, "tmp": cache.root / KIND / ".tmp",
             "locks": cache.root / KIND / ".locks"}[where]
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("stray")
    with caplog.at_level(logging.WARNING, logger="explorer.core.cache"):
        entry = cache.get_or_compute(KIND, CFG, _compute([]))
    assert "stray" in caplog.text and stray.is_dir()
    assert cache.get(KIND, CFG) is not None and entry.path == dest


def test_a_folder_where_the_lock_file_goes_is_removed(cache: Cache) -> None:
    lock = cache.root / KIND / ".locks" / f"{key_for(KIND, CFG)}.lock"
    lock.mkdir(parents=True)
    assert cache.get_or_compute(KIND, CFG, _compute([])).metrics == {"v": 1.0}


def test_a_symlink_at_the_entry_path_is_not_followed(cache: Cache, tmp_path: Path) -> None:
    elsewhere = Cache(tmp_path / "elsewhere", tmp_path / "none").put(KIND, CFG, {"v": "planted"})
    dest = _entry_dir(cache)
    dest.parent.mkdir(parents=True)
    dest.symlink_to(elsewhere.path, target_is_directory=True)
    assert cache.get(KIND, CFG) is None
    assert cache.get_or_compute(KIND, CFG, _compute([])).metrics == {"v": 1.0}
    assert not dest.is_symlink() and (elsewhere.path / "manifest.json").exists()


# -- 2. a bad tensor file that matches its manifest --------------------------------------------------------------

def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


BAD_TENSORS = {
    "truncated": _truncate,
    "garbage": lambda f: f.write_bytes(b"\x00garbage{" * 20),
    "empty": lambda f: f.write_bytes(b""),
    "extra_bytes": lambda f: f.write_bytes(f.read_bytes() + b"xx"),
}


@pytest.mark.parametrize("damage", BAD_TENSORS.values(), ids=BAD_TENSORS.keys())
def test_a_bad_tensor_file_with_a_matching_manifest_is_a_corrupt_entry(cache: Cache, damage, caplog) -> None:
    calls: list[int] = []
    entry = cache.get_or_compute(KIND, CFG, _compute(calls))
    damage(entry.path / "tensors.safetensors")
    _rehash_manifest(entry.path)
    with caplog.at_level(logging.WARNING, logger="explorer.core.cache"):
        assert cache.get(KIND, CFG) is None
    assert "corrupt" in caplog.text and not entry.path.exists()
    again = cache.get_or_compute(KIND, CFG, _compute(calls, value=2.0))
    assert len(calls) == 2 and torch.equal(again.tensors()["w"], torch.full((4,), 2.0))


def test_a_bad_shipped_tensor_file_is_ignored_and_kept(tmp_path: Path, caplog) -> None:
    shipped = tmp_path / "shipped"
    entry = Cache(shipped, tmp_path / "none").get_or_compute(KIND, CFG, _compute([]))
    _truncate(entry.path / "tensors.safetensors")
    _rehash_manifest(entry.path)
    cache = Cache(tmp_path / "rt", shipped)
    with caplog.at_level(logging.WARNING, logger="explorer.core.cache"):
        assert cache.get(KIND, CFG) is None and cache.entries(KIND) == []
    assert "shipped" in caplog.text and (entry.path / "tensors.safetensors").exists()


def test_entry_tensors_raises_corrupt_entry_not_safetensor_error(cache: Cache) -> None:
    entry = cache.get_or_compute(KIND, CFG, _compute([]))
    _truncate(entry.path / "tensors.safetensors")  # damaged after it was verified
    with pytest.raises(CorruptEntry):
        entry.tensors()


def test_a_file_the_manifest_does_not_know_is_refused_even_when_listed(cache: Cache) -> None:
    entry = cache.put(KIND, CFG, {"v": 1})
    (entry.path / "weights.pt").write_bytes(b"not loaded, but not an entry file either")
    _rehash_manifest(entry.path)
    assert cache.get(KIND, CFG) is None and not entry.path.exists()


def test_verification_is_remembered_until_a_file_changes(cache: Cache, monkeypatch) -> None:
    """A hit skips re-hashing files whose inode, size and times are unchanged (and not racily new)."""
    monkeypatch.setattr(cache_module, "RACY_S", 0.05)
    entry = cache.put(KIND, CFG, {"v": 1}, {"w": torch.ones(1000)})
    time.sleep(0.1)
    hashed: list[str] = []
    real = cache_module._file_digest
    monkeypatch.setattr(cache_module, "_file_digest", lambda p: hashed.append(p.name) or real(p))
    assert cache.get(KIND, CFG) is not None and hashed  # first read after the write window: hashed
    hashed.clear()
    assert cache.get(KIND, CFG) is not None and hashed == []  # remembered
    metrics = entry.path / "metrics.json"
    metrics.write_text(metrics.read_text().replace("1", "2"))  # same size, new content
    assert cache.get(KIND, CFG) is None and not entry.path.exists()


# -- 3. what killed writers leave behind ------------------------------------------------------------------------

_KILLED_WRITER = """
import os, signal, sys, torch
from pathlib import Path
import explorer.core.cache as c
cache = c.Cache(Path(sys.argv[1]), Path(sys.argv[1]) / "none")
if sys.argv[2] == "put":  # killed while writing the tensors of a new entry
    c.save_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    cache.put("edge", {"n": 1}, {"v": 1}, {"w": torch.ones(3)})
elif sys.argv[2] == "remove":  # killed while deleting an entry it had moved aside
    cache.put("edge", {"n": 2}, {"v": 2})
    c.shutil.rmtree = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    cache.delete("edge", {"n": 2})
else:  # killed while holding the compute lock
    cache.get_or_compute("edge", {"n": 3}, lambda: os.kill(os.getpid(), signal.SIGKILL))
"""


def _killed_writer(root: Path, what: str) -> None:
    """Run a real writer process that SIGKILLs itself at a chosen moment."""
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(root), what], cwd=ROOT, timeout=120)
    assert proc.returncode == -9


def _leftovers(root: Path) -> list[str]:
    """Everything in the temp and lock folders of a root."""
    return sorted(p.name for d in [*root.glob("*/.tmp"), *root.glob("*/.locks")] for p in d.iterdir())


def test_killed_writers_leave_nothing_after_the_sweep(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    for what in ("put", "remove", "lock"):
        _killed_writer(root, what)
    left = _leftovers(root)
    assert any(n.startswith("trash-") for n in left) and any(n.endswith(".lock") for n in left), left
    assert len(left) == 3, left
    swept = Cache(root, tmp_path / "none").sweep_temp()
    assert _leftovers(root) == [] and swept.removed == 2 and swept.locks_removed == 1 and swept.bytes_freed > 0
    assert Cache(root, tmp_path / "none").get_or_compute(KIND, {"n": 1}, _compute([])).metrics == {"v": 1.0}


def test_the_first_default_cache_of_a_process_sweeps(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    _killed_writer(root, "put")
    assert len(_leftovers(root)) == 1
    env = {**os.environ, "EXPLORER_CACHE_DIR": str(root)}
    subprocess.run([sys.executable, "-c", "from explorer.core.cache import default_cache; default_cache()"],
                   cwd=ROOT, env=env, check=True, timeout=120)
    assert _leftovers(root) == []


def test_the_sweep_keeps_what_live_writers_hold(cache: Cache) -> None:
    scratch = cache.root / KIND / ".tmp"
    scratch.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        token = cache_module._process_token(other.pid)
        assert token is not None
        live = scratch / f"{'a' * 12}-{other.pid}-{token}-x1"
        old_live = scratch / f"trash-{other.pid}-{token}-x2"
        reused_pid = scratch / f"{'b' * 12}-{other.pid}-{'0' * 8}-x3"  # same pid, another process's start id
        legacy_new, legacy_old = scratch / f"{'c' * 12}-abcd1234", scratch / f"trash-{'d' * 32}"
        for d in (live, old_live, reused_pid, legacy_new, legacy_old):
            d.mkdir()
            (d / "f").write_bytes(b"x" * 100)
        two_days_ago = time.time() - 2 * 86400
        for d in (old_live, legacy_old):
            os.utime(d, (two_days_ago, two_days_ago))
        with cache._lock(KIND, "f" * 64):  # a lock held right now (by this process) stays
            swept = cache.sweep_temp()
            assert (cache.root / KIND / ".locks" / f"{'f' * 64}.lock").exists()
        assert sorted(p.name for p in scratch.iterdir()) == sorted([live.name, legacy_new.name])
        assert swept.removed == 3 and swept.kept == 2
    finally:
        other.kill()
        other.wait()
    assert cache.sweep_temp().removed == 1  # its writer is gone now (the legacy one is still too young)


def test_lock_files_do_not_pile_up(cache: Cache) -> None:
    for n in range(5):
        cache.get_or_compute(KIND, {"n": n}, _compute([]))
    assert list((cache.root / KIND / ".locks").iterdir()) == []
    assert list((cache.root / KIND / ".tmp").iterdir()) == []
