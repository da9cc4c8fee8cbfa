"""A double-descent sweep's spec (TOML -> validated frozen SweepSpec), its points, their data and results.

A point is one model (width x label noise x seed) trained from its own seed on labels with its own noise
draw (explorer.data.noise); its result is one cache entry (kind POINT_KIND), the sweep's summary another
(SWEEP_KIND).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from explorer.core.cache import to_plain
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.schedules import SCHEDULES
from explorer.data import datasets
from explorer.data.noise import LABEL_SCHEMES
from explorer.train.optimizers import supported_kinds

POINT_KIND = "dd_point"
SWEEP_KIND = "dd_sweep"
METRICS = ("train_err", "train_loss", "test_err", "test_loss", "test_err_noisy", "test_loss_noisy")
TRAINED_FAMILIES = ("mlp", "cnn5", "resnet18")
RF_FAMILIES = ("rf_relu", "rf_fourier")
FAMILIES = TRAINED_FAMILIES + RF_FAMILIES
OPTIMIZER_KINDS = supported_kinds("sgd", "momentum", "adam")  # what the grouped trainers implement
AUGMENTS = ("none", "flip_crop")
EVAL_CHUNK = 1024  # examples per evaluation forward, so evaluation never holds the whole set's activations
MAX_POINTS = 2000
MAX_GROUP = 64  # models trained together at most
RF_MAX_TRAIN = 5000  # random features: n x max(widths) float64 features are held (5,000 x 20,000 = 800 MB at most)
INITS = ("torch_default", "he_uniform")  # PyTorch's layer defaults | He/Kaiming-uniform weights, zero biases
BANDWIDTHS = ("median",)  # named Fourier bandwidths; a number is sigma itself
# Fields added after sweeps were shipped: each joins a cache key only when set away from this default, so every
# entry computed before the field existed keeps its key (SweepSpec.key_config).
KEY_DEFAULTS: dict[str, Any] = {"init": "torch_default", "noise_scheme": "other", "bandwidth": "median"}


def _tuple(name: str, value: Any, kind: type) -> tuple:
    """A TOML list (or a single value) as a tuple of `kind`, refused with a clear message otherwise."""
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name} must be a non-empty list, got {value!r}")
    out = []
    for v in value:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ConfigError(f"{name} must hold {kind.__name__} values, got {v!r}")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class SweepSpec:
    """One double-descent sweep: data, label noise, model family and widths, recipe, seeds."""

    name: str  # short identifier, shown in the page's sweep list
    dataset: str = "mnist1d"  # an explorer.data.datasets name
    train_size: int = 4000  # training points (a seeded subset of the data set's train split)
    test_size: int = 1000  # test points (a seeded subset of the test split)
    label_noise: tuple[float, ...] = (0.0, 0.15)  # fraction p of train labels replaced (exactly round(p * n) of them)
    family: str = "mlp"  # mlp | cnn5 | resnet18 | rf_relu | rf_fourier
    widths: tuple[int, ...] = (8, 16, 32, 64)  # hidden units / base channels k / random features
    optimizer: str = "momentum"  # sgd | momentum | adam
    lr: float = 0.01  # learning rate per step (per batch, mean loss)
    momentum: float = 0.9  # for optimizer = momentum
    weight_decay: float = 0.0  # L2 added to the gradient
    batch_size: int = 100  # examples per step
    epochs: int = 500  # passes over the training set
    schedule: str = "constant"  # constant | cosine | inverse_sqrt (learning-rate multiplier per epoch)
    augment: str = "none"  # none | flip_crop (random horizontal flip + 4-pixel crop; images only)
    seeds: tuple[int, ...] = (0, 1)  # each seed: its own initial weights and label-noise draw
    data_seed: int = 0  # which train/test subset, and the shared batch order
    record_every: int = 1  # evaluate every this many epochs (and always the last)
    checkpoint_epochs: tuple[int, ...] = ()  # epochs whose weights are kept (safetensors)
    ridge: float = 0.0  # random features only: 0 = minimum-norm least squares
    description: str = ""  # one line for humans
    init: str = "torch_default"  # trained families: torch_default | he_uniform (the MNIST-1D notebook's)
    noise_scheme: str = "other"  # what replaces a noisy label (explorer.data.noise.LABEL_SCHEMES): other | uniform
    bandwidth: str | float = "median"  # rf_fourier: sigma of the Gaussian kernel, or "median" pairwise distance

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 80:
            raise ConfigError(f"name must be a string of 1 to 80 characters, got {self.name!r}")
        datasets.check_name("dataset", self.dataset)
        if not self.widths or not self.seeds or not self.label_noise:
            raise ConfigError("widths, seeds and label_noise each need at least one value")
        check_range("train_size", self.train_size, 10, 100_000, integer=True)
        check_range("test_size", self.test_size, 10, 100_000, integer=True)
        for p in self.label_noise:
            check_range("label_noise", p, 0.0, 0.9)
        check_choice("family", self.family, FAMILIES)
        top = 20_000 if self.family in RF_FAMILIES else (1024 if self.family == "mlp" else 128)
        for w in self.widths:
            check_range(f"widths (for {self.family})", w, 1, top, integer=True)
        check_choice("optimizer", self.optimizer, OPTIMIZER_KINDS)
        check_range("lr", self.lr, 1e-6, 10.0)
        check_range("momentum", self.momentum, 0.0, 0.999)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("batch_size", self.batch_size, 1, 100_000, integer=True)
        check_range("epochs", self.epochs, 1, 100_000, integer=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("augment", self.augment, AUGMENTS)
        for s in self.seeds:
            check_range("seeds", s, 0, 2**31 - 1, integer=True)
        check_range("data_seed", self.data_seed, 0, 2**31 - 1, integer=True)
        check_range("record_every", self.record_every, 1, 100_000, integer=True)
        for e in self.checkpoint_epochs:
            check_range("checkpoint_epochs", e, 1, self.epochs, integer=True)
        check_range("ridge", self.ridge, 0.0, 1e6)
        check_choice("init", self.init, INITS)
        if self.init != KEY_DEFAULTS["init"] and not self.trained:
            raise ConfigError(f"init applies to trained families ({', '.join(TRAINED_FAMILIES)}), not {self.family}")
        check_choice("noise_scheme", self.noise_scheme, LABEL_SCHEMES)
        if isinstance(self.bandwidth, str):
            check_choice("bandwidth", self.bandwidth, BANDWIDTHS)
        elif isinstance(self.bandwidth, (int, float)) and not isinstance(self.bandwidth, bool):
            check_range("bandwidth", self.bandwidth, 1e-3, 1e6)
        else:
            raise ConfigError(f"bandwidth must be a number (sigma) or \"median\", got {self.bandwidth!r}")
        if self.bandwidth != KEY_DEFAULTS["bandwidth"] and self.family != "rf_fourier":
            raise ConfigError(f"bandwidth applies to rf_fourier only, not {self.family}")
        if self.family in RF_FAMILIES:
            check_range(f"train_size (for {self.family})", self.train_size, 10, RF_MAX_TRAIN, integer=True)
        if len(set(self.widths)) != len(self.widths) or len(set(self.seeds)) != len(self.seeds) \
                or len(set(self.label_noise)) != len(self.label_noise):
            raise ConfigError("widths, seeds and label_noise must not repeat a value")
        n_points = len(self.widths) * len(self.seeds) * len(self.label_noise)
        if n_points > MAX_POINTS:
            raise ConfigError(f"a sweep may have at most {MAX_POINTS} points, this one has {n_points}")

    @property
    def trained(self) -> bool:
        """True for gradient-trained families, False for closed-form random features."""
        return self.family in TRAINED_FAMILIES

    def points(self) -> list[Point]:
        """Every (width, noise, seed), widths ascending."""
        return [Point(w, p, s) for w in sorted(self.widths) for p in self.label_noise for s in self.seeds]

    def recorded_epochs(self) -> list[int]:
        """The epochs (1-based) at which metrics are recorded."""
        if not self.trained:
            return [1]
        return sorted({*range(self.record_every, self.epochs + 1, self.record_every), self.epochs})

    def key_config(self) -> dict[str, Any]:
        """The spec as plain data for its summary's cache key, under recipe()'s rule for KEY_DEFAULTS fields."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in KEY_DEFAULTS or value != KEY_DEFAULTS[f.name]:
                out[f.name] = to_plain(value)
        return out

    def recipe(self) -> dict[str, Any]:
        """Everything that determines one point's result except (width, noise, seed): key_config() without the
        name, description and grid. The key rule: a field added after sweeps were shipped (KEY_DEFAULTS: init,
        noise_scheme, bandwidth) joins the recipe only when set away from its default, so every point computed
        before it existed keeps its cache key; a new field must be added to KEY_DEFAULTS with the default that
        reproduces the old behaviour."""
        skip = {"name", "description", "widths", "seeds", "label_noise"}
        return {k: v for k, v in self.key_config().items() if k not in skip}


