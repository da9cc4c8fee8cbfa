"""The fast image trainer: reproducible on the CPU, every optimizer and schedule as torch defines them, divergence
raised, early stopping restoring the best weights, only trainable parameters changed, progress and Stop, chunked
prediction that survives running out of memory, and a short real run on Fashion-MNIST (skipped when absent)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from explorer.core.config import ConfigError
from explorer.core.seeding import seeded
from explorer.data.augment import AugmentConfig
from explorer.data.datasets import ArrayDataset, load, load_or_fallback, take
from explorer.nets.cnn import CNNConfig, build_cnn
from explorer.train.evaluate import Diverged
from explorer.train.image_fit import (HISTORY_KEYS, FitConfig, ImageData, batch_bounds, evaluate_classifier, fit,
                                      make_optimizer, make_scheduler, predict, step_factor)

CPU = torch.device("cpu")
FASHION = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "FashionMNIST"


@pytest.fixture(scope="module")
def digits() -> tuple[ImageData, ImageData]:
    tr, _ = load_or_fallback("digits", "train")
    te, _ = load_or_fallback("digits", "test")
    train = ImageData.from_dataset(take(tr, 256, 0), CPU)
    return train, ImageData.from_dataset(take(te, 128, 1), CPU, train.mean, train.std)


def net(family: str = "simple", seed: int = 0, width: float = 0.125, dropout: float = 0.25) -> nn.Module:
    with seeded(seed):
        return build_cnn(CNNConfig(family=family, width=width, in_channels=1, dropout=dropout))


QUICK = FitConfig(epochs=1, batch_size=64, lr=3e-3)


def test_same_config_and_start_give_the_same_run(digits: tuple[ImageData, ImageData]) -> None:
    train, val = digits
    cfg = FitConfig(epochs=2, batch_size=64, lr=3e-3, schedule="onecycle",
                    augment=AugmentConfig(flip=True, translate=1, rotate=10.0, cutout=2), seed=4)
    a, b = fit(net(), train, val, cfg), fit(net(), train, val, cfg)  # the simple CNN has dropout too
    assert a.history["train_loss"] == b.history["train_loss"] and a.history["val_loss"] == b.history["val_loss"]
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    c = fit(net(), train, val, FitConfig(**{**cfg.__dict__, "seed": 5}))  # another batch order and draws
    assert c.history["train_loss"] != a.history["train_loss"]


def test_history_result_and_progress(digits: tuple[ImageData, ImageData], recorder) -> None:
    train, val = digits
    rec, rows = recorder, []
    r = fit(net(), train, val, FitConfig(epochs=2, batch_size=64), report=rec, on_epoch=rows.append)
    assert set(r.history) == set(HISTORY_KEYS) and r.history["epoch"] == [1, 2]
    assert [row["epoch"] for row in rows] == [1, 2] and set(rows[0]) == set(HISTORY_KEYS)
    assert all(0 <= v <= 1 for v in r.history["train_acc"] + r.history["val_acc"])
    assert r.history["seconds"] == sorted(r.history["seconds"]) and r.seconds >= r.history["seconds"][-1]
    assert r.stopped_epoch == 2 and r.best_epoch in (1, 2) and r.images_per_s > 0
    assert not r.model.training
    snaps = [s for s, _, _ in rec.published if s is not None]
    assert len(snaps) == 2 and snaps[-1]["history"]["epoch"] == [1, 2]
    progress = [p for _, p, _ in rec.published if p is not None]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(m and m.startswith("epoch 2/2 · val acc ") and "ETA" in m for _, _, m in rec.published)
    assert rec.checkpoints >= 2


class Stop(Exception):
    pass


class StopAfter:
    """A Reporter whose n-th checkpoint cancels (as a job's Stop does)."""

    def __init__(self, n: int) -> None:
        self.n, self.checkpoints = n, 0

    def publish(self, snapshot=None, *, progress=None, message=None) -> None:
        pass

    def checkpoint(self) -> None:
        self.checkpoints += 1
        if self.checkpoints >= self.n:
            raise Stop


@pytest.mark.parametrize("n", [1, 3])
def test_stop_raises_through_fit(digits: tuple[ImageData, ImageData], n: int) -> None:
    model = net()
    with pytest.raises(Stop):
        fit(model, digits[0], digits[1], FitConfig(epochs=50, batch_size=64), report=StopAfter(n))
    assert all(getattr(m, "generator", None) is None for m in model.modules())  # the run's generator let go


def test_without_validation_set(digits: tuple[ImageData, ImageData]) -> None:
    r = fit(net(), digits[0], None, FitConfig(epochs=2, batch_size=128, schedule="plateau", patience=1))
    assert r.history["val_loss"] == [None, None] and r.history["val_acc"] == [None, None]


@pytest.mark.parametrize("opt", [dict(optimizer="sgd", momentum=0.0), dict(optimizer="sgd", nesterov=True),
                                 dict(optimizer="adam"), dict(optimizer="adamw", weight_decay=0.05)])
def test_optimizers_are_torch_optims(opt: dict) -> None:
    cfg = FitConfig(**opt)
    o = make_optimizer([nn.Parameter(torch.zeros(3))], cfg, CPU)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    assert type(o) is cls
    g = o.param_groups[0]
    assert g["lr"] == cfg.lr and g["weight_decay"] == cfg.weight_decay
    if cfg.optimizer == "sgd":
        assert g["momentum"] == cfg.momentum and g["nesterov"] == cfg.nesterov


def lrs(schedule: str, steps: int, **kw) -> list[float]:
    cfg = FitConfig(optimizer="sgd", lr=0.1, schedule=schedule, **kw)
    o = make_optimizer([nn.Parameter(torch.zeros(1))], cfg, CPU)
    s = make_scheduler(o, cfg, steps)
    out = []
    for _ in range(steps):
        out.append(o.param_groups[0]["lr"])
        o.step()
        s.step()
    return out


def test_schedules_per_step() -> None:
    assert lrs("constant", 8) == [0.1] * 8
    assert lrs("step", 8) == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert [step_factor(s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, .1, .1, .01, .01])
    cos = lrs("cosine", 10)
    assert cos[0] == pytest.approx(0.1) and cos == sorted(cos, reverse=True)
    assert cos[5] == pytest.approx(0.05)
    one = lrs("onecycle", 100)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.1, total_steps=100)
    want = []
    for _ in range(100):
        want.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert one == pytest.approx(want) and max(one) == pytest.approx(0.1)


