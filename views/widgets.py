"""Small UI helpers shared by the pages: config errors, per-session jobs, the queue, live polling, provenance, charts.

Jobs: `start_job` submits (keyed by the result's cache key when every session asking for the same settings may
share one computation), `get_job` finds this session's job again, `resume_job` is the Play / Step callback,
`queue_note` says where a waiting job is in the queue, and `poll_job` redraws a panel while its job runs. A full
queue (`Busy`) becomes a plain message for the visitor, never an exception, and the page keeps drawing.

Idle pages cost nothing: a panel polls only while its job is queued or running (slowly while queued), and a
finished job's panel reruns the page once to stop its timer. A job nobody polls is reaped by the runner after
its orphan timeout; a page finds that out on its next run and starts over from what the session kept.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable, TypeVar

import altair as alt
import streamlit as st

from explorer.core.cache import Cache, Entry, default_cache, key_for
from explorer.core.config import ConfigError
from explorer.core.jobs import Busy, Job, JobFn, JobState, default_runner
from explorer.core.report import hms

T = TypeVar("T")
log = logging.getLogger("explorer.views")


def session_id() -> str:
    """A stable id for this browser session (jobs are owned by it and reaped when it is gone)."""
    if "_session_id" not in st.session_state:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        st.session_state["_session_id"] = ctx.session_id if ctx else f"local-{time.time_ns()}"
    return st.session_state["_session_id"]


SESSION_WATCH_S = 5.0  # how often the server looks for closed tabs
SESSION_GRACE_S = 10.0  # a tab gone this long (not a reconnect) lets go of its jobs
_watch_lock = threading.Lock()
_watching = False


def connected_sessions() -> set[str] | None:
    """The ids of the browser sessions connected to this server now (Streamlit's runtime; None without one)."""
    try:
        from streamlit.runtime import Runtime

        return {info.session.id for info in Runtime.instance()._session_mgr.list_active_sessions()}
    except Exception:  # no runtime (AppTest, bare mode), or a Streamlit without this (private) attribute
        return None


def watch_sessions() -> None:
    """Once per server process: every SESSION_WATCH_S, the jobs of tabs closed for SESSION_GRACE_S are released
    (cancelled unless another session shares them), so a closed tab frees its compute in seconds, not after the
    runner's orphan timeout."""
    global _watching
    with _watch_lock:
        if _watching or connected_sessions() is None:
            return
        _watching = True

    def loop() -> None:
        runner = default_runner()
        while True:
            time.sleep(SESSION_WATCH_S)
            try:
                alive = connected_sessions()
                if alive is not None:
                    runner.release_gone(alive, SESSION_GRACE_S)
            except Exception:  # the watcher must outlive any one bad pass
                log.exception("releasing the jobs of closed sessions failed")

    threading.Thread(target=loop, name="session-watch", daemon=True).start()


def app_cache() -> Cache:
    """The server's one Cache, shared by every session and job (explorer.core.cache.default_cache: built once per
    process, which is the whole server); pages pass it to the lab functions. View tests patch this to their own."""
    return default_cache()


_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character: each may start Markdown


def plain(text: object) -> str:
    """Text for a Markdown-rendering element (st.error, st.warning, ...) shown exactly as written: every ASCII
    punctuation character backslash-escaped (CommonMark), so a crafted link's text cannot become a link, emphasis,
    HTML or one of Streamlit's :directives:."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def config_or_stop(build: Callable[[], T]) -> T:
    """Build a config; a ConfigError (out-of-range or malformed setting) is shown and the page stops."""
    try:
        return build()
    except ConfigError as exc:
        st.error("Setting refused: " + plain(exc))
        st.stop()
        raise  # unreachable: st.stop() raises


QUEUE_POLL_S = 1.0  # how often a panel whose job waits in the queue looks again (its position changes slowly)
_BUSY = "_busy_"  # session-state prefix: the busy message of a slot, left by a callback for the page to show


def job_key(kind: str, config: Any) -> str:
    """The key that shares one job among every session asking for this result: its cache kind and address."""
    return f"{kind}/{key_for(kind, config)}"


def get_job(slot: str) -> Job | None:
    """The job this session keeps in `slot` (None if there is none or the runner forgot it)."""
    job_id = st.session_state.get(f"_job_{slot}")
    job = default_runner().get(job_id) if job_id else None
    if job is not None:
        job.touch()
    return job


def start_job(slot: str, fn: JobFn, *, name: str = "", start_paused: bool = False,
              key: str | None = None) -> Job | None:
    """Submit `fn` as this session's job in `slot`, letting go of the job that was there (a job shared with other
    sessions goes on for them). With `key` (see job_key), the unfinished job of that key is joined instead: one
    computation for everyone who asks for the same settings. A full queue shows the busy message and gives None."""
    old = get_job(slot)
    if old is not None and not old.is_final and (key is None or old.key != key):
        old.cancel(owner=session_id())  # released: cancelled unless another session watches it too
    try:
        job = default_runner().submit(fn, name=name or slot, owner=session_id(), start_paused=start_paused, key=key)
    except Busy as exc:
        st.session_state.pop(f"_job_{slot}", None)
        st.warning(plain(exc))
        return None
    st.session_state[f"_job_{slot}"] = job.id
    return job


def stop_job(slot: str) -> bool:
    """This session stops following its job in `slot`: cancelled when nobody else watches it (True), else it goes
    on for the others and the slot is emptied (False)."""
    job = get_job(slot)
    if job is None or job.is_final:
        return True
    job.cancel(owner=session_id())
    if job.watchers:
        st.session_state.pop(f"_job_{slot}", None)
        return False
    return True


def resume_job(slot: str, step: bool = False) -> None:
    """A Play (or Step) button's callback: run the slot's job (or one more step of it); when the queue is full
    the busy message is kept for show_busy(slot), and the job stays paused."""
    job = get_job(slot)
    if job is None:
        return
    try:
        if step:
            job.step()
        else:
            job.resume()
    except Busy as exc:
        st.session_state[_BUSY + slot] = str(exc)


def show_busy(slot: str) -> bool:
    """Show (once) the busy message a callback left for `slot`; True when there was one."""
    message = st.session_state.pop(_BUSY + slot, None)
    if message:
        st.warning(plain(message))
    return bool(message)


def queue_text(job: Job | None) -> str | None:
    """'Waiting for a compute slot: position N of M, about T' while the job waits for admission, else None."""
    if job is None:
        return None
    position = job.queue_position
    if position is None:
        return None
    waiting = max(int(default_runner().stats()["queued"]), position)
    eta = job.queue_eta_s
    when = f"about {hms(eta)}" if eta is not None else "no estimate yet"
    return f"Waiting for a compute slot: position {position} of {waiting}, {when}"


def queue_note(job: Job | None) -> bool:
    """Say where the job waits (queue_text) as an info box; True when it waits."""
    text = queue_text(job)
    if text is not None:
        st.info(text + ". It starts by itself; keep this tab open.")  # our own words and numbers only
    return text is not None


def _cadence(job: Job, every: float) -> float | None:
    """The panel's timer for the job's state: slow while queued, `every` while it runs, none when paused or final
    (nothing changes then until someone presses a button, which reruns the page anyway)."""
    if job.is_final or job.state is JobState.PAUSED:
        return None
    return QUEUE_POLL_S if job.state is JobState.QUEUED else every


def poll_job(job: Job, draw: Callable[[Job], Any], every: float = 0.5) -> None:
    """Draw a job's latest state now and again while it is queued or running; never blocks on training.

    While queued the panel says where the job waits (queue_note) and looks again every QUEUE_POLL_S; once the job
    is final, one rerun of the page stops the timer, so a finished panel costs nothing while it stays open.
    """
    timer = _cadence(job, every)

    @st.fragment(run_every=timer)
    def _panel() -> None:
        job.touch()
        queue_note(job)
        draw(job)
        if job.state is JobState.FAILED:
            st.error("The job failed: " + plain(job.error))
        if _cadence(job, every) != timer:
            st.rerun()  # queued -> running, or final: the whole page again, with the timer the new state needs

    _panel()


def show_provenance(entry: Entry, recompute: str | None = None, compute_s: float | None = None) -> None:
    """Say where a shown result comes from: computed now or precomputed, how, on what, when.

    compute_s, if given, is the compute time of the parts the entry gathers (a sweep's points, which may
    come from several resumed runs), shown instead of the wall time of the run that wrote the entry.
    """
    meta = entry.meta
    origin = "Precomputed result shipped with the app" if entry.shipped else "Result from the cache"
    wall = meta.get("wall_time_s")
    parts = [origin, f"computed {meta.get('created', '?')}", f"on {meta.get('device', '?')}",
             f"code {meta.get('code_version', '?')}"]
    if compute_s is not None:
        workers = int(meta.get("workers") or 1)
        parts.append(f"{float(compute_s):.1f} s of compute" + (f" in {workers} worker processes" if workers > 1 else ""))
    elif wall is not None:
        parts.append(f"in {float(wall):.1f} s")
    st.caption(" · ".join(parts) + (f" · recompute with `{recompute}`" if recompute else ""))


PAGE_WIDE_PARAMS = ("lecture",)  # URL parameters every page understands (lecture_mode), outside its schema


def settings_from_url(schema: dict, prefix: str, validate: Callable[[dict], Any] | None = None) -> dict:
    """The URL's settings, checked on the server; refused ones leave a message and give the defaults.

    `validate` raises ConfigError for a value the page cannot use; the message is stored under
    `<prefix>link_error` for the page to show.
    """
    from explorer.core.urlstate import parse_params

    try:
        given = {k: v for k, v in st.query_params.items() if k in schema or k not in PAGE_WIDE_PARAMS}
        values = parse_params(schema, given)
        if validate is not None:
            validate(values)
        return values
    except ConfigError as exc:
        st.session_state[prefix + "link_error"] = f"The link's settings were refused: {exc}. Showing the defaults."
        return {k: p.default for k, p in schema.items()}


def init_from_url(schema: dict, prefix: str, validate: Callable[[dict], Any] | None = None,
                  adapt: Callable[[str, Any], Any] | None = None) -> None:
    """A page's first run in a session: its settings from the URL (settings_from_url: checked on the server by
    `validate`; a refused link gives the defaults and a message) into session state as prefix + name, where its
    widgets start from. Later runs leave the widgets' own state alone. `adapt(name, value)` gives the value a
    widget takes where it differs from the URL's (a multiselect wants a list, not a tuple)."""
    if prefix + next(iter(schema)) in st.session_state:
        return
    for name, value in settings_from_url(schema, prefix, validate).items():
        st.session_state[prefix + name] = adapt(name, value) if adapt is not None else value


