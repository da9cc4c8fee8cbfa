"""The double-descent page in AppTest: sweep views from a cached sweep, a bad link, random features."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.core.cache import Cache
from explorer.labs.double_descent.run import run_sweep
from explorer.labs.double_descent.spec import parse_spec

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "double_descent.py")
SPEC = """
name = "page-test"
dataset = "digits"
train_size = 150
test_size = 100
label_noise = [0.0, 0.2]
widths = [4, 64]
epochs = 3
batch_size = 50
seeds = [0, 1]
"""


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[str, str]:
    """Two runtime sweeps in the page's cache, computed outside the page (as by another visitor or the CLI)."""
    cache = Cache(tmp_path_factory.mktemp("dd_cache"))
    mp = pytest.MonkeyPatch()
    mp.setattr("views.widgets.app_cache", lambda: cache)  # the page lists the sweeps of this cache
    res = run_sweep(parse_spec(SPEC), cache=cache)
    long = run_sweep(parse_spec(SPEC.replace('"page-test"', '"page-test-long"').replace("epochs = 3", "epochs = 4")),
                     cache=cache)
    yield res.entry.key, long.entry.key
    mp.undo()


@pytest.fixture(scope="module")
def sweep_key(sweeps: tuple[str, str]) -> str:
    """The first of the two runtime sweeps."""
    return sweeps[0]


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_sweep_views_render_and_respond(sweep_key: str) -> None:
    at = _app(sweep=sweep_key[:10])
    assert not at.exception
    assert at.selectbox(key="dd_sweep").value == sweep_key
    assert "page-test: mlp on digits" in at.selectbox(key="dd_sweep").format_func(sweep_key)
    assert len(at.get("vega_lite_chart")) >= 3  # model-wise, heatmap, curves
    at.selectbox(key="dd_metric").set_value("test_err_noisy").run()
    at.radio(key="dd_xaxis").set_value("params").run()
    at.select_slider(key="dd_epoch").set_value(2).run()
    at.multiselect(key="dd_ew_widths").set_value([4]).run()
    assert not at.exception


def test_switching_sweeps_resets_the_epoch_and_width_choices(sweeps: tuple[str, str]) -> None:
    sweep_key, long_key = sweeps
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["dd_mine"] = [long_key]  # this session computed the long one before
    at.query_params["sweep"] = sweep_key[:10]
    at.run()
    at.select_slider(key="dd_epoch").set_value(2).run()
    at.multiselect(key="dd_ew_widths").set_value([4]).run()
    box = at.selectbox(key="dd_sweep")
    other = next(o for o in box.options if "page-test-long" in o)
    box.select(other).run()
    assert not at.exception
    assert at.select_slider(key="dd_epoch").value == 4  # the other sweep's last epoch, not the 2 chosen before
    assert at.multiselect(key="dd_ew_widths").value == [4, 64]


def test_bad_sweep_link_gets_a_message(sweep_key: str) -> None:
    at = _app(sweep="nosuchsweep")
    assert not at.exception
    assert any("No sweep matches" in w.value for w in at.warning)


def test_live_sweep_refuses_bad_settings(sweep_key: str) -> None:
    at = _app()
    at.multiselect(key="dd_live_widths").set_value([])
    at.button(key="dd_live_go").click().run()
    assert not at.exception
    assert any("at least one value" in e.value for e in at.error)


def test_live_presets_fill_the_form() -> None:
    at = _app()
    at.radio(key="dd_live_preset").set_value("the peak (500 epochs)").run()
    assert not at.exception
    assert at.slider(key="dd_live_epochs").value == 500
    assert at.multiselect(key="dd_live_widths").value == [4, 8, 16, 25, 32, 40, 50, 64, 100, 200]


