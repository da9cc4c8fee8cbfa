"""Seeded draws from torch's global generator that other threads cannot interleave with.

PyTorch's layer constructors initialise their weights from the one process-wide generator, so "seed, then build"
is only reproducible while no other thread draws from it in between. On a server, jobs of several visitors build
networks at the same moment: without a lock one job's network got another's initial weights (seen on the
weight-trajectories page: two of eight seeds started from the wrong weights). `seeded` holds a process-wide lock,
forks the generator's state, seeds it, and restores it afterwards, so the draws inside are exactly those of
`torch.manual_seed(seed)` followed by the same code in a fresh process. Keep the block short (building a network);
training draws come from explicit torch.Generator objects.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_LOCK = threading.RLock()  # re-entrant: a seeded build may call a helper that seeds again


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside: torch's global CPU generator seeded with `seed`, and no other `seeded` block running anywhere in
    the process; afterwards the generator's state is what it was before."""
    with _LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