def split_dash(solid: str, dashed: str, title: str | None = None, field: str = "split") -> alt.StrokeDash:
    """Line style by the `field` column ("split" by default): `solid` drawn solid, `dashed` dashed, whatever the
    names' order (by default Vega-Lite assigns dashes alphabetically), with line-segment legend symbols (the
    default legend shows two identical dots). On lines with points, draw through lines_with_points."""
    return alt.StrokeDash(f"{field}:N", scale=alt.Scale(domain=[solid, dashed], range=[[1, 0], [5, 3]]),
                          legend=alt.Legend(title=title, symbolType="stroke", symbolStrokeColor="#555",
                                            symbolStrokeWidth=2, symbolSize=300))


def lines_with_points(data: Any, *, point_size: float = 30, **encoding: Any) -> alt.LayerChart:
    """A line per series with a filled point at every value, whose dash legend (a strokeDash channel, e.g.
    split_dash) shows the dashes: the points are a layer of their own without strokeDash and without a colour
    legend of their own. (A line mark with point=True draws a dash legend's stroke symbols invisibly, leaving
    bare labels.)"""
    line = alt.Chart(data).mark_line().encode(**encoding)
    dots = {k: v for k, v in encoding.items() if k != "strokeDash"}
    color = dots.get("color")
    if isinstance(color, str):
        dots["color"] = alt.Color(color, legend=None)
    elif isinstance(color, alt.Color):
        dots["color"] = color.copy(deep=True)
        dots["color"].legend = None
    return alt.layer(line, alt.Chart(data).mark_point(filled=True, size=point_size).encode(**dots))


