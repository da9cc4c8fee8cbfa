"""Random-features regression: the minimum-norm solution and the peak at p = n."""

from __future__ import annotations

import pytest
import torch

from explorer.core.config import ConfigError
from explorer.labs.double_descent.random_features import RFConfig, fit_curve, min_norm_fit, run


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
