"""Live view in a real browser: boundary updates per second and bytes per update (targets: >= 20/s, <= 50 KB).

Starts `streamlit run app.py`, opens the decision-boundary page in headless Chromium, presses Play at
maximum speed and counts distinct boundary images over a window, and samples in which the boundary is
missing. The baseline is the naive Streamlit pattern from FACTS.md: st.fragment(run_every=0.05) redrawing
st.image (about 5 frames per second there). Frame rates drop on a loaded machine: run it on an idle one,
several times, and note `uptime`'s load.
Usage: python -m benchmarks.bench_live [--seconds 8]
"""

from __future__ import annotations

import argparse
import time

from playwright.sync_api import sync_playwright

from benchmarks.live_browser import CHROMIUM_ARGS, chromium_path, measure_live, open_page, streamlit_server

NAIVE_BASELINE_FPS = 5.0  # FACTS.md: run_every=0.05 + st.image, measured on these machines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--speed", type=int, default=0, help="epochs per second (0 = max)")
    ap.add_argument("--opt", default="sgd", help="optimizer (sgd: the setting of earlier measurements; the page's "
                                                 "default adam trains ~4x slower per epoch and takes CPU from drawing)")
    ap.add_argument("--lr", type=float, default=0.03)
    args = ap.parse_args()
    exe = chromium_path()
    if exe is None:
        raise SystemExit("Chromium not found: apt-get install -y chromium")
    with streamlit_server() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        query = f"speed={args.speed}&epochs=100000&hidden=8,8,8&opt={args.opt}&lr={args.lr:g}"
        open_page(page, f"{url}/boundaries?{query}", "Output of the network")
        time.sleep(2)
        page.get_by_role("button", name="Play").click()
        time.sleep(1.5)
        m = measure_live(page, args.seconds)
        browser.close()
    print(f"boundary updates: {m['frames']} in {args.seconds:.0f} s window -> {m['fps']:.1f} per second")
    print(f"bytes per boundary update: mean {m['mean_bytes'] / 1024:.1f} KB, max {m['max_bytes'] / 1024:.1f} KB")
    print(f"boundary missing (blinks) in {m['missing']} of {m['samples']} samples (4 ms apart)")
    print(f"ratio updates per second vs naive run_every=0.05 fragment ({NAIVE_BASELINE_FPS:g}/s, FACTS.md): "
          f"{m['fps'] / NAIVE_BASELINE_FPS:.2f}x")


if __name__ == "__main__":
    main()
