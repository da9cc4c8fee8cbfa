"""Six corruption modes: one batched model (explorer.train.stacked) vs six sequential plain loops, side by side.

Workload: the memorisation lab's default MNIST-1D setting (1,000 training and 1,000 test examples,
MLP 40-128-128-10, Adam 1e-3, batch 32), all six corruption modes, EPOCHS epochs each, with
train and test loss and accuracy of every model after every epoch (what the page plots).
Baseline ("plain loop", as in most tutorials): per mode, an nn.Sequential with the same initial
weights, a DataLoader over a TensorDataset (shuffle), zero_grad / backward / step, `.item()` of the
loss every step, and a no_grad evaluation pass per epoch. Also timed, for reference: the same six
loops with index-slice batches instead of a DataLoader ("slice loop"). Rounds alternate so that
machine noise hits every side. Usage: python -m benchmarks.bench_memorise [--rounds 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from explorer.core.device import describe_device, get_device
from explorer.data import noise as corrupt
from explorer.labs.memorisation.lab import LabConfig, _batch_config, _modes_sets, _spec, _stack, load_lab_data
from explorer.train.stacked import ModelSpec, train_batched


def _evaluate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy of one model over a whole set."""
    net.eval()
    with torch.no_grad():
        out = net(x)
        loss, acc = F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()
    net.train()
    return loss, acc


def plain_loops(spec: ModelSpec, cfg: LabConfig, sets: list[corrupt.Corrupted], epochs: int,
                dataloader: bool) -> float:
    """Seconds for the six modes trained one after another with the textbook loop."""
    dev = get_device()
    t0 = time.perf_counter()
    for data in sets:
        torch.manual_seed(cfg.seed)
        net = spec.build().to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        x, y = data.train.x.to(dev), data.train.y.to(dev)
        xt, yt = data.test.x.to(dev), data.test.y.to(dev)
        loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True)
        for _ in range(epochs):
            if dataloader:
                batches = iter(loader)
            else:
                perm = torch.randperm(len(y), device=dev)
                batches = ((x[i], y[i]) for i in perm.split(cfg.batch_size))
            for xb, yb in batches:
                opt.zero_grad()
                loss = F.cross_entropy(net(xb), yb)
                loss.backward()
                opt.step()
                if dataloader:
                    loss.item()
                    if not torch.isfinite(loss):
                        raise RuntimeError("diverged")
            _evaluate(net, x, y)
            _evaluate(net, xt, yt)
    return time.perf_counter() - t0


def batched(spec: ModelSpec, cfg: LabConfig, sets: list[corrupt.Corrupted], test_y: torch.Tensor,
            epochs: int) -> float:
    """Seconds for the six modes trained together as one batched model (with the same metrics)."""
    t0 = time.perf_counter()
    x, y = _stack([s.train for s in sets])
    xt, _ = _stack([s.test for s in sets])
    train_batched(spec, _batch_config(cfg, epochs), len(sets), x, y, xt, test_y)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per mode per round")
    ap.add_argument("--width", type=int, default=LabConfig.width)
    ap.add_argument("--batch", type=int, default=LabConfig.batch_size)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = LabConfig(width=args.width, batch_size=args.batch)
    data = load_lab_data(cfg)
    spec = _spec(cfg, data)
    sets = _modes_sets(cfg, data, cfg.modes)
    print(f"device: {describe_device()}; MNIST-1D {cfg.n_train} train / {cfg.n_test} test; MLP "
          f"{spec.input_shape[0]}-{cfg.width}x{cfg.depth}-{spec.num_classes} ({spec.num_params:,} params); "
          f"Adam lr {cfg.lr:g}; batch {cfg.batch_size}; {len(sets)} modes x {args.epochs} epochs per round")
    batched(spec, cfg, sets, data.test.y, 1)  # warm-up: first-use imports and allocations, not timed
    plain_loops(spec, cfg, sets[:1], 1, True)
    base, ref, ours = [], [], []
    for r in range(args.rounds):
        base.append(plain_loops(spec, cfg, sets, args.epochs, dataloader=True))
        ours.append(batched(spec, cfg, sets, data.test.y, args.epochs))
        ref.append(plain_loops(spec, cfg, sets, args.epochs, dataloader=False))
        print(f"round {r + 1}: plain loops {base[-1]:6.2f} s   slice loops {ref[-1]:6.2f} s   "
              f"batched {ours[-1]:6.2f} s")
    b, s, o = statistics.median(base), statistics.median(ref), statistics.median(ours)
    print(f"median: plain loops {b:.2f} s, slice loops {s:.2f} s, batched {o:.2f} s")
    print(f"ratio batched / six sequential slice loops (reference): {s / o:.2f}x")
    print(f"ratio batched / six sequential plain loops: {b / o:.2f}x")


if __name__ == "__main__":
    main()