def _rerun_until_caption(at: AppTest, text: str, seconds: float = 40) -> None:
    """Rerun the page until a caption contains `text` (a background job finishing), at most `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not any(text in c.value for c in at.caption):
        time.sleep(0.3)
        at.run()


def test_random_features_peak_is_computed_as_a_job(sweep_key: str) -> None:
    at = _app()
    at.selectbox(key="dd_rf_data").set_value("digits").run()
    at.select_slider(key="dd_rf_n").set_value(100).run()
    at.button(key="dd_rf_go").click().run()
    _rerun_until_caption(at, "p = n = 100")
    assert not at.exception
    assert any("p = n = 100" in c.value for c in at.caption)


def test_live_sweep_runs_as_a_job_and_show_it_selects_it(sweep_key: str) -> None:
    at = _app()
    at.multiselect(key="dd_live_widths").set_value([2, 4])
    at.slider(key="dd_live_epochs").set_value(5)
    at.button(key="dd_live_go").click().run()
    end = time.monotonic() + 60
    while not _has(at, "dd_live_show") and time.monotonic() < end:
        time.sleep(0.3)
        at.run()
    assert not at.exception
    at.button(key="dd_live_show").click().run()
    assert not at.exception
    chosen = at.selectbox(key="dd_sweep").value
    assert chosen != sweep_key
    assert "live-mnist1d-mlp: mlp on mnist1d" in at.selectbox(key="dd_sweep").format_func(chosen)
    assert "2 widths" in at.selectbox(key="dd_sweep").format_func(chosen)


def _has(at: AppTest, key: str) -> bool:
    try:
        at.button(key=key)
        return True
    except KeyError:
        return False


def test_the_page_opens_on_the_sweep_with_the_clearest_peak_and_says_what_to_look_for(sweep_key: str) -> None:
    from explorer.labs.double_descent.results import clearest_sweep, list_sweeps
    from views.widgets import app_cache

    at = _app()
    assert not at.exception
    shipped = [e for e in list_sweeps(app_cache()) if e.shipped]
    if not shipped:
        pytest.skip("no shipped sweep in cache/shipped")
    assert at.selectbox(key="dd_sweep").value == clearest_sweep(shipped).key
    assert any(i.value.startswith("What to look for") for i in at.info)


def test_a_sweep_whose_peak_flattens_by_its_last_epoch_opens_at_the_epoch_it_shows_best() -> None:
    """The shipped CIFAR-10 sweep at 20% noise peaks at k = 4 by epoch 100 and is flat by epoch 150: the page sets
    At epoch to the threshold peak's epoch and says where and when to look."""
    from explorer.labs.double_descent.results import list_sweeps, threshold_peak
    from views.widgets import app_cache

    entry = next((e for e in list_sweeps(app_cache()) if e.shipped and e.config["name"] == "cifar10-cnn5"), None)
    if entry is None:
        pytest.skip("cifar10-cnn5 is not shipped")
    at = _app(sweep=entry.key[:10])
    assert not at.exception
    epoch = threshold_peak(entry)[1]["epoch"]
    assert at.select_slider(key="dd_epoch").value == epoch
    assert any(i.value.startswith(f"What to look for: at epoch {epoch} and 20% label noise") for i in at.info)


@pytest.mark.parametrize("name", ["fashion-cnn5-noise40", "mnist1d-mlp-notebook"])
def test_the_threshold_rule_stands_at_the_peak_it_is_said_to_be_near(name: str) -> None:
    """The dotted rule marks where the models have fitted their training labels at Nakkiran et al.'s tolerance (train
    error 0.1 or less): in the shipped sweeps with a last-epoch peak it stands at the peak's width (a strict 0 put it
    at k = 6 for fashion-cnn5-noise40's peak at k = 3, and at h = 61 for the notebook's peak at h = 47)."""
    import json

    import pyarrow as pa

    from explorer.labs.double_descent.results import list_sweeps, peak_rise
    from views.widgets import app_cache

    entry = next((e for e in list_sweeps(app_cache()) if e.shipped and e.config["name"] == name), None)
    if entry is None:
        pytest.skip(f"{name} is not shipped")
    at = _app(sweep=entry.key[:10])
    assert not at.exception
    peak = peak_rise(entry)[1]
    chart = at.get("vega_lite_chart")[0].proto  # the model-wise chart; its data sets travel beside the spec
    rule = next(layer for layer in json.loads(chart.spec)["layer"] if layer.get("mark", {}).get("type") == "rule")
    arrow = next(d.data.data for d in chart.datasets if d.name == rule["data"]["name"])
    rows = pa.ipc.open_stream(arrow).read_all().to_pylist()
    assert {r["label noise"]: r["x"] for r in rows}[f"{round(100 * peak['noise'], 1)}%"] == peak["peak_width"]


def test_other_visitors_sweeps_are_neither_listed_nor_the_default(sweeps: tuple[str, str]) -> None:
    """Sweeps computed outside this session (another student's live sweep) stay out of this session's selector
    and never become its default; the shipped ones are listed."""
    from explorer.labs.double_descent.results import list_sweeps
    from views.widgets import app_cache

    at = _app()
    assert not at.exception
    labels = at.selectbox(key="dd_sweep").options  # as shown: describe() of each
    assert not any(label.startswith("page-test") for label in labels)
    assert len(labels) == sum(e.shipped for e in list_sweeps(app_cache()))
    at = _app(sweep=sweeps[1][:10])  # asked for by a link: listed, and chosen
    assert at.selectbox(key="dd_sweep").value == sweeps[1]
    labels = at.selectbox(key="dd_sweep").options
    assert any(label.startswith("page-test-long:") for label in labels)
    assert not any(label.startswith("page-test:") for label in labels)


