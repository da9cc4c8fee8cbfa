"""Maps: config limits, PCA, t-SNE and UMAP on small inputs (shapes, seeds, progress), caching, CSV."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from explorer.core.config import ConfigError
from explorer.data import datasets as D
from explorer.labs.data_maps import embed as E


SMALL = dict(dataset="digits", split="test", n_points=300, seed=3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(method="isomap"), "method must be one of"),
        (dict(n_points=E.MAX_POINTS + 1), "n_points must be between"),
        (dict(perplexity=150.0), "perplexity must be between"),
        (dict(n_points=60, perplexity=30.0), "needs more than 90 points"),
        (dict(method="umap", n_points=60, n_neighbors=80), "n_neighbors"),
        (dict(dataset="imagenet"), "dataset must be one of"),
        (dict(min_dist=float("nan")), "min_dist must be finite"),
    ],
)
def test_config_refuses_out_of_range_settings(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        E.MapConfig(**bad)


def test_pca_shapes_variance_and_determinism() -> None:
    x = D.load("digits", "test").to_float().reshape(360, -1)
    z, ratio = E.pca(x, 10, seed=0)
    assert z.shape == (360, 10) and ratio.shape == (10,)
    assert np.all(np.diff(ratio) <= 1e-6) and 0 < ratio.sum() <= 1.0
    z2, _ = E.pca(x, 10, seed=0)
    np.testing.assert_allclose(z, z2, atol=1e-5)


def test_tsne_map_is_seeded_reports_progress_and_scores_well(cache, recorder) -> None:
    cfg = E.MapConfig(method="tsne", n_iter=100, **SMALL)
    a = E.compute_map(cfg, cache, recorder, use_cache=False)
    b = E.compute_map(cfg, cache, use_cache=False)
    assert a.coords.shape == (300, 2) and a.coords.dtype == np.float32 and np.isfinite(a.coords).all()
    np.testing.assert_allclose(a.coords, b.coords, atol=1e-4)
    assert a.index.shape == (300,) and np.all(np.diff(a.index) > 0)
    assert np.array_equal(a.labels, D.load("digits", "test").y[a.index].numpy())
    intermediate = [(coords, m) for coords, _, m in recorder.published[:-1] if coords is not None]  # the maps forming
    assert intermediate and intermediate[0][0].shape == (300, 2) and "left" in intermediate[-1][1]
    assert recorder.progress == sorted(recorder.progress) and recorder.progress[-1] == 1.0
    assert recorder.checkpoints == len(recorder.published)  # a cancelled job stops before any report
    assert a.metrics["trustworthiness"] > 0.9 and a.metrics["iterations"] <= E.EARLY_ITERS + 100


def test_pca_map(cache) -> None:
    p = E.compute_map(E.MapConfig(method="pca", **SMALL), cache, use_cache=False)
    assert p.coords.shape == (300, 2) and len(p.metrics["explained_variance"]) == 2


@pytest.mark.slow  # umap-learn compiles its numba kernels on first use (tens of seconds)
def test_umap_map(cache, recorder) -> None:
    u = E.compute_map(E.MapConfig(method="umap", n_neighbors=10, **SMALL), cache, recorder, use_cache=False)
    assert u.coords.shape == (300, 2) and np.isfinite(u.coords).all()
    # live epoch counts from umap-learn's progress bar, without intermediate maps
    epochs = [(coords, m) for coords, _, m in recorder.published if m.startswith("epoch ")]
    assert epochs and epochs[-1][1].startswith("epoch 500/500") and epochs[-1][0] is None


def test_maps_are_cached_by_their_settings(monkeypatch: pytest.MonkeyPatch, cache) -> None:
    cfg = E.MapConfig(method="pca", **SMALL)
    assert E.cached_map(cfg, cache) is None
    first = E.compute_map(cfg, cache)
    monkeypatch.setattr(E, "pca", lambda *a, **k: pytest.fail("computed twice"))
    again = E.compute_map(cfg, cache)
    np.testing.assert_array_equal(first.coords, again.coords)
    assert E.cached_map(cfg, cache).entry.key == first.entry.key and first.entry.meta["code_version"]
    assert len(cache.entries(E.CACHE_KIND)) == 1


def test_coords_csv_and_point_index(cache) -> None:
    res = E.compute_map(E.MapConfig(method="pca", **SMALL), cache, use_cache=False)
    lines = E.coords_csv(res).splitlines()
    assert lines[0] == "index,label,class,x,y" and len(lines) == 301
    assert torch.equal(E.point_index(50, 100, 0), torch.arange(50))
    assert torch.equal(E.point_index(1000, 10, 4), E.point_index(1000, 10, 4))
