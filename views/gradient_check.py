"""Gradient check: hand-written backprop against the centred numerical gradient and autograd, with planted bugs."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.config import ConfigError, check_choice
from explorer.core.urlstate import Param
from explorer.data.datasets import DatasetUnavailable
from explorer.labs.gradient_check import lab as gc
from views.widgets import (app_cache, config_or_stop, for_lecture, init_from_url, lecture_mode, lines_with_points,
                           plain, split_dash)

K = "gc_"  # widget-key prefix
START = gc.CheckConfig()
SCHEMA = {"model": Param(str, START.model), "bug": Param(str, START.bug), "dtype": Param(str, START.dtype),
          "h": Param(float, START.h)}
VERDICT_ICON = {"pass": "pass", "suspicious": "suspicious (look again)", "fail": "FAIL"}


def _validate_link(v: dict) -> None:
    """A link's settings: a ConfigError says what is refused."""
    check_choice("model", v["model"], gc.MODELS)
    check_choice("bug", v["bug"], gc.BUGS)
    check_choice("dtype", v["dtype"], gc.DTYPES)
    if not any(abs(v["h"] - h) <= 1e-6 * h for h in gc.SWEEP_H):
        raise ConfigError(f"h must be one of {', '.join(f'{h:.0e}' for h in gc.SWEEP_H)}; got {v['h']:g}")


def _slider_h(name: str, value: object) -> object:
    """The h slider's own value nearest the link's (1e-5 and 1.0000001e-5 are one stop)."""
    return min(gc.SWEEP_H, key=lambda h: abs(h - value)) if name == "h" else value


def check_ui() -> gc.CheckConfig:
    """The widgets -> the check's frozen config (out-of-range values refused by the core)."""
    c1, c2, c3, c4 = st.columns([2, 3, 1, 2])
    model = c1.selectbox("Model", list(gc.MODELS), format_func=gc.MODELS.get, key=K + "model")
    bug = c2.selectbox("Planted bug", list(gc.BUGS), format_func=lambda b: gc.BUGS[b].title, key=K + "bug")
    dtype = c3.radio("Numbers", list(gc.DTYPES), key=K + "dtype")
    h = c4.select_slider("Step h", options=list(gc.SWEEP_H), format_func=lambda v: f"{v:.0e}", key=K + "h")
    c1, c2, c3, c4, c5 = st.columns(5)
    data = c1.selectbox("Batch", list(gc.DATA), format_func=gc.DATA.get, key=K + "data")
    batch = c2.number_input("Batch size", 1, 256, START.batch_size, key=K + "batch")
    lam = c3.number_input("L2 strength lambda", 0.0, 10.0, START.lam, format="%.4g", key=K + "lam")
    hidden = c4.number_input("Hidden width", 2, 128, START.hidden, key=K + "hidden",
                             help="two-layer network only")
    seed = c5.number_input("Seed", 0, 2**31 - 1, START.seed, key=K + "seed")
    return config_or_stop(lambda: gc.CheckConfig(model=model, bug=bug, h=float(h), dtype=dtype, lam=float(lam),
                                                 batch_size=int(batch), hidden=int(hidden), seed=int(seed),
                                                 data=data))


@st.cache_data(max_entries=64, show_spinner=False)
def _check(cfg: gc.CheckConfig, _cache: object) -> gc.CheckResult:
    """The check (well under 2 s); cached per config."""
    return gc.run_check(cfg, cache=_cache)


def sweep_chart(df: pd.DataFrame, h: float) -> alt.LayerChart:
    """Relative error of the numerical gradient against h, log-log, a line per parameter and dtype."""
    lines = lines_with_points(
        df, x=alt.X("h:Q", scale=alt.Scale(type="log", reverse=True), axis=alt.Axis(format=".0e"),
                    title="step h (smaller to the right)"),
        y=alt.Y("rel_error:Q", scale=alt.Scale(type="log"), axis=alt.Axis(format=".0e"),
                title="max relative error vs float64 autograd"),
        color=alt.Color("parameter:N", scale=alt.Scale(scheme="tableau10")),
        strokeDash=split_dash("float64", "float32", title="numbers", field="dtype"),
        tooltip=["parameter", "dtype", alt.Tooltip("h:Q", format=".0e"),
                 alt.Tooltip("rel_error:Q", format=".2e", title="relative error")])
    bands = pd.DataFrame({"y": [gc.PASS_BELOW, gc.SUSPICIOUS_BELOW],
                          "threshold": ["pass below", "suspicious below"]})
    rules = alt.Chart(bands).mark_rule(strokeDash=[2, 2], color="grey").encode(
        y="y:Q", tooltip=["threshold", alt.Tooltip("y:Q", format=".0e")])
    chosen = alt.Chart(pd.DataFrame({"h": [h]})).mark_rule(color="#888").encode(
        x="h:Q", tooltip=[alt.Tooltip("h:Q", format=".0e", title="chosen h")])
    return (lines + rules + chosen).properties(height=340, title="Numerical gradient error against the step h")


