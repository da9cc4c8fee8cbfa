"""The cyclical LR page in AppTest: on the embedded digits every part trains as a job, the range test's suggestion
goes into the schedule widgets, refused links and the missing CIFAR-10 are said on screen."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "cyclical_lr.py")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _wait(at: AppTest, done, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        time.sleep(0.5)
        at.run()


def test_small_run_trains_with_schedule_charts_and_the_range_suggestion_fills_the_schedule(page_cache):
    at = _app(dataset="digits", n_s="30", cycles="2")
    assert not at.exception
    assert any("What to look for" in m.value for m in at.markdown)

    def finished() -> bool:
        texts = [s.value for s in at.success]
        return (any("Test accuracy" in t for t in texts) and any("Training accuracy reached" in t for t in texts)
                and any(b.label == "Use this range in the schedule" for b in at.button))

    _wait(at, finished)
    at.run()
    assert not at.exception and finished()
    specs = [c.proto.spec.replace('":"', '": "') for c in at.get("vega_lite_chart")]
    assert any('"type": "log"' in s for s in specs)  # the range test's log x axis
    assert any("Triangular schedule" in s for s in specs)
    assert any("Training accuracy reached 100%" in s.value for s in at.success)
    assert len(at.get("download_button")) >= 3
    at.button(key="clr_use_range").click().run()
    assert not at.exception
    assert at.number_input(key="clr_eta_max").value != 0.1  # the suggestion replaced the report's eta_max
    assert at.number_input(key="clr_eta_min").value < at.number_input(key="clr_eta_max").value


def test_refused_link_and_refused_widget_settings(page_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(tmp_path / "empty"))  # the defaults' CIFAR-10 -> the quick digits
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    at = _app(lam="99")
    assert any("lambda must be between 0 and 10" in w.value for w in at.warning)
    at = _app(dataset="digits", n_s="30", cycles="1")
    at.number_input(key="clr_eta_min").set_value(0.5).run()
    assert not at.exception
    assert any("must be at most" in e.value for e in at.error)


def test_missing_cifar10_falls_back_to_digits_and_says_how_to_provide_it(page_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    at = _app(n_s="30", cycles="1")
    assert not at.exception
    notes = [w.value for w in at.warning]
    assert any("CIFAR" in n and "EXPLORER\\_DATA\\_DIR" in n for n in notes)
    assert any("Digits" in n for n in notes)
