"""The parts of benchmarks/bench_sweep.py that are more than a timer (the full run is `python -m benchmarks.bench_sweep`):
the op breakdown records exactly one epoch's ops (8 matmuls a training step of a 2-hidden-layer MLP, 3 per
evaluation chunk) and replays them, and the worker-process mode runs the grid as the sweep command does. Speed is
not checked (CI machines are noisy)."""

from __future__ import annotations

import dataclasses
import math

from benchmarks import bench_sweep as B
from explorer.labs.double_descent.run import plan_groups
from explorer.labs.double_descent.spec import EVAL_CHUNK, load_data, parse_spec

TINY = parse_spec("""
[sweep]
name = "bench-tiny"
dataset = "digits"
train_size = 200
test_size = 100
label_noise = [0.0, 0.2]
family = "mlp"
widths = [4, 64]
epochs = 2
batch_size = 50
seeds = [0]
""")


def test_the_breakdown_records_one_epoch_and_replays_it() -> None:
    data = load_data(TINY)
    group = plan_groups(TINY, TINY.points())[0]
    n_mm, t_mm, flops, n_rest, t_rest = B.breakdown(TINY, group, data)
    steps = math.ceil(TINY.train_size / TINY.batch_size)
    chunks = math.ceil(TINY.train_size / EVAL_CHUNK) + math.ceil(TINY.test_size / EVAL_CHUNK)
    assert n_mm == 8 * steps + 3 * chunks
    assert t_mm > 0 and t_rest > 0 and n_rest > 0
    k, h, b = len(group), max(p.width for p in group), TINY.batch_size
    forward = 65 * h + (h + 1) * h + (h + 1) * 10  # multiply-adds per example (64 pixels + the bias row)
    backward = forward + h * h + 10 * h  # the weight gradients, and d(activation) of the two upper layers
    evaluated = TINY.train_size + TINY.test_size
    assert flops == 2 * k * (steps * b * (forward + backward) + evaluated * forward)


def test_the_worker_mode_runs_the_whole_grid(plain_main) -> None:
    spec = dataclasses.replace(TINY, epochs=1)
    workers, seconds = B.per_core_rounds(spec, plan_groups(spec, spec.points()), rounds=1)
    assert workers >= 1 and seconds > 0
