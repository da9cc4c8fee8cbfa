"""The optimizer-race page in AppTest: replay data for the browser, fixed colours, bad settings, a task race."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "optimizer_race.py")
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _replay(at: AppTest) -> dict:
    """The data the browser replay was given (it draws every frame itself)."""
    (el,) = at.get("bidi_component")
    return json.loads(el.proto.json)


def _positions(racer: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(racer["x"]), dtype="<f4")


def test_surface_race_sends_every_track_once_and_reports_divergence() -> None:
    at = _app(surface="quadratic", steps="40")
    assert not at.exception
    assert _replay(at)["racers"] == [] and _replay(at)["steps"] == 0  # nothing raced yet: the surface only
    at.multiselect(key="opt_kinds").set_value(["sgd", "adam"])
    at.number_input(key="opt_surf_quadratic_lr_sgd").set_value(1.0)  # far too large: SGD must diverge
    at.run()
    at.button(key="opt_race_btn").click().run()
    assert not at.exception
    assert any("diverged at step" in w.value for w in at.warning)
    data = _replay(at)
    sgd, adam = data["racers"]
    assert data["steps"] == 40 and data["autoplay"]
    assert len(_positions(adam)) == adam["n"] == 41  # the start and every step, for the browser to replay
    assert len(_positions(sgd)) == sgd["n"] < 41  # the diverged racer's track ends where it diverged
    assert data["start"] == [-2.8, 1.5] and len(data["band"]) == data["grid_n"] ** 2
    first = data["id"]
    at.run()  # a rerun without pressing Race: the same replay, not restarted
    assert _replay(at)["id"] == first and not _replay(at)["autoplay"]
    at.button(key="opt_race_btn").click().run()  # Race again: replayed from the start
    assert _replay(at)["id"] != first and _replay(at)["autoplay"]


def test_each_optimizer_keeps_its_colour_whatever_is_selected() -> None:
    at = _app(surface="quadratic", steps="10")
    at.multiselect(key="opt_kinds").set_value(["sgd", "momentum", "adam"]).run()
    at.button(key="opt_race_btn").click().run()
    three = {r["kind"]: r["colour"] for r in _replay(at)["racers"]}
    at.multiselect(key="opt_kinds").set_value(["adam"]).run()
    at.button(key="opt_race_btn").click().run()
    (adam,) = _replay(at)["racers"]
    assert adam["colour"] == three["adam"]
    assert len(set(three.values())) == 3


def test_bad_settings_and_links_get_a_message() -> None:
    at = _app(surface="volcano")
    assert not at.exception
    assert any("refused" in w.value for w in at.warning)
    at = _app(surface="beale", x="99")
    assert any("start x must be between" in e.value for e in at.error)
    at = _app()
    at.selectbox(key="opt_surface").set_value("custom").run()
    at.text_input(key="opt_formula").set_value("__import__('os').system('true')").run()
    assert any("Setting refused" in e.value for e in at.error)
    at.text_input(key="opt_formula").set_value("x**2 + y**2").run()
    at.number_input(key="opt_surf_custom_lr_adam").set_value(1e9).run()
    assert any("learning rate must be between" in e.value for e in at.error)
    assert not at.exception


@pytest.mark.skipif(not DATA.is_dir(), reason="shared datasets folder absent")
def test_task_race_runs_as_a_job_and_shows_the_table(monkeypatch, page_cache) -> None:
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(DATA))
    at = _app()
    at.multiselect(key="opt_kinds").set_value(["sgd", "adam"])
    at.number_input(key="opt_t_n").set_value(300)
    at.number_input(key="opt_t_epochs").set_value(2)
    at.run()
    at.button(key="opt_t_go").click().run()
    deadline = time.monotonic() + 60
    while not at.dataframe and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert not at.exception
    assert len(at.dataframe) == 1 and "optimizer" in at.dataframe[0].value.columns
    at.number_input(key="opt_t_epochs").set_value(500).run()
    assert any("epochs must be between" in e.value for e in at.error)
