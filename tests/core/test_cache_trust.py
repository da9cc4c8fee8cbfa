"""The trust model: shipped entries are read only when the committed trust list names their manifest."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from explorer.core import cache as cache_module
from explorer.core import shiplist
from explorer.core.cache import (TRUST_LIST, Cache, ComputeResult, audit_trust, default_shipped_root, key_for,
                                 manifest_digest, shipped_cache, trust_list)

KIND = "trust"


def _rehash_manifest(path: Path) -> None:
    """Recompute manifest.json over the entry's files as they are now: a forged entry that verifies on its own."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
                         for p in sorted(path.iterdir()) if p.name != "manifest.json"}
    (path / "manifest.json").write_text(json.dumps(manifest))


def _forge(path: Path, metrics: dict) -> None:
    """Replace an entry's metrics and recompute its manifest."""
    (path / "metrics.json").write_text(json.dumps(metrics))
    _rehash_manifest(path)


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A shipped root written the way `--ship` commands write cache/shipped: a Cache whose root is its shipped root."""
    root = tmp_path / "shipped"
    writer = Cache(root, root)
    writer.put(KIND, {"n": 1}, {"v": "s1"})
    writer.put(KIND, {"n": 2}, {"v": "s2"})
    return root


def test_writing_into_a_shipped_root_lists_the_entry(shipped: Path) -> None:
    listed = trust_list(shipped)
    key = key_for(KIND, {"n": 1})
    assert set(listed) == {f"{KIND}/{key}", f"{KIND}/{key_for(KIND, {'n': 2})}"}
    assert listed[f"{KIND}/{key}"] == manifest_digest(shipped / KIND / key[:2] / key)
    assert not list(shipped.rglob(".tmp/*")) and not list(shipped.rglob(".locks/*"))
    entry = Cache(shipped.parent / "rt", shipped).get(KIND, {"n": 1})
    assert entry is not None and entry.shipped and entry.metrics == {"v": "s1"}
    assert audit_trust(shipped).ok


def test_shipped_cache_writes_list_what_the_app_then_reads(tmp_path: Path, monkeypatch) -> None:
    """The path the --ship commands take: shipped_cache().put lists the entry, and the app's Cache reads it."""
    monkeypatch.setattr(cache_module, "default_shipped_root", lambda: tmp_path / "app-shipped")
    entry = shipped_cache().put(KIND, {"n": 1}, {"v": "shipped"})
    listed = trust_list(tmp_path / "app-shipped")
    assert entry.shipped and listed == {f"{KIND}/{entry.key}": manifest_digest(entry.path)}
    got = Cache(tmp_path / "rt").get(KIND, {"n": 1})
    assert got is not None and got.shipped and got.metrics == {"v": "shipped"}
    assert shipped_cache().delete(KIND, {"n": 1}) and trust_list(tmp_path / "app-shipped") == {}


def test_a_shipping_process_leaves_only_entries_to_commit(tmp_path: Path, monkeypatch) -> None:
    """shipped_cache() registers drop_shipped_scratch for the process's exit: every kind's .tmp and .locks go, the
    entries and the trust list stay."""
    root = tmp_path / "app-shipped"
    monkeypatch.setattr(cache_module, "default_shipped_root", lambda: root)
    registered = []
    monkeypatch.setattr(cache_module.atexit, "register", lambda fn, *a: registered.append((fn, a)))
    entry = shipped_cache().put(KIND, {"n": 2}, {"v": "shipped"})
    for kind in (KIND, "other-kind"):
        (root / kind / ".tmp" / "half-written").mkdir(parents=True, exist_ok=True)
        (root / kind / ".locks").mkdir(exist_ok=True)
    assert registered == [(cache_module.drop_shipped_scratch, (root,))]
    fn, args = registered[0]
    fn(*args)
    assert not list(root.glob("*/.tmp")) and not list(root.glob("*/.locks"))
    assert entry.path.is_dir() and audit_trust(root).ok


