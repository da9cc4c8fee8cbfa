"""`python -m explorer sharpness`: train one small net at batch sizes 16..1024 and print its curvature table.

Columns: train/test loss and accuracy, input-gradient sensitivity, top Hessian eigenvalue (power iteration on
Hessian-vector products) and Keskar's epsilon-sharpness, one row per batch size.
"""

from __future__ import annotations

import argparse
import dataclasses

from explorer.core.command import add_ship_option, command_cache
from explorer.core.report import terminal_run
from explorer.labs.sharpness import lab
from explorer.train.evaluate import exit_codes

COLUMNS = (("batch_size", "batch", "{:>6d}"), ("steps", "steps", "{:>6d}"), ("epochs", "epochs", "{:>7.1f}"),
           ("train_loss", "train loss", "{:>10.4f}"), ("train_acc", "train acc", "{:>9.3f}"),
           ("test_loss", "test loss", "{:>9.4f}"), ("test_acc", "test acc", "{:>8.3f}"),
           ("sensitivity", "|dL/dx|", "{:>8.4f}"), ("top_eigenvalue", "top eig", "{:>9.4f}"),
           ("epsilon_sharpness", "eps-sharp", "{:>9.4f}"))


def print_table(m: dict) -> None:
    """The sweep's rows as a fixed-width table."""
    print(" ".join(f"{title:>{len(fmt.format(0 if 'd' in fmt else 0.0))}s}" for _, title, fmt in COLUMNS))
    for row in m["rows"]:
        print(" ".join(fmt.format(row[k]) for k, _, fmt in COLUMNS))


@exit_codes
def main(argv: list[str]) -> int:
    """Run (or read from the cache) one sweep and print it; 2 for a refused setting, 1 for a diverged run."""
    ap = argparse.ArgumentParser(prog="python -m explorer sharpness", description=__doc__.splitlines()[0])
    d = lab.SharpConfig()
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=list(d.batch_sizes))
    for f in dataclasses.fields(lab.SharpConfig):
        if f.name in lab.FLAGS:
            ap.add_argument(lab.FLAGS[f.name], dest=f.name, type=type(f.default), default=f.default)
    ap.add_argument("--power-tol", type=float, default=d.power_tol)
    add_ship_option(ap)
    args = vars(ap.parse_args(argv))
    ship = args.pop("ship")
    cfg = lab.SharpConfig(**{**args, "batch_sizes": tuple(args["batch_sizes"])})
    entry = terminal_run(lambda report: lab.run(cfg, command_cache(ship), report))
    m = entry.metrics
    fixed = f"{cfg.steps:,} SGD steps each" if cfg.budget == "steps" else f"{cfg.epochs} epochs each"
    print(f"{m['dataset']} · {m['network']} ({m['params']:,} params) · lr {cfg.lr:g} · {fixed} · Hessian and "
          f"sharpness on {m['n_hessian']} training images · {entry.meta.get('device')} · "
          f"{entry.meta.get('wall_time_s', 0):.1f} s")
    print_table(m)
    return 0
