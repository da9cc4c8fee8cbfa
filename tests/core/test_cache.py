"""The disk cache: round trips, stable keys, corruption, concurrency, shipped results."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from explorer.core.cache import (FORMAT_VERSION, Cache, ComputeResult, Entry, default_cache, default_root,
                                 default_shipped_root, key_for, shipped_cache, to_plain)


class Act(enum.Enum):
    RELU = "relu"
    TANH = "tanh"


@dataclasses.dataclass(frozen=True)
class Model:
    widths: tuple[int, ...] = (32, 32)
    act: Act = Act.RELU


@dataclasses.dataclass(frozen=True)
class Config:
    lr: float = 0.1
    seed: int = 0
    model: Model = Model()


KIND = "train"
PLAIN = {"lr": 0.1, "seed": 0, "model": {"widths": [32, 32], "act": "relu"}}


def _result(value: float = 1.0) -> ComputeResult:
    """A small compute result with tensors and caller meta."""
    return ComputeResult(
        metrics={"loss": [value, 0.5, float("nan")], "acc": 0.9},
        tensors={"w": torch.arange(6.0).reshape(2, 3).t(), "b": torch.ones(3)},
        meta={"note": "test"},
    )


def _counting(calls: list[int], sleep_s: float = 0.0, value: float = 1.0):
    """A compute that records each call."""

    def compute() -> ComputeResult:
        calls.append(1)
        time.sleep(sleep_s)
        return _result(value)

    return compute


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(root=tmp_path / "runtime", shipped_root=tmp_path / "shipped")


def test_to_plain_converts_dataclasses_enums_and_tuples() -> None:
    assert to_plain(Config()) == PLAIN


def test_keys_are_stable_and_distinct() -> None:
    reordered = {"model": {"act": "relu", "widths": (32, 32)}, "seed": 0, "lr": 0.1}
    assert key_for(KIND, Config()) == key_for(KIND, PLAIN) == key_for(KIND, reordered)
    assert re.fullmatch(r"[0-9a-f]{64}", key_for(KIND, PLAIN))
    others = [Config(lr=0.2), Config(seed=1), Config(model=Model(act=Act.TANH))]
    keys = {key_for(KIND, c) for c in [Config(), *others]} | {key_for("eval", Config())}
    assert len(keys) == 5


def test_round_trip(cache: Cache) -> None:
    result = _result()
    put = cache.put(KIND, Config(), result.metrics, result.tensors, {"note": "hi"})
    got = cache.get(KIND, PLAIN)
    assert got is not None and not got.shipped
    assert got.key == put.key == key_for(KIND, Config())
    assert got.path == cache.root / KIND / got.key[:2] / got.key
    assert got.config == PLAIN
    assert got.metrics["acc"] == 0.9 and got.metrics["loss"][:2] == [1.0, 0.5]
    assert math.isnan(got.metrics["loss"][2])
    assert got.meta["note"] == "hi"
    for field in ("code_version", "device", "cpu", "created", "torch", "python"):
        assert got.meta[field]
    assert got.meta["code_version"].startswith(("git:", "src:"))
    assert "; torch " in got.meta["cpu"]  # the processor and the instruction-set level PyTorch dispatches to
    tensors = got.tensors()
    assert set(tensors) == {"w", "b"}
    for name, tensor in result.tensors.items():
        assert torch.equal(tensors[name], tensor)
    header = json.loads((got.path / "config.json").read_text())
    assert header == {"kind": KIND, "format": FORMAT_VERSION, "config": PLAIN}
    manifest = json.loads((got.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "config.json",
        "metrics.json",
        "meta.json",
        "tensors.safetensors",
    }


def test_entry_without_tensors(cache: Cache) -> None:
    cache.put(KIND, PLAIN, {"x": 1})
    entry = cache.get(KIND, PLAIN)
    assert entry is not None and entry.tensors() == {}


def test_get_or_compute_records_wall_time_and_reuses(cache: Cache) -> None:
    calls: list[int] = []
    first = cache.get_or_compute(KIND, Config(), _counting(calls, sleep_s=0.05))
    second = cache.get_or_compute(KIND, Config(), _counting(calls))
    assert len(calls) == 1
    assert (first.key, first.path, first.meta) == (second.key, second.path, second.meta)
    assert first.meta["wall_time_s"] >= 0.05 and first.meta["note"] == "test"


def test_compute_error_writes_nothing(cache: Cache) -> None:
    def boom() -> ComputeResult:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        cache.get_or_compute(KIND, PLAIN, boom)
    assert cache.get(KIND, PLAIN) is None and cache.entries(KIND) == []


def _truncate_tensors(path: Path) -> None:
    file = path / "tensors.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _edit_metrics(path: Path) -> None:
    (path / "metrics.json").write_text(json.dumps({"loss": [0.0], "acc": 1.0}))


def _garbage_metrics_matching_manifest(path: Path) -> None:
    file = path / "metrics.json"
    file.write_text("{not json")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["metrics.json"] = {
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "size": file.stat().st_size,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))


CORRUPTIONS = {
    "truncated_tensors": _truncate_tensors,
    "edited_metrics": _edit_metrics,
    "missing_manifest": lambda path: (path / "manifest.json").unlink(),
    "garbage_manifest": lambda path: (path / "manifest.json").write_text("\x00garbage{"),
    "deleted_tensors": lambda path: (path / "tensors.safetensors").unlink(),
    "extra_file": lambda path: (path / "evil.pkl").write_bytes(b"x"),
    "unparsable_json": _garbage_metrics_matching_manifest,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_entries_are_removed_and_recomputed(cache: Cache, corrupt, caplog) -> None:
    calls: list[int] = []
    entry = cache.get_or_compute(KIND, PLAIN, _counting(calls))
    corrupt(entry.path)
    with caplog.at_level(logging.WARNING, logger="explorer.core.cache"):
        assert cache.get(KIND, PLAIN) is None
    assert "corrupt" in caplog.text
    assert not entry.path.exists()
    again = cache.get_or_compute(KIND, PLAIN, _counting(calls, value=2.0))
    assert len(calls) == 2 and again.metrics["loss"][0] == 2.0
    assert torch.equal(again.tensors()["b"], torch.ones(3))


def test_put_replaces_corrupt_existing_entry(cache: Cache) -> None:
    entry = cache.put(KIND, PLAIN, {"v": 1})
    _edit_metrics(entry.path)
    assert cache.put(KIND, PLAIN, {"v": 2}).metrics == {"v": 2}


def test_put_keeps_existing_valid_entry(cache: Cache) -> None:
    cache.put(KIND, PLAIN, {"v": 1})
    assert cache.put(KIND, PLAIN, {"v": 2}).metrics == {"v": 1}
    assert list((cache.root / KIND / ".tmp").iterdir()) == []


def test_concurrent_threads_compute_once(cache: Cache) -> None:
    calls: list[int] = []
    start = threading.Barrier(8)
    results: list[Entry] = []

    def worker() -> None:
        start.wait()
        results.append(cache.get_or_compute(KIND, Config(), _counting(calls, sleep_s=0.2)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8
    assert {(r.key, r.path, r.meta["created"], r.metrics["acc"]) for r in results} == {
        (results[0].key, results[0].path, results[0].meta["created"], 0.9)
    }


def _process_worker(root: str, markers: str, barrier) -> None:
    """Runs in a spawned process: compute leaves a marker file named after the pid."""

    def compute() -> ComputeResult:
        Path(markers, str(os.getpid())).touch()
        time.sleep(0.3)
        return ComputeResult(metrics={"pid": os.getpid()})

    barrier.wait()
    Cache(root=Path(root), shipped_root=Path(root) / "none").get_or_compute(KIND, PLAIN, compute)


def test_concurrent_processes_compute_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    markers = tmp_path / "markers"
    markers.mkdir()
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_process_worker, args=(str(tmp_path / "rt"), str(markers), barrier))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list(markers.iterdir())) == 1
    entry = Cache(root=tmp_path / "rt", shipped_root=tmp_path / "none").get(KIND, PLAIN)
    assert entry is not None and str(entry.metrics["pid"]) == next(markers.iterdir()).name


def test_shipped_root_is_read_and_never_deleted(tmp_path: Path, caplog) -> None:
    shipped = tmp_path / "shipped"
    Cache(root=shipped, shipped_root=tmp_path / "none").put(KIND, PLAIN, {"v": "shipped"})
    cache = Cache(root=tmp_path / "runtime", shipped_root=shipped)
    calls: list[int] = []
    entry = cache.get_or_compute(KIND, PLAIN, _counting(calls))
    assert entry.shipped and entry.metrics == {"v": "shipped"} and calls == []
    assert [e.key for e in cache.entries(KIND)] == [entry.key]

    _edit_metrics(entry.path)
    with caplog.at_level(logging.WARNING, logger="explorer.core.cache"):
        assert cache.get(KIND, PLAIN) is None
    assert "shipped" in caplog.text and (entry.path / "metrics.json").exists()
    assert cache.entries(KIND) == []
    fresh = cache.get_or_compute(KIND, PLAIN, _counting(calls))
    assert len(calls) == 1 and not fresh.shipped and fresh.path.is_relative_to(cache.root)
    assert (entry.path / "manifest.json").exists()
    assert cache.delete(KIND, PLAIN) and not cache.delete(KIND, PLAIN)
    assert (entry.path / "manifest.json").exists()


def test_entries_lists_runtime_before_shipped(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    Cache(root=shipped).put(KIND, {"n": 1}, {"v": "s1"})
    Cache(root=shipped).put(KIND, {"n": 2}, {"v": "s2"})
    cache = Cache(root=tmp_path / "runtime", shipped_root=shipped)
    cache.put(KIND, {"n": 2}, {"v": "r2"})
    cache.put(KIND, {"n": 3}, {"v": "r3"})
    listed = {e.config["n"]: (e.metrics["v"], e.shipped) for e in cache.entries(KIND)}
    assert listed == {1: ("s1", True), 2: ("r2", False), 3: ("r3", False)}


def test_entries_filtered_by_config_and_entry_by_key(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    s1 = Cache(root=shipped).put(KIND, {"n": 1}, {"v": "s1"})
    cache = Cache(root=tmp_path / "runtime", shipped_root=shipped)
    r2 = cache.put(KIND, {"n": 2}, {"v": "r2"})
    cache.put(KIND, {"n": 3}, {"v": "r3"})
    assert {e.config["n"] for e in cache.entries(KIND, where=lambda c: c["n"] < 3)} == {1, 2}
    assert cache.by_key(KIND, r2.key).metrics == {"v": "r2"}
    assert cache.by_key(KIND, s1.key).shipped
    assert cache.by_key(KIND, "0" * 64) is None and cache.by_key(KIND, "../x") is None
    (r2.path / "metrics.json").write_text("{}")  # corrupt: filtered in, then refused by verification
    assert cache.by_key(KIND, r2.key) is None and not r2.path.exists()


def test_default_root_reads_env_at_call_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "env"))
    assert Cache().root == tmp_path / "env"
    monkeypatch.delenv("EXPLORER_CACHE_DIR")
    assert Cache().root.parts[-2:] == ("cache", "runtime")
    assert Cache().shipped_root.parts[-2:] == ("cache", "shipped")


def test_default_cache_is_built_once_and_reads_the_environment_once(tmp_path: Path, monkeypatch) -> None:
    first = default_cache()
    assert first.root == default_root() and first.shipped_root == default_shipped_root()
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "later"))  # too late: the process's cache is built
    assert default_cache() is first and first.root != tmp_path / "later"
    shipped = shipped_cache()
    assert shipped.root == shipped.shipped_root == default_shipped_root()


def test_bad_kind_is_rejected(cache: Cache) -> None:
    with pytest.raises(ValueError):
        cache.get("../escape", PLAIN)
