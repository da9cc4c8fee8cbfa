"""The optimizer-race replay in headless Chromium: frames drawn per second and bytes over the websocket per replay.

Before (the replay as a Streamlit fragment re-sending the whole Altair chart every 0.12 s, measured once with
this script's method on the default Rosenbrock race, 4 racers x 300 steps, 1920x1080, load average 1.6-3.8 on
2 shared cores): 1.63 distinct frames/s and 22.74 MB received per replay. It cannot be rerun: that code is gone.
After: the tracks are sent once with the page and every frame is drawn in the browser (views/optimizer_race_replay.js).
Targets: >= 24 frames/s, <= 1 MB per replay.
Usage: python -m benchmarks.bench_replay [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics

from benchmarks.live_browser import CHROMIUM_ARGS, chromium_path, open_page, streamlit_server

BEFORE = {"fps": 1.63, "mb": 22.74}
# Samples the replay's drawn frame (the root's data-frame, set on every draw) on every animation frame; the
# component lives in a shadow root, so it is looked up there.
SAMPLER_JS = """
() => {
  const find = () => {
    for (const el of document.querySelectorAll('*')) {
      const r = el.shadowRoot && el.shadowRoot.querySelector('.race');
      if (r) return r;
    }
    return document.querySelector('.race');
  };
  window.__race = {frames: [], stop: false};
  let root = find(), last = null;
  const loop = t => {
    if (!root || !root.isConnected) root = find();
    const f = root ? root.dataset.frame : null;
    if (f !== last && f !== undefined && f !== null) { last = f; window.__race.frames.push([t, Number(f)]); }
    if (!window.__race.stop) requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
}
"""


def measure_replay(page, url: str, timeout_ms: int = 120_000) -> dict:
    """Open the race page, press Race and follow the autoplayed replay to its last step: frames/s and bytes."""
    received = [0]

    def on_ws(ws) -> None:
        ws.on("framereceived", lambda payload: received.__setitem__(0, received[0] + len(payload)))

    page.on("websocket", on_ws)
    open_page(page, f"{url}/optimizer_race", "Optimizer race")
    page.locator(".race canvas.surface").first.wait_for(timeout=timeout_ms)
    page.evaluate(SAMPLER_JS)
    before = received[0]
    page.get_by_role("button", name="Race", exact=True).click()
    slider = page.locator(".race input.scrub").first
    page.wait_for_function("() => window.__race.frames.some(f => f[1] > 0)", timeout=timeout_ms)
    steps = int(slider.get_attribute("max"))
    page.wait_for_function(f"() => window.__race.frames.some(f => f[1] >= {steps})", timeout=timeout_ms)
    page.wait_for_timeout(500)  # anything the server still sends for this replay
    frames = page.evaluate("() => { window.__race.stop = true; return window.__race.frames; }")
    page.remove_listener("websocket", on_ws)
    moving = [f for f in frames if f[1] > 0]
    span = (moving[-1][0] - moving[0][0]) / 1000 if len(moving) > 1 else 0.0
    return {"steps": steps, "frames": len(moving), "fps": (len(moving) - 1) / span if span > 0 else 0.0,
            "bytes": received[0] - before, "last": moving[-1][1] if moving else 0}


def main() -> None:
    """Several replays, each in a fresh page; prints before vs after."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    runs = []
    with streamlit_server() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for _ in range(args.rounds):
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            m = measure_replay(page, url)
            runs.append(m)
            print(f"  replay: {m['frames']} frames over {m['steps']} steps, {m['fps']:.1f} frames/s, "
                  f"{m['bytes'] / 1e6:.3f} MB  (load average {os.getloadavg()[0]:.2f})")
            page.close()
        browser.close()
    fps, mb = statistics.median(r["fps"] for r in runs), statistics.median(r["bytes"] for r in runs) / 1e6
    print(f"before: {BEFORE['fps']:.2f} frames/s, {BEFORE['mb']:.2f} MB per replay")
    print(f"after:  {fps:.1f} frames/s, {mb:.3f} MB per replay (median of {len(runs)})")
    print(f"ratio:  {fps / BEFORE['fps']:.1f}x the frame rate, {BEFORE['mb'] / max(mb, 1e-9):.0f}x fewer bytes")


if __name__ == "__main__":
    main()
