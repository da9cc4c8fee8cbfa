"""K optimizers raced on a real task: our stacked race vs K sequential plain loops, side by side in one process.

Baseline ("K plain loops"): for each optimizer in turn, the textbook loop: nn.Module from the same
initial weights, DataLoader over a TensorDataset (shuffle), zero_grad / backward / step, `.item()`
of the loss every step, validation after every epoch. Ours: explorer.labs.optimizer_race.race.train_race, which trains
the K copies as one stacked network (one forward and backward for all, hand-written for the MLP,
then torch.optim steps: one optimizer per step() class with a param group per racer, each racer's
weights one flat tensor, fused kernels where torch has them), batches as slices of a per-epoch
shuffled copy of on-device data, one host sync per logging window. Same data, network, optimizers,
epochs and batch size. Rounds alternate so machine noise hits both sides.
Usage: python -m benchmarks.bench_race [--rounds 5] [--epochs 2] [--arch mlp] [--dataset mnist1d]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from explorer.core.device import describe_device
from explorer.labs.optimizer_race.race import TaskData, TaskRaceConfig, load_task_data, train_race
from explorer.nets.small import NetConfig, build_net, init_state
from explorer.train.optimizers import OptimizerConfig, build_optimizer

RACERS = (OptimizerConfig("sgd", 0.05), OptimizerConfig("momentum", 0.01), OptimizerConfig("nesterov", 0.01),
          OptimizerConfig("rmsprop", 1e-3), OptimizerConfig("adam", 1e-3), OptimizerConfig("adamw", 1e-3))


def plain_loops(cfg: TaskRaceConfig, data: TaskData) -> float:
    """Seconds for K sequential textbook loops."""
    t0 = time.perf_counter()
    init = init_state(cfg.net, data.input_shape, len(data.classes), cfg.seed)
    for racer in cfg.racers:
        net = build_net(cfg.net, data.input_shape, len(data.classes)).to(data.x_train.device)
        net.load_state_dict(init)
        opt = build_optimizer(racer, net.parameters())
        loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=cfg.batch_size, shuffle=True)
        for _ in range(cfg.epochs):
            net.train()
            for xb, yb in loader:
                opt.zero_grad()
                loss = F.cross_entropy(net(xb), yb)
                loss.backward()
                opt.step()
                loss.item()
            net.eval()
            with torch.no_grad():
                (net(data.x_val).argmax(1) == data.y_val).float().mean().item()
    return time.perf_counter() - t0


def our_race(cfg: TaskRaceConfig, data: TaskData) -> float:
    """Seconds for explorer.labs.optimizer_race.race.train_race on the same settings."""
    t0 = time.perf_counter()
    train_race(cfg, data)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TaskRaceConfig(args.dataset, NetConfig(args.arch), RACERS, n_train=args.n_train, epochs=args.epochs,
                         batch_size=args.batch)
    data = load_task_data(cfg)
    print(f"device: {describe_device(data.x_train.device)}; {data.name} {len(data.x_train)} train / "
          f"{len(data.x_val)} val; {args.arch}; K={len(RACERS)} optimizers; {args.epochs} epochs; batch {args.batch}")
    base, ours = [], []
    for r in range(args.rounds):
        base.append(plain_loops(cfg, data))
        ours.append(our_race(cfg, data))
        print(f"round {r + 1}: K plain loops {base[-1]:6.2f} s   race {ours[-1]:6.2f} s")
    b, o = statistics.median(base), statistics.median(ours)
    ratio = statistics.median(x / y for x, y in zip(base, ours))  # paired rounds: noise hits both sides alike
    print(f"median: K plain loops {b:.2f} s, race {o:.2f} s")
    print(f"ratio race speed / K sequential plain loops (median of rounds): {ratio:.2f}x")


if __name__ == "__main__":
    main()
