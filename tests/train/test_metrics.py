"""Classification metrics against scikit-learn: top-k accuracy, the confusion matrix, per-class precision, recall,
F1 and support (zero_division=0), and the order of the most confident mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from explorer.train.metrics import confusion_matrix, most_confident_mistakes, per_class, topk_correct


def sample(n: int = 300, c: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.randint(c, (n,), generator=g)
    logits[torch.arange(n), y] += 1.0  # better than chance, so the counts are not trivial
    return logits, y


@pytest.mark.parametrize("c", [2, 3, 7, 10])
def test_topk_matches_sklearn(c: int) -> None:
    logits, y = sample(c=c)
    ks = (1, 2, 5, 12)
    got = topk_correct(logits, y, ks)
    for k in ks:
        if k >= c:
            assert got[k] == len(y)  # k > C is clipped to C: every row counts
            continue
        # sklearn takes binary scores as one column: the probability of class 1
        score = logits.softmax(1)[:, 1].numpy() if c == 2 else logits.numpy()
        ref = skm.top_k_accuracy_score(y.numpy(), score, k=k, labels=np.arange(c), normalize=False)
        assert got[k] == int(ref), k


def test_confusion_matrix_matches_sklearn() -> None:
    logits, y = sample()
    pred = logits.argmax(1)
    got = confusion_matrix(y, pred, 7)
    ref = skm.confusion_matrix(y.numpy(), pred.numpy(), labels=np.arange(7))
    assert got.dtype == torch.int64 and got.shape == (7, 7)
    assert np.array_equal(got.numpy(), ref)
    assert int(got.sum()) == len(y)


def test_per_class_matches_sklearn_with_zero_division_0() -> None:
    logits, y = sample(c=6)
    y = y.clone()
    y[y == 5] = 4  # class 5 never occurs: 0 support, recall 0/0
    pred = logits.argmax(1)
    pred[pred == 3] = 2  # class 3 never predicted: precision 0/0
    m = per_class(confusion_matrix(y, pred, 6))
    p, r, f, s = skm.precision_recall_fscore_support(y.numpy(), pred.numpy(), labels=np.arange(6), zero_division=0)
    assert np.allclose(m["precision"], p) and np.allclose(m["recall"], r) and np.allclose(m["f1"], f)
    assert np.allclose(m["support"], s)
    assert m["accuracy"] == m["recall"]
    assert m["precision"][3] == 0.0 and m["recall"][5] == 0.0 and m["f1"][5] == 0.0


def test_per_class_of_an_empty_matrix_is_all_zero() -> None:
    m = per_class(torch.zeros(3, 3, dtype=torch.int64))
    assert all(v == [0.0, 0.0, 0.0] for v in m.values())


def test_most_confident_mistakes_come_first() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    y = torch.tensor([1, 1, 1, 0, 1])  # wrong: 0 (0.9), 2 (0.6), 3 (0.7), 4 (0.95)
    assert most_confident_mistakes(probs, y, 10).tolist() == [4, 0, 3, 2]
    assert most_confident_mistakes(probs, y, 2).tolist() == [4, 0]
    assert most_confident_mistakes(probs, torch.tensor([0, 1, 0, 1, 0]), 5).tolist() == []


def test_agrees_with_sklearn_on_a_perfect_classifier() -> None:
    y = torch.arange(5).repeat(4)
    logits = torch.nn.functional.one_hot(y, 5).double()
    assert topk_correct(logits, y, (1,))[1] == 20
    m = per_class(confusion_matrix(y, logits.argmax(1), 5))
    assert m["f1"] == [1.0] * 5
