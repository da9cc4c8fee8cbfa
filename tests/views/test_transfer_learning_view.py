"""The transfer-learning page in AppTest: the default opens (shipped table or a Run hint), refused settings, and a
tiny run on the embedded digits finishes with every row."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "transfer_learning.py")
COLUMNS = ["method", "test accuracy", "train accuracy", "trainable params", "time (s)"]


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _table(at: AppTest):
    return next((d.value for d in at.dataframe if list(d.value.columns) == COLUMNS), None)


def test_default_opens_on_a_table_or_a_run_button(page_cache):
    at = _app()
    assert not at.exception
    table = _table(at)
    if table is None:  # nothing shipped yet: the hint names the source and the command
        assert any(b.label == "Run" for b in at.button)
        assert any("python -m explorer transfer" in i.value for i in at.info)
    else:
        assert len(table) == 7 and any("Precomputed result shipped" in c.value for c in at.caption)
        assert any("Source model:" in i.value for i in at.info)
        assert len(at.get("vega_lite_chart")) == 1 and len(at.get("download_button")) == 1


def test_refused_link_and_refused_setting(page_cache):
    at = _app(n_train="5")
    assert not at.exception
    assert any("training images must be between 20 and 10000" in w.value for w in at.warning)
    at = _app(classes="cat,cow")
    assert any("class of cifar10 must be one of" in w.value for w in at.warning)
    at = _app()
    at.number_input(key="tl_epochs").set_value(500).run()
    assert any("epochs must be between 1 and 100" in e.value for e in at.error)


def test_a_tiny_run_on_digits_finishes(page_cache):
    at = _app(dataset="digits", n_train="60", epochs="1", lrs="0.001", source="self")
    assert not at.exception and at.multiselect(key="tl_classes_digits").value == ["3", "8"]
    at.button(key="tl_run").click().run()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (_table(at) is None or len(_table(at)) < 5
                                           or not any("What came out" in m.value for m in at.markdown)):
        time.sleep(0.5)
        at.run()
    assert not at.exception
    table = _table(at)
    assert table is not None and len(table) == 5
    assert any("from scratch" in v for v in table["method"]) and any("boosting" in v for v in table["method"])
    assert any("Source model:" in i.value and "self-trained" in i.value for i in at.info)
    assert any("What came out" in m.value for m in at.markdown)
    assert len(at.get("vega_lite_chart")) == 1
