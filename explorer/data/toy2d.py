"""Synthetic 2D/1D data sets of the playground (TensorFlow Playground's generators), input features, CSV upload."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from explorer.core.config import ConfigError, check_choice, check_range

DOMAIN = 6.0  # points and the boundary grid live in [-6, 6]^2, as in TensorFlow Playground
MAX_UPLOAD_POINTS = 20_000
MAX_UPLOAD_CLASSES = 10


@dataclass(frozen=True)
class Points:
    """A 2D point set: x (N, 2) float32 in the domain, y (N,) int64 class or float32 target."""

    x: np.ndarray
    y: np.ndarray
    task: str  # "classification" | "regression"

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if self.task == "classification" else 1


def _circle(n: int, noise: float, rng: np.random.Generator) -> Points:
    radius = 5.0
    r = np.concatenate([rng.uniform(0, radius * 0.5, n // 2), rng.uniform(radius * 0.7, radius, n - n // 2)])
    ang = rng.uniform(0, 2 * math.pi, n)
    x = np.stack([r * np.sin(ang), r * np.cos(ang)], 1)
    x += rng.uniform(-radius, radius, (n, 2)) * noise
    y = (np.hypot(x[:, 0], x[:, 1]) < radius * 0.5).astype(np.int64)
    return Points(x, y, "classification")


def _xor(n: int, noise: float, rng: np.random.Generator) -> Points:
    padding = 0.3
    x = rng.uniform(-5, 5, (n, 2))
    x += np.where(x > 0, padding, -padding)
    x += rng.uniform(-5, 5, (n, 2)) * noise
    y = (x[:, 0] * x[:, 1] >= 0).astype(np.int64)
    return Points(x, y, "classification")


def _gaussian(n: int, noise: float, rng: np.random.Generator) -> Points:
    var = 0.5 + noise * 3.5  # variance grows from 0.5 to 4 with noise, as in the playground
    y = (np.arange(n) >= n // 2).astype(np.int64)
    centre = np.where(y[:, None] == 1, 2.0, -2.0)
    x = centre + rng.normal(0, math.sqrt(var), (n, 2))
    return Points(x, y, "classification")


def _spiral(n: int, noise: float, rng: np.random.Generator) -> Points:
    half = n // 2
    xs, ys = [], []
    for label, delta, m in ((1, 0.0, half), (0, math.pi, n - half)):
        i = np.arange(m)
        r = i / m * 5
        t = 1.75 * i / m * 2 * math.pi + delta
        pts = np.stack([r * np.sin(t), r * np.cos(t)], 1) + rng.uniform(-1, 1, (m, 2)) * noise
        xs.append(pts)
        ys.append(np.full(m, label))
    return Points(np.concatenate(xs), np.concatenate(ys).astype(np.int64), "classification")


def _moons(n: int, noise: float, rng: np.random.Generator) -> Points:
    half = n // 2
    t0, t1 = rng.uniform(0, math.pi, half), rng.uniform(0, math.pi, n - half)
    a = np.stack([np.cos(t0), np.sin(t0)], 1)
    b = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)
    x = (np.concatenate([a, b]) - [0.5, 0.25]) * 3.0
    x += rng.normal(0, 1.0, (n, 2)) * noise * 1.5
    y = np.concatenate([np.zeros(half), np.ones(n - half)]).astype(np.int64)
    return Points(x, y, "classification")


def _plane(n: int, noise: float, rng: np.random.Generator) -> Points:
    x = rng.uniform(-DOMAIN, DOMAIN, (n, 2))
    y = (x[:, 0] + x[:, 1]) / (2 * DOMAIN) + rng.uniform(-1, 1, n) * noise
    return Points(x, y.astype(np.float32), "regression")


def _gauss_bump(n: int, noise: float, rng: np.random.Generator) -> Points:
    x = rng.uniform(-DOMAIN, DOMAIN, (n, 2))
    centres = [(-4, 2.5, 1), (0, 2.5, -1), (4, 2.5, 1), (-4, -2.5, -1), (0, -2.5, 1), (4, -2.5, -1)]
    y = np.zeros(n)
    for cx, cy, sign in centres:
        bump = sign * np.exp(-((x[:, 0] - cx) ** 2 + (x[:, 1] - cy) ** 2) / 2)
        y = np.where(np.abs(bump) > np.abs(y), bump, y)
    y = y + rng.uniform(-1, 1, n) * noise
    return Points(x, y.astype(np.float32), "regression")


GENERATORS: dict[str, Callable[[int, float, np.random.Generator], Points]] = {
    "circle": _circle,
    "xor": _xor,
    "gaussian": _gaussian,
    "spiral": _spiral,
    "moons": _moons,
    "plane": _plane,
    "gaussian bump": _gauss_bump,
}
UPLOAD = "upload"
REGRESSION_SETS = ("plane", "gaussian bump")


def task_of(name: str) -> str:
    """"classification" or "regression" for a built-in data set."""
    return "regression" if name in REGRESSION_SETS else "classification"


def _sin1(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x[:, 0])


def _sin2(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x[:, 1])


# what the network sees of a point (x1, x2): TensorFlow Playground's input features
INPUT_FEATURES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "x1": lambda x: x[:, 0],
    "x2": lambda x: x[:, 1],
    "x1^2": lambda x: x[:, 0] ** 2,
    "x2^2": lambda x: x[:, 1] ** 2,
    "x1*x2": lambda x: x[:, 0] * x[:, 1],
    "sin x1": _sin1,
    "sin x2": _sin2,
}


@dataclass(frozen=True)
class Data2DConfig:
    """Which 2D data set, how noisy, how it is split, and which input features the network sees."""

    name: str = "spiral"
    noise: int = 0  # percent, 0..50
    train_ratio: int = 50  # percent of points used for training, 10..90
    n_points: int = 500
    seed: int = 0
    input_features: tuple[str, ...] = ("x1", "x2")
    upload_sha: str = ""  # sha256 of an uploaded CSV when name == "upload"

    def __post_init__(self) -> None:
        check_choice("data set", self.name, [*GENERATORS, UPLOAD])
        check_range("noise (%)", self.noise, 0, 50, integer=True)
        check_range("train ratio (%)", self.train_ratio, 10, 90, integer=True)
        check_range("number of points", self.n_points, 10, MAX_UPLOAD_POINTS, integer=True)
        check_range("data seed", self.seed, 0, 2**31 - 1, integer=True)
        if not self.input_features:
            raise ConfigError("pick at least one input feature")
        for f in self.input_features:
            check_choice("input feature", f, INPUT_FEATURES)
        if len(set(self.input_features)) != len(self.input_features):
            raise ConfigError("each input feature may be picked once")
        if self.name == UPLOAD and not self.upload_sha:
            raise ConfigError("the upload data set needs an uploaded CSV file")


@dataclass(frozen=True)
class Split:
    """Train/test tensors on one device; x_* the input features, raw_* the 2D points."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    raw_train: np.ndarray
    raw_test: np.ndarray
    task: str
    num_classes: int