def draw(result: gc.CheckResult) -> None:
    """The verdict line, the table, the h-sweep and its download."""
    cfg = result.config
    rows = gc.table_rows(result)
    failed = [r["parameter"] for r in rows if r["verdict"] == "fail"]
    doubtful = [r["parameter"] for r in rows if r["verdict"] == "suspicious"]
    if failed:
        st.error(plain(f"Gradient check failed for {', '.join(failed)}."))
    elif doubtful:
        st.warning(plain(f"Gradient check suspicious for {', '.join(doubtful)}."))
    else:
        st.success("Gradient check passed for every parameter.")
    if cfg.dtype == "float32":
        st.info("In float32 the numerical gradient itself is poor (round-off about 1e-7 / h): check in float64.")
    df = pd.DataFrame(rows)
    df["verdict"] = df["verdict"].map(VERDICT_ICON)
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "rel. error vs numerical": st.column_config.NumberColumn(format="%.2e"),
        "rel. error vs autograd": st.column_config.NumberColumn(format="%.2e")})
    st.caption(plain(f"Thresholds: {gc.THRESHOLDS_TEXT}. Loss at this point: {result.loss:.6f}. "
                     f"Data: {result.data_note}. Where a parameter has more than {cfg.max_entries} entries, a "
                     "seeded random subset of them is checked numerically (autograd is compared on all of them)."))
    bugged = gc.BUGS[cfg.bug].affects[cfg.model]
    if bugged:
        st.caption(plain(f"The planted bug corrupts the analytic gradient of {', '.join(bugged)}."))
    sweep = pd.DataFrame(list(result.sweep))
    lecture = bool(st.session_state.get(K + "lecture"))
    st.altair_chart(for_lecture(sweep_chart(sweep, cfg.h), lecture), width="stretch")
    st.markdown("**What to look for:** a V. On the left (large h) the truncation error of the centred difference "
                "falls as h^2; on the right (small h) round-off, about machine epsilon / h, grows again. float64 "
                "bottoms out near h = 1e-4 to 1e-5, well below 1e-7; float32's best is orders of magnitude worse, at a much larger h.")
    st.download_button("Download the h-sweep (CSV)", sweep.to_csv(index=False), file_name="gradient-check-h-sweep.csv",
                       mime="text/csv", key=K + "csv")


def explain() -> None:
    """The formulas in a few lines."""
    with st.expander("How the check works", expanded=False):
        st.markdown(
            "Numerical gradient of each checked entry x of a parameter: "
            "$\\frac{f(x+h) - f(x-h)}{2h}$ (centred: error $O(h^2)$, not $O(h)$).\n\n"
            "Relative error: $\\max_i \\frac{|a_i - b_i|}{\\max(\\varepsilon, |a_i| + |b_i|)}$ with "
            f"$\\varepsilon = {gc.REL_EPS:g}$, so two exact zeros agree.\n\n"
            "Loss: mean cross-entropy + $\\lambda \\sum \\|W\\|^2$ over the weight matrices (not the biases). "
            "Backward by hand: $dS = (P - Y)/B$, $dW = X^T dS + 2\\lambda W$, $db = \\sum_i dS_i$; for the "
            "two-layer network $dH = dS\\,W_2^T$, $dZ_1 = dH \\odot [Z_1 > 0]$.")


# --- page --------------------------------------------------------------------------------------------

st.title("Gradient check")
lecture_mode(K)
st.caption("Is my backprop right? The hand-written gradient against the centred numerical gradient and against "
           "autograd, for every weight matrix and bias. Plant a bug and watch the check catch it.")
init_from_url(SCHEMA, K, _validate_link, _slider_h)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
config = check_ui()
st.caption(plain(f"Verdicts: {gc.THRESHOLDS_TEXT}."))
try:
    outcome = _check(config, app_cache())
except DatasetUnavailable as exc:  # the digits need scikit-learn: say so, the page stays up
    st.error("The check could not run: " + plain(exc))
    st.stop()
draw(outcome)
explain()
