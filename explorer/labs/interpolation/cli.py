"""`python -m explorer interpolate`: loss and accuracy along the line between two solutions, printed as a table.

Solution A and B train from the same initial weights with two recipes (--batch-a/--lr-a, --batch-b/--lr-b); the
table gives train/test loss and accuracy along A-B, init-A and init-B. --plane A (or B) adds the 2D slice along
two filter-normalised random directions around that solution.
"""

from __future__ import annotations

import argparse
import dataclasses

from explorer.core.cache import default_cache
from explorer.core.report import TerminalReporter, terminal_run, where
from explorer.labs.interpolation import lines, plane
from explorer.train.evaluate import exit_codes


@exit_codes
def main(argv: list[str]) -> int:
    """Run one interpolation and print its table; 2 for a refused setting, 1 for a diverged run."""
    ap = argparse.ArgumentParser(prog="python -m explorer interpolate", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(lines.InterpConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(flag, type=type(f.default), default=f.default)
    ap.add_argument("--line", default="A to B", help="which line to print: 'A to B', 'init to A', 'init to B', all")
    ap.add_argument("--plane", default="", help="A or B: also the 2D random slice around that solution")
    args = ap.parse_args(argv)
    cfg = lines.InterpConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(lines.InterpConfig)})
    pcfg = plane.PlaneConfig(run=cfg, around=args.plane) if args.plane else None
    entry = terminal_run(lambda report: lines.run(cfg, default_cache(), report))
    m = entry.metrics
    print(f"{m['dataset']} · {lines.NETS[cfg.net]} ({m['params']:,} parameters) · A: batch {cfg.batch_a} "
          f"lr {cfg.lr_a:g} · B: batch {cfg.batch_b} lr {cfg.lr_b:g} · {cfg.epochs} epochs · "
          f"{where(entry)}")
    if m["bn"]:
        print("batch norm: statistics " + ("recomputed on the training data at every point" if cfg.recompute_bn
                                           else "interpolated with the weights (not recomputed)"))
    print(f"loss barrier A-B (max over alpha in [0, 1] above the straight line): train "
          f"{m['barrier']['train_loss']:.4f}, test {m['barrier']['test_loss']:.4f}")
    print(f"{'line':10s} {'alpha':>6s} {'train loss':>10s} {'train acc':>9s} {'test loss':>9s} {'test acc':>8s}")
    for r in lines.table(m):
        if args.line in ("all", r["line"]):
            print(f"{r['line']:10s} {r['alpha']:>6.2f} {r['train_loss']:>10.4f} {r['train_acc']:>9.3f} "
                  f"{r['test_loss']:>9.4f} {r['test_acc']:>8.3f}")
    if pcfg is not None:
        with TerminalReporter() as report:
            p = plane.run(pcfg, default_cache(), report).metrics
        flat = [v for row in p["loss"] for v in row]
        print(f"2D slice around {pcfg.around} ({pcfg.grid}x{pcfg.grid}, {p['n_eval']} training images): "
              f"train loss {min(flat):.4f} to {max(flat):.4f}, centre "
              f"{p['loss'][pcfg.grid // 2][pcfg.grid // 2]:.4f}")
    return 0
