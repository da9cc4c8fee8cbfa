"""Time to a finished t-SNE map of 10,000 Fashion-MNIST test images: our pipeline vs sklearn's TSNE.

Baseline: PCA to 50 dimensions, then sklearn.manifold.TSNE with its default settings
(perplexity 30, PCA init, Barnes-Hut, 1000 iterations), threads limited to 2.
Ours: explorer.labs.data_maps.embed.compute_map (PCA-50, exact neighbours, PCA init, early exaggeration, FFT
gradients via openTSNE with n_jobs=2, stopping once the map no longer moves), cache bypassed.
Both start from the same decoded images; rounds alternate so machine noise hits both sides.
Quality: sklearn.manifold.trustworthiness (10 neighbours) of both maps on the same 3,000-point
sample, measured in the raw pixel space. Needs Fashion-MNIST in the data folder
(EXPLORER_DATA_DIR, e.g. ../shared/datasets).
Usage: python -m benchmarks.bench_tsne [--points 10000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE, trustworthiness
from threadpoolctl import threadpool_limits

from explorer.core.cache import default_cache
from explorer.core.device import describe_device
from explorer.data import datasets as D
from explorer.labs.data_maps import embed as E

THREADS = 2


def baseline(x: np.ndarray, seed: int) -> np.ndarray:
    """PCA-50 then sklearn's TSNE with default settings."""
    with threadpool_limits(THREADS):
        z = PCA(n_components=50, random_state=seed).fit_transform(x)
        return TSNE(n_components=2, random_state=seed, n_jobs=THREADS).fit_transform(z)


def ours(cfg: E.MapConfig) -> np.ndarray:
    """explorer's t-SNE pipeline, without the result cache."""
    with threadpool_limits(THREADS):
        return E.compute_map(cfg, default_cache(), use_cache=False).coords


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sample", type=int, default=3000, help="points scored for trustworthiness")
    args = ap.parse_args()
    try:
        ds = D.load("fashion_mnist", "test")
    except D.DatasetUnavailable as err:  # the message says which folder and which files
        raise SystemExit(f"bench_tsne needs Fashion-MNIST: {err}") from None
    cfg = E.MapConfig(dataset="fashion_mnist", split="test", method="tsne", n_points=args.points)
    index = E.point_index(len(ds), cfg.n_points, cfg.seed)
    x = ds.to_float()[index].reshape(len(index), -1).numpy()  # (n, 784)
    sample = np.random.default_rng(1).choice(len(x), min(args.sample, len(x)), replace=False)
    print(f"device: {describe_device()}; {len(x):,} Fashion-MNIST test images; {THREADS} threads")
    times: dict[str, list[float]] = {"sklearn": [], "ours": []}
    scores: dict[str, list[float]] = {"sklearn": [], "ours": []}
    for r in range(args.rounds):
        for side, run in (("sklearn", lambda: baseline(x, cfg.seed)), ("ours", lambda: ours(cfg))):
            t0 = time.perf_counter()
            coords = run()
            times[side].append(time.perf_counter() - t0)
            scores[side].append(trustworthiness(x[sample], coords[sample], n_neighbors=10))
            print(f"round {r + 1}: {side:8s} {times[side][-1]:6.1f} s   trustworthiness {scores[side][-1]:.4f}")
    tb, to = statistics.median(times["sklearn"]), statistics.median(times["ours"])
    sb, so = statistics.median(scores["sklearn"]), statistics.median(scores["ours"])
    print(f"median: sklearn {tb:.1f} s (trustworthiness {sb:.4f}), ours {to:.1f} s "
          f"(trustworthiness {so:.4f}, {so - sb:+.4f})")
    print(f"ratio sklearn TSNE time / our t-SNE pipeline time: {tb / to:.2f}x")


if __name__ == "__main__":
    main()
