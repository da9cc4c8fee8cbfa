"""Synthetic 2D/1D data sets of the playground (TensorFlow Playground's generators), input features, CSV upload."""

from __future__ import annotations

import codecs
import csv
import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from explorer.core import settings
from explorer.core.config import ConfigError, check_choice, check_range

DOMAIN = 6.0  # points and the boundary grid live in [-6, 6]^2, as in TensorFlow Playground
MAX_UPLOAD_POINTS = 20_000  # generated points; an uploaded CSV may hold settings.max_csv_rows
MAX_UPLOAD_CLASSES = 10  # whole-number labels with at most this many values are classes (the playground's colours)
MAX_LINE_CHARS = 131_072  # characters in one CSV line (the csv module's own field limit); longer lines are refused
PARSE_MEMO = 16  # parsed CSVs kept in memory, by content: a page rerun does not parse the same upload again
UPLOAD_MB = 1 << 20  # bytes in a megabyte, as Streamlit counts server.maxUploadSize
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Points:
    """A 2D point set: x (N, 2) float32 in the domain, y (N,) int64 class or float32 target."""

    x: np.ndarray
    y: np.ndarray
    task: str  # "classification" | "regression"
    summary: str = ""  # an uploaded CSV: what was understood, one line ("412 points, 2 classes (labels -1 -> 0, ...")

    @property
    def num_classes(self) -> int:
        """Classes of a classification set (labels are 0..K-1), 1 for regression."""
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
        most = settings.current().max_csv_rows if self.name == UPLOAD else MAX_UPLOAD_POINTS
        check_range("number of points", self.n_points, 10, max(10, most), integer=True)
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
    xr = torch.tensor(pts.x, dtype=torch.float32)  # a copy: an upload's arrays are shared and read-only
    ydtype = torch.int64 if pts.task == "classification" else torch.float32
    yt = torch.tensor(pts.y, dtype=ydtype)
    feats = input_features(xr, cfg.input_features)
    return Split(
        x_train=feats[tr].to(device), y_train=yt[tr].to(device),
        x_test=feats[te].to(device), y_test=yt[te].to(device),
        raw_train=pts.x[tr], raw_test=pts.x[te], task=pts.task, num_classes=pts.num_classes,
    )


def _text(data: bytes) -> str:
    """The CSV's bytes as text: UTF-8 (with or without BOM), or UTF-16 with its BOM (Excel's "Unicode text")."""
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the CSV file is not UTF-8 text (byte {exc.start + 1:,} cannot be read); save it as "
                          "'CSV UTF-8'") from None


def _cut(text: str, n: int = 60) -> str:
    """The visitor's text for a message, cut to n characters."""
    return text if len(text) <= n else text[:n] + "..."


def _numbered_header(first: list[str], rest: list[list[str]]) -> bool:
    """True when an all-numeric first line is a header after all: the column numbers 0,1,2 or 1,2,3 that tools write
    for unnamed columns, with a 'label' that no other line has (a real point there would be a coincidence)."""
    if len(first) != 3 or first not in (["0", "1", "2"], ["1", "2", "3"]):
        return False
    return all(len(r) < 3 or r[2] != first[2] for r in rest)


