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


def test_no_view_draws_a_dash_legend_on_a_line_with_points() -> None:
    """A line mark with point=True draws a strokeDash legend's symbols invisibly (bare "train / test" labels):
    dashed lines with points go through views.widgets.lines_with_points, whose points are a layer of their own."""
    import ast

    from views import widgets

    bad = []
    for path in sorted((Path(__file__).resolve().parents[2] / "views").glob("*.py")):
        source = path.read_text()
        for fn in ast.walk(ast.parse(source)):
            if not isinstance(fn, ast.FunctionDef) or "strokeDash" not in ast.get_source_segment(source, fn):
                continue
            for node in ast.walk(fn):  # chart.mark_line(point=...).encode(..., strokeDash=... or **encoding)
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "encode"
                        and isinstance(node.func.value, ast.Call)
                        and getattr(node.func.value.func, "attr", "") == "mark_line"
                        and any(k.arg == "point" for k in node.func.value.keywords)
                        and any(k.arg in ("strokeDash", None) for k in node.keywords)):
                    bad.append(f"{path.name}:{node.lineno}")
    assert not bad, bad
    import pandas as pd

    df = pd.DataFrame({"x": [1, 2, 1, 2], "y": [1, 2, 2, 3], "split": ["train", "train", "test", "test"]})
    spec = widgets.lines_with_points(df, x="x:Q", y="y:Q", color="split:N",
                                     strokeDash=widgets.split_dash("train", "test")).to_dict()
    line, points = spec["layer"]
    assert "strokeDash" in line["encoding"] and "strokeDash" not in points["encoding"]
    assert points["encoding"]["color"]["legend"] is None
