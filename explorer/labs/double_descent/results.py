"""Reading sweep results: the cached summaries, their spec, recipe and recompute command, tables for plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from explorer.core.cache import Cache, Entry
from explorer.core.config import ConfigError
from explorer.core.provenance import REPO_DIR
from explorer.core.report import hms
from explorer.data.noise import LABEL_SCHEMES, expected_agreement
from explorer.labs.double_descent.run import engine_version
from explorer.labs.double_descent.spec import (SWEEP_KIND, TRAINED_FAMILIES, SweepSpec, live_args, load_spec,
                                               spec_from_dict)

if TYPE_CHECKING:
    import pandas

SPEC_DIR = REPO_DIR / "sweeps"
INIT_TITLES = {"torch_default": "PyTorch's default init", "he_uniform": "He-uniform init (zero biases)"}
NOISE_TITLES = {"other": ("other-class label noise", "each noisy label a random other class"),
                "uniform": ("uniform-label noise", "each noisy label redrawn uniformly, so some stay right")}


def spec_file(name: str, spec_dir: Path = SPEC_DIR) -> Path | None:
    """The spec file in sweeps/ whose sweep is called `name` (to tell users how to recompute it), or None."""
    for path in sorted(spec_dir.glob("*.toml")):
        try:
            if load_spec(path).name == name:
                return path
        except ConfigError:
            continue
    return None


def recompute_command(entry: Entry) -> str:
    """The CLI command that recomputes a sweep summary entry: its spec file, or the live sweep's own form."""
    spec = summary_spec(entry)
    if (live := live_args(spec)) is not None:
        return f"python -m explorer sweep {live}"
    path = spec_file(spec.name)
    where = f"sweeps/{path.name}" if path is not None else "SPEC.toml"
    return f"python -m explorer sweep {where}" + (" --ship" if entry.shipped else "")


# A model-wise rise smaller than this (test error, a fraction) is not called a peak on the page: 1,000 test points
# give a test error of ~0.5 a binomial standard error of ~1.6 points, so sub-point wiggles between widths (one seed,
# the CIFAR-10 sweep's 0.701 -> 0.708) are noise, not double descent.
MIN_PEAK_RISE = 0.01


def shows_peak(rise: float) -> bool:
    """Whether peak_rise's rise is large enough to call a model-wise peak."""
    return rise >= MIN_PEAK_RISE


def peak_rise(entry: Entry) -> tuple[float, dict]:
    """The largest model-wise peak of a summary at its last epoch: the seed-mean test error's largest rise over the
    minimum at smaller widths, over all noise levels; returns (rise, {noise, low_width, low, peak_width, peak})."""
    table = entry.tensors()["metrics"].numpy()[:, -1, :]  # (P, M) at the last recorded epoch
    col = entry.metrics["metric_names"].index("test_err")
    points = entry.metrics["points"]
    best: tuple[float, dict] = (float("-inf"), {})
    for noise in sorted({p["noise"] for p in points}):
        by_width: dict[int, list[float]] = {}
        for i, p in enumerate(points):
            if p["noise"] == noise:
                by_width.setdefault(p["width"], []).append(float(table[i, col]))
        widths = sorted(by_width)
        errs = [float(np.mean(by_width[w])) for w in widths]
        for k in range(1, len(widths)):
            low = int(np.argmin(errs[:k]))
            rise = errs[k] - errs[low]
            if rise > best[0]:
                best = (rise, {"noise": noise, "low_width": widths[low], "low": errs[low],
                               "peak_width": widths[k], "peak": errs[k]})
    return best


# Where the models "have fitted" their training labels: seed-mean train error at most this, the tolerance of Nakkiran
# et al. (2019)'s effective model complexity (the largest training set a procedure fits to train error 0.1), whose
# test-error peak sits where that complexity reaches n.
FIT_TOLERANCE = 0.1


