"""Faults: SIGKILL cache writers at random moments, then check what the next process sees.

N times (default 200), a writer process is started (forked from a fresh forkserver that has imported the cache,
so a start costs milliseconds, not a torch import) that writes, rewrites and deletes entries of several kinds
(tensors of 0.5-4 MB, some entries without tensors) in a loop; it is SIGKILLed 0-300 ms after it is ready. Then a
fresh process opens the cache the way the app does (`default_cache()`, which sweeps once at start) and checks:
every entry visible through `get`, `entries` and `by_key` verifies (its tensors load and hash to the digest its
metrics record), and no temp/trash folder or lock file is left. Prints counts; exits 1 on any failure.
Usage: python -m benchmarks.fault_cache [--kills 200] [--seed 0] [--max-delay-ms 300] [--root DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("fault-net", "fault-map", "fault-sweep")
CONFIGS_PER_KIND = 8  # a small pool, so writers collide with entries (and deletions) of earlier writers


def config_of(kind: str, i: int) -> dict:
    """The config of entry `i` of `kind`; its tensor size (0, or 0.5-4 MB) follows from it."""
    return {"kind": kind, "i": i, "floats": 0 if i % 4 == 3 else (1 + (i * 7 + len(kind)) % 8) * 131072}


def _content(config: dict):
    """(metrics, tensors) of an entry: random tensors, and their digest recorded in the metrics."""
    import numpy as np
    import torch

    rng = np.random.default_rng()  # fresh noise each write: a half-written file cannot look like another write
    if not config["floats"]:
        return {"digest": None, "n": 0}, None
    w = torch.from_numpy(rng.standard_normal(config["floats"], dtype=np.float32))
    b = torch.from_numpy(rng.standard_normal(17, dtype=np.float32))
    return {"digest": _digest({"w": w, "b": b}), "n": config["floats"]}, {"w": w, "b": b}


def _digest(tensors: dict) -> str:
    """sha256 over the tensors' names and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def _writer(root: str, seed: int, ready, written) -> None:
    """Child: write, rewrite and delete entries until killed; `written` counts finished writes."""
    import torch

    from explorer.core.cache import Cache, ComputeResult

    torch.set_num_threads(1)
    cache = Cache(Path(root), Path(root) / "no-shipped")  # no start-up sweep here: the leaks are counted
    rng = random.Random(seed)
    ready.send(os.getpid())
    while True:
        kind = rng.choice(KINDS)
        config = config_of(kind, rng.randrange(CONFIGS_PER_KIND))
        action = rng.random()
        if action < 0.5:
            cache.get_or_compute(kind, config, lambda c=config: ComputeResult(*_content(c)))
        elif action < 0.8:
            cache.put(kind, config, *_content(config))
        else:
            cache.delete(kind, config)
            continue
        written.value += 1


