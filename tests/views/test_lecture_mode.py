"""Lecture mode on the chart pages: a sidebar toggle (or ?lecture=1), every chart full width with 18 px text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from views.widgets import LECTURE_FONT

REPO = Path(__file__).resolve().parents[2]


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


@pytest.mark.parametrize("view, key", [("memorisation", "mem_lecture"), ("double_descent", "dd_lecture")])
def test_a_lecture_link_enlarges_every_chart_and_the_toggle_turns_it_off(view: str, key: str) -> None:
    at = AppTest.from_file(str(REPO / "views" / f"{view}.py"), default_timeout=60)
    at.query_params["lecture"] = "1"
    at.run()
    assert not at.exception and not at.error  # ?lecture=1 is no unknown setting on any page
    assert at.toggle(key=key).value
    specs = _specs(at)
    assert specs and all(s["config"]["axis"]["labelFontSize"] == LECTURE_FONT for s in specs)
    at.toggle(key=key).set_value(False).run()
    assert all(s.get("config", {}).get("axis", {}).get("labelFontSize") != LECTURE_FONT for s in _specs(at))
