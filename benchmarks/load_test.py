"""A lecture hall on one server: N concurrent sessions of the decision-boundaries page each press Play.

Each session is a websocket client that speaks Streamlit's own protocol (the protobuf messages the browser sends and
receives: load the page, click a button by its widget id, answer the fragment timers' auto-reruns), so 30+ sessions
fit on a 2-core machine next to the server they measure; `benchmarks/live_browser.py` and the e2e tests cover the
same page in a real Chromium. It starts `streamlit run app.py` with the limits given, and reports:

- errors: exception elements, any text containing "Traceback", dropped connections (must be 0);
- the server's running / computing job counts from its status log line (must never exceed the limits);
- for every session: updates seen (the stats line's epoch changing), or a queue position / busy message shown;
- p50 / p95 time from pressing Play to the first update (or the first queue note), and updates/s per viewer;
- server memory (RSS) before, at the peak and after the sessions close, and the CPU of idle (paused) pages.

    python -m benchmarks.load_test --sessions 30 --seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parents[1]
PAGE = "boundaries"
QUEUE_WORDS = re.compile(r"position \d+|Waiting for a compute slot|server is busy", re.I)
EPOCH = re.compile(r"Epoch ([\d,]+)")
STATUS = re.compile(r"(\d+) running \((\d+) computing")  # explorer.core.status.status_line
STATUS_FULL = re.compile(r"jobs: (\d+) queued.*?, (\d+) running")


@dataclass
class Session:
    """What one simulated student saw."""

    index: int
    clicked: float | None = None
    first_update_s: float | None = None  # Play -> first epoch > 0 on screen
    first_note_s: float | None = None  # Play -> first queue / busy note on screen
    updates: int = 0
    update_times: list[float] = field(default_factory=list)
    queue_notes: int = 0
    last_note: str = ""
    busy: bool = False
    errors: list[str] = field(default_factory=list)
    last_epoch: str = "0"

    @property
    def rate(self) -> float:
        """Updates per second while updates came (first to last)."""
        t = self.update_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 and t[-1] > t[0] else 0.0


def _texts(fm: ForwardMsg) -> list[str]:
    """The visible texts a delta carries (markdown, alerts, captions, text)."""
    if fm.WhichOneof("type") != "delta" or fm.delta.WhichOneof("type") != "new_element":
        return []
    el = fm.delta.new_element
    kind = el.WhichOneof("type")
    if kind == "markdown":
        return [el.markdown.body]
    if kind == "alert":
        return [el.alert.body]
    if kind == "text":
        return [el.text.body]
    if kind == "exception":
        return ["Traceback: " + el.exception.type + " " + el.exception.message]
    return []


async def run_session(s: Session, url: str, seconds: float, click_after: float, stop_at: float,
                      close: bool = True) -> None:
    """Open the page, press Play, follow the fragment timers until stop_at, then close the tab (or press Pause)."""
    query = f"seed={s.index + 1}"
    try:
        async with websockets.connect(url, subprotocols=["streamlit"], max_size=None, open_timeout=60,
                                      ping_interval=None) as ws:
            msg = BackMsg()
            msg.rerun_script.page_name = PAGE
            msg.rerun_script.query_string = query
            await ws.send(msg.SerializeToString())
            buttons: dict[str, str] = {}
            page_hash = ""
            timers: dict[str, tuple[float, float]] = {}
            t_open = time.monotonic()
            paused = False
            while True:
                now = time.monotonic()
                if now >= stop_at and close:
                    return  # the student closes the tab mid-run: the server must let go of the job by itself
                if now >= stop_at and not paused and "Pause" in buttons:
                    await _click(ws, page_hash, query, buttons["Pause"])
                    paused, stop_at = True, now + 3.0
                elif now >= stop_at and paused:
                    return
                for fid, (interval, due) in list(timers.items()):
                    if now >= due:
                        b = BackMsg()
                        b.rerun_script.page_script_hash = page_hash
                        b.rerun_script.query_string = query
                        b.rerun_script.fragment_id = fid
                        b.rerun_script.is_auto_rerun = True
                        await ws.send(b.SerializeToString())
                        timers[fid] = (interval, now + interval)
                if s.clicked is None and "Play" in buttons and now - t_open >= click_after:
                    await _click(ws, page_hash, query, buttons["Play"])
                    s.clicked = time.monotonic()
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.05)
                except asyncio.TimeoutError:
                    continue
                fm = ForwardMsg()
                fm.ParseFromString(raw)
                kind = fm.WhichOneof("type")
                if kind == "navigation":
                    page_hash = fm.navigation.page_script_hash
                elif kind == "auto_rerun":
                    timers[fm.auto_rerun.fragment_id] = (fm.auto_rerun.interval,
                                                         time.monotonic() + fm.auto_rerun.interval)
                elif kind == "stop_auto_rerun":
                    for fid in fm.stop_auto_rerun.fragment_ids or list(timers):
                        timers.pop(fid, None)
                if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                    el = fm.delta.new_element
                    if el.WhichOneof("type") == "button":
                        buttons[el.button.label] = el.button.id
                for text in _texts(fm):
                    if "Traceback" in text:
                        s.errors.append(text[:200])
                    t = time.monotonic()
                    if s.clicked is not None and QUEUE_WORDS.search(text):
                        s.queue_notes += 1
                        s.last_note = QUEUE_WORDS.search(text).string[:160]
                        s.busy |= "busy" in text.lower()
                        if s.first_note_s is None:
                            s.first_note_s = t - s.clicked
                    m = EPOCH.search(text)
                    if m and s.clicked is not None and not paused and m.group(1) != s.last_epoch:
                        s.last_epoch = m.group(1)
                        if m.group(1) != "0":
                            s.updates += 1
                            s.update_times.append(t)
                            if s.first_update_s is None:
                                s.first_update_s = t - s.clicked
    except Exception as exc:  # a dropped connection is an error of the server under load
        s.errors.append(f"{type(exc).__name__}: {exc}")


async def _click(ws, page_hash: str, query: str, widget_id: str) -> None:
    """Press a button: a rerun with its trigger value set, as the browser sends it."""
    b = BackMsg()
    b.rerun_script.page_script_hash = page_hash
    b.rerun_script.query_string = query
    w = b.rerun_script.widget_states.widgets.add()
    w.id = widget_id
    w.trigger_value = True
    await ws.send(b.SerializeToString())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the server), MB."""
    total = 0
    pids = [pid] + [int(p) for p in _children(pid)]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(port: int, env_extra: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`streamlit run app.py` on a free port with its own runtime cache; returns once it answers."""
    env = {**os.environ, "EXPLORER_STATUS_LOG_S": "1", **env_extra}
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.fileWatcherType", "none",
                             "--logger.level", "info"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the server did not start; see {log_path}")


def run(sessions: int = 30, seconds: float = 120.0, ramp_s: float = 5.0, limits: dict[str, str] | None = None,
        quiet: bool = False, idle_s: float = 10.0) -> dict:
    """Run the load test and return its figures (also printed unless quiet)."""
    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="explorer-load-"))
    env = {"EXPLORER_CACHE_DIR": str(work / "cache"), **(limits or {})}
    log_path = work / "server.log"
    proc = start_server(port, env, log_path)
    try:
        time.sleep(1.0)
        rss_before = _rss_mb(proc.pid)
        url = f"ws://127.0.0.1:{port}/_stcore/stream"
        people = [Session(i) for i in range(sessions)]
        t0 = time.monotonic()
        stop_at = t0 + ramp_s + seconds

        async def everyone() -> None:
            async def one(s: Session) -> None:
                await asyncio.sleep(ramp_s * s.index / max(1, sessions))
                await run_session(s, url, seconds, 1.0, stop_at)
            await asyncio.gather(*(one(s) for s in people))

        peak = {"rss": rss_before}

        async def watch() -> None:
            while time.monotonic() < stop_at + 2:
                peak["rss"] = max(peak["rss"], _rss_mb(proc.pid))
                await asyncio.sleep(1.0)

        async def main() -> None:
            await asyncio.gather(everyone(), watch())

        asyncio.run(main())
        # every tab closed mid-run: how long until the server has let go of their jobs (status line: 0 running)
        closed = time.monotonic()
        released_s = None
        while time.monotonic() - closed < 90:
            lines = STATUS_FULL.findall(log_path.read_text(errors="replace"))
            if lines and lines[-1] == ("0", "0") and time.monotonic() - closed > 1.5:
                released_s = time.monotonic() - closed
                break
            time.sleep(0.5)
        # idle: the server with nothing to do
        cpu0, w0 = _cpu_s(proc.pid), time.monotonic()
        time.sleep(idle_s)
        idle_cores = (_cpu_s(proc.pid) - cpu0) / (time.monotonic() - w0)
        rss_after = _rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    log_text = log_path.read_text(errors="replace")
    counts = [(int(a), int(b)) for a, b in STATUS.findall(log_text)]
    # the app's own tracebacks (a job or page that failed); Streamlit logs one per websocket a client drops
    tracebacks = sum(str(ROOT) in block or "explorer" in block for block in log_text.split("Traceback")[1:]
                     if "WebSocketDisconnected" not in block and "websocket" not in block.lower())
    running = [s for s in people if s.updates > 0]
    first = sorted(x for s in people for x in [s.first_update_s if s.first_update_s is not None else s.first_note_s]
                   if x is not None)
    rates = sorted(s.rate for s in running if s.rate > 0)
    unseen = [s.index for s in people if s.updates == 0 and s.queue_notes == 0]
    result = {
        "sessions": sessions, "seconds": seconds, "errors": sum(len(s.errors) for s in people),
        "error_samples": [e for s in people for e in s.errors][:5], "server_tracebacks": tracebacks,
        "max_running": max((a for a, _ in counts), default=None),
        "max_computing": max((b for _, b in counts), default=None), "status_lines": len(counts),
        "sessions_with_updates": len(running), "sessions_shown_queue": sum(s.queue_notes > 0 for s in people),
        "sessions_busy": sum(s.busy for s in people), "sessions_shown_nothing": unseen,
        "queue_note_samples": sorted({s.last_note for s in people if s.last_note})[:3],
        "first_response_p50_s": statistics.median(first) if first else None,
        "first_response_p95_s": first[min(len(first) - 1, int(0.95 * len(first)))] if first else None,
        "updates_per_s_min": rates[0] if rates else None,
        "updates_per_s_median": statistics.median(rates) if rates else None,
        "rss_mb_before": round(rss_before), "rss_mb_peak": round(peak["rss"]), "rss_mb_after": round(rss_after),
        "closed_tabs_released_s": None if released_s is None else round(released_s, 1),
        "idle_cores": round(idle_cores, 3), "log": str(log_path),
    }
    if not quiet:
        for k, v in result.items():
            print(f"{k:24s} {v}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds over which the sessions arrive")
    ap.add_argument("--max-jobs", default=None, help="EXPLORER_MAX_JOBS for the server")
    ap.add_argument("--max-running", default=None, help="EXPLORER_MAX_RUNNING for the server")
    ap.add_argument("--max-queue", default=None, help="EXPLORER_MAX_QUEUE for the server")
    args = ap.parse_args(argv)
    limits = {f"EXPLORER_{k.upper()}": str(v) for k, v in
              (("max_jobs", args.max_jobs), ("max_running", args.max_running), ("max_queue", args.max_queue))
              if v is not None}
    r = run(args.sessions, args.seconds, args.ramp, limits)
    ok = r["errors"] == 0 and not r["sessions_shown_nothing"] and r["server_tracebacks"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
