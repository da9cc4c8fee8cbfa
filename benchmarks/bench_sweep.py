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
Where the time goes (on by default; --no-breakdown skips it): one epoch of each group (the second: warm buffers) is recorded op by
op as it dispatches (a TorchDispatchMode), and the recorded ops are replayed and timed: the matmuls alone at the
engine's own shapes and strides (their rate, padding included, against the peak), and the other ops (element-wise
ReLU and its backward, softmax, the optimizer update, evaluation's reductions); the engine's time less both is its
Python. The matmul time is the floor of this design at these shapes: no eager engine that runs these matmuls
goes under it.
The process's allocator is set up as the CLI and app set it up (explorer.core.device.configure_allocator: freed
tensor memory is reused instead of mmap'd afresh); it applies to both sides. --no-malloc-tuning leaves it.
The sweep command's way (on a CPU: one worker process per core for MLP sweeps, explorer.labs.double_descent.run.
auto_workers): the whole grid through its process pool, costliest groups first, after a warm-up round.
Measured 2026-12-03 on the 2-core CPU (Intel model 207, peak 318-339 GFLOP/s): 9.31x in one process (30% of peak;
8.51x and 28% before the fused MLP's plain step), 11.79x as the sweep command runs it (38%); at widths 50..64 an
epoch is 14.0 ms, of which the matmuls take 5.0 ms (at 56% of peak) and 863 other ops 6.3 ms.
Usage: python -m benchmarks.bench_sweep [--epochs 2] [--rounds 3] [--threads 0] [--no-malloc-tuning] [--no-breakdown]
       [--no-workers]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

from explorer.core.device import configure_allocator, describe_device
from explorer.core.report import NullReporter
from explorer.data.noise import noise_seed, noisy_labels
from explorer.labs.double_descent.run import auto_workers, costliest_first, local_pool, plan_groups, point_cost
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


_aten = torch.ops.aten
MATMULS = {_aten.bmm.default, _aten.bmm.out, _aten.mm.default, _aten.mm.out, _aten.baddbmm.default,
           _aten.baddbmm.out, _aten.addmm.default, _aten.addmm.out}


class _Recorder(TorchDispatchMode):
    """Every aten op dispatched while on, with its arguments (the live tensors: the engine reuses its buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.append((func, args, kwargs))
        return func(*args, **kwargs)


class _OneEpoch(NullReporter):
    """A Reporter that records the ops of epoch `epoch` (1-based): on at its checkpoint, off at its publish."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.seen, self.mode = epoch, 0, _Recorder()

    def checkpoint(self) -> None:
        self.seen += 1
        if self.seen == self.epoch:
            self.mode.__enter__()

    def publish(self, snapshot=None, *, progress=None, message=None) -> None:
        if self.seen == self.epoch and self.mode.ops is not None and progress is not None:
            self.mode.__exit__(None, None, None)
            self.seen += 0.5  # off for good


def _matmul_flops(func, args) -> float:
    """Floating-point operations of one recorded matmul (2 * batch * m * k * n), padding included."""
    a, b = (args[1], args[2]) if func in (_aten.baddbmm.default, _aten.baddbmm.out, _aten.addmm.default,
                                          _aten.addmm.out) else (args[0], args[1])
    batch = a.shape[0] if a.dim() == 3 else 1
    return 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


def _replay(ops: list, rounds: int = 5) -> float:
    """Best time of running the recorded ops again, in order."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for func, args, kwargs in ops:
            func(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best


def breakdown(spec, group, data) -> tuple[int, float, float, int, float]:
    """One epoch of a group, recorded and replayed: (matmul ops, their seconds, their FLOPs, other ops, their
    seconds)."""
    rep = _OneEpoch(2)
    train_group(dataclasses.replace(spec, epochs=max(spec.epochs, 2)), group, data, report=rep, until=2)
    mm = [op for op in rep.mode.ops if op[0] in MATMULS]
    rest = [op for op in rep.mode.ops if op[0] not in MATMULS and op[0] is not _aten._local_scalar_dense.default]
    return len(mm), _replay(mm), sum(_matmul_flops(f, a) for f, a, _ in mm), len(rest), _replay(rest)


_DATA: dict = {}


def _worker_group(spec, group) -> None:
    """In a worker process: train one group (the data loaded once per process)."""
    if spec not in _DATA:
        _DATA[spec] = load_data(spec)
    train_group(spec, group, _DATA[spec])


def per_core_rounds(spec, groups, rounds: int) -> tuple[int, float]:
    """The sweep command's way on a CPU (run.auto_workers worker processes, costliest groups first): (workers, median
    seconds of the whole grid over `rounds`, after a warm-up round that starts the processes and loads the data)."""
    workers = auto_workers(spec, len(groups))
    order = costliest_first([sum(point_cost(spec, p.width) for p in g) for g in groups])
    times = []
    with local_pool(workers) as pool:
        for r in range(rounds + 1):
            t = time.perf_counter()
            list(pool.map(_worker_group, [spec] * len(order), [groups[i] for i in order]))
            if r:
                times.append(time.perf_counter() - t)
    return workers, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per point, same on both sides")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's allocator at its defaults")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-group op breakdown")
    ap.add_argument("--no-workers", action="store_true", help="skip the sweep command's worker-process mode")
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
    rate = matmul_rate(data.x_train.device)
    n_tr, n_te = len(data.x_train), len(data.x_test)
    for i, g in enumerate(groups):
        b, o = statistics.median(base[i]), statistics.median(ours[i])
        widths = sorted({p.width for p in g})
        useful = sum(useful_flops(p.width, n_tr, n_te, args.epochs) for p in g)
        print(f"widths {widths[0]:>3}..{widths[-1]:<3} ({len(g):2d} models): plain {b:6.2f} s  ours {o:6.2f} s  "
              f"ratio {b / o:5.1f}x  {useful / o / 1e9:4.0f} GFLOP/s useful ({100 * useful / o / rate:2.0f}% of peak)")
    if not args.no_breakdown:
        print("per epoch (one recorded epoch replayed): engine = matmuls at its shapes + other ops + its Python")
        for i, g in enumerate(groups):
            widths = sorted({p.width for p in g})
            n_mm, t_mm, f_mm, n_rest, t_rest = breakdown(spec, g, data)
            epoch = statistics.median(ours[i]) / args.epochs
            print(f"widths {widths[0]:>3}..{widths[-1]:<3}: {1e3 * epoch:6.2f} ms = matmuls {1e3 * t_mm:6.2f} ms "
                  f"({n_mm} at {f_mm / t_mm / 1e9:3.0f} GFLOP/s, {100 * f_mm / t_mm / rate:2.0f}% of peak) + "
                  f"{n_rest} other ops {1e3 * t_rest:5.2f} ms ({1e6 * t_rest / n_rest:4.1f} us each) + Python "
                  f"{1e3 * max(epoch - t_mm - t_rest, 0.0):5.2f} ms; matmuls are {100 * t_mm / epoch:2.0f}% of it")
    b = sum(statistics.median(v) for v in base.values())
    o = sum(statistics.median(v) for v in ours.values())
    print(f"total: plain loop {b:.2f} s, sweep engine {o:.2f} s")
    print(f"ratio sweep engine / plain loop (whole width grid): {b / o:.2f}x")
    workers, pc = per_core_rounds(spec, groups, args.rounds) if not args.no_workers else (1, o)
    if workers > 1:
        print(f"as the sweep command runs it ({workers} worker processes of "
              f"{max(1, torch.get_num_threads() // workers)} torch thread(s), costliest groups first): {pc:.2f} s, "
              f"ratio {b / pc:.2f}x over the plain loop")
    work = sum(useful_flops(p.width, n_tr, n_te, args.epochs) for g in groups for p in g)
    floor = work / rate
    print(f"roofline: {work / 1e9:.1f} GFLOP of useful work; fp32 matmul peak here {rate / 1e9:.0f} GFLOP/s, so no "
          f"engine takes under {floor:.3f} s and the ratio cannot exceed {b / floor:.1f}x on this machine; "
          f"ours runs at {work / o / 1e9:.0f} GFLOP/s ({100 * floor / o:.0f}% of peak)"
          + (f", {work / pc / 1e9:.0f} GFLOP/s ({100 * floor / pc:.0f}%) in worker processes" if workers > 1 else ""))


if __name__ == "__main__":
    main()
