"""The sharpness page in AppTest: the default is the shipped sweep; other small sweeps start by themselves as jobs; a short one finishes with its five
charts and CSVs, and is drawn from the cache on a rerun; a refused link says the range."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "sharpness.py")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_default_shows_the_shipped_sweep_at_once(page_cache):
    at = _app()
    assert not at.exception
    assert any("What to look for" in m.value for m in at.markdown)
    assert any("power iteration on Hessian-vector products" in c.value for c in at.caption)
    assert any("Precomputed result shipped" in c.value for c in at.caption)
    assert len(at.get("vega_lite_chart")) == 5


def test_unshipped_settings_start_the_sweep_as_a_job(page_cache):
    at = _app(steps="1000")
    assert not at.exception
    assert at.button(key="sh_stop") is not None  # running in the background
    at.button(key="sh_stop").click().run()  # the short test below needs the CPU
    assert not at.exception


def test_short_sweep_finishes_with_charts_and_downloads(page_cache):
    at = _app(steps="10", n_hessian="32")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not [s for s in at.success if "Batch 1024" in s.value]:
        time.sleep(0.5)
        at.run()
    assert not at.exception
    assert [s for s in at.success if "Batch 16: top eigenvalue" in s.value]
    at.run()  # drawn from the cache now
    assert not at.exception
    assert len(at.get("vega_lite_chart")) == 5
    assert len(at.get("download_button")) == 5
    table = next(d.value for d in at.dataframe if "top_eigenvalue" in d.value.columns)
    assert list(table["batch_size"]) == [16, 32, 64, 128, 256, 512, 1024]


def test_a_refused_link_says_the_range(page_cache):
    at = _app(lr="99", steps="10")
    assert any("learning rate must be between" in w.value for w in at.warning)
