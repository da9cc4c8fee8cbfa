"""`python -m explorer size`: the eleven two-conv CNNs (8,8) ... (128,96), train and test loss and accuracy against
their parameter count, printed as a table.

The default is the course report's run and the shipped result (Fashion-MNIST, 20,000 training and 10,000 test
images, 5 epochs, Adam 1e-3; 983 s on 2 CPU cores, a few minutes on a GPU); `--n-train 3000` is a quick variant.
`--ship` stores the result in cache/shipped (and its trust list).
"""

from __future__ import annotations

import argparse

from explorer.core.command import add_device_option, add_ship_option, command_run
from explorer.core.report import where
from explorer.labs.model_size import sizes
from explorer.train.evaluate import exit_codes


def config_from_args(args: argparse.Namespace) -> sizes.SizeConfig:
    """The frozen config from parsed flags (validated there)."""
    return sizes.SizeConfig(dataset=args.dataset, n_train=args.n_train, n_test=args.n_test, epochs=args.epochs,
                            widths=sizes.parse_widths(args.widths), seeds=args.seeds, lr=args.lr,
                            batch_size=args.batch_size, seed=args.seed)


def format_table(entry_metrics: dict) -> str:
    """The per-width table for the terminal."""
    lines = [f"{'width':>10s} {'params':>8s} {'train loss':>10s} {'test loss':>9s} {'train acc':>9s} "
             f"{'test acc':>8s} {'gap':>6s} {'s':>6s}"]
    for r in sizes.table(entry_metrics):
        lines.append(f"{r['width']:>10s} {r['params']:>8,} {r['train loss']:>10.4f} {r['test loss']:>9.4f} "
                     f"{r['train acc']:>9.3f} {r['test acc']:>8.3f} {r['gap (train - test acc)']:>6.3f} "
                     f"{r['seconds']:>6.1f}")
    return "\n".join(lines)


@exit_codes
def main(argv: list[str]) -> int:
    """Run (or read) one sweep over widths and print its table; 2 for a refused setting, 1 for a diverged run."""
    d = sizes.SizeConfig()
    ap = argparse.ArgumentParser(prog="python -m explorer size", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=d.dataset, help=", ".join(sizes.DATASETS))
    ap.add_argument("--n-train", type=int, default=d.n_train, help="training images (the report and the default: 20000)")
    ap.add_argument("--n-test", type=int, default=d.n_test)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--widths", default="all", help="c1xc2 pairs, e.g. 8x8,32x28,128x96 (default: all eleven)")
    ap.add_argument("--seeds", type=int, default=d.seeds, help="copies per width, trained as one grouped model")
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--seed", type=int, default=d.seed)
    add_device_option(ap)
    add_ship_option(ap)
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    entry = command_run(args, lambda cache, report, device: sizes.run(cfg, cache, report, device))
    m = entry.metrics
    print(f"{sizes.cli_command(cfg)}\n{m['dataset']} · {m['n_train']} train / {m['n_test']} test images "
          f"{tuple(m['image_shape'])} · {m['epochs']} epochs · {m['seeds']} seed(s) per width · "
          f"{where(entry)}")
    print(format_table(m))
    return 0
