"""Small UI helpers shared by the pages: config errors, per-session jobs, live polling, provenance, charts."""

from __future__ import annotations

import re
import time
from typing import Any, Callable, TypeVar

import altair as alt
import streamlit as st

from explorer.core.cache import Cache, Entry, default_cache
from explorer.core.config import ConfigError
from explorer.core.jobs import Job, JobFn, default_runner

T = TypeVar("T")


def session_id() -> str:
    """A stable id for this browser session (jobs are owned by it and reaped when it is gone)."""
    if "_session_id" not in st.session_state:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        st.session_state["_session_id"] = ctx.session_id if ctx else f"local-{time.time_ns()}"
    return st.session_state["_session_id"]


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


def get_job(slot: str) -> Job | None:
    """The job this session keeps in `slot` (None if there is none or the runner forgot it)."""
    job_id = st.session_state.get(f"_job_{slot}")
    job = default_runner().get(job_id) if job_id else None
    if job is not None:
        job.touch()
    return job


def start_job(slot: str, fn: JobFn, *, name: str = "", start_paused: bool = False) -> Job:
    """Submit `fn` as this session's job in `slot`, cancelling the job that was there."""
    old = get_job(slot)
    if old is not None and not old.is_final:
        old.cancel()
    job = default_runner().submit(fn, name=name or slot, owner=session_id(), start_paused=start_paused)
    st.session_state[f"_job_{slot}"] = job.id
    return job


def poll_job(job: Job, draw: Callable[[Job], Any], every: float = 0.5) -> None:
    """Draw a job's latest state now and every `every` seconds until it is final; never blocks on training."""

    @st.fragment(run_every=every if not job.is_final else None)
    def _panel() -> None:
        job.touch()
        draw(job)
        if job.state.value == "failed":
            st.error("The job failed: " + plain(job.error))

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
        parts.append(f"{float(compute_s):.1f} s of compute")
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


def split_dash(solid: str, dashed: str, title: str | None = None) -> alt.StrokeDash:
    """Line style by the "split" column: `solid` drawn solid, `dashed` dashed, whatever the names' order (by
    default Vega-Lite assigns dashes alphabetically), with line-segment legend symbols."""
    return alt.StrokeDash("split:N", scale=alt.Scale(domain=[solid, dashed], range=[[1, 0], [5, 3]]),
                          legend=alt.Legend(title=title, symbolType="stroke", symbolStrokeColor="#555",
                                            symbolStrokeWidth=2, symbolSize=300))


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
