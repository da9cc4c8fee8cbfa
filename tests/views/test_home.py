"""The router and home page: every registered lab has a card; the app starts without an exception."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from streamlit.testing.v1 import AppTest

from views.registry import LABS

ROOT = Path(__file__).resolve().parents[2]


def test_home_lists_every_lab() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert all(p.see in captions for p in LABS)
    assert at.title[0].value.startswith("Deep-learning phenomena")


def test_one_name_per_lab_view_file_url_and_package() -> None:
    """views/<slug>.py, the URL /<slug> and explorer.labs.<slug> exist for every lab, under one name."""
    assert LABS and len({p.slug for p in LABS}) == len(LABS)
    for lab in LABS:
        assert lab.path == f"views/{lab.slug}.py" and (ROOT / lab.path).is_file(), lab
        assert lab.url == lab.slug
        assert importlib.util.find_spec(lab.package) is not None, lab.package


def test_no_legacy_pages_folder() -> None:
    """A pages/ folder beside app.py makes Streamlit run its old folder navigation ("Page not found")."""
    assert not (ROOT / "pages").exists()


def test_lecture_settings_viewer_toolbar_and_a_local_favicon() -> None:
    """No "Deploy" button or developer menu; the favicon is a file of the app, not an icon from a font CDN."""
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"
    source = (ROOT / "app.py").read_text()
    assert "page_icon=FAVICON" in source and ":material/science:" not in source
    assert (ROOT / "static" / "favicon.png").read_bytes().startswith(b"\x89PNG")


def test_every_lab_is_in_a_known_section() -> None:
    from views.registry import SECTIONS

    assert {p.section for p in LABS} <= set(SECTIONS)
