"""Set tasks from a registry: a set of numbers or digit images -> one number, as padded (S, N, d) tensors + a mask.

Sets of different sizes batch together because every set is padded to the largest size with zeros and a boolean
mask (S, N) marks the real elements; the model's pooling reads only those. Number tasks draw elements from
U(0, 1); the digit-sum task (Zaheer et al.'s MNIST sum) draws images from a pool (the embedded scikit-learn digits,
or MNIST when present) and its target is the sum of their labels. Generation is seeded by explicit generators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Target = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # values (S, N), mask (S, N) -> target (S,)


def _count(m: torch.Tensor) -> torch.Tensor:
    return m.sum(1).clamp_min(1).to(torch.float32)


def _sum(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (v * m).sum(1)


def _mean(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _sum(v, m) / _count(m)


def _max(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return v.masked_fill(~m, float("-inf")).max(1).values


def _variance(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Population variance (divided by N, not N - 1): defined for every set size."""
    mu = _mean(v, m)[:, None]
    return _sum((v - mu) ** 2, m) / _count(m)


def _second_largest(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return v.masked_fill(~m, float("-inf")).topk(2, dim=1).values[:, 1]


@dataclass(frozen=True)
class SetTask:
    """One task: its menu title, whether elements are images, and the target of a set of element values."""

    title: str
    images: bool  # elements are digit images (values = their labels), else numbers from U(0, 1)
    target: Target


TASKS: dict[str, SetTask] = {
    "sum": SetTask("Sum of numbers", False, _sum),
    "mean": SetTask("Mean of numbers", False, _mean),
    "max": SetTask("Maximum of numbers", False, _max),
    "second_largest": SetTask("Second largest number", False, _second_largest),
    "variance": SetTask("Variance of numbers", False, _variance),
    "digit_sum": SetTask("Sum of digit images (Zaheer et al.)", True, _sum),
}


@dataclass(frozen=True)
class SetData:
    """Sets as padded tensors: x (S, N, d) float32 (zeros where padded), mask (S, N) bool, y (S,) float32."""

    x: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device) -> "SetData":
        return SetData(self.x.to(device), self.mask.to(device), self.y.to(device))

    def __len__(self) -> int:
        return int(self.x.shape[0])


def make_sets(task: str, n_sets: int, min_size: int, max_size: int, gen: torch.Generator,
              pool: tuple[torch.Tensor, torch.Tensor] | None = None) -> SetData:
    """n_sets sets with sizes uniform in [min_size, max_size], padded to max_size. Image tasks draw elements from
    pool = (features (P, d) float32, labels (P,)); number tasks ignore it."""
    t = TASKS[task]
    sizes = torch.randint(min_size, max_size + 1, (n_sets,), generator=gen)
    mask = torch.arange(max_size)[None, :] < sizes[:, None]  # (S, N): real elements first, padding after
    if t.images:
        assert pool is not None, "an image task needs a pool of images"
        feats, labels = pool
        idx = torch.randint(0, len(labels), (n_sets, max_size), generator=gen)
        values = labels[idx].to(torch.float32)
        x = feats[idx]  # (S, N, d)
    else:
        values = torch.rand(n_sets, max_size, generator=gen)
        x = values[..., None]  # (S, N, 1)
    values = values.masked_fill(~mask, 0.0)
    x = x * mask[..., None]
    return SetData(x.contiguous(), mask, t.target(values, mask).to(torch.float32))
