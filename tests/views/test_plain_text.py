"""User text is never rendered as Markdown: a crafted link's refused setting is echoed literally."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from views.widgets import plain

REPO = Path(__file__).resolve().parents[2]
LINK = "[re-enter your password](http://evil.example/login) **now** :red[x] <b>b</b>"


def test_plain_escapes_every_markdown_character() -> None:
    out = plain(LINK)
    assert "](" not in out and "**" not in out and ":red[" not in out and "<b>" not in out
    assert out.replace("\\", "") == LINK  # only backslashes were added: the text reads as written


@pytest.mark.parametrize("view, param", [("boundaries", "dataset"), ("memorisation", "dataset"),
                                         ("optimizer_race", "surface"), ("data_maps", "dataset")])
def test_a_crafted_link_is_echoed_as_plain_text(view: str, param: str) -> None:
    at = AppTest.from_file(str(REPO / "views" / f"{view}.py"), default_timeout=60)
    at.query_params[param] = LINK
    at.run()
    assert not at.exception
    shown = [e.value for e in [*at.error, *at.warning] if "refused" in e.value]
    assert shown, f"{view}: no refusal shown"
    assert all("](http" not in s and "**now**" not in s for s in shown), shown  # no link, no emphasis
    assert any("re\\-enter your password" in s for s in shown)
