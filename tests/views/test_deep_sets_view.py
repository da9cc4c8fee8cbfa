"""The DeepSets page in AppTest: the default renders (shipped result, or the live default sweep it starts), the
permutation check on screen, a refused link, a tiny sweep trained as a job to its table."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "deep_sets.py")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _table(at: AppTest):
    return next((d.value for d in at.dataframe if "test MSE" in d.value.columns), None)


def test_default_renders_with_the_permutation_check(page_cache):
    at = _app()
    assert not at.exception
    check = "\n".join(c.value for c in at.code)
    assert "max |f(Px) - f(x)|" in check and "MLP" in check
    assert any("f(Px)" in " ".join(d.value.columns) for d in at.dataframe)
    shipped = _table(at) is not None
    assert shipped or at.get("progress") or any("Train" in b.label for b in at.button)
    if not shipped and any(b.key == "ds_stop" for b in at.button):  # the live default started: stop it
        at.button(key="ds_stop").click().run()
        assert not at.exception


def test_refused_link(page_cache):
    at = _app(layers="0")
    assert not at.exception
    assert any("layer must be between 1 and 6" in w.value for w in at.warning)


def test_tiny_sweep_trains_in_the_background(page_cache):
    at = _app(layers="1", widths="8", epochs="3", baseline="0")
    assert not at.exception
    at.button(key="ds_train").click().run()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_table(at) is None or len(_table(at)) < 1):
        time.sleep(0.5)
        at.run()
    assert not at.exception
    table = _table(at)
    assert table is not None and list(table["model"]) == ["L1 w8"]
    assert len(at.get("download_button")) == 2 and len(at.get("vega_lite_chart")) >= 3
