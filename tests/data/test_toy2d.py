"""2D data sets: shapes, determinism, input features, CSV upload validation, limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.config import ConfigError
from explorer.data.toy2d import DOMAIN, GENERATORS, Data2DConfig, input_features, make_split, parse_points_csv

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_shapes_and_determinism(name: str) -> None:
    cfg = Data2DConfig(name=name, noise=25, train_ratio=30, n_points=200, seed=5)
    a, b = make_split(cfg, CPU), make_split(cfg, CPU)
    assert a.x_train.shape == (60, 2) and a.x_test.shape == (140, 2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert np.abs(a.raw_train).max() < DOMAIN * 1.6
    c = make_split(Data2DConfig(name=name, noise=25, train_ratio=30, n_points=200, seed=6), CPU)
    assert not torch.equal(a.x_train, c.x_train)
    if a.task == "classification":
        assert a.num_classes == 2 and set(a.y_train.tolist()) <= {0, 1}
    else:
        assert a.y_train.dtype == torch.float32


def test_classes_are_balanced_and_noise_moves_points() -> None:
    clean = make_split(Data2DConfig(name="circle", noise=0, n_points=400), CPU)
    noisy = make_split(Data2DConfig(name="circle", noise=50, n_points=400), CPU)
    y = torch.cat([clean.y_train, clean.y_test])
    assert abs(float(y.float().mean()) - 0.5) < 0.1
    assert not torch.allclose(clean.x_train, noisy.x_train)


def test_input_features() -> None:
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    f = input_features(x, ("x1", "x2", "x1^2", "x2^2", "x1*x2", "sin x1", "sin x2"))
    assert f.shape == (2, 7)
    torch.testing.assert_close(f[1], torch.tensor([-3.0, 0.5, 9.0, 0.25, -1.5, float(np.sin(-3.0)), float(np.sin(0.5))]))


def test_csv_upload_ok_and_rescaled() -> None:
    rows = "x1,x2,label\n" + "\n".join(f"{i},{-i * 2},{i % 3}" for i in range(30))
    pts, sha = parse_points_csv(rows.encode())
    assert pts.task == "classification" and pts.num_classes == 3 and len(sha) == 64
    assert np.abs(pts.x).max() <= DOMAIN
    reg, _ = parse_points_csv("\n".join(f"{i},{i},{i * 0.1}" for i in range(20)).encode())
    assert reg.task == "regression"
    split = make_split(Data2DConfig(name="upload", upload_sha=sha, n_points=30), CPU, upload=pts)
    assert len(split.x_train) + len(split.x_test) == 30


@pytest.mark.parametrize("text, message", [
    ("1,2,0\n" * 3, "at least 10"),
    ("1,2\n" * 12, "3 columns"),
    ("a,b,c\n1,2,zero\n" + "1,2,0\n" * 12, "not three numbers"),
    ("1,2,1\n" * 12, "two different labels"),
    ("1,nan,1\n" * 12, "finite"),
])
def test_csv_upload_refused_with_message(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_points_csv(text.encode())


def test_limits() -> None:
    with pytest.raises(ConfigError, match="noise"):
        Data2DConfig(noise=80)
    with pytest.raises(ConfigError, match="train ratio"):
        Data2DConfig(train_ratio=5)
    with pytest.raises(ConfigError, match="data set"):
        Data2DConfig(name="swiss roll")
    with pytest.raises(ConfigError, match="input feature"):
        Data2DConfig(input_features=("x3",))
    with pytest.raises(ConfigError, match="upload"):
        Data2DConfig(name="upload")
