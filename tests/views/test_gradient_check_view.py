"""The gradient-check page in AppTest: the default passes, a planted bug fails, a bad link is refused."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "gradient_check.py")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _verdicts(at: AppTest) -> dict[str, str]:
    table = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    return dict(zip(table["parameter"], table["verdict"]))


def test_default_passes_with_table_chart_and_thresholds(page_cache):
    at = _app()
    assert not at.exception
    assert _verdicts(at) == {"W": "pass", "b": "pass"}
    assert any("passed for every parameter" in s.value for s in at.success)
    assert any("suspicious" in c.value and "07" in c.value and "fail" in c.value for c in at.caption)  # thresholds on screen


def test_planted_bug_fails_on_its_parameter(page_cache):
    at = _app()
    at.selectbox(key="gc_model").set_value("two_layer").run()
    at.selectbox(key="gc_bug").set_value("no_bias_grad").run()
    assert not at.exception
    verdicts = _verdicts(at)
    assert verdicts["b1"] == verdicts["b2"] == "FAIL" and verdicts["W1"] == verdicts["W2"] == "pass"
    assert any("failed for b1" in e.value and "b2" in e.value for e in at.error)


def test_link_opens_float32_and_refuses_a_bad_one(page_cache):
    at = _app(dtype="float32", h="1e-3")
    assert not at.exception and at.radio(key="gc_dtype").value == "float32"
    assert any("float32" in i.value for i in at.info)
    at = _app(bug="nonsense")
    assert not at.exception
    assert any("refused" in w.value for w in at.warning)
    assert _verdicts(at) == {"W": "pass", "b": "pass"}
