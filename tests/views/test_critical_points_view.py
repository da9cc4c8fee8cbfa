"""The critical-points page in AppTest: the default opens on the shipped result; a small one finishes with its scatter, the
gradient norms reached, the definition and CSVs; a refused link says the range."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "critical_points.py")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_the_default_opens_on_the_shipped_result_and_states_the_definition(page_cache):
    at = _app()
    assert not at.exception
    assert any("Minimal ratio** = (number of positive eigenvalues" in m.value for m in at.markdown)
    done = next(s.value for s in at.success if "Minimal ratio from" in s.value)  # at once: no job, no Stop
    assert "100 runs of a 33-parameter net" in done and "gradient-flat" in done
    assert len(at.get("vega_lite_chart")) == 3 and not [b for b in at.button if b.key == "cp_stop"]


def test_small_run_finishes_with_the_scatter(page_cache):
    at = _app(runs="5", hidden="2", steps_loss="50", steps_grad="50", lm_steps="2")
    deadline = time.monotonic() + 180  # seconds alone; generous for a loaded CI machine
    while time.monotonic() < deadline and not [s for s in at.success if "Minimal ratio from" in s.value]:
        time.sleep(0.5)
        at.run()
    assert not at.exception
    done = next(s.value for s in at.success if "Minimal ratio from" in s.value)
    assert "5 runs of a 13-parameter net" in done and "gradient norm reached" in done
    assert len(at.get("vega_lite_chart")) == 3 and len(at.get("download_button")) == 3
    table = next(d.value for d in at.dataframe if "grad_norm" in d.value.columns)
    assert len(table) == 5 and {"neg", "zero", "pos", "perturb_ratio"} <= set(table.columns)


def test_a_refused_link_says_the_range(page_cache):
    at = _app(hidden="99")
    assert any("hidden width must be between 1 and 16" in w.value for w in at.warning)
