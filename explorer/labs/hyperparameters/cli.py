"""`python -m explorer hyper {lr,batch,grid}`: the hyperparameter lab's three parts, printed as tables.

lr: the course MLP (6 hidden ReLU layers) at learning rates 1, 1e-2, 1e-3, 1e-5, batch norm off and on, as one
batched run. batch: batch sizes 1, 16, 128, 1024 for equal epochs (or --mode steps: equal optimizer steps).
grid: depth 1, 2, 6, 10 at width 16 and width 8, 16, 32, 64 at depth 6, with linear regions counted.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from explorer.core.cache import default_cache
from explorer.core.command import add_device_option, command_device
from explorer.core.device import configure_threads
from explorer.core.report import TerminalReporter
from explorer.labs.hyperparameters import lab
from explorer.labs.hyperparameters.config import BatchSizeConfig, GridConfig, LRConfig, steps_table
from explorer.train.evaluate import exit_codes

CONFIGS: dict[str, type] = {"lr": LRConfig, "batch": BatchSizeConfig, "grid": GridConfig}
HELP = {"lr": "learning rates x batch norm, one batched run", "batch": "batch sizes: steps per epoch and curves",
        "grid": "depth x width: decision boundaries, train/test loss, linear regions"}


def _onoff(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"batch norm is 'on' or 'off', got {text!r}")
    return text == "on"


def _add_fields(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag per config field: tuples take several values, booleans --x / --no-x."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        d = f.default
        if isinstance(d, tuple):
            item = _onoff if isinstance(d[0], bool) else type(d[0])
            shown = " ".join(("on" if v else "off") if isinstance(v, bool) else f"{v:g}" for v in d)
            p.add_argument(flag, nargs="+", type=item, default=d, help=f"default: {shown}")
        elif isinstance(d, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=d)
        else:
            p.add_argument(flag, type=type(d), default=d, help=f"default: {d}")


def _config(which: str, args: argparse.Namespace) -> Any:
    cls = CONFIGS[which]
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Rows of dicts as aligned text columns."""
    if not rows:
        return
    cols = columns or list(rows[0])
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def _show(which: str, cfg: Any, m: dict) -> None:
    if which == "lr":
        print_table(lab.lr_table(m), ["model", "train loss", "train acc", "test loss", "test acc", "diverged at step"])
        for why in filter(None, m["diverged"]):
            print(why)
    elif which == "batch":
        print_table(steps_table(cfg))
        print_table([{"batch size": r["batch size"], **r["finals"], "seconds": s, "diverged": r["diverged"]}
                     for r, s in zip(m["runs"], m["seconds"])])
    else:
        print(f"all {len(m['names'])} models trained batched, in {len(m['groups'])} stacks grouped by width: "
              + "; ".join(f"{len(g['models'])} at depth {g['depth']} x width {g['width']}" for g in m["groups"])
              + " (narrower models padded with zero units, shallower ones skip the deeper layers)")
        print_table(lab.grid_table(m))
        best, worst = lab.best_worst(m)
        print(f"best (lowest test loss): {m['names'][best]}; worst: {m['names'][worst]}. Regions are counted as "
              f"distinct ReLU patterns on a {cfg.region_grid}x{cfg.region_grid} grid: a lower estimate.")


@exit_codes
def main(argv: list[str]) -> int:
    """Run one part and print its tables; 2 for a refused setting, 1 for a diverged run."""
    ap = argparse.ArgumentParser(prog="python -m explorer hyper", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="which", required=True)
    for name, cls in CONFIGS.items():
        p = sub.add_parser(name, help=HELP[name])
        _add_fields(p, cls)
        add_device_option(p)
        p.add_argument("--no-cache", action="store_true", help="compute afresh, do not read or write the cache")
    args = ap.parse_args(argv)
    configure_threads()
    cfg = _config(args.which, args)
    device = command_device(args.device)
    with TerminalReporter() as report:
        if args.no_cache:
            result = lab.compute(cfg, report, device)
            metrics, meta, where = result.metrics, {}, "not cached"
        else:
            entry = lab.run(cfg, default_cache(), report, device)
            metrics, meta, where = entry.metrics, entry.meta, str(entry.path)
    seconds = metrics.get("seconds")
    total = sum(seconds) if isinstance(seconds, list) else seconds
    print(f"{HELP[args.which]} · {cfg.dataset} · {meta.get('device', 'this device')} · "
          f"{_fmt(total)} s of compute · {where}")
    _show(args.which, cfg, metrics)
    return 0
