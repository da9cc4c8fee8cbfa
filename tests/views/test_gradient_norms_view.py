"""The gradient norms page in AppTest: the default side-by-side runs train live and draw log-scale per-layer charts
with the exact zeros shown, the depth slider redraws the heatmap, and refused settings say the allowed range."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from views.widgets import LECTURE_FONT

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "gradient_norms.py")


@pytest.fixture(autouse=True)
def one_thread():
    """The app runs its jobs with one intra-op thread (app.py's configure_threads); so do these tests."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _wait(at: AppTest, done, seconds: float = 90, every: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done(at):
        time.sleep(every)  # each rerun draws the page, CPU the job would use: the long wait looks less often
        at.run()


def _finished(at: AppTest) -> bool:
    return any("first iteration" in d.value.columns for d in at.dataframe)


def _heat(at: AppTest) -> bool:
    return any("over the run are exactly 0" in c.value or "No layer gradient is exactly 0" in c.value
               for c in at.caption)


def test_default_shows_the_vanishing_gradient_and_its_fixes(page_cache):
    at = _app()
    assert not at.exception
    assert any("What to look for" in m.value for m in at.markdown)
    assert any("float32" in i.value for i in at.info)  # the page says the dtype
    _wait(at, lambda a: _finished(a) and _heat(a), every=2.0)
    assert not at.exception and not at.error
    charts = [c.proto.spec.replace('":"', '": "') for c in at.get("vega_lite_chart")]
    assert len(charts) >= 5 and sum('"type": "log"' in c for c in charts) >= 3
    assert any("exactly 0" in c for c in charts)  # the zero marker's label
    assert any("layer gradients are exactly 0" in c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "first iteration" in d.value.columns)
    layer1 = table[(table["run"] == "plain, depth 60") & (table["layer"] == 1)]["first iteration"].item()
    res1 = table[(table["run"] == "residual, depth 60") & (table["layer"] == 1)]["first iteration"].item()
    assert layer1 == 0.0 and res1 > 1e-4
    assert {b.label for b in at.get("download_button")} >= {"Per-layer norms (CSV)", "Loss and total norm (CSV)",
                                                            "Heatmap data (CSV)"}
    at.run()  # a rerun draws everything from the cache at once
    assert not at.exception and _finished(at) and _heat(at)


def test_the_depth_slider_trains_a_new_depth_and_redraws_the_heatmap_in_lecture_mode(page_cache):
    at = _app(iterations="5", width="8", depth="4", lecture="1")
    _wait(at, lambda a: _finished(a) and _heat(a))
    assert not at.exception and not at.error and at.toggle(key="gn_lecture").value
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) >= 5 and all(s["config"]["axis"]["labelFontSize"] == LECTURE_FONT for s in specs)
    at.slider(key="gn_depth").set_value(7).run()
    _wait(at, _heat, 60)
    assert not at.exception and _heat(at)
    assert any("plain, depth 7" in str(c.proto.spec) for c in at.get("vega_lite_chart"))


def test_a_link_sets_the_any_model_section(page_cache):
    at = _app(iterations="3", width="8", depth="4", any_network="resnet20", any_data="mnist", any_cnn_width="0.5",
              any_iterations="7", any_lr="0.05", any_batch="8")
    assert not at.exception and not [w for w in at.warning if "refused" in w.value]
    assert at.selectbox(key="gn_any_network").value == "resnet20" and at.selectbox(key="gn_any_data").value == "mnist"
    assert at.number_input(key="gn_any_cnn_width").value == 0.5 and at.number_input(key="gn_any_iterations").value == 7
    assert at.number_input(key="gn_any_lr").value == 0.05 and at.number_input(key="gn_any_batch").value == 8
    assert any("ResNet20" in i.value and "Train this model" in i.value for i in at.info)
    _wait(at, _finished)  # let the MLP jobs the page started finish before the next test


def test_refused_settings_say_the_range(page_cache):
    at = _app(depth="99")
    assert any("depth must be between 2 and 60" in w.value for w in at.warning)
    at = _app(any_data="spiral")  # the any-model section's CNN on 2D points
    assert any("a CNN needs image data" in w.value for w in at.warning)
    at = _app(iterations="5", width="8")
    at.text_input(key="gn_depths").set_value("10,70").run()
    assert any("depth must be between 2 and 60" in e.value for e in at.error)
    at.text_input(key="gn_depths").set_value("ten").run()
    assert any("whole numbers" in e.value for e in at.error)


def test_a_crafted_link_is_echoed_as_plain_text(page_cache):
    at = _app(data="x](http://evil.example) **now**")
    assert not at.exception
    shown = [w.value for w in at.warning if "refused" in w.value]
    assert shown and all("](http" not in s and "**now**" not in s for s in shown)


def test_a_diverging_run_stops_and_says_why_while_the_others_are_drawn(page_cache):
    at = _app(activation="relu", init="he", lr="1", iterations="20", depth="60", variant="residual")
    _wait(at, lambda a: _finished(a) and len(a.error) >= 2, 60)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("residual\\, depth 60 diverged at step" in e for e in errors)  # the compare job's, and the heatmap's
    assert any("learning rate 1 is probably too high" in e for e in errors)
    assert len(at.get("vega_lite_chart")) >= 3  # the runs that did not diverge are drawn


def _any_done(at: AppTest) -> bool:
    return any("layers recorded" in c.value for c in at.caption)


def test_any_model_section_trains_a_cnn_live_and_refuses_one_on_a_toy_set(page_cache):
    at = _app(iterations="3", width="8", depth="4")
    _wait(at, lambda a: _finished(a) and _heat(a))  # the MLP jobs above first: their last rerun would eat a click
    assert not at.exception and at.selectbox(key="gn_any_network").value == "simple"
    at.number_input(key="gn_any_iterations").set_value(3)
    at.number_input(key="gn_any_batch").set_value(16)
    at.number_input(key="gn_any_cnn_width").set_value(0.125).run()
    assert any("FLOPs" in i.value for i in at.info)  # the run's size, before anything trains
    at.button(key="gn_any_train").click().run()
    _wait(at, _any_done, 60)
    assert not at.exception and not at.error and _any_done(at)
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any("conv 1" in s and "fc" in s for s in specs)  # the per-layer charts name the CNN's layers
    assert any("simple CNN, width x0.125: every Conv2d and Linear layer" in s for s in specs)
    assert any("Total gradient norm (log scale)" in s for s in specs) and any("Loss per iteration" in s for s in specs)
    at.selectbox(key="gn_any_data").set_value("spiral").run()
    assert any("a CNN needs image data" in e.value for e in at.error)