SPEC_FIELDS = {f.name: f for f in dataclasses.fields(SweepSpec)}
TUPLE_TYPES = {"label_noise": float, "widths": int, "seeds": int, "checkpoint_epochs": int}


@dataclass(frozen=True)
class Point:
    """One model of a sweep."""

    width: int
    noise: float
    seed: int


def spec_from_dict(data: dict[str, Any]) -> SweepSpec:
    """A validated spec from plain data (a parsed TOML table); unknown keys are refused by name."""
    if not isinstance(data, dict):
        raise ConfigError("a sweep spec must be a table of settings")
    table = dict(data.get("sweep", data))
    unknown = sorted(set(table) - set(SPEC_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SPEC_FIELDS)}")
    if "name" not in table:
        raise ConfigError("a sweep spec needs a name")
    for key, kind in TUPLE_TYPES.items():
        if key in table:
            table[key] = () if key == "checkpoint_epochs" and table[key] == [] else _tuple(key, table[key], kind)
    if isinstance(table.get("bandwidth"), int) and not isinstance(table["bandwidth"], bool):
        table["bandwidth"] = float(table["bandwidth"])  # bandwidth = 5 in TOML is sigma 5.0
    return SweepSpec(**table)


def parse_spec(text: str) -> SweepSpec:
    """A validated spec from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"the spec is not valid TOML: {err}") from err
    return spec_from_dict(data)


def load_spec(path: str | Path) -> SweepSpec:
    """A validated spec from a TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no sweep spec at {path}")
    return parse_spec(path.read_text())


