"""Every asset of every page comes from the app's own server: a lecture hall may have no internet."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest

from benchmarks.live_browser import CHROMIUM_ARGS, chromium_path, open_page, streamlit_server
from views.registry import LABS

pytestmark = pytest.mark.browser
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
PAGES = [("", "Deep-learning phenomena")] + [(p.url, p.title) for p in LABS]

if chromium_path() is None:
    pytest.skip("no Chromium installed (apt-get install -y chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")


def _remote(url: str) -> bool:
    """True for a request that leaves this machine (data: and blob: URLs stay in the page)."""
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in LOCAL_HOSTS


def test_no_page_requests_a_remote_host() -> None:
    """Every request of each page's load and first seconds (favicon, fonts, icons, scripts) goes to the app."""
    with streamlit_server() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        requests: list[tuple[str, str]] = []
        page.on("request", lambda req: requests.append((page.url, req.url)))
        for path, ready in PAGES:
            open_page(page, f"{url}/{path}", ready)
            time.sleep(2)  # reruns after the first paint set the favicon again
        browser.close()
    assert requests, "no request was recorded"
    remote = sorted({f"{req} (on {at})" for at, req in requests if _remote(req)})
    assert not remote, "requests to hosts other than the app's server:\n" + "\n".join(remote)


def test_toolbar_has_no_deploy_button_or_developer_menu() -> None:
    """Viewer mode: no "Deploy" button and no developer entries (rerun, clear cache) in the main menu."""
    with streamlit_server() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        open_page(page, url, "Deep-learning phenomena")
        time.sleep(1)
        assert page.get_by_role("button", name="Deploy").count() == 0
        assert page.locator('[data-testid="stAppDeployButton"]').count() == 0
        assert page.get_by_text("Clear cache").count() == 0
        browser.close()
