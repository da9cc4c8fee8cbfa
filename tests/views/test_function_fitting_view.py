"""The function fitting page in AppTest: the default 1-D comparison trains live (a job that starts by itself) and
shows parameter counts."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "function_fitting.py")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_default_trains_the_three_report_nets_and_shows_their_parameter_counts(page_cache):
    at = _app()
    assert not at.exception
    counts = next(d.value for d in at.dataframe if "parameters" in d.value.columns and "hidden layers" in d.value)
    assert list(counts["parameters"]) == [571, 712, 571]
    assert any("What to look for" in m.value for m in at.markdown)
    deadline = time.monotonic() + 60  # it trains as a job on the shared runner, started by itself
    while time.monotonic() < deadline and not [s for s in at.success if "Training MSE after epoch 1,000" in s.value]:
        time.sleep(0.5)
        at.run()
    assert not at.exception
    finished = [s.value for s in at.success if "Training MSE after epoch 1,000" in s.value]
    assert finished and "x the best" in finished[0]  # the models differ
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 2 and any('"type": "log"' in c.proto.spec.replace('":"', '": "') for c in charts)
    at.run()  # a rerun draws the stored fit at once
    assert not at.exception and any("from the cache" in m.value for m in at.markdown)


def test_budget_network_and_refused_settings(page_cache):
    at = _app(epochs="20")
    at.number_input(key="ff_depth").set_value(3).run()
    assert not at.exception
    assert any("width 16 gives 593 parameters" in c.value for c in at.caption)
    at.text_input(key="ff_layers").set_value("2-5-1").run()
    assert any("must start and end with 1" in e.value for e in at.error)
    at = _app(lr="99")
    assert any("learning rate must be between" in w.value for w in at.warning)


def test_cnn_tab_trains_both_in_the_background(page_cache):
    at = _app(epochs="10")
    at.number_input(key="ff_img_epochs").set_value(1).run()
    at.number_input(key="ff_img_n_train").set_value(200).run()
    at.button(key="ff_img_train").click().run()
    def both_done() -> bool:  # the live snapshot shows the shallow CNN's epoch before the deep one's
        tables = [d.value for d in at.dataframe if "test acc" in d.value.columns]
        return bool(tables) and set(tables[0]["model"]) == {"shallow", "deep"}

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not both_done():
        time.sleep(0.5)
        at.run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "test acc" in d.value.columns)
    assert set(table["params"]) == {112_970} and set(table["model"]) == {"shallow", "deep"}
