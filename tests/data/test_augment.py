"""Batched augmentation: every op keeps shape, dtype and device, is deterministic for a seed, and does what it says
(a flip mirrors, a translation shifts whole pixels, zero settings are the identity, cutout blanks one square)."""

from __future__ import annotations

import pytest
import torch

from explorer.core.config import ConfigError
from explorer.data.augment import AugmentConfig, augment, cutout, flip, rotate_zoom, translate

ALL = AugmentConfig(flip=True, translate=3, rotate=15.0, zoom=0.2, cutout=4)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = 16, c: int = 3, h: int = 12, w: int = 10, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=gen(99)).to(dtype)


@pytest.mark.parametrize("cfg", [AugmentConfig(flip=True), AugmentConfig(translate=2), AugmentConfig(rotate=30.0),
                                 AugmentConfig(zoom=0.3), AugmentConfig(cutout=5), ALL,
                                 AugmentConfig(translate=12, pad="reflect"), AugmentConfig(translate=2, pad="zeros")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_determinism(cfg: AugmentConfig, dtype: torch.dtype) -> None:
    x = batch(dtype=dtype)
    x0 = x.clone()
    a = augment(x, cfg, gen(5))
    assert a.shape == x.shape and a.dtype == dtype and a.device == x.device
    assert torch.equal(x, x0)  # the input is not modified in place
    assert torch.equal(a, augment(x, cfg, gen(5)))  # same seed, same draws
    assert not torch.equal(a, augment(x, cfg, gen(6)))  # another seed, other draws
    assert not torch.equal(a, x)


def test_flip_really_mirrors() -> None:
    x = batch(64)
    out = flip(x, gen(1))
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((mirrored ^ same).all())  # each image is either mirrored or untouched
    assert 16 < int(mirrored.sum()) < 48  # about half of them mirrored


def test_zero_settings_are_the_identity() -> None:
    x = batch()
    for cfg in (AugmentConfig(), AugmentConfig(translate=0, rotate=0.0, zoom=0.0, cutout=0)):
        assert not cfg.active and cfg.label == "none"
        assert torch.equal(augment(x, cfg, gen()), x)
    assert torch.equal(translate(x, 0, gen()), x)
    assert torch.allclose(rotate_zoom(x, 0.0, 0.0, gen()), x, atol=1e-5)  # the identity grid hits pixel centres


def test_translate_shifts_by_whole_pixels() -> None:
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    out = translate(x, 2, gen(3), pad="zeros")
    for o, i in zip(out, x):
        # the centre 4x4 of the original shows up somewhere within 2 pixels of its place
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(o[0, 2 + dy:6 + dy, 2 + dx:6 + dx], i[0, 2:6, 2:6])]
        assert len(found) == 1


def test_rotate_180_turns_and_zoom_2_enlarges(monkeypatch: pytest.MonkeyPatch) -> None:
    import explorer.data.augment as A

    monkeypatch.setattr(A, "_uniform", lambda n, lo, hi, g, d: torch.full((n,), hi, device=d))  # draw the maximum
    x = batch(4, h=8, w=8)
    assert torch.allclose(rotate_zoom(x, 180.0, 0.0, gen()), x.flip(-1).flip(-2), atol=1e-5)
    big = rotate_zoom(x, 0.0, 0.5, gen())  # scale 1.5: the centre is magnified, nothing uncovered
    assert big.shape == x.shape and not torch.allclose(big, x)


def test_cutout_zeroes_one_square_per_image() -> None:
    x = torch.rand(32, 3, 10, 10) + 1.0  # no zeros of its own
    out = cutout(x, 4, gen(2))
    zeros = out == 0
    assert bool((zeros.sum((1, 2, 3)) == 3 * 4 * 4).all())  # one 4x4 square, all channels
    assert bool((zeros[:, :1] == zeros).all())  # the same square on every channel
    for z in zeros[:, 0]:
        rows, cols = z.any(1).nonzero().flatten(), z.any(0).nonzero().flatten()
        assert len(rows) == 4 and len(cols) == 4 and int(rows[-1] - rows[0]) == 3
    # a square larger than the image blanks it all
    assert bool((cutout(x, 32, gen()) == 0).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cpu_generator_gives_the_same_augmentation_on_cuda() -> None:
    x = batch()
    a = augment(x, ALL, gen(4))
    b = augment(x.cuda(), ALL, gen(4))
    assert b.device.type == "cuda" and torch.allclose(a, b.cpu(), atol=1e-4)


def test_labels_and_strings() -> None:
    assert ALL.active
    assert ALL.label == "flip + translate 3 px + rotate 15° + zoom 0.2 + cutout 4"
    assert AugmentConfig(flip=True, translate=4, cutout=8).label == "flip + translate 4 px + cutout 8"


@pytest.mark.parametrize("bad", [dict(translate=-1), dict(translate=2.5), dict(rotate=200.0), dict(zoom=0.9),
                                 dict(cutout=-2), dict(flip=1), dict(pad="wrap")])
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigError):
        AugmentConfig(**bad)


def test_refuses_non_float_batches() -> None:
    with pytest.raises(ValueError):
        augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), ALL, gen())
