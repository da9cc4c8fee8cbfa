"""Function fitting lab: parameter counts of the report's networks, the budget builder, targets, training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from explorer.core.config import ConfigError
from explorer.labs.function_fitting import cli, fit1d, images
from explorer.train.evaluate import Diverged

CPU = torch.device("cpu")
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"


def test_report_presets_have_the_reports_parameter_counts():
    counts = {name: fit1d.num_params(h) for name, h in fit1d.PRESETS.items()}
    assert list(counts.values()) == [571, 712, 571]
    for h in fit1d.PRESETS.values():  # the formula agrees with torch's own count
        assert fit1d.num_params(h) == sum(p.numel() for p in fit1d.make_mlp(h, "tanh").parameters())
    assert fit1d.layer_list(fit1d.PRESETS["shallow 1-190-1"]) == "1-190-1"


@pytest.mark.parametrize("build", [images.shallow_cnn, images.deep_cnn])
def test_both_cnns_have_112970_parameters_and_classify_28x28_and_8x8(build):
    model = build(1, 10)
    assert images.count(model) == 112_970
    for side in (28, 8):
        assert model(torch.zeros(2, 1, side, side)).shape == (2, 10)


def test_budget_builder_finds_the_closest_equal_width_net():
    assert fit1d.budget_widths(1, 571) == ((190,), 571)
    for depth, budget in ((3, 571), (6, 571), (2, 5000)):
        hidden, n = fit1d.budget_widths(depth, budget)
        assert len(hidden) == depth and len(set(hidden)) == 1 and n == fit1d.num_params(hidden)
        best = min(abs(fit1d.num_params((w,) * depth) - budget) for w in range(1, 300))
        assert abs(n - budget) == best
    with pytest.raises(ConfigError, match="depth must be between"):
        fit1d.budget_widths(0, 571)


def test_layer_lists_parse_and_bad_ones_are_refused():
    assert fit1d.parse_layers("1-5-10-1") == (5, 10)
    assert fit1d.parse_layers("5, 10") == (5, 10)
    for bad in ("2-5-1", "1-x-1", "", "1-1"):
        with pytest.raises(ConfigError):
            fit1d.parse_layers(bad)
    with pytest.raises(ConfigError, match="parameters"):
        fit1d.FitConfig(models=((2048, 2048),))
    with pytest.raises(ConfigError, match="learning rate"):
        fit1d.FitConfig(lr=50.0)


def test_targets_on_their_intervals():
    sinc = fit1d.TARGETS["sinc5"]
    assert (sinc.lo, sinc.hi) == (0.01, 1.0)  # the default; 0 is left out
    assert fit1d.FitConfig().target == "sinc5"
    x = torch.tensor([0.01, 0.2, 1.0])
    assert torch.allclose(sinc.fn(x), torch.tensor([0.99589, 0.0, 0.0]), atol=1e-4)
    assert fit1d.TARGETS["step"].fn(torch.tensor([-0.5, 0.5])).tolist() == [0.0, 1.0]
    assert fit1d.TARGETS["square"].fn(torch.tensor([1 / 6, 1 / 2])).tolist() == [1.0, -1.0]
    for name in fit1d.TARGETS:
        data = fit1d.make_data(fit1d.FitConfig(target=name, n_train=50, n_grid=100))
        assert data.x.shape == (50, 1) and data.grid_y.shape == (100, 1)
        assert torch.isfinite(data.y).all() and torch.isfinite(data.grid_y).all()


def test_short_training_reduces_loss_and_reports_every_epoch_and_curves():
    cfg = fit1d.FitConfig(models=((8, 8), (20,)), epochs=60, draw_every=20, n_grid=50, batch_size=16)
    seen = []
    hist = fit1d.train(cfg, lambda up, h: seen.append(up), device=CPU)
    assert hist.epoch == list(range(1, 61))
    assert [len(row) for row in hist.loss] == [60, 60]
    assert all(row[-1] < 0.5 * row[0] for row in hist.loss)
    assert hist.curves_epoch == 60 and [len(c) for c in hist.curves] == [50, 50]
    assert [u.curves_epoch for u in seen if u.curves is not None] == [1, 20, 40, 60] and seen[-1].final


def test_divergence_stops_with_a_message(monkeypatch):
    huge = fit1d.Target("overflows float32", lambda x: x * 1e30, 0.0, 1.0)
    monkeypatch.setitem(fit1d.TARGETS, "huge", huge)
    with pytest.raises(Diverged, match=r"network 1-4-1 diverged at step 1 .*non-finite.*learning rate"):
        list(fit1d.iter_training(fit1d.FitConfig(target="huge", models=((4,),), epochs=5), CPU))


def test_images_short_comparison_reports_each_epoch_of_both():
    cfg = images.ImageConfig(n_train=128, n_test=100, epochs=2, batch_size=64)
    result = images.train_pair(cfg, device=CPU)
    assert result["dataset"] == "digits" and result["params"] == {"shallow": 112_970, "deep": 112_970}
    rows = images.table(result)
    assert [(r["model"], r["epoch"]) for r in rows] == [("shallow", 1), ("shallow", 2), ("deep", 1), ("deep", 2)]
    assert all(0 <= r["test acc"] <= 1 and r["train loss"] > 0 for r in rows)
    with pytest.raises(ConfigError, match="dataset"):
        images.ImageConfig(dataset="imagenet")


def test_fashion_mnist_images_are_28x28(monkeypatch):
    if not (SHARED / "FashionMNIST").is_dir():
        pytest.skip("Fashion-MNIST is not in the shared data folder")
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(SHARED))
    x, y, xt, yt, used, notice = images.load_images(images.ImageConfig(dataset="fashion_mnist", n_train=200,
                                                                       n_test=100))
    assert used == "fashion_mnist" and notice is None
    assert x.shape == (200, 1, 28, 28) and xt.shape == (100, 1, 28, 28)
    assert images.deep_cnn()(x[:4]).shape == (4, 10)


def test_cli_prints_a_table_and_refuses_bad_settings(capsys):
    assert cli.main(["1d", "--epochs", "30", "--depth", "2", "--budget", "200", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "1-190-1" in out and "571" in out and "712" in out and "grid MSE" in out
    assert cli.main(["1d", "--lr", "50"]) == 2
    assert "learning rate" in capsys.readouterr().err
