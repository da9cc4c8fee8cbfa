"""`python -m explorer map`: compute (or find in the cache) a 2D map of a data set and save it as CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explorer.core.cache import default_cache
from explorer.core.config import ConfigError
from explorer.core.report import TerminalReporter
from explorer.data import datasets as D
from explorer.labs.data_maps import embed as E


def main(argv: list[str]) -> int:
    """Parse the settings, compute the map with progress on stderr, print where it went."""
    d = E.MapConfig()
    ap = argparse.ArgumentParser(prog="python -m explorer map", description=__doc__)
    ap.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(D.NAMES)} or folder:<path>")
    ap.add_argument("--split", default=d.split, choices=D.SPLITS)
    ap.add_argument("--method", default=d.method, choices=list(E.METHODS))
    ap.add_argument("--points", type=int, default=d.n_points)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--perplexity", type=float, default=d.perplexity)
    ap.add_argument("--iterations", type=int, default=d.n_iter)
    ap.add_argument("--neighbors", type=int, default=d.n_neighbors)
    ap.add_argument("--min-dist", type=float, default=d.min_dist)
    ap.add_argument("--space", default=d.space, help="embedding space: pixels, or model:<kind>:<key> from "
                                                     "`python -m explorer spaces list|train`")
    ap.add_argument("--csv", type=Path, help="also write the coordinates to this CSV file")
    args = ap.parse_args(argv)
    try:
        cfg = E.MapConfig(dataset=args.dataset, split=args.split, method=args.method, n_points=args.points,
                          seed=args.seed, perplexity=args.perplexity, n_iter=args.iterations,
                          n_neighbors=args.neighbors, min_dist=args.min_dist, space=args.space)
        with TerminalReporter() as report:
            result = E.compute_map(cfg, default_cache(), report)
    except (ConfigError, D.DatasetUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"map cached at {result.entry.path}; trustworthiness {result.metrics['trustworthiness']:.3f}")
    if args.csv:
        args.csv.write_text(E.coords_csv(result))
        print(f"coordinates written to {args.csv}")
    return 0
