"""The Data page: loads, draws balance and gallery, refuses bad links, falls back, computes maps (pixels, models)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.core.jobs import default_runner
from explorer.data import datasets as D
from explorer.labs.data_maps import representations as R

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_cache) -> None:
    """Own cache; the shared data folder when present; no downloads."""
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(SHARED if SHARED.is_dir() else tmp_path / "data"))
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    D._memo.clear()


def _page(**params: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "views" / "data_maps.py"), default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_digits_page_draws_balance_gallery_and_a_pca_map() -> None:
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="digits", method="pca", points="300")
    assert not at.exception
    assert at.selectbox(key="data_dataset").value == "digits"
    assert [m.value for m in at.metric][:2] == ["1,437", "360"]
    assert at.slider(key="data_per_class").value == 8 and len(at.get("image")) >= 10
    job = next(j for j in default_runner().jobs() if j.name.startswith("map digits") and j.id not in before)
    assert job.wait(60)
    at.run()
    assert not at.exception and not at.error
    assert at.get("download_button") and any("trustworthiness" in c.value for c in at.caption)


def test_representation_net_trained_on_the_page_becomes_the_embedding_space() -> None:
    at = _page(dataset="digits", method="pca", points="300")
    assert not at.exception
    assert at.selectbox(key="data_space").options == ["Raw pixels"]
    at.slider(key="data_fm_epochs").set_value(2).run()
    before = {j.id for j in default_runner().jobs()}  # earlier tests in this process leave jobs behind
    at.button(key="data_fm_train").click().run()
    assert not at.exception
    job = next(j for j in default_runner().jobs() if j.name == "representation net digits" and j.id not in before)
    assert job.wait(120), job.state
    at.run()
    assert not at.exception
    ref = job.result.ref
    assert at.selectbox(key="data_space").value == ref and ref.startswith("model:representation_net:")
    assert any("2 epochs" in o for o in at.selectbox(key="data_space").options)
    before = {j.id for j in default_runner().jobs()}
    at.button(key="data_compute").click().run()
    map_job = next(j for j in default_runner().jobs() if j.name.startswith("map digits") and j.id not in before)
    assert map_job.wait(60)
    at.run()
    assert not at.exception and not at.error
    assert any(c.value.startswith("embedding space: Representation net: MLP") for c in at.caption)
    assert any(f"--space {ref}" in c.value for c in at.caption)
    shared = _page(dataset="digits", method="pca", points="300", features=ref)  # links keep their ?features=
    assert not shared.exception and shared.selectbox(key="data_space").value == ref


def test_links_naming_missing_or_malformed_models_get_messages() -> None:
    at = _page(dataset="digits", features=R.make_ref(R.NET_KIND, "c" * 64))
    assert not at.exception and "no cached representation_net model" in at.warning[0].value
    assert at.selectbox(key="data_space").value == "pixels"
    at = _page(dataset="digits", features="model:nonsense")
    assert not at.exception and "refused" in at.error[0].value


def test_bad_link_and_bad_folder_get_messages() -> None:
    at = _page(points="999999")
    assert not at.exception and "refused" in at.error[0].value
    at = _page(dataset="folder", folder="/no/such/folder")
    assert not at.exception
    assert "does not exist" in at.warning[0].value and "digits" in at.warning[0].value


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not here")
def test_fashion_mnist_default() -> None:
    at = _page()
    assert not at.exception and not at.warning
    assert at.metric[0].value == "60,000" and at.metric[2].value == "1.00x"
    assert any("What to look for" in m.value for m in at.markdown)


def test_every_map_point_has_its_hover_thumbnail() -> None:
    """No point of a finished map lacks its image (a byte cap once left about a quarter of CIFAR points bare)."""
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="digits", method="pca", points="360")  # the map a visitor lands on computes by itself
    job = next(j for j in default_runner().jobs() if j.name.startswith("map digits") and j.id not in before)
    assert job.wait(60)
    at.run()
    assert not at.exception
    assert any("Hover a point for its image: every point." in c.value for c in at.caption)


@pytest.mark.slow  # decodes the CIFAR-10 JPEGs once (~15-30 s here)
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not here")
def test_every_point_of_a_default_size_cifar_map_has_its_thumbnail() -> None:
    """2,000 CIFAR-10 points (the default size): every one carries its image, enlarged from 32 pixels."""
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="cifar10", method="pca", points="2000")  # the map a visitor lands on computes by itself
    job = next(j for j in default_runner().jobs() if j.name.startswith("map cifar10") and j.id not in before)
    assert job.wait(120)
    at.run()
    assert not at.exception
    assert any("Hover a point for its image: every point." in c.value for c in at.caption)


def test_the_map_a_visitor_lands_on_computes_by_itself_and_later_settings_wait_for_compute() -> None:
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="digits", method="pca", points="300")
    assert not at.exception
    started = [j for j in default_runner().jobs() if j.id not in before and j.name.startswith("map digits pca")]
    assert len(started) == 1 and started[0].wait(60)
    at.run()
    assert any("trustworthiness" in c.value for c in at.caption)  # the map is shown without a click
    before = {j.id for j in default_runner().jobs()}
    at.radio(key="data_method").set_value("tsne").run()
    assert not [j for j in default_runner().jobs() if j.id not in before]  # a changed setting waits for Compute
    assert any("Press Compute" in i.value for i in at.info)
