"""The Data page: loads, draws balance and gallery, refuses bad links, falls back, computes a map."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import datasets as D
from explorer.jobs import default_runner

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own cache; the shared data folder when present; no downloads."""
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(SHARED if SHARED.is_dir() else tmp_path / "data"))
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    D._memo.clear()


def _page(**params: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "data.py"), default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_digits_page_draws_balance_gallery_and_a_pca_map() -> None:
    at = _page(dataset="digits", method="pca", points="300")
    assert not at.exception
    assert at.selectbox(key="data_dataset").value == "digits"
    assert [m.value for m in at.metric][:2] == ["1,437", "360"]
    assert at.slider(key="data_per_class").value == 8 and len(at.get("image")) >= 10
    at.button(key="data_compute").click().run()
    assert not at.exception
    job = next(j for j in default_runner().jobs() if j.name.startswith("map digits"))
    assert job.wait(60)
    at.run()
    assert not at.exception and not at.error
    assert at.get("download_button") and any("trustworthiness" in c.value for c in at.caption)


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
