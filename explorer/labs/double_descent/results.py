"""Reading sweep results: the cached summaries, their spec and recompute command, tables for plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from explorer.core.cache import Cache, Entry
from explorer.core.config import ConfigError
from explorer.core.provenance import REPO_DIR
from explorer.core.report import hms
from explorer.labs.double_descent.spec import SWEEP_KIND, TRAINED_FAMILIES, SweepSpec, load_spec, spec_from_dict

if TYPE_CHECKING:
    import pandas

SPEC_DIR = REPO_DIR / "sweeps"


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
    """The CLI command that recomputes a sweep summary entry."""
    path = spec_file(entry.config["name"])
    where = f"sweeps/{path.name}" if path is not None else "SPEC.toml"
    return f"python -m explorer sweep {where}" + (" --ship" if entry.shipped else "")


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
