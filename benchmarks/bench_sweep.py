"""Sweep 1 (MNIST-1D MLP widths, both noise levels, one seed): our sweep engine vs a plain PyTorch loop.

Baseline ("plain loop"): fit_model of the MNIST-1D double-descent notebook (Understanding Deep Learning,
Notebook 8.3 "Double descent"), for each width and noise level one after the other: an nn.Sequential
40-h-h-10, a DataLoader over a TensorDataset (shuffle, batch 100), SGD momentum 0.9 lr 0.01, zero_grad /
forward / backward / step, and per epoch the whole train and test set run through the model (as the
notebook does it, outside torch.no_grad) for train and test error and loss, each read with .item().
Ours: explorer.labs.double_descent.train.train_group over plan_groups (all noise levels of a width, and small widths
zero-padded together, as one grouped model; one host sync per epoch), which also records the test metrics
against the noisy test labels. Same data, recipe and epochs on both sides; rounds alternate so machine
noise hits both; each group's time is the median over rounds.
Roofline: the useful multiply-adds of the recipe (no padding), divided by this machine's fp32 matmul rate
measured here, give a floor on any engine's time, so the best ratio an fp32 engine can reach here.
The process's allocator is set up as the CLI and app set it up (explorer.core.device.configure_allocator: freed
tensor memory is reused instead of mmap'd afresh); it applies to both sides. --no-malloc-tuning leaves it.
Usage: python -m benchmarks.bench_sweep [--epochs 2] [--rounds 3] [--threads 0] [--no-malloc-tuning]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from explorer.core.device import configure_allocator, describe_device
from explorer.data.noise import noise_seed, noisy_labels
from explorer.labs.double_descent.run import plan_groups
from explorer.labs.double_descent.spec import SweepData, load_data, load_spec
from explorer.labs.double_descent.train import train_group


def plain_point(width: int, noise: float, seed: int, data: SweepData, epochs: int) -> None:
    """One width and noise level, trained the textbook way (the notebook's fit_model)."""
    torch.manual_seed(seed)
    y = noisy_labels(data.y_train, noise, 10, noise_seed(seed, noise))
    net = nn.Sequential(nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                        nn.Linear(width, 10)).to(data.x_train.device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(data.x_train, y), batch_size=100, shuffle=True)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
        pred_train, pred_test = net(data.x_train), net(data.x_test)
        (pred_train.argmax(1) != y).float().mean().item()
        (pred_test.argmax(1) != data.y_test).float().mean().item()
        loss_fn(pred_train, y).item()
        loss_fn(pred_test, data.y_test).item()


def useful_flops(width: int, n_train: int, n_test: int, epochs: int) -> float:
    """Floating-point operations one point needs: forward + backward (no input gradient) per training
    example, and a forward per train and test example for the per-epoch metrics."""
    macs = 40 * width + width * width + width * 10
    return 2.0 * epochs * (n_train * (3 * macs - 40 * width) + (n_train + n_test) * macs)


def matmul_rate(device: torch.device, rounds: int = 5) -> float:
    """The best fp32 matmul rate (FLOP/s) of this process on `device`, on a large square product."""
    n = 4096 if device.type != "cpu" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(rounds + 1):  # the first is a warm-up
        t = time.perf_counter()
        (a @ b).sum().item()  # .item() waits for an asynchronous device
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per point, same on both sides")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's allocator at its defaults")
    args = ap.parse_args()
    tuned = False if args.no_malloc_tuning else configure_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = dataclasses.replace(load_spec("sweeps/mnist1d_mlp.toml"), epochs=args.epochs, seeds=(0,),
                               checkpoint_epochs=())
    data = load_data(spec)
    groups = plan_groups(spec, spec.points())
    print(f"device: {describe_device()}; {len(spec.widths)} widths x {len(spec.label_noise)} noise levels, "
          f"1 seed, {args.epochs} epochs, {len(groups)} groups; allocator tuned: {tuned}")
    base = {i: [] for i in range(len(groups))}
    ours = {i: [] for i in range(len(groups))}
    for r in range(args.rounds):
        for i, g in enumerate(groups):
            t = time.perf_counter()
            for p in g:
                plain_point(p.width, p.noise, p.seed, data, args.epochs)
            base[i].append(time.perf_counter() - t)
            t = time.perf_counter()
            train_group(spec, g, data)
            ours[i].append(time.perf_counter() - t)
        print(f"round {r + 1}: plain loop {sum(v[-1] for v in base.values()):7.2f} s   "
              f"sweep engine {sum(v[-1] for v in ours.values()):7.2f} s")
    for i, g in enumerate(groups):
        b, o = statistics.median(base[i]), statistics.median(ours[i])
        widths = sorted({p.width for p in g})
        print(f"widths {widths[0]:>3}..{widths[-1]:<3} ({len(g):2d} models): plain {b:6.2f} s  ours {o:6.2f} s  "
              f"ratio {b / o:5.1f}x")
    b = sum(statistics.median(v) for v in base.values())
    o = sum(statistics.median(v) for v in ours.values())
    print(f"total: plain loop {b:.2f} s, sweep engine {o:.2f} s")
    print(f"ratio sweep engine / plain loop (whole width grid): {b / o:.2f}x")
    rate = matmul_rate(data.x_train.device)
    work = sum(useful_flops(p.width, len(data.x_train), len(data.x_test), args.epochs) for g in groups for p in g)
    floor = work / rate
    print(f"roofline: {work / 1e9:.1f} GFLOP of useful work; fp32 matmul peak here {rate / 1e9:.0f} GFLOP/s, so no "
          f"engine takes under {floor:.3f} s and the ratio cannot exceed {b / floor:.1f}x on this machine; "
          f"ours runs at {work / o / 1e9:.0f} GFLOP/s ({100 * floor / o:.0f}% of peak)")


if __name__ == "__main__":
    main()
