"""The live decision-boundary view in a real browser: no blinks, no scroll jumps, nothing sent while paused.

A 10 ms DOM sampler records, for the stats line, the boundary image and the loss curve, whether each is
present and its bounding box, plus the scroll position, while the network trains; a blink is an element
missing or zero-sized for one sample. Counts, not timings, so a loaded machine does not fail it.
"""

from __future__ import annotations

import pytest

from benchmarks.live_browser import CHROMIUM_ARGS, chromium_path, open_page, streamlit_server

pytestmark = pytest.mark.browser

if chromium_path() is None:
    pytest.skip("no Chromium installed (apt-get install -y chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")

SCROLL_TO = 250  # px: part-way down, so a collapsing page height would move the view

SAMPLER_JS = """
() => {
  const scroller = () => {
    const main = document.querySelector('[data-testid="stMain"]');
    return main && main.scrollHeight > main.clientHeight + 5 ? main : document.scrollingElement;
  };
  const find = (sel, text) => {
    for (const el of document.querySelectorAll(sel)) { if (el.innerText.includes(text)) return el; }
    return null;
  };
  const box = (el) => {
    if (!el) return null;
    const r = el.getBoundingClientRect();
    return [r.width, r.height, r.top + scroller().scrollTop];
  };
  window.__samples = [];
  window.__sampler = setInterval(() => {
    const stats = find('[data-testid="stMarkdownContainer"]', 'Epoch');
    const boundary = find('[data-testid="stImage"]', 'Output of the network');
    const curves = find('[data-testid="stImage"]', 'Loss curves');
    window.__samples.push({
      stats: box(stats), boundary: box(boundary && boundary.querySelector('img')),
      curves: box(curves && curves.querySelector('img')),
      src: boundary && boundary.querySelector('img') ? boundary.querySelector('img').src : null,
      text: stats ? stats.innerText : null,
      height: scroller().scrollHeight, scroll: scroller().scrollTop,
    });
  }, 10);
}
"""


def _scroll(page, y: int) -> None:
    page.evaluate("""(y) => {
      const main = document.querySelector('[data-testid="stMain"]');
      const s = main && main.scrollHeight > main.clientHeight + 5 ? main : document.scrollingElement;
      s.scrollTop = y;
    }""", y)


def _sample(page, seconds: float, then: str | None = None) -> list[dict]:
    """Sample the page every 10 ms for `seconds`; `then`, a JS statement, runs just after sampling starts."""
    page.evaluate(SAMPLER_JS)
    if then:
        page.evaluate(f"() => {{ {then} }}")
    page.wait_for_timeout(seconds * 1000)
    return page.evaluate("() => { clearInterval(window.__sampler); return window.__samples; }")


def _blinks(samples: list[dict]) -> dict[str, int]:
    """Per element: samples in which it was missing or zero-sized."""
    return {name: sum(1 for s in samples if not s[name] or s[name][0] <= 0 or s[name][1] <= 0)
            for name in ("stats", "boundary", "curves")}


@pytest.fixture(scope="module")
def live_page():
    with streamlit_server() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        received: list[int] = []
        page.on("websocket", lambda ws: ws.on("framereceived",
                                              lambda payload: received.append(len(payload))))
        open_page(page, f"{url}/boundaries?speed=0&epochs=100000", "Output of the network")
        page.get_by_text("Loss curves").first.wait_for(timeout=60_000)
        yield page, received
        browser.close()


def test_training_view_never_blinks_nor_jumps(live_page) -> None:
    page, _ = live_page
    _scroll(page, SCROLL_TO)
    page.wait_for_timeout(300)
    # Play pressed from JS while sampling: a Playwright click would scroll the button into view, and the
    # first seconds after it (the rerun it starts, the first frames) are where a blink is likeliest
    samples = _sample(page, 15.0, then="[...document.querySelectorAll('button')]"
                                       ".find(b => b.innerText.includes('Play')).click();")
    playwright.expect(page.get_by_role("button", name="Pause")).to_be_enabled(timeout=30_000)
    assert len(samples) > 200, "the sampler hardly ran"
    blinks = _blinks(samples)
    scrolls = sorted({s["scroll"] for s in samples})
    frames = len({s["src"] for s in samples})
    tops = {round(s["boundary"][2]) for s in samples if s["boundary"]}
    print(f"\n{len(samples)} samples: blinks {blinks}, scroll positions {scrolls[:5]}, boundary frames {frames}, "
          f"boundary tops {sorted(tops)[:5]}, heights {sorted({s['height'] for s in samples})[:5]}")
    assert frames >= 3, "the boundary did not change while training"
    assert blinks == {"stats": 0, "boundary": 0, "curves": 0}
    assert len(scrolls) == 1, f"the scroll position jumped: {scrolls[:10]}"
    assert max(tops) - min(tops) <= 2, f"the boundary moved: {sorted(tops)[:10]}"


def test_nothing_changes_while_paused(live_page) -> None:
    page, received = live_page
    page.get_by_role("button", name="Pause").click()
    playwright.expect(page.get_by_role("button", name="Play")).to_be_enabled(timeout=30_000)
    page.wait_for_timeout(2500)  # the job pauses at its next epoch and publishes its last frame
    before = len(received)
    samples = _sample(page, 5.0)
    sent = received[before:]
    print(f"\npaused: {len(sent)} websocket messages ({sum(sent)} bytes) in 5 s")
    assert _blinks(samples) == {"stats": 0, "boundary": 0, "curves": 0}
    assert len({s["src"] for s in samples}) == 1 and len({s["text"] for s in samples}) == 1
    assert sum(sent) < 2000, f"the page kept redrawing while paused: {len(sent)} messages, {sum(sent)} bytes"
