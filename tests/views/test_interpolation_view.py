"""The interpolation page in AppTest: the default lines (a job that starts by itself) are drawn with the barrier and
the accuracies; the BN net says its statistics are recomputed; the 2D slice runs as a job; refusals say why."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "interpolation.py")



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


def test_default_lines_then_the_2d_slice(page_cache):
    at = _app(epochs="1", points="7", n_train="200", net="cnn_bn")  # the default's shape, tiny
    assert not at.exception
    assert any("What to look for" in m.value for m in at.markdown)
    _wait(at, lambda: any("Loss barrier" in s.value for s in at.success))
    assert not at.exception
    text = next(s.value for s in at.success if "Loss barrier" in s.value)
    assert "alpha 0:" in text and "alpha 0.5:" in text and "alpha 1:" in text
    assert any("recomputed on the training data at every point" in i.value for i in at.info)
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert len(specs) >= 6 and any("A (alpha 0) to B (alpha 1)" in s for s in specs)
    assert {b.label for b in at.get("download_button")} >= {"Lines (CSV)", "Random slices (CSV)"}
    at.number_input(key="ip_plane_grid").set_value(5).run()
    at.button(key="ip_ip_plane_go").click().run()
    _wait(at, lambda: any("filter-normalised random directions" in c.proto.spec
                          for c in at.get("vega_lite_chart")), 60)
    assert not at.exception
    assert any("around solution A" in c.proto.spec for c in at.get("vega_lite_chart"))


def test_refused_link_and_refused_setting(page_cache):
    at = _app(lr_b="5", epochs="1", n_train="200", points="5")
    assert any("learning rate of B must be between" in w.value for w in at.warning)
    at.number_input(key="ip_points").set_value(1000).run()
    assert any("points along a line must be between 3 and 201" in e.value for e in at.error)