def test_plateau_lowers_the_rate_on_the_validation_loss(digits: tuple[ImageData, ImageData]) -> None:
    train, val = digits
    shuffled = ImageData(val.x, val.y[torch.randperm(len(val.y), generator=torch.Generator().manual_seed(0))],
                         val.mean, val.std)  # random labels: the validation loss stops improving at once
    r = fit(net(), train, shuffled, FitConfig(epochs=5, batch_size=64, lr=1e-2, schedule="plateau"))
    assert r.history["lr"][0] == pytest.approx(1e-2)
    assert min(r.history["lr"]) == pytest.approx(1e-3)  # lowered x0.1 after PLATEAU_PATIENCE bad epochs


def test_early_stopping_restores_the_best_weights(digits: tuple[ImageData, ImageData]) -> None:
    train, val = digits
    shuffled = ImageData(val.x, val.y[torch.randperm(len(val.y), generator=torch.Generator().manual_seed(0))],
                         val.mean, val.std)
    r = fit(net(), train, shuffled, FitConfig(epochs=20, batch_size=64, lr=1e-2, patience=2))
    assert r.stopped_epoch < 20 and r.stopped_epoch == r.best_epoch + 2
    assert len(r.history["epoch"]) == r.stopped_epoch
    ev = evaluate_classifier(predict(r.model, shuffled), shuffled.y, ())
    assert ev["loss"] == pytest.approx(r.history["val_loss"][r.best_epoch - 1], rel=1e-4)


def test_huge_learning_rate_raises_diverged(digits: tuple[ImageData, ImageData]) -> None:
    with seeded(0):  # no batch norm to hold it: the weights grow geometrically to inf
        mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with pytest.raises(Diverged, match="diverged at step .*learning rate 100 is probably too high") as err:
        fit(mlp, digits[0], None, FitConfig(optimizer="sgd", lr=100.0, epochs=3, batch_size=32))
    assert err.value.epoch >= 1 and err.value.step >= 1


def test_only_trainable_parameters_change(digits: tuple[ImageData, ImageData]) -> None:
    model = net()
    head = model[-1]
    for p in model.parameters():
        p.requires_grad_(False)
    head.requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()  # a frozen backbone's batch norm must not update its statistics: the caller's job
    fit(model, digits[0], None, QUICK)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(f"{len(model) - 1}.") or "running" in k or "num_batches" in k
                           for k in changed)
    assert not torch.equal(before[f"{len(model) - 1}.weight"], after[f"{len(model) - 1}.weight"])
    frozen = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        fit(frozen, digits[0], None, QUICK)


def test_clipping_bounds_each_step(digits: tuple[ImageData, ImageData]) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    w0 = model[1].weight.detach().clone()
    b0 = model[1].bias.detach().clone()
    cfg = FitConfig(optimizer="sgd", momentum=0.0, lr=1.0, clip=1e-3, epochs=1, batch_size=64)
    fit(model, digits[0], None, cfg)
    moved = torch.cat([(model[1].weight - w0).flatten(), model[1].bias - b0]).norm()
    assert 0 < float(moved.detach()) <= 4 * 1e-3 * 1.0 + 1e-6  # 4 steps, each at most lr x clip


