"""The hyperparameter lab's batched runs vs one plain PyTorch loop per model, side by side in one process.

Workloads (the lab's defaults, EPOCHS epochs each): (1) the learning-rate part: the 6-hidden-layer MLP of width
32 at learning rates 1, 1e-2, 1e-3, 1e-5, batch norm off and on (K = 8), Adam, batch 32 on 500 spiral points;
(2) the depth x width grid: 7 MLPs (depth 1, 2, 6, 10 at width 16; width 8, 32, 64 at depth 6), Adam 3e-3.
Ours: explorer.labs.hyperparameters as the lab trains (kmlp.KModels on explorer.train.fused_mlp's hand-written
K-model step: the LR part one FusedMLP; the grid two, grouped by width; train and test loss and accuracy of every
model after every epoch). Baseline: per model an nn.Sequential with the same initial weights, torch.optim.Adam,
the same batches (the same permutation per epoch), zero_grad / backward / step, and a no_grad evaluation of
the train and test sets after every epoch read back with .item(). Both with denormals flushed (as the lab
trains). Rounds alternate so that machine noise hits both sides.
Usage: python -m benchmarks.bench_hyperparameters [--rounds 3] [--epochs 10] [--threads 1] [--parts lr grid]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from explorer.core.device import describe_device, get_device
from explorer.labs.hyperparameters import kmlp, lab
from explorer.labs.hyperparameters.config import GridConfig, LRConfig, make_data


PARTS = {"learning rates x BN (K=8)": "lr", "depth x width grid (K=7)": "grid"}  # workload -> its --parts name


def _workloads(epochs: int) -> dict[str, tuple[object, list[kmlp.Shape], list[float]]]:
    lr = LRConfig(epochs=epochs)
    grid = GridConfig(epochs=epochs)
    return {
        "learning rates x BN (K=8)": (lr, [kmlp.Shape(lr.depth, lr.width, bn) for bn in lr.bn for _ in lr.lrs],
                                      [v for _ in lr.bn for v in lr.lrs]),
        "depth x width grid (K=7)": (grid, [kmlp.Shape(d, w, grid.bn) for d, w in grid.shapes],
                                     [grid.lr] * len(grid.shapes)),
    }


def plain(cfg, shapes: list[kmlp.Shape], lrs: list[float]) -> float:
    """Seconds for the models trained one after another with the textbook loop, the lab's batches."""
    dev = get_device()
    data = make_data(cfg)
    x, y, xt, yt = (t.to(dev) for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    batch = min(cfg.batch_size, len(y))
    t0 = time.perf_counter()
    with lab.flush_denormals():
        for shape, net, lr in zip(shapes, kmlp.init_models(shapes, 2, data.classes, cfg.seed), lrs):
            net = net.to(dev)
            opt = kmlp.TORCH_OPTIMIZERS[cfg.optimizer](net.parameters(), lr)
            gen = torch.Generator().manual_seed(cfg.seed)
            for _ in range(cfg.epochs):
                net.train()
                perm = torch.randperm(len(y), generator=gen).to(dev)
                for start in range(0, len(y), batch):
                    idx = perm[start:start + batch]
                    loss = F.cross_entropy(net(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                net.eval()
                with torch.no_grad():
                    for a, b in ((x, y), (xt, yt)):
                        out = net(a)
                        F.cross_entropy(out, b).item(), (out.argmax(1) == b).float().mean().item()
                if not math.isfinite(loss.item()):
                    break  # a diverged model stops (ours freezes it and goes on: no less work)
    return time.perf_counter() - t0


def batched(cfg, shapes: list[kmlp.Shape], lrs: list[float]) -> float:
    """Seconds for all the models batched as the lab trains them (kmlp.KModels), with the same metrics."""
    dev = get_device()
    data = make_data(cfg)
    t0 = time.perf_counter()
    stack = kmlp.KModels(shapes, 2, data.classes, lrs, cfg.optimizer, cfg.seed, dev)
    per = math.ceil(len(data.y_train) / min(cfg.batch_size, len(data.y_train)))
    lab.train_stack(stack, data, cfg.batch_size, cfg.epochs * per, [per * e for e in range(1, cfg.epochs + 1)],
                    cfg.seed, [f"m{i}" for i in range(len(shapes))])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10, help="epochs per workload per round")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the app runs with 1)")
    ap.add_argument("--parts", nargs="+", choices=list(PARTS.values()), default=list(PARTS.values()),
                    help="workloads to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device: {describe_device()}; {args.epochs} epochs per workload, {args.rounds} rounds")
    for name, (cfg, shapes, lrs) in _workloads(args.epochs).items():
        if PARTS[name] not in args.parts:
            continue
        warm = type(cfg)(**{**cfg.__dict__, "epochs": 1})
        batched(warm, shapes, lrs)  # warm-up: first-use imports and allocations, not timed
        plain(warm, shapes[:1], lrs[:1])
        base, ours = [], []
        for r in range(args.rounds):
            base.append(plain(cfg, shapes, lrs))
            ours.append(batched(cfg, shapes, lrs))
            print(f"{name}, round {r + 1}: plain loops {base[-1]:6.2f} s   batched {ours[-1]:6.2f} s")
        b, o = statistics.median(base), statistics.median(ours)
        print(f"{name}: median plain loops {b:.2f} s, batched {o:.2f} s; ratio batched / plain loops: {b / o:.2f}x")


if __name__ == "__main__":
    main()
