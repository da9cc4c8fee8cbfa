"""The router and home page: every registered page has a card; the app starts without an exception."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def test_home_lists_every_page() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    import importlib.util

    spec = importlib.util.spec_from_file_location("app_pages", ROOT / "app.py")
    text = (ROOT / "app.py").read_text()
    assert spec is not None and "st.navigation" in text
    captions = [c.value for c in at.caption]
    assert len(captions) >= 1
    assert any("decision boundary" in c for c in captions)
    assert at.title[0].value.startswith("Deep-learning phenomena")


def test_every_registered_page_file_exists() -> None:
    text = (ROOT / "app.py").read_text()
    import re

    paths = re.findall(r'PageInfo\("([^"]+)"', text)
    assert paths and all((ROOT / p).is_file() for p in paths)
