"""Corruption modes: label agreement statistics, fixed vs per-image permutations, Gaussian moments."""

from __future__ import annotations

import pytest
import torch

from explorer.core.config import ConfigError
from explorer.data.noise import MODES, Sample, apply, corrupt_labels, expected_agreement, label_agreement, moments

K = 10


def _data(n: int = 20_000, image: bool = False) -> tuple[Sample, Sample]:
    g = torch.Generator().manual_seed(0)
    shape = (3, 4, 5) if image else (40,)
    x = torch.rand((n, *shape), generator=g) * 0.5 + torch.linspace(0, 1, shape[-1])
    y = torch.randint(0, K, (n,), generator=g)
    return Sample(x, y), Sample(x[: n // 4] + 1.0, y[: n // 4])


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("scheme", ["uniform", "other"])
def test_label_agreement_matches_expectation(p, scheme):
    train, test = _data()
    out = apply("partial_labels", train, test, num_classes=K, p=p, scheme=scheme, seed=3)
    got = label_agreement(out.train.y, train.y)
    assert got == pytest.approx(expected_agreement(p, scheme, K), abs=0.015)
    assert torch.equal(out.train.x, train.x) and torch.equal(out.test.y, test.y)
    assert out.train.y.min() >= 0 and out.train.y.max() < K


def test_other_scheme_never_keeps_a_corrupted_label():
    y = torch.randint(0, K, (5000,))
    new = corrupt_labels(y, K, 1.0, "other", torch.Generator().manual_seed(0))
    assert not (new == y).any()
    counts = torch.bincount((new - y) % K, minlength=K)
    assert counts[0] == 0 and counts[1:].min() > 400  # the K-1 other classes equally likely


def test_random_labels_are_uniform_and_fixed():
    train, test = _data()
    a = apply("random_labels", train, test, num_classes=K, seed=1)
    b = apply("random_labels", train, test, num_classes=K, seed=1)
    assert torch.equal(a.train.y, b.train.y)  # drawn once from the seed
    assert label_agreement(a.train.y, train.y) == pytest.approx(1 / K, abs=0.01)
    freq = torch.bincount(a.train.y, minlength=K).float() / len(train.y)
    assert torch.allclose(freq, torch.full((K,), 1 / K), atol=0.01)
    c = apply("random_labels", train, test, num_classes=K, seed=2)
    assert not torch.equal(a.train.y, c.train.y)


@pytest.mark.parametrize("image", [False, True])
def test_shuffled_pixels_use_one_permutation_for_train_and_test(image):
    train, test = _data(200, image)
    out = apply("shuffled_pixels", train, test, num_classes=K, seed=0)
    flat = (lambda x: x.reshape(len(x), x.shape[1], -1).transpose(1, 2)) if image else (lambda x: x.unsqueeze(-1))
    src, dst = flat(train.x), flat(out.train.x)  # (N, P, C)
    # recover the permutation from the first example: each output position holds a source position
    perm = torch.tensor([int(((src[0] - dst[0, j]).abs().sum(1)).argmin()) for j in range(src.shape[1])])
    assert sorted(perm.tolist()) == list(range(src.shape[1])) and not torch.equal(perm, torch.arange(len(perm)))
    assert torch.equal(dst, src[:, perm])  # the same permutation for every training image
    assert torch.equal(flat(out.test.x), flat(test.x)[:, perm])  # and for the test images
    assert torch.equal(out.train.y, train.y)


@pytest.mark.parametrize("image", [False, True])
def test_random_pixels_permute_each_image_differently(image):
    train, test = _data(50, image)
    out = apply("random_pixels", train, test, num_classes=K, seed=0)
    # each image keeps its own multiset of values (a permutation) ...
    assert torch.equal(out.train.x.reshape(50, -1).sort(1).values, train.x.reshape(50, -1).sort(1).values)
    # ... and the permutations differ between images (the column order is not shared)
    flat_src = train.x.reshape(50, -1)
    flat_dst = out.train.x.reshape(50, -1)
    same_pos = [(flat_src[i].argsort() == flat_dst[i].argsort()).float().mean().item() for i in range(50)]
    first = flat_dst[0].argsort().argsort()
    assert sum(same_pos) / 50 < 0.2
    assert not all(torch.equal(flat_dst[i].argsort().argsort(), first) for i in range(1, 50))
    assert not torch.equal(out.test.x, test.x)


@pytest.mark.parametrize("image", [False, True])
def test_gaussian_inputs_match_the_data_moments(image):
    train, test = _data(20_000 if not image else 4000, image)
    out = apply("gaussian", train, test, num_classes=K, seed=0)
    m0, s0 = moments(train.x)
    m1, s1 = moments(out.train.x)
    torch.testing.assert_close(m1, m0, atol=0.01, rtol=0)
    torch.testing.assert_close(s1, s0, atol=0.01, rtol=0)
    assert out.train.x.shape == train.x.shape and out.test.x.shape == test.x.shape
    m2, _ = moments(out.test.x)
    torch.testing.assert_close(m2, m0, atol=0.02, rtol=0)  # test noise uses the training moments
    z = (out.train.x.flatten() - out.train.x.mean()) / out.train.x.std()
    assert abs((z**3).mean()) < 0.05 and abs((z**4).mean() - 3) < 0.1  # Gaussian shape, not uniform


def test_modes_are_independent_of_each_other_and_refuse_bad_settings():
    train, test = _data(100)
    assert set(MODES) == {"true_labels", "partial_labels", "random_labels", "shuffled_pixels",
                          "random_pixels", "gaussian"}
    t = apply("true_labels", train, test, num_classes=K)
    assert torch.equal(t.train.y, train.y) and torch.equal(t.train.x, train.x)
    with pytest.raises(ConfigError, match="corruption mode"):
        apply("flip", train, test, num_classes=K)
    with pytest.raises(ConfigError, match="p"):
        apply("partial_labels", train, test, num_classes=K, p=1.5)
    with pytest.raises(ConfigError, match="scheme"):
        apply("partial_labels", train, test, num_classes=K, scheme="nearest")


def test_every_label_noise_definition_is_named_and_does_what_its_name_says() -> None:
    from explorer.data.noise import LABEL_SCHEMES, noisy_labels

    assert set(LABEL_SCHEMES) == {"uniform", "other"}
    assert all(s.title and s.source for s in LABEL_SCHEMES.values())
    y = torch.arange(10_000) % 10
    other = noisy_labels(y, 0.3, 10, seed=3, scheme="other")
    assert int((other != y).sum()) == 3000  # exactly round(pN), every one wrong (Nakkiran et al.)
    uniform = noisy_labels(y, 0.3, 10, seed=3, scheme="uniform")
    assert abs(int((uniform != y).sum()) - 2700) < 150  # p(C-1)/C wrong: a hit may draw its own class


def test_nakkiran_noise_is_the_draw_the_shipped_sweeps_used() -> None:
    """noisy_labels(scheme="other") keeps the random draws of the original implementation."""
    from explorer.data.noise import noisy_labels

    y = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(42)
    idx = torch.randperm(1000, generator=g)[:150]
    expected = y.clone()
    expected[idx] = (y[idx] + torch.randint(1, 10, (150,), generator=g)) % 10
    assert torch.equal(noisy_labels(y, 0.15, 10, seed=42), expected)