def _parse_csv(data: bytes, max_rows: int) -> Points:
    """The parse behind parse_points_csv (sizes checked, nothing memoised)."""
    if not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and data.count(b"\x00") * 3 >= len(data) > 0:
        raise ConfigError("the CSV file looks like UTF-16 or UTF-32 text without a byte-order mark; save it as "
                          "'CSV UTF-8'")
    text = _text(data)
    if "\x00" in text:
        raise ConfigError("the CSV file holds binary data (NUL bytes), not text")
    breaks = text.count("\n") + text.count("\r") - text.count("\r\n")
    if breaks > 2 * max_rows + 10:  # before splitting: a file of line breaks alone must not become millions of lines
        raise ConfigError(f"the CSV has {breaks:,} lines; at most {max_rows:,} points are allowed")
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]  # \n, \r\n, \r, mixed and more
    for i, ln in numbered:
        if len(ln) > MAX_LINE_CHARS:
            raise ConfigError(f"line {i} is {len(ln):,} characters long; at most {MAX_LINE_CHARS:,} are allowed "
                              "(a line holds x1, x2, label)")
    if len(numbered) > max_rows + 1:  # + a header line
        raise ConfigError(f"the CSV has {len(numbered):,} lines; at most {max_rows:,} points are allowed")
    rows_at = []
    for i, ln in numbered:
        try:
            row = [c.strip() for c in next(csv.reader([ln]), [])]  # line by line: a stray quote spans no lines
        except csv.Error as exc:
            raise ConfigError(f"line {i} cannot be read as comma-separated values ({exc})") from None
        if not any(row):  # a line of empty fields is blank
            continue
        if len(row) != 3:  # at once: a wide file is refused at its first line, not after parsing all of it
            hint = " (separate the columns with commas)" if len(row) == 1 and any(c in row[0] for c in ";\t ") else ""
            raise ConfigError(f"line {i}: expected 3 columns (x1, x2, label), found {len(row)}{hint}")
        rows_at.append((i, row))
    notes = []
    if rows_at:
        first_line, first = rows_at[0]
        if not all(_is_number(c) for c in first) or _numbered_header(first, [r for _, r in rows_at[1:]]):
            rows_at = rows_at[1:]
            notes.append(f"line {first_line} read as a header ({_cut(','.join(first), 40)})")
    if len(rows_at) < 10:
        raise ConfigError(f"the CSV needs at least 10 points (x1, x2, label), found {len(rows_at)}")
    if len(rows_at) > max_rows:
        raise ConfigError(f"the CSV has {len(rows_at):,} points; at most {max_rows:,} points are allowed")
    x = np.empty((len(rows_at), 2), dtype=np.float64)
    lab = np.empty(len(rows_at), dtype=np.float64)
    decimals = False  # a label written with a decimal point or an exponent: a regression target
    for k, (i, row) in enumerate(rows_at):
        try:
            vals = [float(c) for c in row]
        except ValueError:
            raise ConfigError(f"line {i}: {_cut(','.join(row))!r} is not three numbers") from None
        if not (math.isfinite(vals[0]) and math.isfinite(vals[1])):
            raise ConfigError(f"line {i}: x1 and x2 must be finite numbers, got {_cut(row[0], 20)}, {_cut(row[1], 20)}")
        if not math.isfinite(vals[2]):
            raise ConfigError(f"line {i}: the label {_cut(row[2], 20)} is not a finite number")
        if abs(vals[2]) > FLOAT32_MAX:
            raise ConfigError(f"line {i}: the label {_cut(row[2], 20)} is beyond the float32 range "
                              f"(±{FLOAT32_MAX:.2e}) the network computes in")
        x[k], lab[k] = vals[:2], vals[2]
        decimals = decimals or any(ch in row[2] for ch in ".eE")
    span = float(np.abs(x).max())
    if span > 0:
        x = x / span * (DOMAIN - 1)
        notes.append(f"x1, x2 scaled by {(DOMAIN - 1) / span:.3g} to fit ±{DOMAIN - 1:g}")
    x = x.astype(np.float32)
    distinct = np.unique(lab)
    whole = bool(np.all(lab == np.round(lab)))
    n = f"{len(lab):,} points"
    if whole and len(distinct) <= MAX_UPLOAD_CLASSES:
        if len(distinct) < 2:
            raise ConfigError("a classification CSV needs at least two different labels")
        y = np.searchsorted(distinct, lab).astype(np.int64)  # the sorted labels become classes 0..K-1
        if np.array_equal(distinct, np.arange(len(distinct))):
            labels = f"labels {', '.join(str(int(v)) for v in distinct)}"
        else:
            labels = "labels " + ", ".join(f"{v:g} -> {c}" for c, v in enumerate(distinct))
        pts = Points(x, y, "classification", "; ".join([f"{n}, {len(distinct)} classes ({labels})", *notes]))
    elif whole and not decimals:
        raise ConfigError(f"the labels are {len(distinct):,} different whole numbers, more than the "
                          f"{MAX_UPLOAD_CLASSES} classes the playground can show; for a regression target write "
                          f"them with a decimal point (3.0), for classes use at most {MAX_UPLOAD_CLASSES} labels")
    else:
        what = f"{n}, regression target from {lab.min():.4g} to {lab.max():.4g}"
        pts = Points(x, lab.astype(np.float32), "regression", "; ".join([what, *notes]))
    pts.x.setflags(write=False)  # shared by every rerun and session that uploads the same bytes
    pts.y.setflags(write=False)
    return pts


_parsed: OrderedDict[tuple, Points | str] = OrderedDict()  # (sha256, limits) -> points, or the refusal's message
_parsed_lock = threading.Lock()


def parse_points_csv(data: bytes) -> tuple[Points, str]:
    """Parse an uploaded CSV of x1, x2, label; return the points and the content's sha256.

    Sizes are checked before anything is parsed (settings.max_upload_mb, settings.max_csv_rows, MAX_LINE_CHARS per
    line); a parse (or its refusal) is memoised by the bytes' sha256 (the PARSE_MEMO latest), so a page rerun costs a
    hash. What is understood, said in `Points.summary`:
    - header: the first line is a header when any of its fields is not a number, or when it is the column numbering
      0,1,2 / 1,2,3 that tools write for unnamed columns; otherwise it is a point;
    - labels: whole numbers with at most MAX_UPLOAD_CLASSES different values are classes, mapped in sorted order to
      0..K-1 (-1/1 -> 0/1); more different whole numbers are refused unless written with a decimal point (then a
      regression target); any other number is a regression target. A label that is not finite or beyond float32 is
      refused naming its line;
    - coordinates are rescaled into the playground's domain.
    Raises ConfigError naming the line.
    """
    s = settings.current()
    if len(data) > s.max_upload_mb * UPLOAD_MB:
        raise ConfigError(f"the CSV file is {len(data) / UPLOAD_MB:.1f} MB; at most {s.max_upload_mb:g} MB is accepted")
    sha = hashlib.sha256(data).hexdigest()
    key = (sha, s.max_csv_rows)
    with _parsed_lock:
        known = _parsed.get(key)
        if known is not None:
            _parsed.move_to_end(key)
    if known is None:
        try:
            known = _parse_csv(data, s.max_csv_rows)
        except ConfigError as exc:
            known = str(exc)
        with _parsed_lock:
            _parsed[key] = known
            while len(_parsed) > PARSE_MEMO:
                _parsed.popitem(last=False)
    if isinstance(known, str):
        raise ConfigError(known)
    return known, sha


def _is_number(s: str) -> bool:
    """True when float() reads the text (nan and inf included: they are refused later, naming the line)."""
    try:
        float(s)
        return True
    except ValueError:
        return False