LECTURE_HEIGHT = 440  # px of a chart in lecture mode: about half a 1080-pixel screen
LECTURE_FONT = 18  # px of chart text in lecture mode: readable from the back of a hall on a 1920-wide projector


def lecture_mode(prefix: str) -> bool:
    """The page's "Lecture mode" toggle in the sidebar (a link with ?lecture=1 opens in it)."""
    key = prefix + "lecture"
    if key not in st.session_state:
        st.session_state[key] = st.query_params.get("lecture", "") in ("1", "true", "True")
    return st.sidebar.toggle("Lecture mode", key=key,
                             help="Every chart the full width of the screen, one per row, with large text.")


def chart_slots(lecture: bool, n: int = 2) -> list:
    """Where n charts go: n columns side by side, or in lecture mode n full-width rows."""
    return [st.container() for _ in range(n)] if lecture else list(st.columns(n))


def for_lecture(chart: alt.TopLevelMixin, lecture: bool) -> alt.TopLevelMixin:
    """The chart with large axis, legend and title text in lecture mode (unchanged otherwise)."""
    if not lecture:
        return chart
    if isinstance(chart, (alt.Chart, alt.LayerChart)):
        chart = chart.properties(height=LECTURE_HEIGHT)  # full width and squat is hard to read: taller too
    f = LECTURE_FONT
    return (chart.configure_axis(labelFontSize=f, titleFontSize=f + 2)
            .configure_legend(labelFontSize=f, titleFontSize=f + 2, labelLimit=0)
            .configure_title(fontSize=f + 4))


