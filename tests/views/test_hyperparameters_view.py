"""The hyperparameter page in AppTest: the default learning-rate run starts by itself and draws live; a short run
finishes with its table, the diverged model's message and the cache; the batch and grid parts train on Train;
refused settings say the range."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer.core.jobs import default_runner

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "hyperparameters.py")


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


def _charts(at: AppTest) -> list[str]:
    return [c.proto.spec for c in at.get("vega_lite_chart")]


def test_default_starts_the_eight_model_lr_run_and_draws_it_live(page_cache):
    at = _app()
    assert not at.exception
    assert any("What to look for" in m.value for m in at.markdown)
    assert any("8 models" in c.value and "ONE batched run" in c.value for c in at.caption)
    steps = next(d.value for d in at.dataframe if "steps per epoch" in d.value.columns)
    assert list(steps["steps per epoch"]) == [500, 32, 4, 1]  # the batch tab's table, before any training
    _wait(at, lambda: any("lr 0.01, BN on" in s for s in _charts(at)), 60)  # the job's first epochs, drawn
    assert not at.exception
    assert any('"log"' in s.replace(" ", "") for s in _charts(at))
    _stop_lr(at)  # the whole default run is left to the lab's own timing


def _stop_lr(at: AppTest) -> None:
    """Stop the page's learning-rate job and wait until it has ended (its compute slot free, no thread left)."""
    job = default_runner().get(at.session_state["_job_hp_lr"])
    at.button(key="hp_lr_stop").click().run()
    assert not at.exception
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not job.is_final:
        time.sleep(0.2)
    assert job.is_final


def test_short_lr_run_finishes_with_table_diverged_message_and_cache(page_cache):
    at = _app(epochs="3", points="200")
    _wait(at, lambda: any("hp_lr_table" == getattr(d, "key", None) or "diverged at step" in d.value.columns
                              for d in at.dataframe))
    assert not at.exception
    table = next(d.value for d in at.dataframe if "diverged at step" in d.value.columns)
    assert len(table) == 8 and table["diverged at step"].notna().iloc[0]
    assert any("diverged at step" in w.value and "too high" in w.value for w in at.warning)
    at.run()
    assert any("Result from the cache" in c.value for c in at.caption)


def test_batch_and_grid_parts_train_on_train(page_cache):
    at = _app(epochs="1", points="100", bs_epochs="1", grid_epochs="1")
    at.multiselect(key="hp_bs_sizes").set_value([16, 1024]).run()
    at.button(key="hp_batch_train").click().run()
    at.button(key="hp_grid_train").click().run()
    _wait(at, lambda: any("regions counted (lower estimate)" in d.value.columns for d in at.dataframe)
          and any("seconds" in d.value.columns for d in at.dataframe))
    assert not at.exception, at.exception
    grid = next(d.value for d in at.dataframe if "regions counted (lower estimate)" in d.value.columns)
    assert len(grid) == 7 and list(grid["region bound (1 hidden layer)"].dropna()) == [137]
    assert any("Linear regions, one hidden layer of 16 ReLUs" in m.value for m in at.markdown)
    assert len(at.get("image")) >= 2  # the grid of boundaries and the enlarged best and worst
    assert any("Final train and test loss" in s for s in _charts(at))
    batch = next(d.value for d in at.dataframe if "seconds" in d.value.columns)
    assert list(batch["batch size"]) == [16, 1024]


def test_refused_settings_say_the_range(page_cache):
    at = _app(grid_lr="99")
    assert any("learning rate must be between" in w.value for w in at.warning)
    _stop_lr(at)  # the refused link shows the defaults, whose LR run starts by itself
    at = _app(epochs="1", points="100")
    at.number_input(key="hp_width").set_value(999).run()
    assert any("width must be between 1 and 256" in e.value for e in at.error)
    at.number_input(key="hp_width").set_value(32).run()
    _wait(at, lambda: any("diverged at step" in d.value.columns for d in at.dataframe), 30)
