"""What class imbalance does to a classifier: per-class test recall, balanced vs imbalanced training.

Two softmax-regression models (linear on standardised pixels, full batch on the device) are
trained on seeded subsets that differ only in one class's count; their recall on the whole
test set is compared class by class. Small and fast enough to run while a lecturer talks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from explorer.core.config import check_range
from explorer.core.device import get_device
from explorer.core.seeding import seeded
from explorer.data import datasets as D
from explorer.train.evaluate import Diverged, diverged_message, first_nonfinite

MAX_PER_CLASS = 2000  # server-side cap on training examples per class


@dataclasses.dataclass(frozen=True)
class ImbalanceConfig:
    """Balanced subset of `per_class` per class vs the same with `minority_class` cut to `minority`."""

    dataset: str = "digits"
    per_class: int = 100  # training examples of every class in the balanced subset
    minority_class: int = 0  # index of the class that is made rare
    minority: int = 5  # its training examples in the imbalanced subset
    seed: int = 0  # picks the subsets and initialises the models
    steps: int = 200  # full-batch Adam steps
    lr: float = 0.01  # Adam learning rate

    def __post_init__(self) -> None:
        D.check_name("dataset", self.dataset)
        check_range("per_class", self.per_class, 1, MAX_PER_CLASS, integer=True)
        check_range("minority_class", self.minority_class, 0, 999, integer=True)
        check_range("minority", self.minority, 0, self.per_class, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_range("steps", self.steps, 1, 5000, integer=True)
        check_range("lr", self.lr, 1e-5, 1.0)


def fit_softmax(x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int, lr: float,
                seed: int) -> torch.nn.Linear:
    """Softmax regression trained full-batch with Adam; a non-finite loss raises Diverged."""
    with seeded(seed):
        model = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = torch.empty(steps, device=x.device)
    for step in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = loss.detach()
    [bad] = first_nonfinite(losses)  # one host sync for the whole run
    if bad is not None:
        step = bad + 1  # full batch: every step is an epoch
        raise Diverged(diverged_message("softmax regression", step, lr=lr), step, step)
    return model


def per_class_recall(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    """Fraction of each class's test examples predicted as that class."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    hits = torch.bincount(y[pred == y], minlength=num_classes).float()
    total = torch.bincount(y, minlength=num_classes).float()
    return (hits / total.clamp(min=1)).tolist()


def compare_recall(cfg: ImbalanceConfig) -> dict[str, Any]:
    """Per-class test recall of a model trained on a balanced and on an imbalanced subset."""
    train, test = D.load(cfg.dataset, "train"), D.load(cfg.dataset, "test")
    if cfg.minority_class >= train.num_classes:
        raise D.DatasetUnavailable(f"minority_class {cfg.minority_class} does not exist; "
                                   f"{cfg.dataset} has {train.num_classes} classes")
    dev = get_device()
    counts = [cfg.per_class] * train.num_classes
    subsets = {"balanced": D.subset(train, counts, cfg.seed)}
    counts[cfg.minority_class] = cfg.minority
    subsets["imbalanced"] = D.subset(train, counts, cfg.seed)
    x_test = test.to_float().reshape(len(test), -1).to(dev)  # (N, D)
    y_test = test.y.to(dev)
    out: dict[str, Any] = {"classes": list(train.classes)}
    for name, sub in subsets.items():
        x = sub.to_float().reshape(len(sub), -1).to(dev)
        mean, std = x.mean(0), x.std(0).clamp(min=1e-3)
        model = fit_softmax((x - mean) / std, sub.y.to(dev), train.num_classes, cfg.steps, cfg.lr, cfg.seed)
        out[name] = {"train_counts": D.class_counts(sub),
                     "recall": per_class_recall(model, (x_test - mean) / std, y_test, train.num_classes)}
    return out
