"""Classification metrics from logits and labels, in torch: top-k counts, the confusion matrix, per-class
accuracy / precision / recall / F1, and the most confidently misclassified examples.

These are the numbers a classifier page shows under its curves. They follow scikit-learn's definitions
(confusion_matrix, precision_recall_fscore_support with zero_division=0, top_k_accuracy_score), tested against
it, so the page's numbers are the ones a student would get from sklearn; computing them in torch avoids a
round trip through NumPy and works on any device.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """For each k, how many rows of logits (N, C) have the true class y (N,) among their k largest (k > C is
    clipped to C, where every row counts). Ties are broken by torch.topk's order."""
    ks = tuple(ks)
    if not ks:
        return {}
    c = logits.shape[-1]
    kmax = min(max(ks), c)
    top = logits.topk(kmax, dim=-1).indices  # (N, kmax), largest first
    hit = (top == y.view(-1, 1)).cumsum(-1)  # (N, kmax): 1 from the rank of the true class on
    return {k: int(hit[:, min(k, c) - 1].sum()) for k in ks}


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, classes: int) -> torch.Tensor:
    """Counts (classes, classes), int64 on the cpu: row = true class, column = predicted class."""
    t = torch.as_tensor(y_true).long().flatten().cpu()
    p = torch.as_tensor(y_pred).long().flatten().cpu()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} and {len(p)}")
    return torch.bincount(t * classes + p, minlength=classes * classes).view(classes, classes)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, 0.0 where den is 0 (scikit-learn's zero_division=0)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def per_class(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Per-class accuracy (= recall: correct / true count), precision (correct / predicted count), recall, F1
    and support (true count) from a confusion matrix (rows true); 0/0 gives 0.0 as scikit-learn's
    zero_division=0 does."""
    m = torch.as_tensor(confusion).double()
    tp = m.diagonal()
    support = m.sum(1)
    predicted = m.sum(0)
    recall = _ratio(tp, support)
    precision = _ratio(tp, predicted)
    f1 = _ratio(2 * tp, support + predicted)  # = 2PR / (P + R), and 0 where both are 0, as sklearn
    return {"accuracy": recall.tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
            "f1": f1.tolist(), "support": support.tolist()}


def most_confident_mistakes(probs: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (int64, cpu) of up to n misclassified rows of probs (N, C), the most confident wrong prediction
    (highest predicted-class probability) first; ties by index."""
    probs = probs.detach().float().cpu()
    y = torch.as_tensor(y).long().cpu()
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != y).flatten()
    order = torch.sort(conf[wrong], descending=True, stable=True).indices
    return wrong[order[:max(0, int(n))]]
