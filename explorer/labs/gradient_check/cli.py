"""`python -m explorer gradcheck`: the gradient-check table for the given options, printed."""

from __future__ import annotations

import argparse

from explorer.labs.gradient_check import lab as gc
from explorer.train.evaluate import exit_codes


@exit_codes
def main(argv: list[str] | None = None) -> int:
    """Print the table of relative errors and verdicts; 2 for a refused setting."""
    ap = argparse.ArgumentParser(prog="python -m explorer gradcheck",
                                 description="Hand-written backprop vs numerical gradient vs autograd.")
    d = gc.CheckConfig()
    ap.add_argument("--model", choices=list(gc.MODELS), default=d.model)
    ap.add_argument("--bug", choices=list(gc.BUGS), default=d.bug)
    ap.add_argument("--h", type=float, default=d.h, help="finite-difference step, 1e-10..1e-1")
    ap.add_argument("--dtype", choices=list(gc.DTYPES), default=d.dtype)
    ap.add_argument("--lam", type=float, default=d.lam, help="L2 strength lambda on the weights")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--hidden", type=int, default=d.hidden, help="hidden width of the two-layer network")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--data", choices=list(gc.DATA), default=d.data)
    ap.add_argument("--max-entries", type=int, default=d.max_entries, help="entries checked numerically per parameter")
    ap.add_argument("--sweep", action="store_true", help="also print the h-sweep (max error over parameters)")
    a = ap.parse_args(argv)
    cfg = gc.CheckConfig(model=a.model, bug=a.bug, h=a.h, dtype=a.dtype, lam=a.lam, batch_size=a.batch_size,
                         hidden=a.hidden, seed=a.seed, data=a.data, max_entries=a.max_entries)
    result = gc.run_check(cfg, sweep=a.sweep)
    print(f"{gc.MODELS[cfg.model]}, bug: {gc.BUGS[cfg.bug].title}, h = {cfg.h:g}, {cfg.dtype}, lambda = {cfg.lam:g}")
    print(f"data: {result.data_note}; loss {result.loss:.6f}")
    print(f"{'parameter':<10}{'shape':>8}{'checked':>22}{'vs numerical':>14}{'vs autograd':>13}  verdict")
    for r in gc.table_rows(result):
        print(f"{r['parameter']:<10}{r['shape']:>8}{r['entries checked']:>22}{r['rel. error vs numerical']:>14.2e}"
              f"{r['rel. error vs autograd']:>13.2e}  {r['verdict']}")
    print(f"Thresholds: {gc.THRESHOLDS_TEXT}.")
    if a.sweep:
        print("h-sweep, max relative error over parameters (numerical vs float64 autograd):")
        for dtype in gc.DTYPES:
            worst = [max(r["rel_error"] for r in result.sweep if r["h"] == h and r["dtype"] == dtype)
                     for h in gc.SWEEP_H]
            print(f"  {dtype}: " + "  ".join(f"{h:.0e}:{e:.1e}" for h, e in zip(gc.SWEEP_H, worst)))
    return 0
