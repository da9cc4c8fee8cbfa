"""The optimizer-race page in AppTest: surface race, Step, bad settings and links, a real-task race job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "optimizer_race.py")
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _step_text(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Step"))


def test_surface_race_runs_steps_and_reports_divergence() -> None:
    at = _app(surface="quadratic", steps="40")
    assert not at.exception
    at.multiselect(key="opt_kinds").set_value(["sgd", "adam"])
    at.number_input(key="opt_surf_quadratic_lr_sgd").set_value(1.0)  # far too large: SGD must diverge
    at.run()
    at.button(key="opt_race_btn").click().run()
    assert not at.exception
    assert any("diverged at step" in w.value for w in at.warning)
    at.button(key="opt_step").click().run()  # Step pauses and moves exactly one iteration
    first = int(_step_text(at).split()[1].strip("*"))
    at.button(key="opt_step").click().run()
    assert int(_step_text(at).split()[1].strip("*")) == first + 1
    assert not at.exception


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
