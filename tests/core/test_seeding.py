"""Seeded builds on several threads at once get exactly the weights a lone build gets."""

from __future__ import annotations

import threading

import torch
from torch import nn

from explorer.core.seeding import seeded


def _build(seed: int) -> torch.Tensor:
    with seeded(seed):
        layers = [nn.Linear(64, 64) for _ in range(20)]  # long enough for threads to interleave without the lock
    return torch.cat([p.detach().flatten() for m in layers for p in m.parameters()])


def test_a_seeded_block_draws_what_manual_seed_draws_and_restores_the_state() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    got = _build(7)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(7)
    assert torch.equal(got, torch.cat([p.detach().flatten() for _ in range(20) for p in nn.Linear(64, 64).parameters()]))


def test_threads_building_at_once_do_not_get_each_others_weights() -> None:
    alone = {s: _build(s) for s in range(8)}
    got: dict[int, list[torch.Tensor]] = {s: [] for s in range(8)}
    noise_stop = threading.Event()

    def noisy() -> None:  # another visitor's seeded builds, over and over
        while not noise_stop.is_set():
            _build(99)

    def worker(seed: int) -> None:
        for _ in range(5):
            got[seed].append(_build(seed))

    noise = threading.Thread(target=noisy)
    noise.start()
    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    noise_stop.set()
    noise.join()
    assert all(torch.equal(w, alone[s]) for s, ws in got.items() for w in ws)