LIVE_WIDTHS = (2, 3, 4, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64, 80, 100, 128, 200, 300)  # sweep 1's grid
LIVE_MAX_EPOCHS = 500
LIVE_NAME = "live-mnist1d-mlp"


def live_spec(widths: list[int], noise_pct: int, epochs: int) -> SweepSpec:
    """A small MNIST-1D MLP sweep to compute on demand (one seed, 0% and noise_pct% label noise).

    Its limits are checked here, so a server refuses a request from outside the page's widgets too: widths
    from sweep 1's grid, at most LIVE_MAX_EPOCHS epochs (the full grid then takes about 2 minutes on one core).
    """
    if not set(widths) <= set(LIVE_WIDTHS):
        raise ConfigError(f"live widths must come from {list(LIVE_WIDTHS)}, got {sorted(widths)}")
    check_range("epochs (live)", epochs, 5, LIVE_MAX_EPOCHS, integer=True)
    check_range("label noise (%)", noise_pct, 0, 50, integer=True)
    return SweepSpec(name=LIVE_NAME, dataset="mnist1d", widths=tuple(sorted(widths)),
                     label_noise=tuple(sorted({0.0, noise_pct / 100})), seeds=(0,), epochs=epochs,
                     description="computed live from the page")


def live_args(spec: SweepSpec) -> str | None:
    """The `sweep --live ...` arguments that rebuild this spec with live_spec, or None if it is not a live sweep."""
    if spec.name != LIVE_NAME:
        return None
    noise = max(round(100 * p) for p in spec.label_noise)
    try:
        if live_spec(list(spec.widths), noise, spec.epochs) != spec:
            return None
    except ConfigError:
        return None
    return f"--live widths={','.join(map(str, spec.widths))} noise={noise} epochs={spec.epochs}"


def parse_live(args: list[str]) -> SweepSpec:
    """The live spec from `widths=4,16,64 noise=15 epochs=30` (the form live_args writes); ConfigError if wrong."""
    known = {"widths", "noise", "epochs"}
    values = dict(a.split("=", 1) for a in args if "=" in a)
    if len(values) != len(args) or set(values) != known:
        raise ConfigError(f"--live takes widths=W1,W2,... noise=PERCENT epochs=N, got {' '.join(args)!r}")
    try:
        widths = [int(w) for w in values["widths"].split(",") if w]
        return live_spec(widths, int(values["noise"]), int(values["epochs"]))
    except ValueError as err:
        raise ConfigError(f"--live values must be whole numbers: {err}") from err


def point_config(spec: SweepSpec, point: Point) -> dict[str, Any]:
    """The cache config of one point: the recipe plus its width, noise and seed."""
    return {**spec.recipe(), "width": point.width, "noise": point.noise, "seed": point.seed}



@dataclass(frozen=True)
class SweepData:
    """The sweep's train and test sets on the device."""

    x_train: torch.Tensor  # (N, ...) float32
    y_train: torch.Tensor  # (N,) int64, clean
    x_test: torch.Tensor  # (M, ...) float32
    y_test: torch.Tensor  # (M,) int64, clean
    num_classes: int
    in_shape: tuple[int, ...]


def load_data(spec: SweepSpec, device: torch.device | None = None) -> SweepData:
    """Seeded train/test subsets of the spec's data set (raises DatasetUnavailable with how to get it); a size
    larger than its split is refused (ConfigError), so a sweep never says it used more points than it had."""
    device = device or get_device()
    splits = {}
    for split, size in (("train", spec.train_size), ("test", spec.test_size)):
        splits[split] = datasets.load(spec.dataset, split)
        if size > len(splits[split]):
            raise ConfigError(f"{split}_size {size:,} is more than the {len(splits[split]):,} examples of "
                              f"{spec.dataset}'s {split} split")
    tr = datasets.take(splits["train"], spec.train_size, spec.data_seed)
    te = datasets.take(splits["test"], spec.test_size, spec.data_seed + 1)
    return SweepData(tr.to_float().to(device), tr.y.to(device), te.to_float().to(device), te.y.to(device),
                     tr.num_classes, tuple(tr.input_shape))



@dataclass
class PointResult:
    """What training one point produced."""

    point: Point
    epochs: list[int]
    metrics: dict[str, list[float]]  # METRICS name -> one value per recorded epoch
    params: int
    wall_time_s: float
    diverged: str | None = None
    checkpoints: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # "epoch{E}/{name}"
    num_classes: int | None = None  # of the data set (the page says how many noisy labels end up wrong)
