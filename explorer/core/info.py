"""`python -m explorer info`: where things are and what is cached."""

from __future__ import annotations

import argparse
import os

from explorer.core.cache import default_cache
from explorer.core.device import describe_device
from explorer.core.provenance import code_version


def main(argv: list[str]) -> int:
    """Print the device, folders and cache contents."""
    ap = argparse.ArgumentParser(prog="python -m explorer info", description=__doc__)
    ap.add_argument("--kind", action="append", default=[], help="list cached entries of this kind")
    args = ap.parse_args(argv)
    cache = default_cache()
    print(f"device:       {describe_device()}")
    print(f"code version: {code_version()}")
    print(f"data folder:  {os.environ.get('EXPLORER_DATA_DIR', '(default) data/')}")
    print(f"cache:        {cache.root} (runtime), {cache.shipped_root} (shipped)")
    for kind in args.kind:
        for e in cache.entries(kind):
            print(f"  {kind} {e.key[:12]} {'shipped' if e.shipped else 'runtime'} {e.meta.get('created', '')}")
    return 0
