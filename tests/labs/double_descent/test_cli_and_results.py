"""The sweep command as README says (reuse a cached summary, --force, --live), the clearest-peak rule, estimates."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.labs.double_descent import run as run_mod
from explorer.labs.double_descent.random_features import RF_ENGINE_VERSION
from explorer.labs.double_descent.results import (clearest_sweep, engine_note, list_sweeps, peak_rise,
                                                  recompute_command)
from explorer.labs.double_descent.run import plan_sweep, run_sweep
from explorer.labs.double_descent.spec import (METRICS, POINT_KIND, SWEEP_KIND, SweepSpec, live_args, live_spec,
                                               parse_live, point_config)
from explorer.labs.double_descent.train import ENGINE_VERSION, numerics_probe

TINY = SweepSpec(name="cli-tiny", dataset="digits", train_size=150, test_size=100, label_noise=(0.0,),
                 widths=(4, 8), epochs=2, batch_size=50, seeds=(0,))


def _summary(cache: Cache, name: str, family: str, errors: list[float]) -> None:
    """A synthetic summary entry whose seed-mean test error at the last epoch over widths 1..N is `errors`."""
    widths = tuple(range(1, len(errors) + 1))
    spec = SweepSpec(name=name, family=family, label_noise=(0.1,), widths=widths, seeds=(0,), epochs=1)
    table = torch.zeros(len(errors), 1, len(METRICS))
    table[:, 0, METRICS.index("test_err")] = torch.tensor(errors)
    points = [{"width": w, "noise": 0.1, "seed": 0, "params": w, "wall_time_s": 1.0, "device": "cpu"} for w in widths]
    cache.put(SWEEP_KIND, spec.key_config(), {"metric_names": list(METRICS), "epochs": [1], "points": points},
              {"metrics": table}, {"sweep_name": name})


def test_the_clearest_sweep_is_the_largest_rise_over_the_preceding_minimum(tmp_path) -> None:
    cache = Cache(tmp_path / "rt", tmp_path / "none")
    _summary(cache, "monotone", "mlp", [0.6, 0.5, 0.4, 0.3])
    _summary(cache, "small-peak", "mlp", [0.6, 0.4, 0.45, 0.3])
    _summary(cache, "big-peak", "cnn5", [0.6, 0.4, 0.3, 0.5, 0.35])
    _summary(cache, "rf-huge-peak", "rf_relu", [0.3, 0.9, 0.3])
    by_name = {e.config["name"]: e for e in list_sweeps(cache)}
    rise, at = peak_rise(by_name["big-peak"])
    assert rise == pytest.approx(0.2) and (at["low_width"], at["peak_width"]) == (3, 4)
    assert peak_rise(by_name["monotone"])[0] < 0
    # trained networks first: random features have their own view
    assert clearest_sweep(list(by_name.values())).config["name"] == "big-peak"
    assert clearest_sweep([by_name["rf-huge-peak"], by_name["monotone"]]).config["name"] == "monotone"
    assert clearest_sweep([by_name["rf-huge-peak"]]).config["name"] == "rf-huge-peak"
    assert clearest_sweep([]) is None


def test_the_shipped_sweep_with_the_clearest_peak_is_the_mnist1d_notebook_recipe(tmp_path) -> None:
    best = clearest_sweep(list_sweeps(Cache(tmp_path)))
    assert best is not None and best.config["name"] == "mnist1d-mlp-notebook"
    rise, at = peak_rise(best)
    assert rise > 0.05 and at["noise"] == pytest.approx(0.15)


def test_live_sweeps_round_trip_through_the_command_line_form() -> None:
    spec = live_spec([16, 4, 64], 15, 30)
    args = live_args(spec)
    assert args == "--live widths=4,16,64 noise=15 epochs=30"
    assert parse_live(args.split()[1:]) == spec
    assert live_args(dataclasses.replace(spec, lr=0.1)) is None  # not what the page computes
    assert live_args(TINY) is None
    with pytest.raises(ConfigError, match="--live takes"):
        parse_live(["widths=4", "noise=15"])
    with pytest.raises(ConfigError, match="whole numbers"):
        parse_live(["widths=4,x", "noise=15", "epochs=30"])
    with pytest.raises(ConfigError, match="live widths"):
        parse_live(["widths=5", "noise=15", "epochs=30"])


def test_a_live_sweeps_provenance_gives_a_command_the_cli_accepts(tmp_path, monkeypatch, capsys) -> None:
    cache = Cache(tmp_path / "rt", tmp_path / "shipped")
    monkeypatch.setattr(run_mod, "default_cache", lambda: cache)
    entry = run_sweep(live_spec([2, 4], 0, 5), cache=cache).entry
    command = recompute_command(entry)
    assert command == "python -m explorer sweep --live widths=2,4 noise=0 epochs=5"
    assert run_mod.main(command.split()[4:]) == 0
    err = capsys.readouterr().err
    assert "all 2 points reused, nothing to compute" in err


def test_sweep_reuses_a_cached_summary_and_force_recomputes(tmp_path, monkeypatch, capsys) -> None:
    spec_file = tmp_path / "tiny.toml"
    spec_file.write_text('[sweep]\nname = "cli-tiny"\ndataset = "digits"\ntrain_size = 150\ntest_size = 100\n'
                         'label_noise = [0.0]\nwidths = [4, 8]\nepochs = 2\nbatch_size = 50\nseeds = [0]\n')
    shipped = Cache(tmp_path / "shipped-writer")
    run_sweep(TINY, cache=shipped)  # a summary "shipped with the app": in the shipped root below
    cache = Cache(tmp_path / "rt", tmp_path / "shipped-writer")
    monkeypatch.setattr(run_mod, "default_cache", lambda: cache)
    plan = plan_sweep(TINY, cache)
    assert plan.summary is not None and plan.summary.shipped and plan.missing == []
    assert run_mod.main([str(spec_file)]) == 0
    out = capsys.readouterr()
    assert "is in cache/shipped" in out.err and "done: 0 points computed, 2 found" in out.out
    assert not any(cache.root.glob("dd_point/??/*"))  # nothing was trained
    assert run_mod.main([str(spec_file), "--force"]) == 0
    out = capsys.readouterr()
    assert "0 points cached, 2 to compute; estimated time about" in out.err  # measured by the shipped summary
    assert "done: 2 points computed, 0 found" in out.out
    assert len(list(cache.root.glob("dd_point/??/*"))) == 2


def test_the_estimate_scales_measured_points_and_says_when_there_are_none(tmp_path) -> None:
    cache = Cache(tmp_path / "rt", tmp_path / "none")
    seconds, why = run_mod.estimate_seconds(TINY, TINY.points(), cache)
    assert seconds is None and "no measured mlp point on digits" in why
    res = run_sweep(TINY, cache=cache)
    measured = sum(p["wall_time_s"] for p in res.entry.metrics["points"])
    seconds, why = run_mod.estimate_seconds(TINY, TINY.points(), cache)
    assert seconds == pytest.approx(measured) and "cli-tiny (2 points)" in why
    double = dataclasses.replace(TINY, name="longer", epochs=4)
    assert run_mod.estimate_seconds(double, double.points(), cache)[0] == pytest.approx(2 * measured)
    missing = plan_sweep(double, cache)
    assert len(missing.missing) == 2 and missing.cached == 0 and missing.estimate_s == pytest.approx(2 * measured)
    assert cache.get("dd_point", point_config(TINY, TINY.points()[0])) is not None


def test_an_entry_of_another_engine_version_is_flagged_with_its_recompute_command(tmp_path) -> None:
    cache = Cache(tmp_path / "rt", tmp_path / "none")
    _summary(cache, "old-mlp", "mlp", [0.5, 0.4])  # no version recorded: v1, today's for trained families
    _summary(cache, "old-rf", "rf_relu", [0.5, 0.4])
    by_name = {e.config["name"]: e for e in list_sweeps(cache)}
    assert engine_note(by_name["old-mlp"]) is None
    assert engine_note(by_name["old-rf"]) == (
        f"computed with an earlier engine (v1; today's is v{RF_ENGINE_VERSION}): recompute with "
        "`python -m explorer sweep SPEC.toml`")
    entry = run_sweep(TINY, cache=cache).entry
    assert entry.meta["engine_version"] == ENGINE_VERSION and entry.meta["numerics"] == numerics_probe("mlp")
    assert engine_note(entry) is None
    newer = cache.put(SWEEP_KIND, {**entry.config, "name": "newer"}, entry.metrics, entry.tensors(),
                      {**entry.meta, "engine_version": ENGINE_VERSION + 1})
    assert engine_note(newer).startswith(f"computed with another engine (v{ENGINE_VERSION + 1}; today's is "
                                         f"v{ENGINE_VERSION})")


def test_points_and_summaries_of_another_engine_are_recomputed_not_reused(tmp_path) -> None:
    cache = Cache(tmp_path / "rt", tmp_path / "none")
    first = run_sweep(TINY, cache=cache)
    point = cache.get(POINT_KIND, point_config(TINY, TINY.points()[0]))
    assert point.meta["engine_version"] == ENGINE_VERSION and point.metrics["num_classes"] == 10
    cache.delete(POINT_KIND, point.config)
    cache.put(POINT_KIND, point.config, {**point.metrics, "test_err": [0.999] * 2}, None,
              {**point.meta, "engine_version": ENGINE_VERSION - 1})
    cache.delete(SWEEP_KIND, TINY.key_config())
    cache.put(SWEEP_KIND, TINY.key_config(), first.entry.metrics, first.entry.tensors(),
              {**first.entry.meta, "engine_version": ENGINE_VERSION - 1})
    plan = plan_sweep(TINY, cache)
    assert plan.summary is None and plan.missing == [TINY.points()[0]]
    again = run_sweep(TINY, cache=cache)
    assert (again.computed, again.cached, again.reused) == (1, 1, False)
    assert cache.get(POINT_KIND, point.config).metrics["test_err"] == point.metrics["test_err"]
    assert again.entry.meta["engine_version"] == ENGINE_VERSION
    assert torch.equal(again.entry.tensors()["metrics"], first.entry.tensors()["metrics"])


def test_shipping_a_sweep_removes_the_shipped_summary_of_the_same_name_it_replaces(tmp_path) -> None:
    ship = Cache(tmp_path / "ship", tmp_path / "ship")
    old = run_sweep(TINY, cache=ship).entry
    other = run_sweep(dataclasses.replace(TINY, name="other"), cache=ship).entry
    new_spec = dataclasses.replace(TINY, epochs=3)
    new = run_sweep(new_spec, cache=ship).entry
    assert run_mod.replaced_shipped(new_spec, new.key, ship) == [old.key]
    assert {e.key for e in ship.entries(SWEEP_KIND)} == {other.key, new.key}


def test_shipping_a_changed_spec_file_replaces_the_summary_shipped_under_its_name(tmp_path, monkeypatch,
                                                                                 capsys) -> None:
    ship = Cache(tmp_path / "ship", tmp_path / "ship")
    cache = Cache(tmp_path / "rt", tmp_path / "ship")
    monkeypatch.setattr(run_mod, "default_cache", lambda: cache)
    monkeypatch.setattr(run_mod, "shipped_cache", lambda: ship)
    spec_file = tmp_path / "rf.toml"
    text = ('[sweep]\nname = "rf-cli"\ndataset = "digits"\ntrain_size = 150\ntest_size = 100\nlabel_noise = [0.0]\n'
            'family = "rf_fourier"\nwidths = [50, 200]\nseeds = [0]\n')
    spec_file.write_text(text)
    assert run_mod.main([str(spec_file), "--ship"]) == 0
    [first] = ship.entries(SWEEP_KIND)
    spec_file.write_text(text + "bandwidth = 5\n")
    assert run_mod.main([str(spec_file), "--ship"]) == 0
    [second] = ship.entries(SWEEP_KIND)
    assert second.key != first.key and second.config["bandwidth"] == 5.0
    assert f"removed the shipped summary it replaces (same name, another spec or engine): {first.key}" in \
        capsys.readouterr().out


def test_the_threshold_peak_is_at_the_narrowest_fitted_width_of_its_epoch(tmp_path) -> None:
    """At each epoch the candidate is the narrowest width whose train error is FIT_TOLERANCE or less; the clearest
    epoch wins, so a peak that flattens later is still found (and an unfitted wide model's bump is not one)."""
    from explorer.labs.double_descent.results import threshold_peak

    cache = Cache(tmp_path / "rt", tmp_path / "none")
    spec = SweepSpec(name="moving", family="cnn5", label_noise=(0.2,), widths=(1, 2, 3, 4), seeds=(0,), epochs=2)
    table = torch.zeros(4, 2, len(METRICS))
    test, train = METRICS.index("test_err"), METRICS.index("train_err")
    table[:, 0, test] = torch.tensor([0.6, 0.4, 0.5, 0.3])  # epoch 1: width 3 has just fitted, width 2 not
    table[:, 0, train] = torch.tensor([0.5, 0.3, 0.05, 0.0])
    table[:, 1, test] = torch.tensor([0.6, 0.45, 0.44, 0.3])  # epoch 2: width 2 fits too; no bump left
    table[:, 1, train] = torch.tensor([0.5, 0.08, 0.0, 0.0])
    points = [{"width": w, "noise": 0.2, "seed": 0, "params": w, "wall_time_s": 1.0, "device": "cpu"}
              for w in spec.widths]
    cache.put(SWEEP_KIND, spec.key_config(), {"metric_names": list(METRICS), "epochs": [10, 20], "points": points},
              {"metrics": table}, {"sweep_name": "moving"})
    entry = list_sweeps(cache)[0]
    rise, at = threshold_peak(entry)
    assert rise == pytest.approx(0.1) and at == {"noise": 0.2, "epoch": 10, "low_width": 2, "low": pytest.approx(0.4),
                                                 "peak_width": 3, "peak": pytest.approx(0.5)}
    assert peak_rise(entry)[0] < 0  # at the last epoch the error only falls with width


def test_a_threshold_bump_that_keeps_rising_is_not_a_peak(tmp_path) -> None:
    """Early in training wide models overfit first: an error that rises at the narrowest fitted width and keeps
    rising past it is no double-descent peak."""
    from explorer.labs.double_descent.results import threshold_peak

    cache = Cache(tmp_path / "rt", tmp_path / "none")
    spec = SweepSpec(name="rising", family="cnn5", label_noise=(0.2,), widths=(1, 2, 3, 4), seeds=(0,), epochs=1)
    table = torch.zeros(4, 1, len(METRICS))
    table[:, 0, METRICS.index("test_err")] = torch.tensor([0.5, 0.3, 0.35, 0.4])
    table[:, 0, METRICS.index("train_err")] = torch.tensor([0.5, 0.3, 0.05, 0.0])
    points = [{"width": w, "noise": 0.2, "seed": 0, "params": w, "wall_time_s": 1.0, "device": "cpu"}
              for w in spec.widths]
    cache.put(SWEEP_KIND, spec.key_config(), {"metric_names": list(METRICS), "epochs": [5], "points": points},
              {"metrics": table}, {"sweep_name": "rising"})
    assert threshold_peak(list_sweeps(cache)[0])[0] == float("-inf")


def test_the_shipped_cifar10_sweep_peaks_at_the_threshold_before_its_last_epoch(tmp_path) -> None:
    from explorer.labs.double_descent.results import shows_peak, threshold_peak

    entry = next((e for e in list_sweeps(Cache(tmp_path)) if e.shipped and e.config["name"] == "cifar10-cnn5"), None)
    if entry is None:
        pytest.skip("cifar10-cnn5 is not shipped")
    rise, at = threshold_peak(entry)
    assert shows_peak(rise) and not shows_peak(peak_rise(entry)[0])
    assert (at["noise"], at["peak_width"]) == (pytest.approx(0.2), 4) and rise > 0.03


def test_a_rise_under_a_point_is_not_called_a_peak(tmp_path) -> None:
    """The page calls a model-wise peak only from a rise of MIN_PEAK_RISE up: a one-seed wiggle is noise."""
    from explorer.labs.double_descent.results import MIN_PEAK_RISE, shows_peak

    cache = Cache(tmp_path / "rt", tmp_path / "none")
    _summary(cache, "wiggle", "cnn5", [0.8, 0.701, 0.708, 0.6])
    rise = peak_rise(list_sweeps(cache)[0])[0]
    assert 0 < rise < MIN_PEAK_RISE and not shows_peak(rise)
    assert shows_peak(0.025)  # a rise of 2.5 points is called a peak