def my_job(prefix: str, slot: str, cfg: Any) -> Job | None:
    """This session's job in `slot` if it was started for cfg (by job_panel), else None."""
    job = get_job(slot)
    return job if job is not None and st.session_state.get(prefix + slot + "_cfg") == cfg else None


def _progress(j: Job) -> None:
    st.progress(min(max(j.progress, 0.0), 1.0), text=j.message or j.state.value)


def job_panel(prefix: str, slot: str, cfg: Any, make: Callable[[], JobFn], *, name: str, key: str,
              label: str = "Train", autostart: bool = False, hint: str = "",
              draw: Callable[[Job], Any] | None = None, buttons: tuple[str, str] | None = None) -> Job | None:
    """A job for cfg in this session's `slot`: a primary `label` button starts make() (or it starts by itself
    when `autostart`), a Stop button while it runs, `hint` while there is none, and the job drawn live by `draw`
    (its progress bar by default). Returns the job, None while there is none. `buttons` are the two buttons' keys
    (default prefix + slot + "_go" / "_stop")."""
    go, stop = buttons or (prefix + slot + "_go", prefix + slot + "_stop")
    job = my_job(prefix, slot, cfg)
    c1, c2 = st.columns([1, 4])
    pressed = c1.button(label, type="primary", key=go, disabled=job is not None and not job.is_final)
    if pressed or (autostart and job is None):
        job = start_job(slot, make(), name=name, key=key)
        st.session_state[prefix + slot + "_cfg"] = cfg
    if job is None:
        if hint:
            st.info(hint)
        return None
    if not job.is_final and c2.button("Stop", key=stop):
        stop_job(slot)
    poll_job(job, draw or _progress, every=0.5)
    return job


def cached_or_job(prefix: str, slot: str, kind: str, cfg: Any, make: Callable[[], Callable], name: str, label: str,
                  autostart: bool, hint: str, buttons: tuple[str, str] | None = None) -> Entry | None:
    """The cached entry for cfg, else a job_panel (started by itself when `autostart`, else by the button) with its
    progress and a Stop button; None while there is no result. Widget keys start with the page's `prefix`."""
    entry = app_cache().get(kind, cfg)
    job = my_job(prefix, slot, cfg)
    if entry is not None and (job is None or job.is_final):
        return entry
    job_panel(prefix, slot, cfg, make, name=name, key=job_key(kind, cfg), label=label, autostart=autostart,
              hint=hint, buttons=buttons)
    return None
