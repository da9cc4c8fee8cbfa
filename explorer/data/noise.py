"""Every label-noise and input-corruption draw of the labs, each definition named.

Label noise has two parts, and the papers differ in both, so each is named:
- which labels: `corrupt_labels` hits each label independently with probability p (Zhang et al. 2017,
  "independently with probability p, the label of each image is corrupted"); `noisy_labels` replaces
  exactly round(p * N) labels chosen at random (Nakkiran et al. 2021's label noise);
- what replaces a hit label, `LABEL_SCHEMES`: "other", a uniformly random *other* class, so every hit
  label becomes wrong (Nakkiran et al.); or "uniform", a uniform label over all classes, which may be the
  same one, so about p(C-1)/C of the labels end up wrong (Zhang et al.; the MNIST-1D notebook's noise).

Corruption modes of Zhang et al. (2017) are seeded, fixed transformations drawn once. Label modes change
only the training labels; the test set keeps its true labels, so test accuracy measures what the network
learned about the real task. Input modes transform the training AND test inputs the same way (the
shuffled-pixel permutation is one fixed property of the data set, so a network can still generalise
through it; per-image permutations and Gaussian noise leave nothing to generalise from). Every draw comes
from a generator seeded by (seed, mode), so a mode's data do not depend on which other modes run beside it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import torch

from explorer.core.config import check_choice, check_range

@dataclass(frozen=True)
class LabelScheme:
    """What replaces a label hit by noise: its menu title, the paper it follows, and the draw."""

    title: str
    source: str
    draw: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]  # (hit labels, classes, gen) -> new labels


def _uniform_label(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, num_classes, y.shape, generator=generator)


def _other_class(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    return (y + torch.randint(1, num_classes, y.shape, generator=generator)) % num_classes  # shift 1..C-1


LABEL_SCHEMES: dict[str, LabelScheme] = {
    "uniform": LabelScheme("a uniform label (may be the same class)", "Zhang et al. 2017; the MNIST-1D notebook",
                           _uniform_label),
    "other": LabelScheme("a random other class (always wrong)", "Nakkiran et al. 2021", _other_class),
}


@dataclass(frozen=True)
class Sample:
    """Inputs (float32, (N, L) or (N, C, H, W)) and integer labels (N,) of one split."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class Corrupted:
    """A mode's training set and the test set it is judged on."""

    train: Sample
    test: Sample


def _generator(seed: int, mode: str, purpose: str) -> torch.Generator:
    """A CPU generator for one (seed, mode, purpose), independent of the other modes."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"{mode}/{purpose}".encode()))


def corrupt_labels(y: torch.Tensor, num_classes: int, p: float, scheme: str,
                   generator: torch.Generator) -> torch.Tensor:
    """Each label independently, with probability p, replaced as `scheme` says (LABEL_SCHEMES)."""
    check_range("corruption probability p", p, 0.0, 1.0)
    check_choice("label scheme", scheme, LABEL_SCHEMES)
    hit = torch.rand(y.shape, generator=generator) < p
    return torch.where(hit, LABEL_SCHEMES[scheme].draw(y, num_classes, generator), y)


def expected_agreement(p: float, scheme: str, num_classes: int) -> float:
    """Expected fraction of labels left correct: 1 - p(K-1)/K (uniform) or 1 - p (other)."""
    return 1.0 - p * (num_classes - 1) / num_classes if scheme == "uniform" else 1.0 - p


def label_agreement(y: torch.Tensor, y_true: torch.Tensor) -> float:
    """Fraction of labels equal to the true ones."""
    return (y == y_true).float().mean().item()


def _positions(x: torch.Tensor) -> torch.Tensor:
    """View inputs as (N, P, C): P pixel positions, C values per position (channels kept together)."""
    if x.dim() == 4:
        n, c, h, w = x.shape
        return x.reshape(n, c, h * w).transpose(1, 2)
    return x.reshape(x.shape[0], -1, 1)


def _from_positions(z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of _positions."""
    if like.dim() == 4:
        return z.transpose(1, 2).reshape(like.shape).contiguous()
    return z.reshape(like.shape).contiguous()


def pixel_permutation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random permutation of the pixel positions of x's examples."""
    return torch.randperm(_positions(x).shape[1], generator=generator)


def shuffle_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """The same permutation of pixel positions applied to every example."""
    return _from_positions(_positions(x)[:, perm], x)