def threshold_peak(entry: Entry) -> tuple[float, dict]:
    """The clearest peak at the interpolation threshold over the recorded epochs: at each epoch and noise level, the
    rise of the seed-mean test error at the narrowest width whose models have fitted their training labels
    (FIT_TOLERANCE) over the minimum at narrower widths, where some wider width's error is lower again (a peak, not
    the still-rising error of wide models early in training); the largest such rise (the latest of equal ones), as
    (rise, {noise, epoch, low_width, low, peak_width, peak}), rise -inf when none. The threshold moves to narrower
    widths as training goes on, so a sweep's peak can show best before its last epoch (at 20% noise the CIFAR-10
    CNN's is 4.8 points at k = 4 at epoch 100, and flat by epoch 150, once k = 3 fits the noise too)."""
    table = entry.tensors()["metrics"].numpy()  # (P, E, M)
    names, epochs, points = entry.metrics["metric_names"], entry.metrics["epochs"], entry.metrics["points"]
    test, train = table[:, :, names.index("test_err")], table[:, :, names.index("train_err")]
    best: tuple[float, dict] = (float("-inf"), {})
    for noise in sorted({p["noise"] for p in points}):
        widths = sorted({p["width"] for p in points if p["noise"] == noise})
        rows = [[i for i, p in enumerate(points) if p["noise"] == noise and p["width"] == w] for w in widths]
        errs = np.stack([test[r].mean(0) for r in rows])  # (W, E) seed means
        fitted = np.stack([train[r].mean(0) for r in rows]) <= FIT_TOLERANCE
        for j, e in enumerate(epochs):
            at = np.flatnonzero(fitted[:, j])
            if not len(at) or at[0] == 0 or at[0] == len(widths) - 1:
                continue
            k = int(at[0])
            if errs[k + 1:, j].min() >= errs[k, j]:  # no fall past it: wider models overfitting, not a peak
                continue
            low = int(np.argmin(errs[:k, j]))
            rise = float(errs[k, j] - errs[low, j])
            if rise >= best[0]:
                best = (rise, {"noise": noise, "epoch": e, "low_width": widths[low], "low": float(errs[low, j]),
                               "peak_width": widths[k], "peak": float(errs[k, j])})
    return best


def opening_peak(entry: Entry) -> tuple[int, tuple[float, dict] | None]:
    """The epoch the page opens a sweep at, and the threshold peak it then describes: the last epoch (None) when it
    shows a model-wise peak (peak_rise) or no epoch shows one at the threshold, else threshold_peak's epoch and peak."""
    last = entry.metrics["epochs"][-1]
    if shows_peak(peak_rise(entry)[0]):
        return last, None
    moving = threshold_peak(entry)
    return (moving[1]["epoch"], moving) if shows_peak(moving[0]) else (last, None)


def clearest_sweep(entries: list[Entry]) -> Entry | None:
    """The sweep whose model-wise peak rises most (peak_rise); trained networks first, since random features have
    their own view, so a closed-form sweep is picked only when no trained one is cached."""
    if not entries:
        return None
    trained = [e for e in entries if e.config.get("family") in TRAINED_FAMILIES]
    return max(trained or entries, key=lambda e: peak_rise(e)[0])


def summary_spec(entry: Entry) -> SweepSpec:
    """The spec a summary entry was computed from."""
    return spec_from_dict(entry.config)


def list_sweeps(cache: Cache) -> list[Entry]:
    """Every sweep summary in the cache (runtime and shipped), newest first."""
    entries = cache.entries(SWEEP_KIND)
    return sorted(entries, key=lambda e: e.meta.get("created", ""), reverse=True)


# ---------------------------------------------------------------- reading results for plots

def sweep_frame(entry: Entry) -> "pandas.DataFrame":
    """A summary entry as a long table: one row per (point, recorded epoch) with every metric."""
    import pandas as pd

    table = entry.tensors()["metrics"].numpy()  # (P, E, M)
    names, epochs, points = entry.metrics["metric_names"], entry.metrics["epochs"], entry.metrics["points"]
    p_idx, e_idx = (a.ravel() for a in np.indices(table.shape[:2]))
    df = pd.DataFrame(table.reshape(-1, len(names)), columns=names)
    for col in ("width", "noise", "seed", "params"):
        df[col] = [points[i][col] for i in p_idx]
    df["epoch"] = [epochs[j] for j in e_idx]
    return df


