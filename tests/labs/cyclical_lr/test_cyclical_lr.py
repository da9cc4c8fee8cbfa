"""Cyclical LR lab: the triangular schedule, L2 gradients, the range test, divergence, overfitting, CIFAR-10, CLI."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch

from explorer.core.cache import Cache, Entry, default_shipped_root
from explorer.core.config import ConfigError
from explorer.core.device import recorded_threads, torch_threads
from explorer.core.provenance import cpu_description
from explorer.labs.cyclical_lr import cli, lab, schedule
from explorer.train.evaluate import Diverged

CPU = torch.device("cpu")
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"


def _toy(n: int = 600, d: int = 20, classes: int = 4, seed: int = 0) -> lab.Data:
    """Gaussian blobs, separable enough for a softmax net: train, validation and test parts."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, d, generator=g)

    def part(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (m,), generator=g)
        return centres[y] + torch.randn(m, d, generator=g), y

    (x, y), (xv, yv), (xt, yt) = part(n), part(200), part(200)
    return lab.Data(x, y, xv, yv, xt, yt, "toy", None, classes)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> lab.Data:
    data = _toy()
    monkeypatch.setattr(lab, "load_data", lambda *a, **k: data)
    return data


def test_triangular_schedule_at_known_steps():
    lo, hi, n_s = 1e-5, 1e-1, 800
    assert schedule.triangular(0, lo, hi, n_s) == pytest.approx(lo)
    assert schedule.triangular(n_s, lo, hi, n_s) == pytest.approx(hi)
    assert schedule.triangular(2 * n_s, lo, hi, n_s) == pytest.approx(lo)
    assert schedule.triangular(n_s // 2, lo, hi, n_s) == pytest.approx((lo + hi) / 2)
    assert schedule.triangular(3 * n_s + n_s // 2, lo, hi, n_s) == pytest.approx((lo + hi) / 2)  # falling, cycle 2
    assert schedule.triangular(3 * n_s, lo, hi, n_s) == pytest.approx(hi)
    assert schedule.exponential(0, 1e-5, 10, 100) == pytest.approx(1e-5)
    assert schedule.exponential(99, 1e-5, 10, 100) == pytest.approx(10)
    pts = schedule.curve(lo, hi, n_s, 2)
    assert pts[0] == (0, pytest.approx(lo)) and pts[-1] == (4 * n_s, pytest.approx(lo))
    assert max(v for _, v in pts) == pytest.approx(hi)


def test_l2_gradient_is_two_lambda_w_on_weights_only_and_each_net_its_own():
    torch.manual_seed(0)
    x, y = torch.randn(16, 7), torch.randint(0, 3, (16,))
    lams = [0.0, 0.3]
    net = lab.Stack(2, 7, 3, "two_layer", 5, lams, seed=1, device=CPU)
    cost = net.losses(x, y) + net.l2()
    grads = torch.autograd.grad(cost.sum(), net.params())
    loss_grads = torch.autograd.grad(net.losses(x, y).sum(), net.params())
    for w, g, gl in zip(net.weights, grads, loss_grads):
        for i, lam in enumerate(lams):
            torch.testing.assert_close(g[i], gl[i] + 2 * lam * w[i].detach())
    nb = len(net.weights)
    for g, gl in zip(grads[nb:], loss_grads[nb:]):  # biases are not regularised
        torch.testing.assert_close(g, gl)
    # net 1's gradient is the gradient of its own cost alone (the stacked sum does not mix the nets)
    own = torch.autograd.grad(net.losses(x, y)[1] + net.l2()[1], net.params())
    for g, o in zip(grads, own):
        torch.testing.assert_close(g[1], o[1])
    # and it matches a finite difference on one weight
    w = net.weights[0]
    with torch.no_grad():
        eps = 1e-3
        w[1, 2, 3] += eps
        up = float((net.losses(x, y) + net.l2())[1])
        w[1, 2, 3] -= 2 * eps
        down = float((net.losses(x, y) + net.l2())[1])
        w[1, 2, 3] += eps
    assert grads[0][1, 2, 3].item() == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=1e-3)


def test_range_test_stops_when_the_loss_diverges(toy):
    cfg = lab.RangeConfig(dataset="digits", model="softmax", lr_low=1e-4, lr_high=1e3, steps=300, batch_size=50)
    m = lab.range_test(cfg, device=CPU)
    assert len(m["lr"]) < cfg.steps  # stopped before the highest rate
    assert "passed 4 x its best" in m["stopped"] or "non-finite" in m["stopped"]
    assert all(math.isfinite(s) for s in m["smoothed"])
    assert m["lr"] == sorted(m["lr"]) and m["lr"][0] == pytest.approx(1e-4)
    for lo, hi in m["suggestions"].values():
        assert 0 < lo < hi < m["lr"][-1]
    # the smoothed loss is bias-corrected: its first value is the first loss, not (1 - beta) x it
    assert m["smoothed"][0] == pytest.approx(m["loss"][0])


def test_suggest_picks_the_steepest_descent():
    lrs = [10 ** (-5 + 0.1 * i) for i in range(50)]
    smoothed = [2.0 - 1.5 / (1 + math.exp(-(math.log10(lr) + 2) * 4)) for lr in lrs]  # steepest at 1e-2
    smoothed[-5:] = [3, 4, 5, 6, 7]
    lo, hi = lab.suggest(lrs, smoothed, "steepest")
    assert hi == pytest.approx(1e-2, rel=0.3) and lo == pytest.approx(hi / 4)
    lo, hi = lab.suggest(lrs, smoothed, "smith")
    assert hi == pytest.approx(lrs[44] / 2)


def test_a_diverging_run_stops_at_once_and_says_why(toy):
    cfg = lab.TrainConfig(dataset="digits", eta_min=10.0, eta_max=10.0, n_s=200, cycles=1, batch_size=50)
    with pytest.raises(Diverged) as err:
        lab.train(cfg, device=CPU)
    assert "diverged at step" in str(err.value) and "learning rate 10 is probably too high" in str(err.value)
    assert err.value.step < lab.CHECK_EVERY * 4  # stopped within a few checks, not after the 400 steps


def test_search_stacks_the_samples_and_retrains_the_best(toy, recorder):
    cfg = lab.SearchConfig(dataset="digits", n_coarse=4, n_fine=3, n_s=20, cycles=1, final_cycles=1,
                           batch_size=50)
    m = lab.search(cfg, recorder, device=CPU)
    assert [r["stage"] for r in m["rows"]] == ["coarse"] * 4 + ["fine"] * 3
    coarse = [r["lambda"] for r in m["rows"][:4]]
    assert all(1e-5 <= v <= 1e-1 for v in coarse)
    best_coarse = max(m["rows"][:4], key=lambda r: r["val acc"])["lambda"]
    lo, hi = m["fine_range"]
    assert lo == pytest.approx(math.log10(best_coarse) - 0.5) and hi == pytest.approx(math.log10(best_coarse) + 0.5)
    assert m["final"]["lambda"] == max(m["rows"], key=lambda r: r["val acc"])["lambda"]
    assert 0.5 < m["final"]["test acc"] <= 1.0
    assert recorder.progress[-1] == pytest.approx(1.0) and recorder.checkpoints > 0


def test_overfit_a_small_set_reaches_full_training_accuracy():
    cfg = lab.overfit_config("digits")
    m = lab.train(cfg, device=CPU)
    h = m["history"][0]
    assert m["n_train"] == 100 and cfg.lam == 0
    assert h["train_acc"][-1] == 1.0
    assert h["val_acc"][-1] < 0.95  # the held-out images stay well below


def test_configs_refuse_out_of_range_settings_with_the_range():
    with pytest.raises(ConfigError, match="lambda must be between 0 and 10"):
        lab.TrainConfig(lam=-1.0)
    with pytest.raises(ConfigError, match="eta_min must be at most eta_max"):
        lab.TrainConfig(eta_min=0.5, eta_max=0.1)
    with pytest.raises(ConfigError, match="step size n_s must be between 1 and 20000"):
        lab.TrainConfig(n_s=0)
    with pytest.raises(ConfigError, match="data set must be one of"):
        lab.TrainConfig(dataset="imagenet")
    with pytest.raises(ConfigError, match="over 10x the lowest"):
        lab.RangeConfig(lr_low=1e-2, lr_high=5e-2)
    with pytest.raises(ConfigError, match="low end must be below"):
        lab.SearchConfig(log_lo=-1.0, log_hi=-3.0)
    with pytest.raises(ConfigError, match="batch size must be between"):
        lab.TrainConfig(batch_size=0)


@pytest.mark.parametrize("n, d", [(777, 64), (2000, 784), (1500, 3072), (300, 600)])
def test_statistics_by_column_blocks_are_those_of_one_float_copy_bit_for_bit(n, d):
    """load_data's per-pixel mean and std, STAT_COLUMNS columns at a time (a block's float copy, not the whole
    split's), equal those of one float copy of all the chosen rows bit for bit, for uint8 and float rows: the
    normalisation of every result, shipped ones included, is unchanged."""
    g = torch.Generator().manual_seed(d)
    raw = torch.randint(0, 256, (n + 50, d), generator=g, dtype=torch.uint8)
    raw[:, :3] = 7  # constant pixels: std clamped
    rows = torch.randperm(n + 50, generator=g)[:n]
    for flat in (raw, raw.float() / 3):
        whole = flat[rows].float().div_(255.0) if flat.dtype == torch.uint8 else flat[rows].float()
        mean, std = lab.column_stats(flat, rows)
        assert torch.equal(mean, whole.mean(0)) and torch.equal(std, whole.std(0).clamp_min(1e-3))


def test_results_are_cached_by_config(tmp_path, toy):
    cache = Cache(tmp_path / "c")
    cfg = lab.TrainConfig(dataset="digits", n_s=10, cycles=1, batch_size=50)
    first = lab.run(cfg, cache)
    assert first.meta["recompute"] == ("python -m explorer clr train --dataset digits --n-s 10 --cycles 1 "
                                       "--batch-size 50")
    again = lab.run(cfg, cache)
    assert again.path == first.path and again.metrics["test_acc"] == first.metrics["test_acc"]


def test_short_cifar10_run_on_the_shared_copy(monkeypatch):
    if not (SHARED / "cifar10-jpeg.zip").is_file() and not (SHARED / "cifar-10-batches-py").is_dir():
        pytest.skip("no CIFAR-10 in ../shared/datasets")
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(SHARED))
    cfg = lab.TrainConfig(n_s=150, cycles=1, evals_per_cycle=2, n_train=0)  # 300 steps, every training image
    m = lab.train(cfg, device=CPU)
    assert m["dataset"] == "cifar10" and m["notice"] is None
    assert (m["n_train"], m["n_val"], m["n_test"], m["dims"]) == (45_000, 5_000, 10_000, 3072)
    h = m["history"][0]
    assert h["val_acc"][-1] > 0.3 and m["test_acc"][0] > 0.3  # chance is 0.1
    assert h["train_cost"][-1] < h["train_cost"][0]


