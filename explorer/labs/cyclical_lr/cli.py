"""`python -m explorer clr {train,range,search,overfit}`: cyclical learning rates on CIFAR-10 pixels, as tables.

train: one net with the triangular cyclical rate (default: the DD2424 report's setting, 48.09% test accuracy);
range: the LR range test and its suggested eta_min/eta_max; search: coarse-to-fine search over lambda;
overfit: 100 training images without regularisation (train accuracy should reach 100%).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from explorer.core.cache import default_cache
from explorer.core.command import add_ship_option, command_cache
from explorer.core.config import ConfigError
from explorer.core.report import TerminalReporter
from explorer.data.datasets import DatasetUnavailable
from explorer.labs.cyclical_lr import lab
from explorer.train.evaluate import Diverged


def _add_fields(p: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per config field, typed by its default."""
    for f in dataclasses.fields(cls):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)


def _config(cls: type, args: argparse.Namespace) -> object:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _header(entry) -> None:
    m = entry.metrics
    if m.get("notice"):
        print(m["notice"], file=sys.stderr)
    shipped = " (shipped)" if entry.shipped else ""
    print(f"{m['dataset']} · {entry.meta.get('device')} · {entry.meta.get('wall_time_s', 0):.1f} s · "
          f"{entry.path}{shipped}")


def _print_train(entry, cfg: lab.TrainConfig) -> None:
    m = entry.metrics
    _header(entry)
    print(f"{lab.MODELS[cfg.model]} · lambda {cfg.lam:g} · eta {cfg.eta_min:g}..{cfg.eta_max:g} · n_s {cfg.n_s} · "
          f"{cfg.cycles} cycle(s) = {cfg.steps:,} steps of {m['batch']} · {m['n_train']:,} train / {m['n_val']:,} "
          f"validation (held out of the training split) / {m['n_test']:,} test")
    h = m["history"][0]
    print(f"{'step':>6s} {'epoch':>6s} {'lr':>9s} {'train cost':>10s} {'train loss':>10s} {'train acc':>9s} "
          f"{'val cost':>9s} {'val loss':>9s} {'val acc':>8s}")
    for i, s in enumerate(h["step"]):
        print(f"{s:>6d} {h['epoch'][i]:>6.2f} {h['lr'][i]:>9.2e} {h['train_cost'][i]:>10.4f} "
              f"{h['train_loss'][i]:>10.4f} {h['train_acc'][i]:>9.4f} {h['val_cost'][i]:>9.4f} "
              f"{h['val_loss'][i]:>9.4f} {h['val_acc'][i]:>8.4f}")
    print(f"test accuracy {100 * m['test_acc'][0]:.2f}% · test loss {m['test_loss'][0]:.4f} · "
          f"training {m['seconds']:.1f} s")


def _train(args: argparse.Namespace, cfg: lab.TrainConfig) -> int:
    cache = command_cache(args.ship)
    with TerminalReporter() as report:
        entry = lab.run(cfg, cache, report)
    _print_train(entry, cfg)
    return 0


def _range(args: argparse.Namespace) -> int:
    cfg = _config(lab.RangeConfig, args)
    cache = command_cache(args.ship)
    with TerminalReporter() as report:
        entry = lab.run(cfg, cache, report)
    m = entry.metrics
    _header(entry)
    print(f"{len(m['lr'])} steps, rate {m['lr'][0]:.2e} -> {m['lr'][-1]:.2e}; stopped: {m['stopped']}")
    print(f"{'lr':>10s} {'loss':>9s} {'smoothed':>9s}")
    stride = max(1, len(m["lr"]) // 25)
    for i in list(range(0, len(m["lr"]), stride)) + [len(m["lr"]) - 1]:
        print(f"{m['lr'][i]:>10.3e} {m['loss'][i]:>9.4f} {m['smoothed'][i]:>9.4f}")
    print(f"lowest smoothed loss at rate {m['best_lr']:.3e}")
    for rule, (lo, hi) in m["suggestions"].items():
        print(f"suggested ({rule}): eta_min {lo:.2e}, eta_max {hi:.2e} — {lab.SUGGEST_RULES[rule]}")
    return 0


def _search(args: argparse.Namespace) -> int:
    cfg = _config(lab.SearchConfig, args)
    with TerminalReporter() as report:
        entry = lab.run(cfg, default_cache(), report)
    m = entry.metrics
    _header(entry)
    print(f"{'stage':6s} {'lambda':>10s} {'train acc':>9s} {'val acc':>8s} {'val cost':>9s}")
    for r in sorted(m["rows"], key=lambda r: -r["val acc"] if math.isfinite(r["val acc"]) else 1.0):
        note = f"  diverged at step {r['diverged at step']}" if r["diverged at step"] is not None else ""
        print(f"{r['stage']:6s} {r['lambda']:>10.3e} {r['train acc']:>9.4f} {r['val acc']:>8.4f} "
              f"{r['val cost']:>9.4f}{note}")
    f = m["final"]
    print(f"best lambda {f['lambda']:.3e}, retrained on {f['n_train']:,} images ({f['n_val']:,} held out), "
          f"{f['cycles']} cycles: test accuracy {100 * f['test acc']:.2f}% · {m['seconds']:.1f} s")
    return 0


def main(argv: list[str]) -> int:
    """Run one part and print its table; 2 for a refused setting or missing data, 1 for a diverged run."""
    ap = argparse.ArgumentParser(prog="python -m explorer clr", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="which", required=True)
    p = sub.add_parser("train", help="one net with the triangular cyclical learning rate")
    _add_fields(p, lab.TrainConfig)
    add_ship_option(p)
    r = sub.add_parser("range", help="the LR range test and the suggested eta_min, eta_max")
    _add_fields(r, lab.RangeConfig)
    add_ship_option(r)
    _add_fields(sub.add_parser("search", help="coarse-to-fine search over lambda"), lab.SearchConfig)
    o = sub.add_parser("overfit", help="100 training images, no regularisation: train accuracy -> 100%")
    o.add_argument("--dataset", default="cifar10")
    o.add_argument("--model", default="two_layer")
    o.add_argument("--seed", type=int, default=0)
    add_ship_option(o)
    args = ap.parse_args(argv)
    try:
        if args.which == "train":
            return _train(args, _config(lab.TrainConfig, args))
        if args.which == "overfit":
            return _train(args, lab.overfit_config(args.dataset, args.model, args.seed))
        return _range(args) if args.which == "range" else _search(args)
    except (ConfigError, DatasetUnavailable) as exc:
        print(f"setting refused: {exc}", file=sys.stderr)
        return 2
    except Diverged as exc:
        print(str(exc), file=sys.stderr)
        return 1