def interpolation_threshold(df: "pandas.DataFrame", noise: float, epoch: int, by: str = "width",
                            column: str = "train_err", tol: float = 0.0) -> float | None:
    """The smallest width (or params) whose seed-mean `column` at `epoch` is <= tol (the model fits
    its training labels), else None; for random features use column="train_loss", tol=1e-6."""
    at = df[(df["noise"] == noise) & (df["epoch"] == epoch)].groupby(by)[column].mean().sort_index()
    zero = at[at <= tol]
    return float(zero.index[0]) if len(zero) else None


def describe(entry: Entry) -> str:
    """One line saying what a sweep is: data, family, noise, seeds, epochs, device, wall time."""
    c, m, meta = entry.config, entry.metrics, entry.meta
    noise = "/".join(f"{100 * p:g}%" for p in c["label_noise"])
    wall = m.get("points_wall_time_s") or meta.get("wall_time_s") or 0.0
    recipe = f"{c['epochs']} epochs" if c["family"] in TRAINED_FAMILIES else "closed form"
    device = (m["points"][0].get("device") or meta.get("device", "?")) if m.get("points") else meta.get("device", "?")
    return (f"{c['name']}: {c['family']} on {c['dataset']} (n={c['train_size']}), {len(c['widths'])} widths, "
            f"noise {noise}, {len(c['seeds'])} seed(s), {recipe}, {device}, {hms(wall)} compute")


def engine_note(entry: Entry) -> str | None:
    """What the page says of a summary computed by another engine version than today's (None when it is today's;
    entries from before versions were recorded count as v1): which version, and the command that recomputes it."""
    today = engine_version(entry.config["family"])
    was = entry.meta.get("engine_version", 1)
    if was == today:
        return None
    which = "an earlier" if isinstance(was, int) and was < today else "another"
    return f"computed with {which} engine (v{was}; today's is v{today}): recompute with `{recompute_command(entry)}`"


def recipe_line(entry: Entry) -> str:
    """The recipe choices where the published ones differ: init or features, what the label noise does (and how
    many labels it leaves wrong), train and test points; e.g. "He-uniform init (zero biases), uniform-label
    noise (Zhang et al. 2017; the MNIST-1D notebook: each noisy label redrawn uniformly, so some stay right;
    13.5% of the train labels wrong at p = 15%), 4,000 train / 12,000 test points"."""
    spec = summary_spec(entry)
    if spec.trained:
        parts = [INIT_TITLES[spec.init]]
    else:
        if spec.family == "rf_relu":
            features = "random ReLU features"
        elif spec.bandwidth == "median":
            features = "random Fourier features, bandwidth sigma = the median pairwise distance of training inputs"
        else:
            features = f"random Fourier features, bandwidth sigma = {spec.bandwidth:g}"
        fit = "minimum-norm least squares" if spec.ridge == 0 else f"ridge {spec.ridge:g}"
        parts = [f"{features}, {fit}"]
    p = max(spec.label_noise)
    if p > 0:
        classes = entry.metrics.get("num_classes")
        if spec.noise_scheme == "uniform" and not classes:
            wrong = "about p (C - 1) / C of the train labels wrong"
        else:
            frac = 1.0 - expected_agreement(p, spec.noise_scheme, classes or 2)
            wrong = f"{100 * frac:.3g}% of the train labels wrong at p = {100 * p:g}%"
        title, what = NOISE_TITLES[spec.noise_scheme]
        parts.append(f"{title} ({LABEL_SCHEMES[spec.noise_scheme].source}: {what}; {wrong})")
    else:
        parts.append("no label noise")
    parts.append(f"{spec.train_size:,} train / {spec.test_size:,} test points")
    return ", ".join(parts)