def test_cli_prints_tables_and_refuses_bad_settings(capsys):
    assert cli.main(["train", "--dataset", "digits", "--n-s", "20", "--cycles", "1"]) == 0
    out = capsys.readouterr().out
    assert "val acc" in out and "test accuracy" in out and "two-layer ReLU net" in out
    assert cli.main(["range", "--dataset", "digits", "--steps", "200"]) == 0
    assert "suggested (steepest)" in capsys.readouterr().out
    assert cli.main(["train", "--lam", "-1"]) == 2
    assert "lambda must be between" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", "digits", "--eta-min", "10", "--eta-max", "10", "--n-s", "50"]) == 1
    assert "diverged at step" in capsys.readouterr().err


def _shipped(kind: str, recompute: str) -> Entry:
    cache = Cache(Path(tempfile.mkdtemp(prefix="clr-shipped-")), shipped_root=default_shipped_root())
    found = [e for e in cache.entries(kind) if e.shipped and e.meta.get("recompute") == recompute]
    assert found, f"no shipped {kind} entry recomputed by {recompute}"
    return found[0]



def _finals(kind: str, m: dict) -> list[float]:
    """The numbers a result is read by: the test loss and accuracy, or the range test's best rate and lowest
    smoothed loss (not where it stops: the last steps diverge, and there other bits are far apart)."""
    return [m["best_lr"], min(m["smoothed"])] if kind == lab.KIND_RANGE else [*m["test_loss"], *m["test_acc"]]


