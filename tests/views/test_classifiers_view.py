"""The Classifiers page in AppTest: the default renders, a tiny digits run trains as a job and shows its evaluation
and the comparison table, refused links and settings get a message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.labs.classifiers import presets as P
from explorer.labs.classifiers import workbench as W
from explorer.labs.classifiers.config import with_values

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "classifiers.py")
TINY_LINK = dict(dataset="digits", n_train="200", width="0.25", epochs="1")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _specs(at: AppTest) -> list[str]:
    return [c.proto.spec for c in at.get("vega_lite_chart")]


def test_default_page_renders(page_cache):
    at = _app()
    assert not at.exception
    assert at.title[0].value == "Classifiers"
    assert at.selectbox(key="cl_preset").value == P.DEFAULT and at.selectbox(key="cl_dataset").value == "cifar10"
    assert at.number_input(key="cl_width").value == P.PRESETS[P.DEFAULT].cpu.model.width
    assert any("parameters" in c.value and "MFLOPs per image" in c.value for c in at.caption)
    if W.cached(P.PRESETS[P.DEFAULT].cpu, page_cache) is None:  # nothing shipped yet: a hint and the Train button
        assert any(b.label == "Train" for b in at.button)
        assert any("No runs kept yet" in i.value for i in at.info)


def test_a_tiny_job_on_digits_shows_the_evaluation(page_cache):
    at = _app(**TINY_LINK)
    assert not at.exception and at.number_input(key="cl_n_train").value == 200
    at.button(key="cl_train").click().run()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any("Confusion matrix" in s for s in _specs(at)):
        time.sleep(0.5)
        at.run()
    assert not at.exception
    assert any("Confusion matrix" in s for s in _specs(at))
    assert any(m.label == "Top-1 error" for m in at.metric)
    assert len(at.get("image")) >= 1  # the gallery of confident mistakes
    per_class = next(d.value for d in at.dataframe if "precision" in d.value.columns)
    assert len(per_class) == 10
    table = next(d.value for d in at.dataframe if "top-1 err" in d.value.columns)
    mine = table[~table["shipped"]]  # the shipped Simple CNN run is listed too
    assert len(mine) == 1 and list(mine["model"]) == ["Simple CNN x0.25"]
    assert len([e for e in W.runs(page_cache) if not e.shipped]) == 1
    at.radio(key="cl_kept_filter").set_value("mine").run()  # only what this visitor trained
    table = next(d.value for d in at.dataframe if "top-1 err" in d.value.columns)
    assert list(table["model"]) == ["Simple CNN x0.25"] and not table["shipped"].any()


def test_a_kept_run_is_shown_at_once(page_cache):
    cfg = with_values(P.PRESETS["simple"].cpu, {"dataset": "digits", "n_train": 200, "n_val": 100, "n_test": 100,
                                                "model.width": 0.25, "fit.epochs": 1})
    W.run(cfg, page_cache)
    at = _app(epochs="7")  # settings not trained yet: a kept run is shown meanwhile (the shipped one, else newest)
    assert not at.exception
    assert any("Meanwhile" in m.value for m in at.markdown)
    assert any("Confusion matrix" in s for s in _specs(at))


def test_refused_link_and_refused_setting(page_cache):
    at = _app(width="99")
    assert not at.exception
    assert any("settings were refused" in w.value and "width multiplier must be between" in w.value for w in at.warning)
    at = _app(preset="nope")
    assert any("preset must be one of" in w.value for w in at.warning)
    at = _app()
    at.number_input(key="cl_epochs").set_value(0).run()
    assert not at.exception and any("Setting refused" in e.value for e in at.error)


def test_preset_fills_the_settings(page_cache):
    at = _app()
    at.selectbox(key="cl_preset").set_value("resnet9").run()
    assert not at.exception
    r9 = P.PRESETS["resnet9"].cpu
    assert at.selectbox(key="cl_model").value == "resnet9" and at.number_input(key="cl_batch").value == 400
    assert at.checkbox(key="cl_flip").value and at.number_input(key="cl_width").value == r9.model.width
    at.selectbox(key="cl_scale").set_value("full").run()
    assert at.number_input(key="cl_n_train").value == 45_000


def test_lecture_mode(page_cache):
    at = _app(lecture="1", **TINY_LINK)
    assert not at.exception and at.toggle(key="cl_lecture").value


def test_the_upload_choice_waits_for_a_zip_and_keeps_the_settings(page_cache):
    at = _app()
    at.selectbox(key="cl_dataset").set_value("upload").run()
    assert not at.exception and any("Upload a zip" in i.value for i in at.info)
    at.selectbox(key="cl_dataset").set_value("cifar10").run()
    assert not at.exception and at.number_input(key="cl_width").value == P.PRESETS[P.DEFAULT].cpu.model.width


def test_the_default_opens_on_the_shipped_run_when_there_is_one(page_cache):
    shipped = W.cached(P.PRESETS[P.DEFAULT].cpu, page_cache)
    if shipped is None or not shipped.shipped:
        pytest.skip("no shipped Simple CNN run yet (python -m explorer classify --preset simple --ship)")
    at = _app()
    assert not at.exception
    assert any("Precomputed result shipped" in c.value for c in at.caption)
    assert any("Confusion matrix" in s for s in _specs(at)) and len(at.get("image")) >= 1
    assert shipped.meta["recompute"] == "python -m explorer classify --preset simple"
