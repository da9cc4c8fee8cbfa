"""Sweep 1 (MNIST-1D MLP widths, both noise levels, one seed): our sweep engine vs a plain PyTorch loop.

Baseline ("plain loop", as in the MNIST-1D notebook): for each width and noise level, one after the other,
an nn.Sequential 40-h-h-10, a DataLoader over a TensorDataset (shuffle, batch 100), SGD momentum 0.9
lr 0.01, zero_grad / backward / step, `.item()` of the loss each step, and per epoch the full train and
test loss and error. Ours: explorer.sweep.train_group over plan_groups (all noise levels of a width, and
small widths zero-padded together, as one grouped model; one host sync per epoch). Same data, recipe,
epochs and per-epoch metrics on both sides; rounds alternate so machine noise hits both.
The process's allocator is set up as the CLI and app set it up (explorer.device.configure_allocator: freed
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

from explorer.device import configure_allocator, describe_device
from explorer.sweep import SweepData, load_data, load_spec, noise_seed, noisy_labels, plan_groups, train_group


def plain_point(width: int, noise: float, seed: int, data: SweepData, epochs: int) -> None:
    """One width and noise level, trained the textbook way."""
    torch.manual_seed(seed)
    y = noisy_labels(data.y_train, noise, 10, noise_seed(seed, noise))
    net = nn.Sequential(nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                        nn.Linear(width, 10)).to(data.x_train.device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(data.x_train, y), batch_size=100, shuffle=True)
    for _ in range(epochs):
        net.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            loss.item()
        net.eval()
        with torch.no_grad():
            for x, t in ((data.x_train, y), (data.x_test, data.y_test)):
                z = net(x)
                loss_fn(z, t).item()
                (z.argmax(1) != t).float().mean().item()


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


if __name__ == "__main__":
    main()
