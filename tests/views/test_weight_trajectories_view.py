"""The weight trajectories page in AppTest: the default 8-seed run (a job that starts by itself) draws both PCA
plots; a refused link says why; the loss surface runs as a job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "weight_trajectories.py")



@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared, busy 2-core machine two threads per op run ~10x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _wait(at: AppTest, done, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        time.sleep(0.5)
        at.run()


def test_default_trains_and_draws_both_pca_plots(page_cache):
    at = _app(epochs="2", every="1", n_train="200", toy_epochs="10")  # tiny: the default's shape in a few seconds
    assert not at.exception
    assert any("What to look for" in m.value for m in at.markdown)
    _wait(at, lambda: sum("Explained variance" in s.value for s in at.success) >= 2)
    assert not at.exception
    done = [s.value for s in at.success if "Explained variance" in s.value]
    assert len(done) == 2 and "over 8 seeds" in done[0]  # the image run and the toy run
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert sum("whole model" in s for s in specs) >= 2 and any("layer 1" in s for s in specs)
    assert any(b.label == "Path coordinates (CSV)" for b in at.get("download_button"))
    at.number_input(key="wt_surf_grid").set_value(5).run()
    at.button(key="wt_wt_surf_go").click().run()
    _wait(at, lambda: any("Run 0's path" in c.proto.spec for c in at.get("vega_lite_chart")), 60)
    assert not at.exception
    assert any("Run 0's path" in c.proto.spec for c in at.get("vega_lite_chart"))


def test_refused_link_and_refused_setting(page_cache):
    at = _app(seeds="99", epochs="2", toy_epochs="5")
    assert any("seeds must be between 2 and 16" in w.value for w in at.warning)
    at.number_input(key="wt_every").set_value(50).run()
    assert any("epochs between snapshots must be between 1 and" in e.value for e in at.error)