def test_a_forged_shipped_entry_is_ignored_with_a_warning(shipped: Path, caplog) -> None:
    cache = Cache(shipped.parent / "rt", shipped)
    forged = cache.get(KIND, {"n": 1}).path
    _forge(forged, {"v": "forged"})
    with caplog.at_level(logging.WARNING, logger="explorer.core.cache"):
        assert cache.get(KIND, {"n": 1}) is None
    assert "trust list" in caplog.text and (forged / "metrics.json").exists()  # read-only: never removed
    assert [e.metrics for e in cache.entries(KIND)] == [{"v": "s2"}]
    assert cache.by_key(KIND, key_for(KIND, {"n": 1})) is None
    calls: list[int] = []
    fresh = cache.get_or_compute(KIND, {"n": 1}, lambda: calls.append(1) or ComputeResult({"v": "runtime"}))
    assert calls == [1] and not fresh.shipped
    audit = audit_trust(shipped)
    assert not audit.ok and audit.unlisted == [f"{KIND}/{key_for(KIND, {'n': 1})}"]


def test_an_unlisted_shipped_entry_is_ignored(shipped: Path, tmp_path: Path) -> None:
    """An entry copied into the shipped folder (valid on its own, but never written by a shipping command)."""
    planted = Cache(tmp_path / "elsewhere", tmp_path / "none").put(KIND, {"n": 3}, {"v": "planted"})
    dest = shipped / KIND / planted.key[:2] / planted.key
    dest.parent.mkdir(parents=True, exist_ok=True)
    planted.path.rename(dest)
    cache = Cache(tmp_path / "rt", shipped)
    assert cache.get(KIND, {"n": 3}) is None and cache.by_key(KIND, planted.key) is None
    assert {e.metrics["v"] for e in cache.entries(KIND)} == {"s1", "s2"}


def test_the_app_s_shipped_folder_without_a_list_trusts_nothing(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "app-shipped"
    Cache(root, tmp_path / "none").put(KIND, {"n": 1}, {"v": "s1"})  # no list: written by a plain Cache
    monkeypatch.setattr(cache_module, "default_shipped_root", lambda: root)
    assert Cache(tmp_path / "rt").get(KIND, {"n": 1}) is None and Cache(tmp_path / "rt").entries(KIND) == []


def test_a_shipped_writer_replaces_and_deletes_with_the_list(shipped: Path) -> None:
    writer = Cache(shipped, shipped)
    entry = writer.get(KIND, {"n": 1})
    assert entry is not None and entry.shipped
    _forge(entry.path, {"v": "forged"})
    assert writer.get(KIND, {"n": 1}) is None and entry.path.exists()  # a reader never removes shipped files
    again = writer.put(KIND, {"n": 1}, {"v": "re-shipped"})  # an explicit write replaces it and lists it
    assert again.metrics == {"v": "re-shipped"} and audit_trust(shipped).ok
    assert writer.delete(KIND, {"n": 2}) and f"{KIND}/{key_for(KIND, {'n': 2})}" not in trust_list(shipped)
    assert audit_trust(shipped).ok


def test_a_listed_entry_that_is_gone_is_reported(shipped: Path) -> None:
    import shutil

    key = key_for(KIND, {"n": 2})
    shutil.rmtree(shipped / KIND / key[:2] / key)
    audit = audit_trust(shipped)
    assert not audit.ok and audit.missing == [f"{KIND}/{key}"]
    assert shiplist.main(["--root", str(shipped)]) == 1
    assert shiplist.main(["--root", str(shipped), "--write"]) == 0
    assert audit_trust(shipped).ok and shiplist.main(["--root", str(shipped)]) == 0


def test_a_malformed_list_trusts_nothing(shipped: Path, caplog) -> None:
    (shipped / TRUST_LIST).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="explorer.core.cache"):
        assert Cache(shipped.parent / "rt", shipped).entries(KIND) == []
    assert TRUST_LIST in caplog.text


def test_every_entry_in_cache_shipped_is_listed_and_every_listed_entry_exists() -> None:
    """The committed trust list and the committed entries agree (run `python -m explorer shiplist` to see why not)."""
    root = default_shipped_root()
    audit = audit_trust(root)
    assert audit.listed, f"no trusted entries in {root}"
    assert audit.ok, audit
    assert sorted(audit.listed) == sorted(trust_list(root))
