"""`python -m explorer deepsets`: a DeepSets sweep over equivariant layers L and width w on one set task, with the
non-invariant MLP for contrast, printed as a table (test MSE per test set size, parameters, epochs, time).

The default (sum of 2-10 numbers, L in 1,2, w in 16,64, test sizes up to 50) takes about 15 s on one CPU core.
`--task digit_sum --dataset mnist` is Zaheer et al.'s MNIST sum (the embedded digits stand in without MNIST).
`--ship` stores the result in cache/shipped (and its trust list).
"""

from __future__ import annotations

import argparse

from explorer.core.command import add_device_option, add_ship_option, command_run
from explorer.core.report import where
from explorer.labs.deep_sets import sets
from explorer.labs.deep_sets.tasks import TASKS
from explorer.train.evaluate import exit_codes


def config_from_args(args: argparse.Namespace) -> sets.SetsConfig:
    """The frozen config from parsed flags (validated there)."""
    return sets.SetsConfig(
        task=args.task, dataset=args.dataset, layers=sets.parse_ints(args.layers, "layers"),
        widths=sets.parse_ints(args.widths, "widths"), baseline=not args.no_baseline, layer_pool=args.layer_pool,
        readout_pool=args.readout_pool, min_size=args.min_size, max_size=args.max_size,
        test_sizes=sets.parse_ints(args.test_sizes, "test sizes"), n_train=args.n_train, n_val=args.n_val,
        n_test=args.n_test, epochs=args.epochs, patience=args.patience, lr=args.lr, batch_size=args.batch_size,
        seed=args.seed)


def format_table(m: dict) -> str:
    """The per-model table for the terminal, with the predict-the-mean baseline as the last line."""
    sizes = [str(n) for n in m["test_sizes"]]
    head = f"{'model':>24s} {'params':>8s} {'test MSE':>9s} " + " ".join(f"{'@' + n:>8s}" for n in sizes) + \
        f" {'epochs':>6s} {'best':>4s} {'s':>5s} {'perm |d|':>8s}"
    lines = [head]
    for r in sets.table(m):
        lines.append(f"{r['model']:>24s} {r['params']:>8,} {r['test MSE']:>9.4g} "
                     + " ".join(f"{r['MSE@' + n]:>8.3g}" for n in sizes)
                     + f" {r['epochs']:>6d} {r['best epoch']:>4d} {r['seconds']:>5.1f} {r['perm |Δ|']:>8.2g}")
    b = m["baseline"]
    lines.append(f"{'predict the mean':>24s} {0:>8,} {b['test_mse']:>9.4g} "
                 + " ".join(f"{b['per_size'][n]:>8.3g}" for n in sizes))
    return "\n".join(lines)


@exit_codes
def main(argv: list[str]) -> int:
    """Run (or read) one sweep and print its table; 2 for a refused setting, 1 for a diverged run."""
    d = sets.SetsConfig()
    ap = argparse.ArgumentParser(prog="python -m explorer deepsets", description=__doc__.splitlines()[0])
    ap.add_argument("--task", default=d.task, help=", ".join(TASKS))
    ap.add_argument("--dataset", default=d.dataset, help="image pool of digit_sum: " + ", ".join(sets.DATASETS))
    ap.add_argument("--layers", default=",".join(map(str, d.layers)), help="equivariant layers L, e.g. 1,2,3")
    ap.add_argument("--widths", default=",".join(map(str, d.widths)), help="widths w, e.g. 16,64")
    ap.add_argument("--no-baseline", action="store_true", help="skip the non-invariant MLP")
    ap.add_argument("--layer-pool", default=d.layer_pool, help=", ".join(sets.POOLS))
    ap.add_argument("--readout-pool", default=d.readout_pool, help=", ".join(sets.POOLS))
    ap.add_argument("--min-size", type=int, default=d.min_size, help="smallest training set")
    ap.add_argument("--max-size", type=int, default=d.max_size, help="largest training set")
    ap.add_argument("--test-sizes", default=",".join(map(str, d.test_sizes)), help="e.g. 2,5,10,20,30,50")
    ap.add_argument("--n-train", type=int, default=d.n_train, help="training sets")
    ap.add_argument("--n-val", type=int, default=d.n_val, help="validation sets")
    ap.add_argument("--n-test", type=int, default=d.n_test, help="test sets per size")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="at most; early stopping may end sooner")
    ap.add_argument("--patience", type=int, default=d.patience)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--seed", type=int, default=d.seed)
    add_device_option(ap)
    add_ship_option(ap)
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    entry = command_run(args, lambda cache, report, device: sets.run(cfg, cache, report, device))
    m = entry.metrics
    print(f"{sets.cli_command(sets.resolve(cfg))}\n{m['title']} · train sizes {m['train_sizes'][0]}-"
          f"{m['train_sizes'][1]} · {m['n_train']} train / {m['n_val']} val / {m['n_test']} test sets per size · "
          f"{where(entry)}")
    print(format_table(m))
    return 0
