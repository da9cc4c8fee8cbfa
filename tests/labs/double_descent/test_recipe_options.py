"""Recipe options as spec fields (init, noise_scheme, bandwidth): validated, used, and keyed so old keys stay valid."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from explorer.core.cache import Cache, key_for
from explorer.core.config import ConfigError
from explorer.data import datasets
from explorer.data.noise import noise_seed, noisy_labels
from explorer.labs.double_descent import random_features as rf
from explorer.labs.double_descent.results import recipe_line, summary_spec
from explorer.labs.double_descent.run import cached_summary, run_sweep
from explorer.labs.double_descent.spec import (KEY_DEFAULTS, POINT_KIND, SWEEP_KIND, SweepSpec, load_data, load_spec,
                                               parse_spec, point_config)
from explorer.labs.double_descent.train import _FusedGroup, train_group
from explorer.nets import grouped as ddmodels

TINY = SweepSpec(name="opts", dataset="digits", train_size=200, test_size=100, label_noise=(0.0, 0.3), widths=(4, 8),
                 seeds=(0,), epochs=2, batch_size=50)
OLD_SKIP = {"name", "description", "widths", "seeds", "label_noise"}  # what recipe() left out before the new fields


def test_every_shipped_summary_and_its_points_keep_their_keys(tmp_path) -> None:
    shipped = [e for e in Cache(tmp_path).entries(SWEEP_KIND) if e.shipped]
    assert len(shipped) >= 4
    for entry in shipped:
        spec = summary_spec(entry)
        assert key_for(SWEEP_KIND, spec.key_config()) == entry.key, entry.config["name"]
        # the points were keyed by every field of the spec as it was, less the name, description and grid
        old_recipe = {k: v for k, v in entry.config.items() if k not in OLD_SKIP}
        assert spec.recipe() == old_recipe, entry.config["name"]
        p = spec.points()[0]
        assert key_for(POINT_KIND, point_config(spec, p)) == key_for(
            POINT_KIND, {**old_recipe, "width": p.width, "noise": p.noise, "seed": p.seed})


def test_new_fields_join_the_key_only_away_from_their_default() -> None:
    plain = TINY.key_config()
    assert not set(KEY_DEFAULTS) & set(plain)
    for field, value in (("init", "he_uniform"), ("noise_scheme", "uniform")):
        changed = dataclasses.replace(TINY, **{field: value})
        assert changed.key_config() == {**plain, field: value}
        assert changed.recipe()[field] == value and field not in TINY.recipe()
    rf_spec = dataclasses.replace(TINY, family="rf_fourier", widths=(50,))
    assert "bandwidth" not in rf_spec.recipe()
    assert dataclasses.replace(rf_spec, bandwidth=5.0).recipe()["bandwidth"] == 5.0


@pytest.mark.parametrize("change, message", [
    ('init = "xavier"', "init must be one of"),
    ('noise_scheme = "flip"', "noise_scheme must be one of"),
    ('bandwidth = 5', "bandwidth applies to rf_fourier only"),
    ('family = "rf_relu"\nwidths = [50]\nbandwidth = 5', "bandwidth applies to rf_fourier only"),
    ('family = "rf_fourier"\nwidths = [50]\nbandwidth = "wide"', "bandwidth must be one of"),
    ('family = "rf_fourier"\nwidths = [50]\nbandwidth = 0', "bandwidth must be between"),
    ('family = "rf_fourier"\nwidths = [50]\ninit = "he_uniform"', "init applies to trained families"),
    ('family = "rf_fourier"\nwidths = [50]\ntrain_size = 6000', "train_size (for rf_fourier)"),
])
def test_bad_recipe_options_are_refused_by_name(change: str, message: str) -> None:
    base = '[sweep]\nname = "x"\ndataset = "digits"\n'
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(base + change + "\n")


def test_a_whole_number_bandwidth_in_toml_is_sigma() -> None:
    spec = parse_spec('[sweep]\nname = "x"\ndataset = "digits"\nfamily = "rf_fourier"\nwidths = [50]\nbandwidth = 5\n')
    assert spec.bandwidth == 5.0 and isinstance(spec.bandwidth, float)


def test_he_uniform_init_draws_kaimings_bound_and_zero_biases() -> None:
    spec = dataclasses.replace(TINY, init="he_uniform")
    net = _FusedGroup([3, 6], [0, 1], 40, 10, spec, torch.device("cpu"))
    for k, w in enumerate([3, 6]):
        state = net.state(k)
        for i, fan_in in enumerate([40, w, w]):
            weight = state[f"layers.{i}.weight"]
            assert float(weight.abs().max()) <= math.sqrt(6 / fan_in)
            assert float(weight.abs().max()) > 0.5 * math.sqrt(6 / fan_in)  # uses the range, unlike 1/sqrt(fan_in)
            assert not state[f"layers.{i}.bias"].any()
    w1 = net.layers[1][0]  # (K, h, h) padded to 6: model 0's padding stays zero
    assert not w1[0, 3:].any() and not w1[0, :, 3:].any()
    default = _FusedGroup([3, 6], [0, 1], 40, 10, TINY, torch.device("cpu"))
    assert default.state(0)["layers.0.bias"].any()
    cnn = ddmodels.he_uniform_(ddmodels.build("cnn5", 2, 1, (1, 8, 8), 10))
    conv = cnn.features[0]
    assert not conv.bias.any() and float(conv.weight.detach().abs().max()) <= math.sqrt(6 / 9)


def test_noise_scheme_uniform_is_the_label_draw_the_training_uses() -> None:
    """The uniform scheme leaves some hit labels right, the other scheme none; the trained points see the same draw
    (their train error against the noisy labels at the first epoch differs between the schemes only at noise > 0)."""
    y = torch.arange(10).repeat(100)
    other = noisy_labels(y, 0.3, 10, noise_seed(0, 0.3), "other")
    uniform = noisy_labels(y, 0.3, 10, noise_seed(0, 0.3), "uniform")
    assert float((other != y).float().mean()) == pytest.approx(0.3)
    assert 0.22 < float((uniform != y).float().mean()) < 0.32  # about 0.3 x 9/10
    data = load_data(TINY)
    runs = {s: train_group(dataclasses.replace(TINY, noise_scheme=s), TINY.points()[:2], data)
            for s in ("other", "uniform")}
    assert runs["other"][0].metrics == runs["uniform"][0].metrics  # noise 0: nothing drawn
    assert runs["other"][1].metrics["train_err"] != runs["uniform"][1].metrics["train_err"]


def test_random_features_points_use_the_spec_scheme_and_bandwidth() -> None:
    spec = dataclasses.replace(TINY, family="rf_fourier", widths=(50, 300), noise_scheme="uniform", bandwidth=5.0)
    data = load_data(spec)
    got = {(r.point.width, r.point.noise): r for r in rf.sweep_points(spec, spec.points(), data)}
    y_tr = noisy_labels(data.y_train, 0.3, 10, noise_seed(0, 0.3), "uniform")
    y_te_noisy = noisy_labels(data.y_test, 0.3, 10, noise_seed(0, 0.3, 1), "uniform")
    [fit] = rf.fit_curve(data.x_train, y_tr, data.x_test, data.y_test, 10, (300,), "fourier", 0, 0.0, y_te_noisy,
                         bandwidth=5.0)
    r = got[(300, 0.3)]
    assert r.metrics["test_err"] == [fit.test_err] and r.metrics["test_loss_noisy"] == [fit.test_mse_noisy]
    median = dataclasses.replace(spec, bandwidth="median")
    other = {(r.point.width, r.point.noise): r for r in rf.sweep_points(median, median.points(), data)}
    assert other[(300, 0.3)].metrics["test_loss"] != r.metrics["test_loss"]


def test_the_mnist1d_test_split_has_1000_points_and_larger_sizes_are_refused() -> None:
    """mnist1d is the package's default 4,000 / 1,000 split; the notebook's recipe tests on mnist1d_16k's 12,000."""
    assert len(datasets.load("mnist1d", "test")) == 1000 and len(datasets.load("mnist1d", "train")) == 4000
    notebook = load_spec("sweeps/mnist1d_mlp_notebook.toml")
    assert (notebook.dataset, notebook.test_size) == ("mnist1d_16k", 12_000)
    assert notebook.init == "he_uniform" and notebook.noise_scheme == "uniform"
    with pytest.raises(ConfigError, match="test_size 12,000 is more than the 1,000 examples of mnist1d's test split"):
        load_data(dataclasses.replace(notebook, dataset="mnist1d"))
    with pytest.raises(ConfigError, match="more than the 12,000 examples of mnist1d_16k's test split"):
        load_data(dataclasses.replace(notebook, test_size=12_001))


def test_the_recipe_line_says_init_noise_definition_and_sizes(tmp_path) -> None:
    cache = Cache(tmp_path / "rt", tmp_path / "none")
    spec = dataclasses.replace(TINY, init="he_uniform", noise_scheme="uniform", label_noise=(0.0, 0.15))
    entry = run_sweep(spec, cache=cache).entry
    line = recipe_line(entry)
    assert line.startswith("He-uniform init (zero biases), uniform-label noise (Zhang et al. 2017")
    assert "13.5% of the train labels wrong at p = 15%" in line and line.endswith("200 train / 100 test points")
    assert cached_summary(spec, cache).key == entry.key
    plain = recipe_line(run_sweep(TINY, cache=cache).entry)
    assert plain.startswith("PyTorch's default init, other-class label noise (Nakkiran et al. 2021")
    assert "30% of the train labels wrong at p = 30%" in plain
    rf_spec = dataclasses.replace(TINY, family="rf_fourier", widths=(50,), bandwidth=5.0, label_noise=(0.0,))
    assert recipe_line(run_sweep(rf_spec, cache=cache).entry) == (
        "random Fourier features, bandwidth sigma = 5, minimum-norm least squares, no label noise, "
        "200 train / 100 test points")
