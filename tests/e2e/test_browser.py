"""End to end: `streamlit run app.py` in a subprocess, every page opened in headless Chromium."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from benchmarks.live_browser import CHROMIUM_ARGS, chromium_path, measure_live, open_page, streamlit_server
from views.registry import LABS

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
PAGES = [(p.title, p.url) for p in LABS]

if chromium_path() is None:
    pytest.skip("no Chromium installed (apt-get install -y chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser_page():
    with streamlit_server() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield url, page, errors
        browser.close()


def test_a_deep_link_on_a_fresh_server_opens_the_page_without_a_dialog() -> None:
    """The first visit after the server starts opens a lab's URL directly: no "Page not found" dialog (with
    a pages/ folder Streamlit ran its old folder navigation once and showed one, streamlit#8860)."""
    with streamlit_server() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        open_page(page, f"{url}/{LABS[-1].slug}", LABS[-1].title)
        page.wait_for_timeout(3000)  # the dialog, when there was one, came up within a second
        assert page.get_by_role("dialog").count() == 0
        assert page.get_by_text("Page not found").count() == 0
        browser.close()


def _no_exception(page) -> None:
    exc = page.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()


def test_home_lists_all_pages(browser_page) -> None:
    url, page, errors = browser_page
    open_page(page, url, "Deep-learning phenomena")
    for title, _ in PAGES:
        assert page.get_by_role("link", name=re.compile(re.escape(title))).count() >= 1, title
    _no_exception(page)


@pytest.mark.parametrize("title, path", PAGES)
def test_page_opens_without_error(browser_page, title: str, path: str) -> None:
    url, page, errors = browser_page
    open_page(page, f"{url}/{path}", title)
    time.sleep(2)
    _no_exception(page)


def test_playground_play_changes_the_boundary(browser_page) -> None:
    url, page, errors = browser_page
    open_page(page, f"{url}/boundaries?speed=0&epochs=100000", "Output of the network")
    time.sleep(1)
    page.get_by_role("button", name="Play").click()
    time.sleep(1.0)
    m = measure_live(page, 4.0)
    print(f"\nlive boundary: {m['frames']} updates, {m['fps']:.1f}/s, max {m['max_bytes'] / 1024:.1f} KB per image")
    seen = set(m.get("sources", []))
    deadline = time.monotonic() + 60  # a loaded CI machine may be slow; the image must still change
    while len(seen) < 3 and time.monotonic() < deadline:
        seen.add(page.locator('[data-testid="stImage"] img').first.get_attribute("src"))
        page.wait_for_timeout(200)
    assert len(seen) >= 3, "the boundary image did not change after Play"
    epoch = page.locator("strong", has_text="Epoch").first.inner_text()
    assert int(epoch.split()[1].replace(",", "")) > 0
    page.get_by_role("button", name="Pause").click()
    _no_exception(page)
    assert not errors


def test_playground_csv_upload(browser_page) -> None:
    url, page, errors = browser_page
    open_page(page, f"{url}/boundaries?dataset=upload", "Upload a CSV")
    bad = {"name": "bad.csv", "mimeType": "text/csv", "buffer": b"x1,x2,label\n1,2\n"}
    page.locator('input[type="file"]').set_input_files(files=[bad])
    page.get_by_text("Setting refused").first.wait_for(timeout=30_000)
    rows = "x1,x2,label\n" + "\n".join(f"{i % 7 - 3},{i % 5 - 2},{int(i % 7 > 3)}" for i in range(60))
    good = {"name": "points.csv", "mimeType": "text/csv", "buffer": rows.encode()}
    page.locator('input[type="file"]').set_input_files(files=[good])
    page.get_by_text("Output of the network").first.wait_for(timeout=30_000)
    _no_exception(page)


def test_switching_sweeps_resets_the_epoch_slider(browser_page) -> None:
    """The browser sends back a widget's old value while it is still a valid choice: the page must set it."""
    from explorer.core.cache import Cache
    from explorer.labs.double_descent.results import list_sweeps, opening_peak

    shipped = {e.config["name"]: e for e in list_sweeps(Cache()) if e.shipped}
    first = opening_peak(shipped["fashion-cnn5"])[0]  # where its peak at the threshold shows, before epoch 30
    assert first != 500 and opening_peak(shipped["mnist1d-mlp"])[0] == 500
    url, page, errors = browser_page
    open_page(page, f"{url}/double_descent?sweep={shipped['fashion-cnn5'].key[:10]}", "Model-wise")
    slider = page.locator('[data-testid="stSlider"]').first
    want = f"At epoch\n\n{first}\n\n"
    assert want in _text_once_it_holds(slider, want)  # it may render after the heading
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=re.compile("^mnist1d-mlp:")).click()
    # the new sweep's opening epoch (its last), not the old sweep's
    assert "At epoch\n\n500" in _text_once_it_holds(slider, "At epoch\n\n500")
    _no_exception(page)


def _text_once_it_holds(locator, text: str, timeout_s: float = 30.0) -> str:
    """The locator's text as soon as it contains `text`, or its last text after timeout_s."""
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = locator.inner_text(timeout=2_000)
        except playwright.Error:  # not rendered yet, or rerendered while read
            seen = ""
        if text in seen:
            break
        time.sleep(0.25)
    return seen
