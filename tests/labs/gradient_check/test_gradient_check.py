"""Gradient check core: hand-written backprop agrees with autograd and the numerical gradient; planted bugs fail."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.labs.gradient_check import cli
from explorer.labs.gradient_check import lab as gc

SMALL = dict(data="random", batch_size=8, hidden=6, max_entries=30)  # a tiny random batch: milliseconds


def _errors(result: gc.CheckResult) -> dict[str, gc.ParamCheck]:
    return {r.name: r for r in result.rows}


@pytest.mark.parametrize("model", list(gc.MODELS))
def test_analytic_matches_autograd_and_numerical_in_float64(model):
    rows = _errors(gc.run_check(gc.CheckConfig(model=model, **SMALL), sweep=False))
    assert set(rows) == ({"W", "b"} if model == "softmax" else {"W1", "b1", "W2", "b2"})
    for r in rows.values():
        assert r.err_autograd < 1e-9, r
        assert r.err_numerical < 1e-6, r
        assert r.verdict == "pass"


@pytest.mark.parametrize("model", list(gc.MODELS))
def test_digits_batch_passes(model, tmp_path: Path):
    result = gc.run_check(gc.CheckConfig(model=model, batch_size=16), cache=Cache(tmp_path / "cache"), sweep=False)
    assert "digits" in result.data_note
    for r in result.rows:
        assert r.err_autograd < 1e-9 and r.err_numerical < 1e-6 and r.verdict == "pass", r
    big = next(r for r in result.rows if r.total > 40)  # a weight matrix: a random subset of its entries
    assert big.checked == 40


@pytest.mark.parametrize("model", list(gc.MODELS))
@pytest.mark.parametrize("bug", [b for b in gc.BUGS if b != "none"])
def test_each_planted_bug_fails_exactly_on_its_parameters(model, bug):
    rows = _errors(gc.run_check(gc.CheckConfig(model=model, bug=bug, **SMALL), sweep=False))
    affected = gc.BUGS[bug].affects[model]
    assert affected
    for name, r in rows.items():
        assert r.bugged == (name in affected)
        assert r.verdict == ("fail" if name in affected else "pass"), (name, r)


def test_float32_gives_larger_errors():
    f64 = _errors(gc.run_check(gc.CheckConfig(model="two_layer", **SMALL), sweep=False))
    f32 = _errors(gc.run_check(gc.CheckConfig(model="two_layer", dtype="float32", **SMALL), sweep=False))
    for name in f64:
        assert f32[name].err_numerical > 100 * f64[name].err_numerical
        assert f32[name].err_autograd > f64[name].err_autograd
    assert any(r.verdict != "pass" for r in f32.values())


@pytest.mark.parametrize("model", list(gc.MODELS))
def test_h_sweep_is_a_v(model):
    """float64: large at h = 1e-1 (truncation) and at 1e-10 (round-off), lowest in between and below 1e-7."""
    result = gc.run_check(gc.CheckConfig(model=model, **SMALL))
    assert {row["h"] for row in result.sweep} == set(gc.SWEEP_H)
    for dtype in gc.DTYPES:
        worst = {h: max(r["rel_error"] for r in result.sweep if r["h"] == h and r["dtype"] == dtype)
                 for h in gc.SWEEP_H}
        best_h = min(worst, key=worst.get)
        if dtype == "float64":
            assert 1e-7 <= best_h <= 1e-3 and worst[best_h] < 1e-7
            assert worst[1e-1] > 100 * worst[best_h] and worst[1e-10] > 100 * worst[best_h]
        else:
            assert worst[best_h] > 1e-5 and best_h >= 1e-4  # float32's best is far worse, at a larger h
            assert worst[1e-10] == pytest.approx(1.0)  # x + h rounds back to x: the numerical gradient is 0


def test_rel_error_and_verdicts():
    assert gc.rel_error(torch.zeros(3), torch.zeros(3)) == 0.0  # two exact zeros agree
    assert gc.rel_error(torch.tensor([1.0, 2.0], dtype=torch.float64),
                        torch.tensor([1.0, 2.0 + 4e-8], dtype=torch.float64)) == pytest.approx(1e-8, rel=1e-3)
    assert gc.verdict(1e-8) == "pass" and gc.verdict(1e-5) == "suspicious" and gc.verdict(1e-2) == "fail"
    assert gc.verdict(math.nan) == "fail"


@pytest.mark.parametrize("change, word", [({"h": 1.0}, "h"), ({"lam": -1.0}, "lambda"), ({"batch_size": 0}, "batch"),
                                          ({"hidden": 1}, "hidden"), ({"bug": "typo"}, "bug"),
                                          ({"dtype": "float16"}, "dtype"), ({"bug": "no_l2_grad", "lam": 0.0}, "lambda")])
def test_config_refuses_out_of_range(change, word):
    with pytest.raises(ConfigError, match=word):
        gc.CheckConfig(**change)


def test_cli_prints_the_table(capsys):
    assert cli.main(["--model", "two_layer", "--bug", "no_bias_grad", "--data", "random", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "b1" in out and "fail" in out and "pass" in out and "Thresholds" in out
    assert cli.main(["--h", "5"]) == 2  # out of range: refused like every CLI's setting
    assert capsys.readouterr().err.startswith("setting refused: ")
