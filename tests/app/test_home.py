"""The router and home page: every registered page has a card; the app starts without an exception."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def test_home_lists_every_page() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    from pages.registry import PAGES

    captions = [c.value for c in at.caption]
    assert all(p.see in captions for p in PAGES)
    assert at.title[0].value.startswith("Deep-learning phenomena")


def test_every_registered_page_file_exists_and_has_its_own_url() -> None:
    from pages.registry import PAGES

    assert PAGES and all((ROOT / p.path).is_file() for p in PAGES)
    # A URL path equal to the file name would let Streamlit serve the file outside st.navigation.
    assert all(p.url != Path(p.path).stem for p in PAGES)
    assert len({p.url for p in PAGES}) == len(PAGES)
