"""`python -m explorer critical`: K tiny MLPs driven to near-zero gradient, the minimal ratio of each, as a table.

One row per run: final loss, gradient norm reached, eigenvalue counts of the exact Hessian (negative / zero /
positive), the minimal ratio (share of positive eigenvalues) and the perturbation estimate.
"""

from __future__ import annotations

import argparse
import dataclasses

from explorer.core.command import add_ship_option, command_cache
from explorer.core.report import TerminalReporter
from explorer.labs.critical_points import lab
from explorer.train.evaluate import exit_codes


@exit_codes
def main(argv: list[str]) -> int:
    """Run (or read from the cache) K runs and print them; 2 for a refused setting, 1 for a diverged run."""
    ap = argparse.ArgumentParser(prog="python -m explorer critical", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(lab.CriticalConfig):
        ap.add_argument(lab.FLAGS[f.name], dest=f.name, type=type(f.default), default=f.default)
    ap.add_argument("--rows", type=int, default=20, help="runs printed (all: 0)")
    add_ship_option(ap)
    args = vars(ap.parse_args(argv))
    shown, ship = args.pop("rows"), args.pop("ship")
    cfg = lab.CriticalConfig(**args)
    with TerminalReporter() as report:
        entry = lab.run(cfg, command_cache(ship), report)
    m, r = entry.metrics, entry.metrics["rows"]
    s = lab.summary(r)
    print(f"{m['target']} · 1-{cfg.hidden}-{cfg.hidden}-1 tanh ({m['params']} params) · {m['runs']} runs · "
          f"{entry.meta.get('device')} · {entry.meta.get('wall_time_s', 0):.1f} s")
    print(f"minimal ratio {s['ratio_min']:.3f}..{s['ratio_max']:.3f} · loss {s['loss_min']:.3e}..{s['loss_max']:.3e} "
          f"· gradient norm median {s['grad_median']:.2e}, max {s['grad_max']:.2e} · median share of it along flat "
          f"directions {s['flat_share_median']:.2f}")
    print(f"{'run':>4s} {'loss':>10s} {'|grad|':>9s} {'neg':>4s} {'zero':>4s} {'pos':>4s} {'ratio':>6s} "
          f"{'perturb':>7s}")
    order = sorted(range(len(r["run"])), key=lambda i: r["loss"][i])
    for i in order[:shown or None]:
        print(f"{r['run'][i]:>4d} {r['loss'][i]:>10.3e} {r['grad_norm'][i]:>9.2e} {r['neg'][i]:>4d} {r['zero'][i]:>4d} "
              f"{r['pos'][i]:>4d} {r['ratio'][i]:>6.3f} {r['perturb_ratio'][i]:>7.3f}")
    return 0
