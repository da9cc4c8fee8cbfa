"""Shared helpers to drive the app in headless Chromium: start the server, open a page, measure live frames."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--disable-background-networking", "--no-sandbox", "--disable-gpu",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """Chromium from the system (Debian's package), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(env: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[str]:
    """Run `streamlit run app.py` on a free local port; yields the base URL; stops it afterwards."""
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    # The server's output goes to a file, never to an unread pipe: a full pipe buffer (64 KB of log lines)
    # would block the server on its next write and every page would stop answering.
    log = tempfile.NamedTemporaryFile("w+", prefix="explorer-streamlit-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: {Path(log.name).read_text()[-4000:]}")
            time.sleep(0.3)
        else:
            raise RuntimeError("streamlit did not start in time")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        print(f"streamlit log: {log.name} ({Path(log.name).stat().st_size} bytes)")


def open_page(page, url: str, ready_text: str, timeout_ms: int = 90_000) -> None:
    """Go to a page and wait for its text (a screenshot is saved when it does not appear)."""
    page.goto(url, wait_until="commit", timeout=timeout_ms)
    try:
        page.get_by_text(ready_text).first.wait_for(timeout=timeout_ms)
    except Exception:
        shot = Path(os.environ.get("TMPDIR", "/tmp")) / "explorer-open-page-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        raise RuntimeError(f"{ready_text!r} did not appear at {url}; screenshot: {shot}") from None


WATCH_JS = """
() => {
  window.__frames = [];
  window.__samples = 0;
  window.__missing = 0;  // samples with no boundary image drawn (a blink)
  let last = null;
  const find = () => {
    for (const el of document.querySelectorAll('[data-testid="stImage"]')) {
      if (el.innerText.includes('Output of the network')) return el.querySelector('img');
    }
    return null;
  };
  window.__watch = setInterval(() => {
    const img = find();
    window.__samples += 1;
    if (!img || img.getBoundingClientRect().height <= 0) window.__missing += 1;
    if (img && img.complete && img.src !== last) { last = img.src; window.__frames.push([performance.now(), img.src]); }
  }, 4);
}
"""


def measure_live(page, seconds: float) -> dict:
    """After Play was pressed: distinct boundary images shown per second, bytes per boundary image, and in how
    many of the 4 ms samples the boundary image was missing or zero-sized (blinks)."""
    responses: list = []

    def on_response(resp) -> None:
        if "/media/" in resp.url:
            responses.append(resp)

    page.on("response", on_response)
    page.evaluate(WATCH_JS)
    page.wait_for_timeout(seconds * 1000)  # lets Playwright dispatch events while we wait
    watched = page.evaluate("() => { clearInterval(window.__watch); "
                            "return [window.__frames, window.__samples, window.__missing]; }")
    frames, samples, missing = watched
    page.remove_listener("response", on_response)
    sizes: dict[str, int] = {}
    for resp in responses:
        with contextlib.suppress(Exception):
            sizes[resp.url] = len(resp.body())
    if len(frames) < 2:
        return {"frames": len(frames), "fps": 0.0, "max_bytes": 0, "mean_bytes": 0, "samples": samples,
                "missing": missing}
    span = (frames[-1][0] - frames[0][0]) / 1000
    for _, src in frames:
        if src.startswith("data:"):  # an image sent inside the message: its bytes are in the URI
            sizes[src] = len(src.partition(",")[2]) * 3 // 4
    boundary = [sizes[src] for _, src in frames if src in sizes]
    return {"frames": len(frames), "fps": (len(frames) - 1) / span if span > 0 else 0.0,
            "max_bytes": max(boundary, default=0), "mean_bytes": sum(boundary) / max(len(boundary), 1),
            "sources": [src for _, src in frames], "samples": samples, "missing": missing}