@pytest.mark.parametrize("recompute", ["python -m explorer clr train --lam 0 --n-s 100 --cycles 2 --n-train 100 "
                                       "--evals-per-cycle 10", "python -m explorer clr range"])
def test_a_shipped_result_is_what_todays_code_computes(recompute):
    """The overfit check (5 s) and the range test (7 s), recomputed from their shipped settings at their thread
    count: bit for bit on the processor that shipped them; elsewhere (another or an unrecorded processor, whose
    matmul kernels may round differently) the final numbers to a part in a thousand."""
    if not (SHARED / "cifar10-jpeg.zip").is_file() and not (SHARED / "cifar-10-batches-py").is_dir():
        pytest.skip("no CIFAR-10 in ../shared/datasets")
    kind = lab.KIND_RANGE if " range" in recompute else lab.KIND_TRAIN
    entry = _shipped(kind, recompute)
    cfg = (lab.RangeConfig if kind == lab.KIND_RANGE else lab.TrainConfig)(**entry.config)
    with torch_threads(recorded_threads(entry.meta)):
        now = lab.COMPUTE[kind](cfg, device=CPU)
    keys = ("lr", "loss", "smoothed", "stopped", "best_lr") if kind == lab.KIND_RANGE else ("history", "test_acc",
                                                                                            "test_loss")
    if all(now[k] == entry.metrics[k] for k in keys):
        return
    assert entry.meta.get("cpu") != cpu_description(), "same processor and thread count, other bits: the code changed"
    assert _finals(kind, now) == pytest.approx(_finals(kind, entry.metrics), rel=1e-3, abs=1e-3)
