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


# ---------------------------------------------------------------- uploaded CSVs: limits and what was understood


def _rows(n: int = 30, label=lambda i: i % 2, end: str = "\n") -> str:
    """n lines x1, x2, label."""
    return end.join(f"{i * 0.5},{-i},{label(i)}" for i in range(n)) + end


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default upload limits, whatever the environment says."""
    for key in ("MAX_UPLOAD_MB", "MAX_CSV_ROWS"):
        monkeypatch.delenv(f"EXPLORER_{key}", raising=False)


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n", "mixed"])
def test_every_line_ending_parses(end: str) -> None:
    text = "x1,x2,label\n" + _rows()
    if end == "mixed":
        text = "".join(ln + ("\r\n", "\r", "\n")[i % 3] for i, ln in enumerate(text.splitlines()))
    else:
        text = text.replace("\n", end)
    pts, _ = parse_points_csv(text.encode())
    assert len(pts.x) == 30 and pts.num_classes == 2 and "30 points, 2 classes" in pts.summary


def test_sizes_are_checked_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="line 2 is 131,077 characters long; at most 131,072"):
        parse_points_csv(("x1,x2,label\n1,2," + "9" * 131_073 + "\n" + _rows()).encode())
    monkeypatch.setenv("EXPLORER_MAX_CSV_ROWS", "20")
    with pytest.raises(ConfigError, match="at most 20 points"):
        parse_points_csv(_rows(21).encode())
    with pytest.raises(ConfigError, match="at most 20 points"):
        parse_points_csv(b"\n" * 5_000_000 + _rows(10).encode())  # line breaks alone are not split into lines
    monkeypatch.setenv("EXPLORER_MAX_UPLOAD_MB", "0.001")
    with pytest.raises(ConfigError, match="at most 0.001 MB is accepted"):
        parse_points_csv(_rows(200).encode())


def test_a_parse_is_memoised_by_content() -> None:
    data = ("x1,x2,label\n" + _rows(25)).encode()
    first, sha = parse_points_csv(data)
    again, sha2 = parse_points_csv(bytes(data))
    assert again is first and sha == sha2 and not first.x.flags.writeable
    split = make_split(Data2DConfig(name="upload", upload_sha=sha, n_points=25), CPU, upload=first)
    assert len(split.x_train) + len(split.x_test) == 25


@pytest.mark.parametrize("labels, task, classes, said", [
    (lambda i: (-1, 1)[i % 2], "classification", 2, "labels -1 -> 0, 1 -> 1"),
    (lambda i: i % 10 + 1, "classification", 10, "labels 1 -> 0, 2 -> 1"),
    (lambda i: i % 3, "classification", 3, "labels 0, 1, 2"),
    (lambda i: f"{i % 12}.0", "regression", 1, "regression target from 0 to 11"),
    (lambda i: i * 0.25, "regression", 1, "regression target from 0 to 7.25"),
])
def test_labels_are_read_as_said(labels, task: str, classes: int, said: str) -> None:
    pts, _ = parse_points_csv(("x1,x2,label\n" + _rows(label=labels)).encode())
    assert pts.task == task and pts.num_classes == classes and said in pts.summary
    if task == "classification":
        assert pts.y.min() == 0 and pts.y.max() == classes - 1


@pytest.mark.parametrize("bad, message", [
    ("1e39", r"line 32: the label 1e39 is beyond the float32 range"),
    ("-4e38", r"line 32: the label -4e38 is beyond the float32 range"),
    ("inf", r"line 32: the label inf is not a finite number"),
    ("nan", r"line 32: the label nan is not a finite number"),
])
def test_labels_beyond_float32_or_not_finite_are_refused_by_line(bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_points_csv(("x1,x2,label\n" + _rows() + f"1,2,{bad}\n").encode())


def test_many_whole_number_labels_are_refused_not_regressed() -> None:
    with pytest.raises(ConfigError, match="11 different whole numbers, more than the 10 classes.*decimal point"):
        parse_points_csv(("x1,x2,label\n" + _rows(label=lambda i: i % 11)).encode())


def test_headers_are_detected_numeric_ones_too() -> None:
    for head in ("0,1,2\n", "1,2,3\n", "x1,x2,label\n", "1,x2,label\n"):
        pts, _ = parse_points_csv((head + _rows()).encode())
        assert len(pts.x) == 30 and "line 1 read as a header" in pts.summary
    pts, _ = parse_points_csv(_rows().encode())  # no header: the first line is a point
    assert len(pts.x) == 30 and "header" not in pts.summary
    pts, _ = parse_points_csv(("0,1,1\n" + _rows()).encode())  # its label is a class of the others: a point
    assert len(pts.x) == 31


@pytest.mark.parametrize("data, message", [
    ("x1,x2,label\n".encode("utf-16-le") + _rows().encode("utf-16-le"), "UTF-16 or UTF-32 text without a byte"),
    ("x1,x2,größe\n".encode("latin-1") + _rows().encode(), "not UTF-8 text"),
    (b"x1,x2,label\n1,2,\x000\n" + _rows().encode(), "binary data"),
    (("x1;x2;label\n" + _rows().replace(",", ";")).encode(), "separate the columns with commas"),
], ids=["utf-16 without BOM", "latin-1", "NUL", "semicolons"])
def test_encodings_and_separators_get_messages(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_points_csv(data)
    pts, _ = parse_points_csv(("x1,x2,label\n" + _rows()).encode("utf-16"))  # with its BOM: read
    assert len(pts.x) == 30
