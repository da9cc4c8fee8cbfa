"""`python -m explorer transfer`: from scratch, linear probe, fine-tuning at several learning rates, scikit-learn
logistic regression on frozen features and gradient boosting on pixels, on a small two-class CIFAR-10 task,
printed as one table.

The source is torchvision's ImageNet ResNet18 when its weights file is in the torch hub cache (or given with
--weights PATH), else a CNN trained here on CIFAR-10's other classes (cached). Nothing is downloaded unless
--download-weights is given and the settings allow it. `--ship` stores the table in cache/shipped (and its trust
list).
"""

from __future__ import annotations

import argparse
import sys

from explorer.core.command import add_device_option, add_ship_option, command_run
from explorer.core.config import ConfigError
from explorer.labs.transfer_learning import source as src
from explorer.labs.transfer_learning import transfer as tl
from explorer.train.evaluate import exit_codes


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as err:
        raise ConfigError(f"learning rates must look like 1e-3,1e-4 (comma-separated), got {text[:80]!r}") from err


def config_from_args(args: argparse.Namespace) -> tl.TransferConfig:
    """The frozen config from parsed flags (validated there)."""
    s = src.SourceConfig(family=args.source_family, width=args.source_width, per_class=args.source_per_class,
                         epochs=args.source_epochs, lr=args.source_lr, batch_size=args.source_batch_size)
    return tl.TransferConfig(dataset=args.dataset, classes=tuple(c.strip() for c in args.classes.split(",")
                                                                 if c.strip()),
                             n_train=args.n_train, n_test=args.n_test, source=args.source,
                             image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             probe_lr=args.probe_lr, finetune_lrs=_floats(args.finetune_lrs),
                             hgb_iters=args.hgb_iters, source_cfg=s, seed=args.seed)


def format_table(m: dict) -> str:
    """The table for the terminal, in the order the methods ran."""
    rows = tl.table(m)
    w = max([len("method")] + [len(r["method"]) for r in rows])
    lines = [f"{'method':<{w}s} {'test acc':>8s} {'train acc':>9s} {'trainable params':>16s} {'time (s)':>8s}"]
    for r in rows:
        params = "-" if r["trainable params"] is None else f"{r['trainable params']:,}"
        lines.append(f"{r['method']:<{w}s} {r['test accuracy']:>8.4f} {r['train accuracy']:>9.4f} {params:>16s} "
                     f"{r['time (s)']:>8.1f}")
    return "\n".join(lines)


@exit_codes
def main(argv: list[str]) -> int:
    """Run (or read) one table and print it; 2 for a refused setting or weights file, 1 for a diverged run."""
    d, s = tl.TransferConfig(), src.SourceConfig()
    ap = argparse.ArgumentParser(prog="python -m explorer transfer", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=d.dataset, help=", ".join(tl.DATASETS))
    ap.add_argument("--classes", default=",".join(d.classes), help="the task's classes, e.g. cat,dog")
    ap.add_argument("--n-train", type=int, default=d.n_train, help="task training images (split evenly)")
    ap.add_argument("--n-test", type=int, default=d.n_test)
    ap.add_argument("--source", default=d.source, help="auto (ImageNet weights if here, else self), imagenet, self")
    ap.add_argument("--weights", default=None, metavar="PATH", help="a torchvision resnet18 ImageNet .pth file")
    ap.add_argument("--download-weights", action="store_true",
                    help="let torchvision download the ImageNet weights first (needs internet; not EXPLORER_OFFLINE)")
    ap.add_argument("--image-size", type=int, default=d.image_size, help="ImageNet source: upsample images to this")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="per network method")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr, help="Adam's step size from scratch")
    ap.add_argument("--probe-lr", type=float, default=d.probe_lr, help="Adam's step size of the probe's head")
    ap.add_argument("--finetune-lrs", default=",".join(f"{v:g}" for v in d.finetune_lrs),
                    help="one full fine-tuning per value, e.g. 1e-3,1e-4,1e-5")
    ap.add_argument("--hgb-iters", type=int, default=d.hgb_iters, help="gradient-boosting rounds on pixels")
    ap.add_argument("--source-family", default=s.family, help="self-trained source: " + ", ".join(src.SOURCE_FAMILIES))
    ap.add_argument("--source-width", type=float, default=s.width)
    ap.add_argument("--source-per-class", type=int, default=s.per_class, help="source training images per class")
    ap.add_argument("--source-epochs", type=int, default=s.epochs)
    ap.add_argument("--source-lr", type=float, default=s.lr)
    ap.add_argument("--source-batch-size", type=int, default=s.batch_size)
    ap.add_argument("--seed", type=int, default=d.seed)
    add_device_option(ap)
    add_ship_option(ap)
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    weights = args.weights
    if args.download_weights and weights is None and src.find_imagenet_weights() is None:
        if src.download_imagenet_weights() is None:
            print("could not download the ImageNet weights (offline?): using the self-trained source",
                  file=sys.stderr)
    plan = tl.resolve(cfg, weights)
    entry = command_run(args, lambda cache, report, device: tl.run(cfg, cache, report, device, weights))
    m = entry.metrics
    source = m["source"]
    print(f"{tl.cli_command(plan.cfg, weights)}\n{m['dataset']}: {' vs '.join(m['classes'])} · {m['n_train']} train / "
          f"{m['n_test']} test images {tuple(m['image_shape'])} · {entry.meta.get('device')} · "
          f"{entry.meta.get('wall_time_s', 0):.1f} s · {entry.path}")
    print(f"source: {source['label']} ({source['why']})")
    print(format_table(m))
    print(f"ranking: {tl.ranking_text(m)}")
    return 0