def make_points(cfg: Data2DConfig, upload: Points | None = None) -> Points:
    """Generate (or take the uploaded) points for a config, deterministically from its seed."""
    if cfg.name == UPLOAD:
        if upload is None:
            raise ConfigError("the upload data set needs an uploaded CSV file")
        return upload
    rng = np.random.default_rng(cfg.seed)
    pts = GENERATORS[cfg.name](cfg.n_points, cfg.noise / 100.0, rng)
    return Points(pts.x.astype(np.float32), pts.y, pts.task)


def input_features(x: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """(N, 2) raw points -> (N, len(names)) network inputs, one column per input feature."""
    return torch.stack([INPUT_FEATURES[f](x) for f in names], 1).contiguous()


def make_split(cfg: Data2DConfig, device: torch.device, upload: Points | None = None) -> Split:
    """Points -> shuffled train/test split as device tensors (the whole set lives on the device)."""
    pts = make_points(cfg, upload)
    n = len(pts.x)
    order = np.random.default_rng(cfg.seed + 1).permutation(n)
    n_train = max(1, min(n - 1, round(n * cfg.train_ratio / 100)))
    tr, te = order[:n_train], order[n_train:]
    xr = torch.as_tensor(pts.x, dtype=torch.float32)
    ydtype = torch.int64 if pts.task == "classification" else torch.float32
    yt = torch.as_tensor(pts.y, dtype=ydtype)
    feats = input_features(xr, cfg.input_features)
    return Split(
        x_train=feats[tr].to(device), y_train=yt[tr].to(device),
        x_test=feats[te].to(device), y_test=yt[te].to(device),
        raw_train=pts.x[tr], raw_test=pts.x[te], task=pts.task, num_classes=pts.num_classes,
    )


def parse_points_csv(data: bytes) -> tuple[Points, str]:
    """Parse an uploaded CSV of x1, x2, label (header optional); return points and the content sha256.

    Labels that are all whole numbers 0..9 make a classification set; anything else is regression.
    Coordinates are rescaled into the playground's domain. Raises ConfigError naming the bad line.
    """
    sha = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("the CSV file is not UTF-8 text") from exc
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # header
    if len(rows) < 10:
        raise ConfigError(f"the CSV needs at least 10 points (x1, x2, label), found {len(rows)}")
    if len(rows) > MAX_UPLOAD_POINTS:
        raise ConfigError(f"the CSV has {len(rows)} points; at most {MAX_UPLOAD_POINTS} are allowed")
    xs, labels = [], []
    for i, row in enumerate(rows, 1):
        if len(row) != 3:
            raise ConfigError(f"line {i}: expected 3 columns (x1, x2, label), found {len(row)}")
        try:
            vals = [float(c) for c in row]
        except ValueError:
            raise ConfigError(f"line {i}: {row!r} is not three numbers") from None
        if not all(math.isfinite(v) for v in vals):
            raise ConfigError(f"line {i}: values must be finite")
        xs.append(vals[:2])
        labels.append(vals[2])
    x = np.asarray(xs, dtype=np.float64)
    lab = np.asarray(labels)
    span = np.abs(x).max()
    x = (x / span * (DOMAIN - 1) if span > 0 else x).astype(np.float32)
    is_class = np.all(lab == np.round(lab)) and lab.min() >= 0 and lab.max() < MAX_UPLOAD_CLASSES
    if is_class:
        y = lab.astype(np.int64)
        if len(np.unique(y)) < 2:
            raise ConfigError("a classification CSV needs at least two different labels")
        return Points(x, y, "classification"), sha
    return Points(x, lab.astype(np.float32), "regression"), sha


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
