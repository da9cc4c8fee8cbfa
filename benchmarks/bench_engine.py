"""Optimizer steps per second: the engine vs a plain eager PyTorch loop, side by side in one process.

Baseline ("plain eager loop"): nn.Sequential, DataLoader over a TensorDataset (shuffle), zero_grad,
backward, step, and `.item()` of the loss every step, as in most tutorials. Same network, data,
batch size, optimizer and learning rate. Rounds alternate so that machine noise hits both sides.
Usage: python benchmarks/bench_engine.py [--seconds 2] [--rounds 5] [--hidden 8,8] [--batch 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from explorer.core.device import describe_device, get_device
from explorer.data.toy2d import Data2DConfig, make_split
from explorer.nets.mlp import MLPConfig, mlp_module
from explorer.train.single_mlp import TrainConfig, Trainer


def plain_loop(model_cfg: MLPConfig, cfg: TrainConfig, x, y, seconds: float) -> float:
    """Steps per second of the textbook loop."""
    net = mlp_module(model_cfg).to(x.device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            loss.item()
            steps += 1
    return steps / (time.perf_counter() - t0)


def engine_loop(model_cfg: MLPConfig, cfg: TrainConfig, x, y, seconds: float) -> float:
    """Steps per second of explorer.train.single_mlp.Trainer.run_epoch (one host sync per epoch)."""
    tr = Trainer(model_cfg, cfg, x, y)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tr.run_epoch()
    return tr.step_count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per side per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hidden", default="8,8", help="hidden layer widths")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both sides")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = get_device()
    split = make_split(Data2DConfig(name="spiral", n_points=500, train_ratio=50), dev)
    model_cfg = MLPConfig(in_dim=2, out_dim=2, hidden=tuple(int(h) for h in args.hidden.split(",")),
                          activation=args.activation)
    cfg = TrainConfig(optimizer="sgd", lr=0.03, batch_size=args.batch)
    print(f"device: {describe_device(dev)}; network {model_cfg.sizes} {args.activation}; "
          f"{len(split.x_train)} train points; batch {args.batch}; SGD; {args.threads} torch thread(s)")
    base, ours = [], []
    for r in range(args.rounds):
        base.append(plain_loop(model_cfg, cfg, split.x_train, split.y_train, args.seconds))
        ours.append(engine_loop(model_cfg, cfg, split.x_train, split.y_train, args.seconds))
        print(f"round {r + 1}: plain loop {base[-1]:8.0f} steps/s   engine {ours[-1]:8.0f} steps/s")
    b, o = statistics.median(base), statistics.median(ours)
    print(f"median: plain loop {b:.0f} steps/s, engine {o:.0f} steps/s")
    print(f"ratio engine / plain eager loop: {o / b:.2f}x")


if __name__ == "__main__":
    main()
