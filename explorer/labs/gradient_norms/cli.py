"""`python -m explorer gradnorms`: per-layer gradient norms of deep MLPs or of a CNN, printed as a table.

MLP (the default): for each depth and variant, the Frobenius norm of the first, middle and last Linear layer's weight
gradient at the first and the last iteration, and how many layer norms of the run were exactly 0. With `--network`
a CNN family (simple, resnet9, resnet20): one run on an image set, every Conv2d and Linear layer's norm.
"""

from __future__ import annotations

import argparse
import sys
import time

from explorer.core.cache import default_cache
from explorer.core.config import ConfigError
from explorer.core.device import configure_threads
from explorer.labs.gradient_norms import lab
from explorer.nets.cnn import WIDTH_RANGE
from explorer.train.evaluate import exit_codes


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"depths are whole numbers separated by commas, e.g. 10,60; got {text[:80]!r}") from None


@exit_codes
def main(argv: list[str]) -> int:
    """Run the comparison and print its table; 2 for a refused setting, 1 for a diverged run."""
    d = lab.CompareConfig()
    ap = argparse.ArgumentParser(prog="python -m explorer gradnorms", description=__doc__.splitlines()[0])
    ap.add_argument("--depth", default=",".join(map(str, d.depths)), help="Linear layers, e.g. 10,60 (2 to 60)")
    ap.add_argument("--variant", default=",".join(d.variants), help=", ".join(lab.VARIANTS) + " (comma-separated)")
    ap.add_argument("--activation", default=d.activation, help=", ".join(lab.ACTIVATIONS))
    ap.add_argument("--init", default=d.init, help=", ".join(lab.INITS))
    ap.add_argument("--dtype", default=d.dtype, help=", ".join(lab.DTYPES))
    ap.add_argument("--data", default=None, help=", ".join(lab.DATA) + f" (default {d.data}; digits for a CNN)")
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--iterations", type=int, default=d.iterations)
    ap.add_argument("--lr", type=float, default=d.lr, help="plain SGD's step size")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--network", default="mlp", help=", ".join(lab.NETWORKS) + " (a CNN ignores --depth, --variant, "
                    "--activation, --init and --width)")
    ap.add_argument("--cnn-width", type=float, default=lab.RunConfig.cnn_width,
                    help=f"a CNN's channel multiplier ({WIDTH_RANGE[0]:g} to {WIDTH_RANGE[1]:g})")
    ap.add_argument("--no-cache", action="store_true", help="train again even when the runs are cached")
    args = ap.parse_args(argv)
    configure_threads()  # tiny layers: one intra-op thread is 10x faster than two fighting over busy cores
    if args.network != "mlp":
        return _cnn(args)
    cfg = lab.CompareConfig(variants=tuple(v.strip() for v in args.variant.split(",") if v.strip()),
                            depths=_ints(args.depth), data=args.data or d.data, width=args.width,
                            activation=args.activation, init=args.init, dtype=args.dtype,
                            iterations=args.iterations, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    start = time.perf_counter()
    cache = default_cache()
    hists = [lab.train(rc, cache=cache).to_dict() if args.no_cache else lab.run(rc, cache).to_dict()
             for rc in cfg.runs()]
    notice = next((h["notice"] for h in hists if h.get("notice")), None)
    if notice:
        print(notice, file=sys.stderr)
    print(f"{lab.DATA[cfg.data]} · width {cfg.width} · {cfg.activation} · init {cfg.init} · {cfg.dtype} · SGD lr "
          f"{cfg.lr:g} · batch {cfg.batch_size} · {cfg.iterations} iterations · {time.perf_counter() - start:.1f} s")
    print("Frobenius norm of each Linear layer's weight gradient (layer 1: the input layer); 0 means exactly 0.")
    print(f"{'run':24s} {'layer':>5s} {'iteration 1':>12s} {'last':>12s}  exact zeros")
    for r in lab.table(hists):
        print(f"{r['run']:24s} {r['layer']:>5d} {r['first iteration']:>12.3e} {r['last iteration']:>12.3e}  "
              f"{r['exact zeros in run']}")
    return 0


def _cnn(args: argparse.Namespace) -> int:
    """One CNN run: every Conv2d and Linear layer's weight-gradient norm at the first and last iteration."""
    cfg = lab.RunConfig(network=args.network, cnn_width=args.cnn_width, data=args.data or "digits",
                        dtype=args.dtype, iterations=args.iterations, lr=args.lr, batch_size=args.batch_size,
                        seed=args.seed)
    start = time.perf_counter()
    h = lab.train(cfg, cache=default_cache()) if args.no_cache else lab.run(cfg, default_cache())
    if h.notice:
        print(h.notice, file=sys.stderr)
    print(f"{h.name} · {lab.DATA[cfg.data]} · {cfg.dtype} · SGD lr {cfg.lr:g} · batch {cfg.batch_size} · "
          f"{cfg.iterations} iterations ({lab.cost_text(cfg)}) · {time.perf_counter() - start:.1f} s")
    print(f"loss {h.loss[0]:.4f} -> {h.loss[-1]:.4f}; total gradient norm {h.total_norm[0]:.3e} -> "
          f"{h.total_norm[-1]:.3e}")
    print("Frobenius norm of each Conv2d and Linear layer's weight gradient, in forward order.")
    print(f"{'layer':>8s} {'iteration 1':>12s} {'last':>12s}")
    for i, name in enumerate(h.layers):
        print(f"{name:>8s} {h.layer_norms[0][i]:>12.3e} {h.layer_norms[-1][i]:>12.3e}")
    return 0
