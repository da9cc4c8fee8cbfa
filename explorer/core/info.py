"""`python -m explorer info`: where things are and what is cached (every kind with its counts; --kind lists one)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from explorer.core import settings
from explorer.core.cache import KEY_PATTERN, KIND_PATTERN, default_cache
from explorer.core.device import describe_device
from explorer.core.provenance import code_version, cpu_description


def _count(root: Path, kind: str) -> int:
    """Entry folders of `kind` under a cache root (counted by name, not verified: verifying reads every file)."""
    kind_dir = root / kind
    return sum(1 for p in kind_dir.glob("??/*") if KEY_PATTERN.fullmatch(p.name)) if kind_dir.is_dir() else 0


def kind_counts(runtime: Path, shipped: Path) -> dict[str, tuple[int, int]]:
    """Every kind found in either cache root -> (runtime entries, shipped entries), sorted by name."""
    kinds = {p.name for root in (runtime, shipped) if root.is_dir() for p in root.iterdir()
             if p.is_dir() and KIND_PATTERN.fullmatch(p.name)}
    return {k: (_count(runtime, k), _count(shipped, k)) for k in sorted(kinds)}


def main(argv: list[str]) -> int:
    """Print the device, folders and cache contents."""
    ap = argparse.ArgumentParser(prog="python -m explorer info", description=__doc__)
    ap.add_argument("--kind", action="append", default=[],
                    help="list the cached entries of this kind (the names printed without it; see README)")
    args = ap.parse_args(argv)
    cache = default_cache()
    print(f"device:       {describe_device()}")
    print(f"processor:    {cpu_description()}")
    print(f"code version: {code_version()}")
    print(f"data folder:  {os.environ.get('EXPLORER_DATA_DIR', '(default) data/')}")
    print(f"cache:        {cache.root} (runtime), {cache.shipped_root} (shipped)")
    print(f"settings:     {settings.settings_file() or 'defaults (no explorer.toml)'}, EXPLORER_<KEY> overrides")
    for line in settings.describe():
        print(f"  {line}")
    counts = kind_counts(cache.root, cache.shipped_root)
    if not args.kind:
        if not counts:
            print("cached entries: none yet")
        else:
            print("cached entries (kind: runtime + shipped; `--kind NAME` lists one kind's entries):")
            for kind, (runtime, shipped) in counts.items():
                print(f"  {kind:20s} {runtime:5d} runtime + {shipped:3d} shipped")
    for kind in args.kind:
        if kind not in counts:
            print(f"no entries of kind {kind!r}; kinds in the cache: {', '.join(counts) or 'none'}")
            continue
        for e in cache.entries(kind):
            print(f"  {kind} {e.key[:12]} {'shipped' if e.shipped else 'runtime'} {e.meta.get('created', '')}")
    return 0
