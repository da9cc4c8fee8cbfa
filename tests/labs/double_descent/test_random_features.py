"""Random-features regression: the minimum-norm solution and the peak at p = n."""

from __future__ import annotations

import pytest
import torch

from explorer.core.config import ConfigError
from explorer.labs.double_descent.random_features import (BLOCK, RF_ENGINE_VERSION, NestedFeatures, RFConfig,
                                                          bandwidth_sigma, cache_config, fit_curve, fit_nested,
                                                          min_norm_fit, run)
from explorer.labs.double_descent.run import plan_groups
from explorer.labs.double_descent.spec import SweepSpec


def test_min_norm_fit_matches_pinv_and_interpolates() -> None:
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(30, 80, generator=g, dtype=torch.float64)  # underdetermined: p > n
    y = torch.randn(30, 3, generator=g, dtype=torch.float64)
    a = min_norm_fit(phi, y)
    torch.testing.assert_close(a, torch.linalg.pinv(phi) @ y)
    torch.testing.assert_close(phi @ a, y)  # interpolates
    tall = torch.randn(80, 30, generator=g, dtype=torch.float64)  # overdetermined: least squares
    yt = torch.randn(80, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(min_norm_fit(tall, yt), torch.linalg.lstsq(tall, yt).solution)
    ridge = min_norm_fit(phi, y, ridge=1.0)
    assert ridge.norm() < a.norm()


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    centers = torch.randn(4, 10, generator=g)
    return centers[y] + 0.8 * torch.randn(n, 10, generator=g), y


@pytest.mark.parametrize("kind", ["fourier", "relu"])
def test_test_error_peaks_at_number_of_features_equal_to_train_points(kind: str) -> None:
    x_tr, y_tr = _blobs(60, 1)
    x_te, y_te = _blobs(400, 2)
    feats = (10, 20, 30, 40, 50, 55, 60, 65, 70, 80, 100, 150, 300)
    fits = fit_curve(x_tr, y_tr, x_te, y_te, 4, feats, kind=kind, seed=0)
    mse = {f.features: f.test_mse for f in fits}
    assert max(mse, key=mse.get) == 60  # the peak sits exactly at p = n
    assert mse[60] > 5 * mse[300] and mse[60] > 5 * mse[20]  # ... and it is a real peak
    assert all(f.train_mse < 1e-12 for f in fits if f.features > 60)  # interpolation beyond it
    norms = {f.features: f.norm for f in fits}
    assert max(norms, key=norms.get) == 60


def test_run_on_embedded_digits() -> None:
    fits = run(RFConfig(dataset="digits", train_size=100, test_size=300, kind="fourier",
                        features=(50, 100, 200)))
    assert [f.features for f in fits] == [50, 100, 200]
    assert fits[1].test_mse > fits[0].test_mse and fits[1].test_mse > fits[2].test_mse


@pytest.mark.parametrize("field, value, message", [
    ("kind", "sigmoid", "kind must be one of"),
    ("features", (), "at least one"),
    ("features", (10, 10**9), "features must be between"),
    ("train_size", 0, "train_size"),
    ("noise", -0.1, "noise"),
])
def test_bad_config_is_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RFConfig(**{field: value})


@pytest.mark.parametrize("kind", ["fourier", "relu"])
def test_features_are_nested_whatever_the_largest_count(kind: str) -> None:
    x, _ = _blobs(30, 3)
    feats = NestedFeatures(10, kind, 7, 2.0, torch.device("cpu"))
    wide = feats.raw(x.double(), 3 * BLOCK + 5)
    assert torch.equal(NestedFeatures(10, kind, 7, 2.0, torch.device("cpu")).raw(x.double(), 100), wide[:, :100])
    assert torch.equal(NestedFeatures(10, kind, 7, 2.0, torch.device("cpu")).raw(x.double(), BLOCK + 1),
                       wide[:, :BLOCK + 1])
    assert not torch.equal(NestedFeatures(10, kind, 8, 2.0, torch.device("cpu")).raw(x.double(), 100), wide[:, :100])


def test_a_fit_is_the_same_number_whichever_counts_and_label_sets_come_with_it() -> None:
    """A point's cache key names only its own width and noise, so its fit must not depend on the others."""
    x_tr, y_tr = _blobs(60, 1)
    x_te, y_te = _blobs(200, 2)
    y_other = torch.roll(y_tr, 1)
    alone = fit_curve(x_tr, y_tr, x_te, y_te, 4, (40,), "fourier", 3)
    among = fit_curve(x_tr, y_tr, x_te, y_te, 4, (10, 40, 60, 300, 700), "fourier", 3)
    assert alone[0] == among[1]
    two = fit_nested(x_tr, [y_tr, y_other], x_te, y_te, 4, (40, 300), "fourier", 3, y_te_noisy=[None, y_te])
    assert two[0][0] == alone[0] and two[0][1] == among[3]
    [other] = fit_curve(x_tr, y_other, x_te, y_te, 4, (300,), "fourier", 3, y_te_noisy=y_te)
    assert two[1][1] == other


def test_bandwidth_is_the_median_distance_or_the_number_given() -> None:
    x, y = _blobs(80, 4)
    assert bandwidth_sigma(x, "median") == pytest.approx(float(torch.pdist(x.double()).median()))
    assert bandwidth_sigma(x, 5.0) == 5.0
    x_te, y_te = _blobs(100, 5)
    wide = fit_curve(x, y, x_te, y_te, 4, (100,), "fourier", bandwidth=50.0)[0]
    assert wide != fit_curve(x, y, x_te, y_te, 4, (100,), "fourier")[0]
    with pytest.raises(ConfigError, match="bandwidth"):
        RFConfig(kind="fourier", bandwidth="wide")


def test_curve_cache_keys_name_the_engine_and_a_bandwidth_only_when_set() -> None:
    plain = cache_config(RFConfig())
    assert plain["engine_version"] == RF_ENGINE_VERSION and "bandwidth" not in plain
    assert cache_config(RFConfig(kind="fourier", bandwidth=5.0))["bandwidth"] == 5.0


def test_random_feature_points_are_planned_one_group_per_seed() -> None:
    spec = SweepSpec(name="rf", dataset="digits", family="rf_fourier", widths=(50, 100, 200), seeds=(0, 1),
                     label_noise=(0.0, 0.1))
    groups = plan_groups(spec, spec.points())
    assert [sorted({p.seed for p in g}) for g in groups] == [[0], [1]] and [len(g) for g in groups] == [6, 6]
