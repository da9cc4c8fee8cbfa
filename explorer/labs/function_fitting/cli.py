"""`python -m explorer fit {1d,cnn}`: depth vs width at equal parameter count, printed as a table.

1d: MLPs fitting a 1-D target side by side (default: the course report's three 571/712/571-parameter nets on
sinc5); --layers adds networks by layer list, --depth/--budget one of d equal hidden layers near P parameters.
cnn: the report's shallow and deep CNNs (112,970 parameters each) on digits, MNIST or Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from explorer.core.cache import default_cache
from explorer.core.command import add_device_option, command_device
from explorer.core.config import ConfigError
from explorer.core.report import terminal_run, where
from explorer.labs.function_fitting import fit1d, images
from explorer.train.evaluate import exit_codes


def _fit1d_config(args: argparse.Namespace) -> fit1d.FitConfig:
    """The 1-D config from flags: presets unless layer lists are given, plus the budget net if asked."""
    models = [fit1d.parse_layers(t) for t in args.layers] if args.layers else list(fit1d.PRESETS.values())
    if args.depth is not None or args.budget is not None:
        if args.depth is None or args.budget is None:
            raise ConfigError("--depth and --budget go together")
        models.append(fit1d.budget_widths(args.depth, args.budget)[0])
    return fit1d.FitConfig(target=args.target, n_train=args.n_train, models=tuple(models),
                           activation=args.activation, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           seed=args.seed, draw_every=max(1, args.epochs))


def _run_1d(args: argparse.Namespace) -> int:
    cfg = _fit1d_config(args)
    start = time.perf_counter()
    hist = fit1d.train(cfg, device=command_device(args.device))
    wall = time.perf_counter() - start
    print(f"{fit1d.TARGETS[cfg.target].title} · {cfg.n_train} points · {cfg.activation} · Adam lr {cfg.lr:g} · "
          f"{cfg.epochs} epochs · {wall:.1f} s")
    marks = sorted({e for e in (cfg.epochs // 10, cfg.epochs // 3, cfg.epochs) if e >= 1})
    head = f"{'network':34s} {'params':>7s} " + " ".join(f"{'loss@' + str(e):>11s}" for e in marks)
    print(head + f" {'grid MSE':>10s}")
    for i, name in enumerate(cfg.models):
        losses = " ".join(f"{hist.loss[i][e - 1]:>11.3e}" for e in marks)
        print(f"{fit1d.layer_list(name)[:34]:34s} {hist.params[i]:>7,} {losses} {hist.grid_mse[i]:>10.3e}")
    return 0


def _run_cnn(args: argparse.Namespace) -> int:
    cfg = images.ImageConfig(dataset=args.dataset, n_train=args.n_train, n_test=args.n_test, epochs=args.epochs,
                             lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    entry = terminal_run(lambda report: images.run(cfg, default_cache(), report))
    m = entry.metrics
    print(f"{m['dataset']} · {m['n_train']} train / {m['n_test']} test images {tuple(m['image_shape'])} · "
          f"{where(entry)}")
    print(f"{'model':8s} {'params':>8s} {'epoch':>5s} {'train loss':>10s} {'train acc':>9s} {'test loss':>9s} "
          f"{'test acc':>8s} {'s':>6s}")
    for r in images.table(m):
        print(f"{r['model']:8s} {r['params']:>8,} {r['epoch']:>5d} {r['train loss']:>10.4f} {r['train acc']:>9.3f} "
              f"{r['test loss']:>9.4f} {r['test acc']:>8.3f} {r['seconds']:>6.1f}")
    return 0


@exit_codes
def main(argv: list[str]) -> int:
    """Run one comparison and print its table; 2 for a refused setting, 1 for a diverged run."""
    ap = argparse.ArgumentParser(prog="python -m explorer fit", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="which", required=True)
    d1, f1 = fit1d.FitConfig(), dataclasses.fields(images.ImageConfig)
    p = sub.add_parser("1d", help="MLPs of equal parameter count fitting a 1-D function")
    p.add_argument("--target", default=d1.target, help=", ".join(fit1d.TARGETS))
    p.add_argument("--layers", nargs="*", default=None, help="networks as layer lists, e.g. 1-190-1 1-20-20-1")
    p.add_argument("--depth", type=int, default=None, help="with --budget: d equal hidden layers")
    p.add_argument("--budget", type=int, default=None, help="with --depth: the parameter count to get closest to")
    p.add_argument("--n-train", type=int, default=d1.n_train)
    p.add_argument("--activation", default=d1.activation, help=", ".join(fit1d.ACTIVATIONS))
    p.add_argument("--epochs", type=int, default=d1.epochs)
    p.add_argument("--lr", type=float, default=d1.lr)
    p.add_argument("--batch-size", type=int, default=d1.batch_size, help="0: full batch")
    p.add_argument("--seed", type=int, default=d1.seed)
    add_device_option(p)
    c = sub.add_parser("cnn", help="the shallow and the deep CNN, 112,970 parameters each")
    for f in f1:
        c.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = ap.parse_args(argv)
    return _run_1d(args) if args.which == "1d" else _run_cnn(args)
