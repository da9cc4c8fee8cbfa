"""`python -m explorer info`: every cached kind with its counts by default, one kind's entries with --kind."""

from __future__ import annotations

from explorer.core import info
from explorer.core.cache import Cache


def test_info_lists_every_kind_with_counts_and_one_kind_on_request(tmp_path, monkeypatch, capsys) -> None:
    shipped = Cache(tmp_path / "shipped")
    shipped.put("kind-b", {"x": 1}, {"v": 1})
    cache = Cache(tmp_path / "rt", tmp_path / "shipped")
    for i in range(3):
        cache.put("kind-a", {"i": i}, {"v": i})
    cache.put("kind-b", {"x": 2}, {"v": 2})
    monkeypatch.setattr(info, "default_cache", lambda: cache)
    assert info.kind_counts(cache.root, cache.shipped_root) == {"kind-a": (3, 0), "kind-b": (1, 1)}
    assert info.main([]) == 0
    out = capsys.readouterr().out
    assert "kind-a" in out and "3 runtime +   0 shipped" in out and "1 runtime +   1 shipped" in out
    assert info.main(["--kind", "kind-b"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  kind-b")]
    assert len(lines) == 2 and sum("shipped" in ln for ln in lines) == 1
    assert info.main(["--kind", "nope"]) == 0
    assert "no entries of kind 'nope'; kinds in the cache: kind-a, kind-b" in capsys.readouterr().out


def test_info_says_when_nothing_is_cached(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(info, "default_cache", lambda: Cache(tmp_path / "rt", tmp_path / "shipped"))
    assert info.main([]) == 0
    assert "cached entries: none yet" in capsys.readouterr().out
