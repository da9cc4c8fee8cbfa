"""Idle pages: the server's CPU while browser tabs sit open and nobody touches them (target: ~0 cores).

Starts `streamlit run app.py`, opens N tabs (default 6) on the decision-boundary page, which opens paused at
epoch 0, and one tab of every other page, waits until each has drawn and settled, then reads the server
process's CPU time (utime + stime in /proc/<pid>/stat, every thread: the jobs are threads of the server) over a
window (default 20 s) and prints the cores used. With --used, each tab is used once before it is left alone: the
decision-boundary tabs train for a second and are paused, the double-descent tab computes its random-features
curve (a job that finishes). Only the server is measured, not Chromium. The machine's other load does not count
(it is another process), but a busy machine slows the pages' first draw: the settle time waits for that.
Usage: python -m benchmarks.idle_cpu [--tabs 6] [--seconds 20] [--settle 8] [--used]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

from benchmarks.live_browser import CHROMIUM_ARGS, chromium_path, open_page, streamlit_server
from views.registry import LABS

READY = {  # text each page shows once its first script run has drawn
    "boundaries": "Output of the network",
    "data_maps": "Data maps",
    "optimizer_race": "Optimizer race",
    "memorisation": "Memorisation",
    "double_descent": "Double descent",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_pid(port: int) -> int:
    """The pid of the `streamlit run` process listening on `port` (found by its command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(args) and str(port).encode() in args:
            return int(entry.name)
    raise RuntimeError(f"no streamlit process on port {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def thread_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread of the process ("tid name" -> seconds): where an idle server spends its time."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended
        out[f"{task.name} {name}"] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def measure(pid: int, seconds: float) -> tuple[float, list[tuple[str, float]]]:
    """Cores the process used over the next `seconds` (CPU seconds per wall second), and the busiest threads."""
    cpu0, threads0, t0 = cpu_seconds(pid), thread_seconds(pid), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    threads = thread_seconds(pid)
    busiest = sorted(((k, (v - threads0.get(k, 0.0)) / wall) for k, v in threads.items()), key=lambda kv: -kv[1])
    return (cpu_seconds(pid) - cpu0) / wall, [kv for kv in busiest[:5] if kv[1] > 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tabs", type=int, default=6, help="tabs on the decision-boundary page")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds to wait after the last tab has drawn")
    ap.add_argument("--no-others", action="store_true", help="only the decision-boundary tabs")
    ap.add_argument("--used", action="store_true", help="use each tab once (train and pause; compute) before idling")
    args = ap.parse_args()
    exe = chromium_path()
    if exe is None:
        raise SystemExit("Chromium not found: apt-get install -y chromium")
    with streamlit_server() as url, sync_playwright() as p:
        pid = server_pid(urlparse(url).port)
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        idle_server, _ = measure(pid, 3.0)
        slugs = ["boundaries"] * args.tabs + ([] if args.no_others else [lab.slug for lab in LABS
                                                                         if lab.slug != "boundaries"])
        tabs = []
        received: list[list[int]] = []  # per tab, the sizes of the websocket messages the server sent it
        for slug in slugs:
            page = context.new_page()
            frames: list[int] = []
            page.on("websocket", lambda ws, frames=frames: ws.on("framereceived",
                                                                   lambda payload: frames.append(len(payload))))
            received.append(frames)
            open_page(page, f"{url}/{slug}", READY[slug])
            tabs.append(page)
            if args.used:
                use(page, slug)
            settled(page)
        time.sleep(args.settle)
        before = [len(frames) for frames in received]
        cores, busiest = measure(pid, args.seconds)
        tabs[-1].wait_for_timeout(10)  # let Playwright deliver the window's websocket events
        sent = [len(frames) - n for frames, n in zip(received, before)]
        browser.close()
    print(f"server alone: {idle_server:.3f} cores")
    state = "trained 1 s, then paused" if args.used else "paused at epoch 0"
    print(f"{len(tabs)} idle tabs ({args.tabs} decision boundaries, {state}"
          f"{'' if args.no_others else ', one of each other page'}): {cores:.3f} cores over {args.seconds:g} s")
    print("messages sent per tab in the window: " + ", ".join(f"{slug} {n}" for slug, n in zip(slugs, sent)))
    if busiest:
        print("busiest threads (cores): " + ", ".join(f"{name} {c:.3f}" for name, c in busiest))


def use(page, slug: str) -> None:
    """Use a tab once as a student would, and wait until what it started is over (nothing left running)."""
    from playwright.sync_api import expect

    if slug == "boundaries":
        page.get_by_role("button", name="Play").click()
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_role("button", name="Play")).to_be_enabled(timeout=30_000)
    elif slug == "double_descent":
        page.get_by_role("tab", name="Random features").click()
        page.locator(".st-key-dd_rf_go button").click()
        page.get_by_text("p = n =").first.wait_for(timeout=120_000)


def settled(page) -> None:
    """Wait until the tab's script runs are over (a finished job's panel reruns the page once): the window measures
    what an idle tab costs, not the end of its first draw."""
    from playwright.sync_api import expect

    page.wait_for_timeout(500)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)


if __name__ == "__main__":
    main()
