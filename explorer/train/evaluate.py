"""What every trainer shares after its steps: spotting a divergence, saying so, and measuring loss and error.

`first_nonfinite` finds, for each of K models, the first step of an epoch whose loss (or witness: any
per-step value that is non-finite exactly when the loss is) stopped being finite, with one host sync for
the whole epoch. `diverged_message` says which run diverged, where, the likely cause and what to change;
`Diverged` carries it where a divergence ends a run, and `exit_codes` turns it (and a refused setting) into a
command line's message and exit status. `evaluate` gives each model's mean cross-entropy and
error over a whole set against one or more label sets, a chunk of examples per forward, so a set's
activations are never held at once; a chunk that runs out of device memory is retried in halves.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable, Sequence

import torch

from explorer.core.config import ConfigError
from explorer.core.status import free_memory, is_out_of_memory

log = logging.getLogger(__name__)

HOST_SCAN = 64  # values already on the host, up to this many, are scanned in Python (faster than tensor ops)
SMALL_LR = 1e-3  # at or below this, a too-high learning rate is no longer the likely cause


class Diverged(RuntimeError):
    """Training produced a non-finite loss; the message names the step and the likely cause."""

    def __init__(self, message: str, step: int, epoch: int):
        super().__init__(message)
        self.step = step
        self.epoch = epoch


def exit_codes(main: Callable[..., int]) -> Callable[..., int]:
    """A command's `main` whose refused setting (ConfigError, raised anywhere in it) prints "setting refused: why"
    and returns 2, and whose diverged run (Diverged) prints where and why and returns 1: every CLI the same."""
    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except ConfigError as exc:
            print(f"setting refused: {exc}", file=sys.stderr)
            return 2
        except Diverged as exc:
            print(str(exc), file=sys.stderr)
            return 1

    return run


def first_nonfinite(values: torch.Tensor, limit: torch.Tensor | None = None) -> list[int | None]:
    """Per model, the index of the first non-finite row of (steps, K) or (steps,) values, None where all
    are finite; with `limit` (K,), a value above it counts as non-finite too. One host sync when all are
    finite (the common case), two otherwise."""
    values = values.reshape(len(values), -1)  # (steps,) -> (steps, 1)
    if values.device.type == "cpu" and values.numel() <= HOST_SCAN:  # a few tensor ops cost more than a scan
        bounds = [math.inf] * values.shape[1] if limit is None else limit.tolist()
        rows = values.tolist()
        # `v <= bound` is False for NaN, and inf only passes an infinite bound, so isfinite is checked too
        return [next((s for s, row in enumerate(rows) if not (math.isfinite(row[i]) and row[i] <= bound)), None)
                for i, bound in enumerate(bounds)]
    bad = ~torch.isfinite(values)
    if limit is not None:
        bad |= values > limit
    if not bad.any():
        return [None] * values.shape[1]
    first = bad.to(torch.int8).argmax(0).tolist()  # the first True of each column
    return [f if b else None for f, b in zip(first, bad.any(0).tolist())]


def diverged_message(what: str, step: int, epoch: int | None = None, lr: float | None = None, *,
                     cause: str = "the loss became non-finite") -> str:
    """'<what> diverged at step S (epoch E): <cause>; <the likely reason and what to change>.'"""
    where = f"step {step}" + ("" if epoch is None else f" (epoch {epoch})")
    if lr is None:
        hint = "lower the learning rate"
    elif lr > SMALL_LR:
        hint = f"the learning rate {lr:g} is probably too high for this network and data; try {lr / 10:g}"
    else:
        hint = (f"the learning rate {lr:g} is already small; check the data for extreme values "
                "and the regularisation")
    return f"{what + ' ' if what else ''}diverged at {where}: {cause}; {hint}."


LogitsFn = Callable[[torch.Tensor], torch.Tensor]  # a chunk of inputs -> logits of all K models


@torch.no_grad()
def evaluate(logits_fn: LogitsFn, x: torch.Tensor, label_sets: Sequence[torch.Tensor], chunk: int, *,
             example_dim: int = 0, classes_dim: int = -1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-model mean cross-entropy and error, device tensors (K,), against each (K, N) or (N,) label set.

    x holds the N examples along `example_dim` (0 for shared (N, ...) inputs, 1 for per-model (K, N, ...));
    logits_fn maps `chunk` of them to (K, b, C) logits, or to (K, C, b) with classes_dim=1. A chunk that runs
    out of device memory is retried in halves (down to one example), so evaluating a large set never fails for
    memory on its own; the chunks already summed are kept.
    """
    n = x.shape[example_dim]
    if n == 0:
        raise ValueError("there are no examples to evaluate")
    sums: list[tuple[torch.Tensor, torch.Tensor]] = []
    i = 0
    while i < n:
        b = min(chunk, n - i)
        try:
            part = _chunk_sums(logits_fn, x.narrow(example_dim, i, b), label_sets, i, classes_dim)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if chunk == 1 or not is_out_of_memory(exc):
                raise
            chunk = max(1, min(chunk, b) // 2)
            log.warning("evaluation ran out of memory at %d examples per chunk; retrying with %d", b, chunk)
        else:
            if not sums:
                sums = part
            else:
                for (loss, wrong), (dl, dw) in zip(sums, part):
                    loss += dl
                    wrong += dw
            i += b
            continue
        free_memory()  # out of the except block: its traceback no longer holds the failed chunk's activations
    return [(loss / n, wrong / n) for loss, wrong in sums]


def _chunk_sums(logits_fn: LogitsFn, xb: torch.Tensor, label_sets: Sequence[torch.Tensor], start: int,
                classes_dim: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Summed cross-entropy and count of errors (K,) of one chunk of examples, starting at `start`, per label set."""
    z = logits_fn(xb).float()
    if classes_dim != -1:
        z = z.movedim(classes_dim, -1)  # (K, b, C)
    k, b = z.shape[0], z.shape[1]
    m = z.amax(-1, keepdim=True)
    lse = (z - m).exp_().sum(-1, keepdim=True).log_().add_(m).sum((1, 2))  # (K,): the loss is lse - z[y]
    pred = z.argmax(-1)  # (K, b)
    out = []
    for ys in label_sets:
        y = ys[..., start:start + b].expand(k, -1)  # a shared (b,) set serves every model
        out.append((lse - z.gather(-1, y.unsqueeze(-1)).sum((1, 2)), (pred != y).sum(1).to(z.dtype)))
    return out
