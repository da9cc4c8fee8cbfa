"""`python -m explorer classify`: train (or read) one image classifier run and print its test metrics and the table
of every kept run.

`--preset simple|resnet9|resnet20|fast` picks a recipe at the scale this app ships (a narrow network, 20,000
CIFAR-10 images, at most 10-15 epochs: about ten minutes on a CPU); `--full` the same recipe at the course
report's scale (45,000 training images, full width, all epochs: for a GPU). Every other flag overrides one
setting of the preset. `--ship` stores the run in cache/shipped (and its trust list), to commit with the app;
`--list` prints the kept runs only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from explorer.core.command import add_device_option, add_ship_option, command_cache, command_device
from explorer.core.config import ConfigError
from explorer.core.report import TerminalReporter
from explorer.data.datasets import DatasetUnavailable
from explorer.labs.classifiers import presets as P
from explorer.labs.classifiers import workbench as W
from explorer.labs.classifiers.config import FLAGS, ClassifierConfig, with_values
from explorer.train.evaluate import Diverged


def parser() -> argparse.ArgumentParser:
    """The flags: --preset, --full, one per setting (FLAGS), --device, --ship, --list."""
    ap = argparse.ArgumentParser(prog="python -m explorer classify", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=P.DEFAULT,
                    help="; ".join(f"{k}: {p.title}" for k, p in P.PRESETS.items()) + f" (default {P.DEFAULT})")
    ap.add_argument("--full", action="store_true", help="the preset at the course report's scale (for a GPU)")
    for f in FLAGS:
        if f.kind is bool:
            ap.add_argument(f.flag, action=argparse.BooleanOptionalAction, default=None, help=f.help)
        else:
            ap.add_argument(f.flag, type=f.kind, default=None, help=f.help, choices=f.choices)
    add_device_option(ap)
    add_ship_option(ap, "run")
    ap.add_argument("--list", action="store_true", help="print the table of kept runs and train nothing")
    return ap


def config_from_args(args: argparse.Namespace) -> ClassifierConfig:
    """The preset at the asked scale with every given flag applied (validated by the configs)."""
    preset = P.by_name(args.preset)
    if preset is None:
        raise ConfigError(f"preset must be one of {', '.join(P.PRESETS)}; got {args.preset!r}")
    given: dict[str, Any] = {}
    for f in FLAGS:
        value = getattr(args, f.flag[2:].replace("-", "_"))
        if value is not None:
            given[f.path] = value
    return with_values(preset.at("full" if args.full else "cpu"), given)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison table for the terminal."""
    lines = [f"{'model':<18s} {'params':>9s} {'MFLOPs':>8s} {'data':<36s} {'ep':>3s} {'top-1':>6s} {'top-5':>6s} "
             f"{'loss':>6s} {'s':>7s}  optimizer / augmentation"]
    for r in rows:
        lines.append(f"{r['model']:<18s} {r['params']:>9,} {r['FLOPs/image'] / 1e6:>8.1f} {r['data']:<36s} "
                     f"{r['epochs']:>3d} {r['top-1 err']:>6.1%} {r['top-5 err']:>6.1%} {r['loss']:>6.3f} "
                     f"{r['time (s)']:>7.1f}  {r['optimizer']} / {r['augmentation']}")
    return "\n".join(lines)


def format_run(entry: W.Entry) -> str:
    """One run's test metrics and per-class accuracy."""
    m = entry.metrics
    t = m["test"]
    head = (f"{m['title']} on {m['dataset']}: {m['n_train']:,} train / {m['n_val']:,} val / {m['n_test']:,} test "
            f"images {tuple(m['image_shape'])} · {m['params']:,} params · {m['flops_per_image'] / 1e6:.1f} MFLOPs "
            f"per image · {m['epochs_run']} epochs · {m['train_seconds']:.1f} s training "
            f"({m['images_per_s']:,.0f} images/s) on {entry.meta.get('device')}")
    lines = [head, f"test loss {t['loss']:.4f} · top-1 error {t['top1_err']:.2%} · top-5 error {t['top5_err']:.2%}"]
    per = t["per_class"]
    lines.append("per class (accuracy): " + ", ".join(f"{c} {a:.0%}" for c, a in zip(m["classes"], per["accuracy"])))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run (or read) one classifier and print it and the table of kept runs; 2 for a refused setting, 1 for a
    diverged run."""
    args = parser().parse_args(argv)
    cache = command_cache(args.ship)
    if args.list:
        print(format_table(W.compare(W.runs(cache))))
        return 0
    try:
        cfg = config_from_args(args)
        W.resolve(cfg)  # refuses a data set of the wrong kind before anything trains
    except (ConfigError, DatasetUnavailable) as exc:
        print(f"setting refused: {exc}", file=sys.stderr)
        return 2
    try:
        with TerminalReporter() as report:
            entry = W.run(cfg, cache, report, command_device(args.device))
    except Diverged as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if entry.metrics.get("notice"):
        print(entry.metrics["notice"], file=sys.stderr)
    print(entry.meta.get("recompute", W.cli_command(cfg)))
    print(format_run(entry))
    print(f"kept at {entry.path}\n")
    print(format_table(W.compare(W.runs(cache))))
    return 0