def random_pixels(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A different random permutation of pixel positions for every example."""
    z = _positions(x)  # (N, P, C)
    perms = torch.rand(z.shape[:2], generator=generator).argsort(1)  # (N, P) one permutation per row
    return _from_positions(torch.gather(z, 1, perms.unsqueeze(-1).expand_as(z)), x)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per channel (images) or over all values (1-D data)."""
    z = _positions(x)  # (N, P, C)
    flat = z.reshape(-1, z.shape[-1])
    return flat.mean(0), flat.std(0)  # (C,), (C,)


def gaussian_like(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Gaussian inputs of x's shape with the given per-channel mean and standard deviation."""
    z = torch.randn(_positions(x).shape, generator=generator) * std + mean  # (N, P, C)
    return _from_positions(z, x)


@dataclass(frozen=True)
class Mode:
    """One corruption mode: a menu title, whether it needs p, and its transformation."""

    title: str
    uses_p: bool
    apply: Callable[[Sample, Sample, int, float, str, int, str], Corrupted]


def _true(train: Sample, test: Sample, k: int, p: float, scheme: str, seed: int, name: str) -> Corrupted:
    return Corrupted(train, test)


def _partial(train: Sample, test: Sample, k: int, p: float, scheme: str, seed: int, name: str) -> Corrupted:
    y = corrupt_labels(train.y, k, p, scheme, _generator(seed, name, f"labels/{p!r}/{scheme}"))
    return Corrupted(Sample(train.x, y), test)


def _random_labels(train: Sample, test: Sample, k: int, p: float, scheme: str, seed: int,
                   name: str) -> Corrupted:
    y = torch.randint(0, k, train.y.shape, generator=_generator(seed, name, "labels"))
    return Corrupted(Sample(train.x, y), test)


def _shuffled(train: Sample, test: Sample, k: int, p: float, scheme: str, seed: int, name: str) -> Corrupted:
    perm = pixel_permutation(train.x, _generator(seed, name, "perm"))
    return Corrupted(Sample(shuffle_pixels(train.x, perm), train.y), Sample(shuffle_pixels(test.x, perm), test.y))


def _random_pixels(train: Sample, test: Sample, k: int, p: float, scheme: str, seed: int,
                   name: str) -> Corrupted:
    return Corrupted(Sample(random_pixels(train.x, _generator(seed, name, "train")), train.y),
                     Sample(random_pixels(test.x, _generator(seed, name, "test")), test.y))


def _gaussian(train: Sample, test: Sample, k: int, p: float, scheme: str, seed: int, name: str) -> Corrupted:
    mean, std = moments(train.x)
    return Corrupted(Sample(gaussian_like(train.x, mean, std, _generator(seed, name, "train")), train.y),
                     Sample(gaussian_like(test.x, mean, std, _generator(seed, name, "test")), test.y))


MODES: dict[str, Mode] = {
    "true_labels": Mode("True labels", False, _true),
    "partial_labels": Mode("Partially corrupted labels (p)", True, _partial),
    "random_labels": Mode("Random labels", False, _random_labels),
    "shuffled_pixels": Mode("Shuffled pixels (one permutation)", False, _shuffled),
    "random_pixels": Mode("Random pixels (per-image permutation)", False, _random_pixels),
    "gaussian": Mode("Gaussian inputs", False, _gaussian),
}


def apply(mode: str, train: Sample, test: Sample, *, num_classes: int, p: float = 0.5,
          scheme: str = "uniform", seed: int = 0) -> Corrupted:
    """The training and test sets under one corruption mode, drawn once from (seed, mode)."""
    check_choice("corruption mode", mode, MODES)
    check_range("corruption probability p", p, 0.0, 1.0)
    check_choice("label scheme", scheme, LABEL_SCHEMES)
    return MODES[mode].apply(train, test, num_classes, p, scheme, seed, mode)


def noise_seed(seed: int, noise: float, salt: int = 0) -> int:
    """The generator seed of one point's label-noise draw (train salt 0, test salt 1)."""
    return (seed * 1_000_003 + round(noise * 1_000_000) * 7919 + salt * 104_729) % (2**63 - 1)


def noisy_labels(y: torch.Tensor, noise: float, num_classes: int, seed: int, scheme: str = "other") -> torch.Tensor:
    """Replace exactly round(noise * N) labels, chosen at random, as `scheme` says (LABEL_SCHEMES; "other"
    is Nakkiran et al.'s label noise)."""
    check_choice("label scheme", scheme, LABEL_SCHEMES)
    g = torch.Generator().manual_seed(seed)
    y_cpu = y.cpu()
    idx = torch.randperm(len(y_cpu), generator=g)[:round(noise * len(y_cpu))]
    out = y_cpu.clone()
    out[idx] = LABEL_SCHEMES[scheme].draw(y_cpu[idx], num_classes, g)
    return out.to(y.device)
