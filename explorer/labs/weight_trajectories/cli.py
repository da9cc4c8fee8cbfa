"""`python -m explorer trajectories {images,toy}`: K seeds' weight paths in PCA space, printed as a table.

images: small CNNs on digits (default), MNIST or Fashion-MNIST; toy: MLPs on 2D points. --surface N adds run 0's
path over the loss surface on an N x N grid (Li et al. 2018).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from explorer.core.cache import default_cache
from explorer.core.report import TerminalReporter, where
from explorer.labs.weight_trajectories import paths, surface
from explorer.train.evaluate import exit_codes

CONFIGS = {"images": paths.TrajConfig, "toy": paths.ToyConfig}


def _print(entry) -> None:
    m = entry.metrics
    if m.get("notice"):
        print(m["notice"], file=sys.stderr)
    print(f"{m['dataset']} · {len(m['seeds'])} seeds · {m['n_train']} train / {m['n_test']} test · "
          f"{where(entry)}")
    for part in paths.PARTS:
        ev = m["pca"][part]["explained"]
        print(f"{part} ({m['params'][part]:,} weights): explained variance PC1 {ev[0]:.3f}, PC2 {ev[1]:.3f}, "
              f"PC1+PC2 {ev[0] + ev[1]:.3f}")
    print(f"{'seed':>5s} {'epoch':>5s} {'test acc':>8s} {'L1 PC1':>9s} {'L1 PC2':>9s} {'all PC1':>9s} {'all PC2':>9s}")
    for r in paths.table(m):
        print(f"{r['seed']:>5d} {r['epoch']:>5d} {r['test acc']:>8.3f} {r['layer 1 PC1']:>9.3f} "
              f"{r['layer 1 PC2']:>9.3f} {r['whole model PC1']:>9.3f} {r['whole model PC2']:>9.3f}")


@exit_codes
def main(argv: list[str]) -> int:
    """Run one trajectory set and print its table; 2 for a refused setting, 1 for a diverged run."""
    ap = argparse.ArgumentParser(prog="python -m explorer trajectories", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="which", required=True)
    for name, cls in CONFIGS.items():
        p = sub.add_parser(name, help=(cls.__doc__ or "").splitlines()[0])
        for f in dataclasses.fields(cls):
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
        p.add_argument("--surface", type=int, default=0, help="grid points per axis of run 0's loss surface (0: none)")
    args = ap.parse_args(argv)
    cls = CONFIGS[args.which]
    cfg = cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
    with TerminalReporter() as report:
        entry = paths.run(cfg, default_cache(), report)
    _print(entry)
    if args.surface:
        scfg = surface.SurfaceConfig(run=cfg, grid=args.surface)
        with TerminalReporter() as report:
            s = surface.run(scfg, default_cache(), report).metrics
        flat = [v for row in s["loss"] for v in row]
        print(f"loss surface around run 0 ({args.surface}x{args.surface}, {s['n_eval']} training examples): "
              f"PC1 {s['explained'][0]:.3f}, PC2 {s['explained'][1]:.3f} of the path's variance; "
              f"loss {min(flat):.4f} to {max(flat):.4f}")
        print(f"{'epoch':>5s} {'a':>9s} {'b':>9s}")
        for e, (a, b) in zip(s["path_epochs"], s["path"]):
            print(f"{e:>5d} {a:>9.3f} {b:>9.3f}")
    return 0