def test_asking_for_settings_someone_computed_shows_them_at_once_without_a_job(sweep_key: str) -> None:
    """Another visitor computed this live sweep: Compute with the same settings selects it from the cache."""
    from explorer.labs.double_descent.spec import live_spec
    from views.widgets import app_cache

    entry = run_sweep(live_spec([2], 15, 5), cache=app_cache()).entry  # "another student", earlier
    at = _app()
    assert entry.key not in at.selectbox(key="dd_sweep").options
    at.multiselect(key="dd_live_widths").set_value([2])
    at.slider(key="dd_live_noise").set_value(15)
    at.slider(key="dd_live_epochs").set_value(5)
    at.button(key="dd_live_go").click().run()
    assert not at.exception
    assert at.selectbox(key="dd_sweep").value == entry.key
    with pytest.raises(KeyError):  # no job was started
        at.session_state["_job_dd_live"]


def test_students_computing_the_same_sweep_share_one_job(sweep_key: str) -> None:
    """Two sessions pressing Compute on the same settings follow one job and both see its progress."""
    from explorer.core.jobs import default_runner

    sessions = []
    for student in ("student-1", "student-2"):
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.session_state["_session_id"] = student  # AppTest gives every session the same id
        at.run()
        at.multiselect(key="dd_live_widths").set_value([4, 8])
        at.slider(key="dd_live_epochs").set_value(300)  # long enough to be running when the second one asks
        at.button(key="dd_live_go").click().run()
        assert not at.exception
        sessions.append(at)
    ids = {at.session_state["_job_dd_live"] for at in sessions}
    assert len(ids) == 1
    job = default_runner().get(ids.pop())
    assert len(job.watchers) == 2
    for at in sessions:
        assert at.get("progress"), "each session shows the shared job's progress"
    job.cancel()
    assert job.wait(30)


def test_live_sweep_shows_an_estimate_not_a_typed_time_and_a_real_recompute_command(sweep_key: str) -> None:
    at = _app()
    assert all("minute" not in r for r in at.radio(key="dd_live_preset").options)
    at.multiselect(key="dd_live_widths").set_value([2, 4]).run()
    captions = " ".join(c.value for c in at.caption)
    assert "points to compute" in captions and ("Estimated" in captions or "no estimate yet" in captions)


def test_random_features_are_drawn_on_linear_axes(sweep_key: str) -> None:
    import json

    at = _app()
    at.selectbox(key="dd_rf_data").set_value("digits").run()
    at.select_slider(key="dd_rf_n").set_value(100).run()
    for shown in ("classification error", "squared error"):
        at.radio(key="dd_rf_metric").set_value(shown).run()
        at.button(key="dd_rf_go").click().run()
        _rerun_until_caption(at, "p = n = 100")
        assert not at.exception
        spec = json.loads(at.get("vega_lite_chart")[-1].proto.spec)
        y_scales = [layer["encoding"]["y"].get("scale", {}) for layer in spec["layer"] if "y" in layer["encoding"]]
        assert y_scales and all(s.get("type") != "log" for s in y_scales)
        assert all(s["domain"][0] == 0 for s in y_scales)


def test_a_runtime_copy_of_a_shipped_sweep_is_still_listed(tmp_path, monkeypatch) -> None:
    """Where the operator ran `sweep ... --ship`, the runtime root holds a copy of the shipped summary that shadows
    it: the page still lists it as shipped (it vanished from every visitor's selector before)."""
    from explorer.labs.double_descent.results import list_sweeps
    from explorer.labs.double_descent.spec import SWEEP_KIND

    cache = Cache(tmp_path / "rt")
    shipped = [e for e in list_sweeps(cache) if e.shipped]
    e = shipped[0]
    copy = cache.put(SWEEP_KIND, e.config, e.metrics, e.tensors(), e.meta)  # the --ship run's runtime copy
    assert copy.key == e.key and cache.ships(SWEEP_KIND, e.key)
    assert not next(x for x in list_sweeps(cache) if x.key == e.key).shipped  # shadowed
    assert not cache.ships(SWEEP_KIND, "0" * 64)
    monkeypatch.setattr("views.widgets.app_cache", lambda: cache)
    at = _app()
    assert not at.exception
    assert len(at.selectbox(key="dd_sweep").options) == len(shipped)
