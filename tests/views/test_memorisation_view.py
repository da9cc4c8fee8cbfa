"""The memorisation page in AppTest: defaults, refused links and settings, a batched training job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "memorisation.py")


def _fit_table(at: AppTest):
    """The epochs-to-fit table, if the page shows one."""
    return next((d.value for d in at.dataframe if "epochs to fit" in d.value.columns), None)


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_default_page_loads_without_training():
    at = _app()
    assert not at.exception
    assert at.button(key="mem_train") is not None
    shipped = any("Precomputed result shipped with the app" in c.value for c in at.caption)
    assert shipped or any("Press **Train**" in i.value for i in at.info)
    if shipped:  # the default MNIST-1D comparison ships precomputed: it is drawn with its table at once
        assert _fit_table(at) is not None and at.button(key="mem_train").disabled


def test_default_shows_random_labels_clearly_slower_to_fit_and_says_what_to_look_for():
    """The page opens on its shipped default, where random labels take at least 1.4x the epochs of true labels."""
    at = _app()
    assert not at.exception
    assert any("What to look for" in m.value for m in at.markdown)
    table = _fit_table(at)
    assert table is not None, "the page's default setting has no shipped result"
    fits = dict(zip(table["mode"], table["epochs to fit"]))
    assert int(fits["Random labels"]) >= 1.4 * int(fits["True labels"])
    assert any("as long as with true labels" in s.value for s in at.success)


def test_precomputed_cifar_result_says_so_and_how_to_recompute():
    at = _app()
    presets = at.selectbox(key="mem_preset").options if any(s.key == "mem_preset" for s in at.selectbox) else []
    cifar = [o for o in presets if o.startswith("cifar10")]
    if not cifar:
        pytest.skip("no precomputed CIFAR-10 result in cache/shipped")
    at.selectbox(key="mem_preset").set_value(cifar[0]).run()
    assert not at.exception
    assert any("precomputed result shipped with the app" in i.value for i in at.info)
    assert _fit_table(at) is not None
    assert any("recompute with `python -m explorer memorise modes --dataset cifar10" in c.value for c in at.caption)
    fits = dict(zip(_fit_table(at)["mode"], _fit_table(at)["epochs to fit"]))
    if int(fits["Random labels"]) <= int(fits["True labels"]):  # the shipped subset's 0.88x gets its one line
        assert any("fitted no slower than true ones" in c.value and "test accuracy on the true labels" in c.value
                   for c in at.caption)


def test_bad_links_and_settings_get_a_message():
    at = _app(view="telepathy")
    assert not at.exception
    assert any("refused" in w.value for w in at.warning)
    at = _app(width="99999")
    assert any("width must be between" in w.value for w in at.warning)  # refused with the link, defaults shown
    at = _app(max_epochs="abc")
    assert any("not a valid int" in w.value for w in at.warning)
    at = _app(dataset="mnist1d")  # the page opens on digits; the small CNN is refused on 1-D data
    at.selectbox(key="mem_model").set_value("small_cnn").run()
    assert any("needs image data" in e.value for e in at.error)
    at = _app()
    at.number_input(key="mem_lr").set_value(50.0).run()
    assert any("learning rate must be between" in e.value for e in at.error)
    assert not at.exception


def test_training_runs_as_a_job_and_shows_the_fit_table(page_cache):
    at = _app(n_train="60", width="32", max_epochs="3")
    at.multiselect(key="mem_modes").set_value(["true_labels", "random_labels"]).run()
    at.button(key="mem_train").click().run()
    deadline = time.monotonic() + 60
    while not any("Result from the cache" in c.value for c in at.caption) and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert not at.exception
    table = _fit_table(at)
    assert table is not None
    assert list(table["mode"]) == ["True labels", "Random labels"]
    assert list(table["epochs to fit"]).count("did not fit within 3 epochs") + sum(
        v.isdigit() for v in table["epochs to fit"]) == 2
    assert any("Result from the cache" in c.value for c in at.caption)
    at.segmented_control(key="mem_view").set_value("sweep-width").run()
    at.text_input(key="mem_widths").set_value("4, x").run()
    assert any("comma-separated" in e.value.replace("\\", "") for e in at.error)  # as shown: escapes dropped
    assert not at.exception


@pytest.mark.parametrize("params, fragment", [
    ({"p": "5"}, "between 0 and 1"), ({"p": "-0.5"}, "between 0 and 1"), ({"width": "100000"}, "width"),
    ({"n_train": "1"}, "training examples"), ({"max_epochs": "10000000"}, "epochs cap"),
])
def test_out_of_range_link_settings_are_refused_not_crashed(params: dict, fragment: str) -> None:
    """?p=5 once put the p slider outside its range and crashed the page with a traceback."""
    at = _app(**params)
    assert not at.exception
    shown = " ".join(w.value.replace("\\", "") for w in at.warning)
    assert "refused" in shown and fragment in shown


def test_students_training_the_same_settings_share_one_job(page_cache) -> None:
    """Keyed by the result's cache address: a second session pressing Train on the same settings joins the first
    one's training (one computation, both see its live curves) instead of starting its own."""
    from explorer.core.jobs import default_runner

    sessions = []
    for student in ("student-1", "student-2"):
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.session_state["_session_id"] = student  # AppTest gives every session the same id
        at.query_params.update({"n_train": "500", "width": "8", "max_epochs": "2000"})  # long: still running
        at.run()
        at.multiselect(key="mem_modes").set_value(["true_labels", "random_labels"]).run()
        at.button(key="mem_train").click().run()
        assert not at.exception
        sessions.append(at)
    ids = {at.session_state["_job_memorise"] for at in sessions}
    assert len(ids) == 1
    job = default_runner().get(ids.pop())
    assert job.watchers == {"student-1", "student-2"}
    for at in sessions:
        assert at.get("progress"), "both follow the one training"
    job.cancel()
    assert job.wait(30)