def test_label_smoothing_goes_to_cross_entropy(digits: tuple[ImageData, ImageData],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import explorer.train.image_fit as engine

    seen = []
    real = engine.F.cross_entropy

    def spy(*args, **kw):
        seen.append(kw.get("label_smoothing"))
        return real(*args, **kw)

    monkeypatch.setattr(engine.F, "cross_entropy", spy)
    fit(net(), digits[0], None, FitConfig(**{**QUICK.__dict__, "label_smoothing": 0.3}))
    assert seen and set(seen) == {0.3}


def test_precision_settings_on_the_cpu(digits: tuple[ImageData, ImageData]) -> None:
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA device"):
        fit(net(), digits[0], None, FitConfig(amp="fp16"))
    r = fit(net(), digits[0], None, FitConfig(**{**QUICK.__dict__, "amp": "bf16"}))  # asked for: allowed
    assert math.isfinite(r.history["train_loss"][0])
    a = fit(net(), digits[0], None, QUICK)
    b = fit(net(), digits[0], None, FitConfig(**{**QUICK.__dict__, "channels_last": True}))
    assert b.history["train_loss"][0] == pytest.approx(a.history["train_loss"][0], rel=1e-3)


def test_predict_in_chunks_and_after_running_out_of_memory(digits: tuple[ImageData, ImageData]) -> None:
    model = net().eval()
    val = digits[1]
    full = predict(model, val)
    assert full.shape == (len(val), 10) and full.dtype == torch.float32 and full.device.type == "cpu"
    assert torch.allclose(predict(model, val, chunk=7), full, atol=1e-5)

    class Picky(nn.Module):  # runs out of memory on more than 16 images at once
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if len(x) > 16:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner(x)

    picky = Picky().train()
    assert torch.allclose(predict(picky, val, chunk=100), full, atol=1e-5)
    assert picky.training  # the caller's mode comes back
    mirrored = ImageData(val.x.flip(-1), val.y, val.mean, val.std, val.classes)
    tta = predict(model, val, chunk=7, flip_tta=True)  # the mean of each image's and its mirror's logits
    assert torch.allclose(tta, (full + predict(model, mirrored)) / 2, atol=1e-5)


def test_evaluate_classifier() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [3.0, 0.0, 1.0]])
    y = torch.tensor([0, 1, 0, 2])
    ev = evaluate_classifier(logits, y, ("a", "b", "c"))
    assert ev["n"] == 4 and ev["top1_err"] == pytest.approx(0.5) and ev["top5_err"] == 0.0
    assert ev["confusion"] == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert ev["per_class"]["recall"] == pytest.approx([0.5, 1.0, 0.0])
    assert ev["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))


def test_image_data() -> None:
    x = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ds = ArrayDataset("t", x, torch.zeros(50, dtype=torch.int64), ("a", "b"))
    d = ImageData.from_dataset(ds, CPU)
    f = x.double() / 255
    assert d.mean == pytest.approx(f.mean((0, 2, 3)).tolist()) and d.std == pytest.approx(
        f.std((0, 2, 3), unbiased=False).tolist())
    z = d.normalise(x)
    assert z.dtype == torch.float32 and torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    e = ImageData.from_dataset(ds, CPU, mean=torch.tensor(d.mean), std=list(d.std))  # tensors or lists
    assert e.mean == pytest.approx(d.mean) and isinstance(e.mean, tuple)
    assert batch_bounds(129, 64) == [0, 64, 129] and batch_bounds(130, 64) == [0, 64, 128, 130]
    with pytest.raises(ConfigError):
        ImageData(x, torch.zeros(50, dtype=torch.int64), (0.5,), (0.2,))  # one value for three channels


@pytest.mark.parametrize("bad", [dict(optimizer="lbfgs"), dict(schedule="cyclic"), dict(lr=0.0), dict(epochs=0),
                                 dict(amp="fp8"), dict(label_smoothing=0.9), dict(momentum=0.0, optimizer="sgd",
                                                                                  nesterov=True)])
def test_bad_recipes_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigError):
        FitConfig(**bad)


@pytest.mark.skipif(not FASHION.is_dir(), reason="the shared Fashion-MNIST copy is absent")
def test_a_short_real_run_on_fashion_mnist() -> None:
    root = FASHION.parent
    tr = take(load("fashion_mnist", "train", data_dir=root), 2000, 0)
    te = take(load("fashion_mnist", "test", data_dir=root), 500, 1)
    train = ImageData.from_dataset(tr, CPU)
    test = ImageData.from_dataset(te, CPU, train.mean, train.std)
    with seeded(0):
        model = build_cnn(CNNConfig(family="simple", width=0.25, in_channels=1, dropout=0.0))
    r = fit(model, train, None, FitConfig(epochs=1, batch_size=32, lr=3e-3))  # ~63 steps, ~3 s on one core
    ev = evaluate_classifier(predict(r.model, test), test.y, tuple(te.classes))
    assert 1 - ev["top1_err"] > 0.55, ev["top1_err"]  # chance is 0.1; measured 0.73
