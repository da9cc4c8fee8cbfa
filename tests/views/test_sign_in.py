"""Optional sign-in (require_login): without a signed-in user no page runs; without [auth] the operator is told."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def test_sign_in_off_by_default_shows_the_home_page(monkeypatch) -> None:
    monkeypatch.delenv("EXPLORER_REQUIRE_LOGIN", raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception and at.title[0].value.startswith("Deep-learning phenomena")


def test_required_sign_in_gates_every_page_and_explains_a_missing_setup(monkeypatch) -> None:
    monkeypatch.setenv("EXPLORER_REQUIRE_LOGIN", "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]  # no lab, no home page
    at.button(key="app_login").click().run()
    assert not at.exception
    assert "not set up on this server" in at.error[0].value
    assert "secrets.toml" in at.error[0].value and "Traceback" not in at.error[0].value