def leftovers(root: Path) -> tuple[int, int, int]:
    """(temp and trash folders, lock files, bytes in them) under a cache root."""
    folders = [p for d in root.glob("*/.tmp") for p in d.iterdir()] + [p for p in root.glob(".tmp/*")]
    locks = [p for d in [*root.glob("*/.locks"), *root.glob(".locks")] for p in d.iterdir()]
    size = sum(f.stat().st_size for p in folders for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return len(folders), len(locks), size


def verify(root: Path | str) -> dict:
    """In this (fresh) process: open the cache as the app does, read every entry every way, count what is wrong."""
    import logging

    root = Path(root)
    os.environ["EXPLORER_CACHE_DIR"] = str(root)
    from explorer.core.cache import CorruptEntry, default_cache, key_for

    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("explorer.core.cache").addHandler(handler)
    cache = default_cache()  # the start-up sweep runs here
    folders, locks, _ = leftovers(root)
    visible, corrupt = 0, []

    def check(entry, config) -> None:
        """One visible entry: its config and its tensors agree with what its writer recorded."""
        nonlocal visible
        visible += 1
        try:
            tensors = entry.tensors()
            want = entry.metrics.get("digest")
            ok = entry.config == config and (want is None and not tensors or want == _digest(tensors))
        except CorruptEntry as err:
            ok = False
            warnings.append(str(err))
        if not ok:
            corrupt.append(f"{entry.kind}/{entry.key[:12]}")

    for kind in KINDS:
        configs = {key_for(kind, config_of(kind, i)): config_of(kind, i) for i in range(CONFIGS_PER_KIND)}
        for entry in cache.entries(kind):
            check(entry, configs.get(entry.key))
        for key, config in configs.items():
            for entry in (cache.get(kind, config), cache.by_key(kind, key)):
                if entry is not None:
                    check(entry, config)
    return {"visible_reads": visible, "corrupt_visible": len(corrupt), "corrupt_names": corrupt[:10],
            "corrupt_removed": sum("corrupt" in w for w in warnings), "folders_after": folders,
            "locks_after": locks}


@dataclasses.dataclass
class FaultReport:
    """What one fault run did and found."""

    kills: int
    written: int
    folders_before: int
    locks_before: int
    mb_before: float
    visible_reads: int
    corrupt_visible: int
    corrupt_removed: int
    folders_after: int
    locks_after: int
    wall_s: float
    corrupt_names: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No corrupt entry was visible, nothing leaked after the sweep, and the writers did write."""
        return (self.corrupt_visible == 0 and self.folders_after == 0 and self.locks_after == 0
                and self.written > 0 and self.visible_reads > 0)


def run_faults(root: Path, kills: int = 200, seed: int = 0, max_delay_ms: float = 300.0) -> FaultReport:
    """Kill `kills` writers of the cache at `root` at random moments, then verify it from a fresh process."""
    start = time.perf_counter()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["explorer.core.cache", "numpy", "torch"])
    rng = random.Random(seed)
    written = ctx.RawValue("q", 0)  # no lock: a writer killed while holding one would hang this process
    for i in range(kills):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_writer, args=(str(root), seed * 100003 + i, child, written), daemon=True)
        proc.start()
        child.close()
        if not parent.poll(60):
            proc.kill()
            raise RuntimeError("a writer did not start within 60 s")
        parent.recv()
        time.sleep(rng.uniform(0, max_delay_ms) / 1000)
        proc.kill()  # SIGKILL
        proc.join()
        parent.close()
    folders, locks, size = leftovers(root)
    code = f"import json, sys; from benchmarks.fault_cache import verify; print(json.dumps(verify({str(root)!r})))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"the verifying process failed:\n{out.stderr[-4000:]}")
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return FaultReport(kills, written.value, folders, locks, size / 1e6, found["visible_reads"],
                       found["corrupt_visible"], found["corrupt_removed"], found["folders_after"],
                       found["locks_after"], time.perf_counter() - start, found["corrupt_names"])


def main(argv: list[str] | None = None) -> int:
    """Run the fault loop and print its counts."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fault_cache", description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200, help="writers to SIGKILL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-delay-ms", type=float, default=300.0, help="each kill comes 0..this ms after start")
    ap.add_argument("--root", type=Path, default=None, help="cache folder (default: a new temporary one)")
    args = ap.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="explorer-fault-cache-"))
    r = run_faults(root, args.kills, args.seed, args.max_delay_ms)
    if args.root is None and r.ok:
        shutil.rmtree(root, ignore_errors=True)  # a failed run's folder is kept, to look at
    print(f"cache folder:              {root}")
    print(f"writers killed:            {r.kills} (SIGKILL 0-{args.max_delay_ms:.0f} ms after start)")
    print(f"entries written:           {r.written} (finished writes counted by the writers)")
    print(f"left by the killed writers: {r.folders_before} temp/trash folders ({r.mb_before:.1f} MB), "
          f"{r.locks_before} lock files")
    print(f"next start (fresh process): {r.visible_reads} entry reads through get/entries/by_key, "
          f"{r.corrupt_visible} corrupt visible, {r.corrupt_removed} corrupt entries found and removed")
    print(f"left after its sweep:      {r.folders_after} temp/trash folders, {r.locks_after} lock files")
    print(f"wall time:                 {r.wall_s:.1f} s")
    if r.corrupt_names:
        print(f"corrupt: {', '.join(r.corrupt_names)}")
    print("OK" if r.ok else "FAILED")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
