"""The model size page in AppTest: the shipped result at once, refused links, a student's own sweep as a job."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "model_size.py")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_default_shows_the_shipped_result_at_once(page_cache):
    at = _app()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "test acc" in d.value.columns)
    assert len(table) == 11 and list(table["params"])[0] == 4_594 and list(table["params"])[-1] == 159_018
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3 and any('"type": "log"' in c.proto.spec.replace('":"', '": "') for c in charts)
    assert any("Precomputed result shipped" in c.value for c in at.caption)
    assert any("/double_descent" in m.value for m in at.markdown)
    assert len(at.get("download_button")) == 2


def test_refused_link_and_refused_setting(page_cache):
    at = _app(n_train="5")
    assert not at.exception
    assert any("training images must be between 100 and 60000" in w.value for w in at.warning)
    at = _app(widths="8x8,9x9")
    assert any("widths must be among" in w.value for w in at.warning)
    at = _app()
    at.number_input(key="ms_epochs").set_value(99).run()
    assert any("epochs must be between 1 and 50" in e.value for e in at.error)


def test_own_sweep_trains_in_the_background(page_cache):
    at = _app(dataset="digits", n_train="160", epochs="1", widths="8x8,11x10")
    assert not at.exception and any("Train" in b.label for b in at.button)
    at.button(key="ms_train").click().run()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [d for d in at.dataframe if "test acc" in d.value.columns
                                               and len(d.value) == 2]:
        time.sleep(0.5)
        at.run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "test acc" in d.value.columns)
    assert list(table["width"]) == ["(8,8)", "(11,10)"]


def test_lecture_mode_draws_the_shipped_result_full_width(page_cache):
    at = _app(lecture="1")
    assert not at.exception and at.toggle(key="ms_lecture").value
    assert len(at.get("vega_lite_chart")) == 3
