"""A planted pickle never executes: not as the tensor file, not as a .pt beside it, not as a JSON file of an entry,
in the runtime or the shipped root, whatever its manifest says, through every public reader and `explorer info`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer.core import info
from explorer.core.cache import Cache, ComputeResult, CorruptEntry, key_for

ROOT = Path(__file__).resolve().parents[2]
KIND = "planted"


class _Plant:
    """Unpickling this touches the marker file (pathlib.Path.touch is all the pickle names)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _payloads(marker: Path) -> dict[str, bytes]:
    """The same marker-touching object as a plain pickle and as a torch .pt archive."""
    buffer = io.BytesIO()
    torch.save({"w": _Plant(marker)}, buffer)
    return {"pickle": pickle.dumps(_Plant(marker)), "pt": buffer.getvalue()}


def _rehash_manifest(path: Path) -> None:
    """Recompute manifest.json over the entry's files as they are now."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
                         for p in sorted(path.iterdir()) if p.name != "manifest.json"}
    (path / "manifest.json").write_text(json.dumps(manifest))


# (file to write, payload) for each planted entry; every other file of the entry is left as the cache wrote it
PLANTS = [("tensors.safetensors", "pickle"), ("tensors.safetensors", "pt"), ("weights.pt", "pt"),
          ("data.pkl", "pickle"), ("metrics.json", "pickle"), ("config.json", "pt"), ("meta.json", "pickle")]


def _plant(writer: Cache, payloads: dict[str, bytes]) -> list[dict]:
    """Write one real entry per plant, then swap the payload in and recompute its manifest; the configs."""
    configs = []
    for i, (name, kind) in enumerate(PLANTS):
        config = {"plant": i}
        entry = writer.put(KIND, config, {"v": i}, {"w": torch.ones(4)})
        (entry.path / name).write_bytes(payloads[kind])
        _rehash_manifest(entry.path)
        configs.append(config)
    return configs


def _read_everything(cache: Cache, configs: list[dict]) -> None:
    """Every public way to read an entry, tensors included."""
    found = [cache.get(KIND, c) for c in configs] + [cache.by_key(KIND, key_for(KIND, c)) for c in configs]
    found += cache.entries(KIND) + cache.entries(KIND, where=lambda c: True)
    for entry in [e for e in found if e is not None]:
        try:
            entry.tensors()
        except CorruptEntry:
            pass
    for c in configs:
        cache.get_or_compute(KIND, c, lambda: ComputeResult({"v": "recomputed"}, {"w": torch.zeros(4)})).tensors()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """The file a planted pickle would create; the payloads are checked to be live (they do create it)."""
    marker = tmp_path / "PICKLE-RAN"
    payloads = _payloads(marker)
    check = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"  # the control: the test's own bytes
    subprocess.run([sys.executable, "-c", check], input=payloads["pickle"], check=True, cwd=ROOT, timeout=60)
    assert marker.exists(), "the planted payload should touch the marker when unpickled"
    marker.unlink()
    return marker


@pytest.mark.parametrize("where", ["runtime", "listed-shipped", "plain-shipped"])
def test_a_planted_pickle_never_runs(tmp_path: Path, marker: Path, where: str, monkeypatch, capsys) -> None:
    payloads = _payloads(marker)
    runtime, shipped = tmp_path / "runtime", tmp_path / "shipped"
    writer = {"runtime": Cache(runtime, tmp_path / "none"), "listed-shipped": Cache(shipped, shipped),
              "plain-shipped": Cache(shipped, tmp_path / "none")}[where]
    configs = _plant(writer, payloads)
    cache = Cache(runtime, shipped)
    monkeypatch.setattr(info, "default_cache", lambda: cache)
    assert info.main(["--kind", KIND]) == 0
    capsys.readouterr()
    _read_everything(cache, configs)
    assert not marker.exists()


def test_a_planted_pickle_never_runs_in_explorer_info(tmp_path: Path, marker: Path) -> None:
    runtime = tmp_path / "runtime"
    _plant(Cache(runtime, tmp_path / "none"), _payloads(marker))
    env = {**os.environ, "EXPLORER_CACHE_DIR": str(runtime)}
    for args in ([], ["--kind", KIND]):
        out = subprocess.run([sys.executable, "-m", "explorer", "info", *args], cwd=ROOT, env=env, timeout=120,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    assert not marker.exists()
