"""Double descent: test error against model width and against epochs, from cached or live sweeps.

Per-session results stay per session: the sweep selector lists the shipped sweeps and the sweeps this session
computed or asked for (a link's ?sweep=, or Compute), never every sweep another visitor computed, and the default
is chosen among the shipped ones. Compute with settings someone already computed finds the result in the cache at
once; while it is still computing, everyone who asks for the same settings joins one job (keyed by the result's
cache address) and sees its progress.
"""

from __future__ import annotations

import dataclasses
import os
import time

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.cache import key_for
from explorer.core.config import ConfigError
from explorer.core.config import shown as shown_value  # a refused value, cut to a readable length
from explorer.core.report import hms, progress_line
from explorer.labs.double_descent.random_features import KINDS, RF_KIND, RFConfig, cached_run, features_around
from explorer.labs.double_descent.results import (FIT_TOLERANCE, clearest_sweep, describe, engine_note,
                                                  interpolation_threshold, list_sweeps, opening_peak, peak_rise,
                                                  recipe_line, recompute_command, shows_peak, sweep_frame)
from explorer.labs.double_descent.run import plan_sweep, run_sweep
from explorer.labs.double_descent.spec import LIVE_MAX_EPOCHS, LIVE_WIDTHS, SWEEP_KIND, live_spec
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, job_key, lecture_mode,
                           lines_with_points, plain, poll_job, show_provenance, split_dash, start_job)

K = "dd_"  # widget-key prefix
METRIC_LABELS = {"test_err": "test error (clean labels)", "test_err_noisy": "test error (noisy labels)",
                 "test_loss": "test loss (clean labels)", "train_err": "train error", "train_loss": "train loss"}
# Presets of the live sweep: widths, label noise (%), epochs. "The peak" shows model-wise double descent with one
# seed (test error 0.48 at width 16, 0.56 at 40, 0.49 at 200). After 30 epochs no width fits its training labels
# yet, so the quick one shows only the error falling with width. Times on screen come from plan_sweep's estimate
# and the job's own ETA, not from here.
LIVE_PRESETS = {"the peak (500 epochs)": ((4, 8, 16, 25, 32, 40, 50, 64, 100, 200), 15, 500),
                "quick look (30 epochs: error falls with width, no peak yet)": ((4, 16, 64), 15, 30)}
RF_METRICS = {"classification error": ("test_err", "train_err"), "squared error": ("test_mse", "train_mse")}
RF_BANDWIDTHS = ("median", 1.0, 2.0, 5.0, 10.0)  # Fourier features' sigma choices ("median": pairwise distance)
RF_CLIP = 4.0  # the squared-error axis ends at this many times the median test error, so the peak's sides show


@st.cache_data(show_spinner=False, max_entries=8)
def _frame(key: str) -> pd.DataFrame:
    """The long table of a sweep summary (cached per entry key)."""
    return sweep_frame(_entries()[key])


def _entries() -> dict:
    """Every summary entry in the cache by key, newest first (what a link or this session may ask for)."""
    return {e.key: e for e in list_sweeps(app_cache())}


def _mine() -> list[str]:
    """Keys of the sweeps this session computed or asked for, in the order it did (kept in session state)."""
    return st.session_state.setdefault(K + "mine", [])


def _remember(key: str) -> None:
    """Add a sweep to this session's list (the selector shows it from now on)."""
    if key not in _mine():
        _mine().append(key)


def _listed(entries: dict) -> dict:
    """The selector's sweeps: the shipped ones and this session's own, not every sweep another visitor computed."""
    mine = set(_mine())
    return {k: e for k, e in entries.items() if _shipped(k, e) or k in mine}


def _shipped(key: str, entry) -> bool:
    """A shipped sweep, also where a runtime copy of it (the operator's --ship run, a recompute) shadows it."""
    return entry.shipped or app_cache().ships(SWEEP_KIND, key)


@st.cache_data(show_spinner=False, max_entries=8)
def _clearest(keys: tuple[str, ...]) -> str | None:
    """The key of the sweep with the clearest model-wise peak (results.clearest_sweep) among these."""
    entries = _entries()
    best = clearest_sweep([entries[k] for k in keys if k in entries])
    return best.key if best is not None else None


def _pick_sweep(entries: dict) -> str | None:
    """The sweep chosen in the selector: ?sweep=<key prefix> preselects one (a bad one gets a message), else the
    shipped one with the clearest peak."""
    if (pending := st.session_state.pop(K + "show", None)) is not None:
        _show(pending)
    wanted = st.query_params.get("sweep")
    if wanted and K + "sweep" not in st.session_state:
        match = [k for k in entries if k.startswith(str(wanted))]
        if match:
            _remember(match[0])
            st.session_state[K + "sweep"] = match[0]
        else:
            st.warning(plain(f"No sweep matches sweep={shown_value(str(wanted))} from the link; showing the one with the "
                             "clearest peak."))
    listed = _listed(entries)
    if not listed:
        return None
    if st.session_state.get(K + "sweep") not in listed:
        shipped = tuple(k for k, e in listed.items() if _shipped(k, e))
        st.session_state[K + "sweep"] = _clearest(shipped or tuple(listed))
    return st.selectbox("Sweep", list(listed), format_func=lambda k: describe(listed[k]), key=K + "sweep")


def _model_wise(df: pd.DataFrame, metric: str, x_axis: str, epoch: int, closed_form: bool) -> alt.Chart:
    """Error vs width per noise level: seed mean as a line, seed min-max as a band, threshold rules."""
    at = df[df["epoch"] == epoch]
    rows = []
    for col, split in ((metric, "test"), ("train_err" if "err" in metric else "train_loss", "train")):
        g = at.groupby(["noise", x_axis])[col].agg(["mean", "min", "max"]).reset_index()
        g["split"] = split
        rows.append(g)
    data = pd.concat(rows)
    data["label noise"] = (100 * data["noise"]).round(1).astype(str) + "%"
    lo, hi = float(data[x_axis].min()), float(data[x_axis].max())
    x = alt.X(f"{x_axis}:Q", scale=alt.Scale(type="log", domain=[lo, hi], nice=False),  # the grid, not 1..1000
              title="width" if x_axis == "width" else "parameters")
    hues = alt.Scale(scheme="tableau10")  # distinct hues, not shades
    color = alt.Color("label noise:N", scale=hues,
                      legend=alt.Legend(symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=3))
    band = alt.Chart(data).mark_area(opacity=0.2).encode(x=x, y="min:Q", y2="max:Q", color=color,
                                                          detail="split:N")
    y = alt.Y("mean:Q", title=f"{METRIC_LABELS.get(metric, metric)} / train")
    lines = lines_with_points(data, x=x, y=y, color=color, strokeDash=split_dash("test", "train", "set"),
                              tooltip=["label noise", x_axis, "split", alt.Tooltip("mean:Q", format=".3f")])
    marks = [band, lines]
    # squared error fits exactly only at p >= n; a classifier "has fitted" at Nakkiran et al.'s tolerance, where the
    # test-error peak sits (a strict 0 lands a width or two past it: one seed's last few noisy labels)
    fit_test = ("train_loss", 1e-6) if closed_form else ("train_err", FIT_TOLERANCE)
    thresholds = [{"label noise": f"{round(100 * p, 1)}%", "x": t} for p in sorted(df["noise"].unique())
                  if (t := interpolation_threshold(df, p, epoch, x_axis, *fit_test)) is not None]
    if thresholds:
        marks.append(alt.Chart(pd.DataFrame(thresholds)).mark_rule(strokeDash=[2, 2]).encode(
            x="x:Q", color=color, tooltip=[alt.Tooltip("x:Q", title="interpolation threshold")]))
    return alt.layer(*marks).properties(height=380)


def _epoch_wise(df: pd.DataFrame, metric: str, noise: float, widths: list[int]) -> tuple[alt.Chart, alt.Chart]:
    """A width x epoch heatmap and curves vs epoch for chosen widths (seed mean)."""
    sel = df[df["noise"] == noise].groupby(["width", "epoch"])[metric].mean().reset_index()
    heat = alt.Chart(sel).mark_rect().encode(
        x=alt.X("epoch:O", axis=alt.Axis(values=sorted(sel["epoch"].unique())[::max(1, sel["epoch"].nunique() // 10)])),
        y=alt.Y("width:O", sort="descending"), color=alt.Color(f"{metric}:Q", scale=alt.Scale(scheme="viridis"),
                                                              title=METRIC_LABELS.get(metric, metric)),
        tooltip=["width", "epoch", alt.Tooltip(f"{metric}:Q", format=".3f")]).properties(height=320)
    curves = alt.Chart(sel[sel["width"].isin(widths)]).mark_line().encode(
        x=alt.X("epoch:Q", scale=alt.Scale(type="log", nice=False,
                                           domain=[int(sel["epoch"].min()), int(sel["epoch"].max())])),
        y=alt.Y(f"{metric}:Q", title=METRIC_LABELS.get(metric, metric)),
        color="width:N").properties(height=320)
    return heat, curves


def sweep_view() -> None:
    """Pick a sweep, then its model-wise and epoch-wise views."""
    entries = _entries()
    key = _pick_sweep(entries)
    if key is None:
        st.info("No sweep in the cache yet. Compute a small one below, or run "
                "`python -m explorer sweep sweeps/mnist1d_mlp.toml`.")
        return
    entry = entries[key]
    st.caption("Recipe: " + plain(recipe_line(entry)))
    if note := engine_note(entry):
        st.warning(plain(note))
    show_provenance(entry, recompute=recompute_command(entry), compute_s=entry.metrics.get("points_wall_time_s"))
    df = _frame(key)
    epochs = sorted(df["epoch"].unique())
    noises, widths = sorted(df["noise"].unique()), sorted(df["width"].unique())
    rise, at = peak_rise(entry)
    opening, moving = opening_peak(entry)  # moving: a peak at the threshold before the last epoch
    if st.session_state.get(K + "shown") != key:
        # Another sweep: its epochs, noise levels and widths differ. Set the widgets' values (popping them is not
        # enough: the browser would send back its old value where it is still a valid choice).
        st.session_state[K + "epoch"] = opening
        st.session_state[K + "ew_noise"] = noises[-1]
        st.session_state[K + "ew_widths"] = sorted({widths[len(widths) // 3], widths[len(widths) // 2], widths[-1]})
        st.session_state[K + "shown"] = key
    c1, c2, c3 = st.columns(3)
    metric = c1.selectbox("Metric", list(METRIC_LABELS), format_func=METRIC_LABELS.get, key=K + "metric")
    x_axis = c2.radio("x axis", ["width", "params"], horizontal=True, key=K + "xaxis")
    epoch = c3.select_slider("At epoch", epochs, key=K + "epoch") if len(epochs) > 1 else epochs[0]
    st.subheader("Model-wise: error against model size")
    if shows_peak(rise):
        st.info(f"What to look for: at {100 * at['noise']:g}% label noise the test error (last epoch, seed mean) "
                f"falls to {at['low']:.3f} at width {at['low_width']}, rises to {at['peak']:.3f} at width "
                f"{at['peak_width']} near the interpolation threshold (dotted rule: the narrowest width whose "
                f"models have fitted the training labels, train error {FIT_TOLERANCE:g} or less), then falls again as "
                "the models grow.")
    elif moving:
        m = moving[1]
        st.info(f"What to look for: at epoch {m['epoch']} and {100 * m['noise']:g}% label noise the test error (seed "
                f"mean) falls to {m['low']:.3f} at width {m['low_width']} and rises to {m['peak']:.3f} at width "
                f"{m['peak_width']}, the narrowest width whose models have (nearly) fitted the noisy training labels "
                f"by then (train error {FIT_TOLERANCE:g} or less: the dotted rule), then falls again as the "
                "models grow. Training longer moves this threshold to narrower widths; by the last epoch this "
                "sweep's peak has flattened: drag At epoch to watch it.")
    else:
        st.info("What to look for: this sweep shows no model-wise peak at its last epoch (no rise of a point or more); "
                "the test error falls with width. Pick a sweep with label noise and long training for the peak, "
                "or look at its epoch-wise view below.")
    closed_form = entry.config["family"].startswith("rf_")
    lecture = bool(st.session_state.get(K + "lecture"))
    st.altair_chart(for_lecture(_model_wise(df, metric, x_axis, int(epoch), closed_form), lecture), width="stretch")
    st.caption("Solid: the chosen test metric; dashed: the same on the (noisy) training labels. Line: mean over "
               "seeds; band: min to max over seeds. Dotted rule: the interpolation threshold, the smallest model "
               + ("whose training squared error reaches 0." if closed_form else f"whose seed-mean training error is "
                  f"{FIT_TOLERANCE:g} or less (the tolerance of Nakkiran et al.'s effective model complexity: the "
                  "test-error peak sits where it reaches the training set's size)."))
    if closed_form:
        st.caption("Random features: losses are squared errors of the one-hot targets; params = features x classes.")
    if len(epochs) > 1:
        st.subheader("Epoch-wise: error against training time")
        e1, e2 = st.columns(2)
        noise = e1.selectbox("Label noise", noises, format_func=lambda p: f"{100 * p:g}%", key=K + "ew_noise")
        chosen = e2.multiselect("Widths", widths, key=K + "ew_widths")
        heat, curves = _epoch_wise(df, metric, noise, chosen)
        h1, h2 = chart_slots(lecture)
        h1.altair_chart(for_lecture(heat, lecture), width="stretch")
        h2.altair_chart(for_lecture(curves, lecture), width="stretch")


def live_sweep() -> None:
    """A small MNIST-1D MLP sweep computed now, as a background job that resumes from the cache."""
    def use_preset() -> None:
        widths, noise, epochs = LIVE_PRESETS[st.session_state[K + "live_preset"]]
        st.session_state.update({K + "live_widths": list(widths), K + "live_noise": noise, K + "live_epochs": epochs})

    st.radio("Preset", list(LIVE_PRESETS), key=K + "live_preset", horizontal=True, on_change=use_preset,
             help="The MNIST-1D MLP of sweep 1 with one seed; the peak at the interpolation threshold needs "
                  "long training.")
    if K + "live_widths" not in st.session_state:  # the first preset; widgets then take their values from here
        use_preset()
    with st.form(K + "live_form"):
        widths = st.multiselect("Widths", LIVE_WIDTHS, key=K + "live_widths")  # full width: every pill stays visible
        c2, c3 = st.columns(2)
        noise = c2.slider("Label noise (%)", 0, 50, key=K + "live_noise")
        epochs = c3.slider("Epochs", 5, LIVE_MAX_EPOCHS, key=K + "live_epochs")
        go = st.form_submit_button("Compute", key=K + "live_go")
    try:
        plan = plan_sweep(live_spec(widths, noise, epochs), app_cache())
    except ConfigError:
        plan = None  # the Compute button says why
    if plan is not None:
        if plan.summary is not None:
            st.caption("This sweep is cached: Compute shows it at once.")
        elif plan.estimate_s is not None:
            st.caption(f"{len(plan.missing)} points to compute, {plan.cached} cached. Estimated "
                       f"{hms(plan.estimate_s)} ({plan.estimate_from}); the progress bar's ETA then measures this "
                       "run, which is slower while the machine is busy.")
        else:
            st.caption(f"{len(plan.missing)} points to compute; no estimate yet ({plan.estimate_from}). The progress "
                       "bar's ETA measures this run.")
    if go:
        spec = config_or_stop(lambda: live_spec(widths, noise, epochs))
        cache = app_cache()
        if plan is not None and plan.summary is not None:  # computed before, by anyone: shown at once, no job
            st.session_state[K + "show"] = plan.summary.key
            st.rerun()  # the selector above is drawn already: it takes the sweep on the next run

        def job(ctx):
            # With RAY_ADDRESS set, the sweep's groups train on that Ray cluster and come back to this server's cache.
            backend = "ray" if os.environ.get("RAY_ADDRESS") else "local"
            return run_sweep(spec, cache=cache, report=ctx, backend=backend).entry.key

        # keyed by the summary's cache address: everyone computing these settings shares this one job
        _remember(key_for(SWEEP_KIND, spec))
        start_job("dd_live", job, name="double-descent sweep", key=job_key(SWEEP_KIND, spec))
    job = get_job("dd_live")
    if job is not None:
        def draw(j) -> None:
            # The terminal's bar as the text: elapsed time and ETA since the job got its compute slot.
            elapsed = (j.finished or time.time()) - (j.started or time.time())
            st.progress(j.progress, text=progress_line(j.progress, elapsed, j.message) if j.message else j.state.value)
            if j.state.value == "done":
                st.success("Done: it is in the list above.")
                if st.button("Show it", key=K + "live_show", on_click=_show, args=(j.result,)):
                    st.rerun()  # this panel is a fragment: rerun the whole page so the selector above changes
        poll_job(job, draw)


def _show(key: str) -> None:
    """Select a sweep of this session in the selector (as a callback it runs before the selector exists)."""
    _remember(key)
    st.session_state[K + "sweep"] = key


def random_features() -> None:
    """Random-features regression with the minimum-norm solution: the peak at p = n in seconds."""
    st.write("Least squares on random features (Belkin et al. 2019): below p = n it fits as well as it can, "
             "above it the minimum-norm interpolating solution is taken. The test error peaks at p = n.")
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Data", ["fashion_mnist", "digits", "mnist1d"], key=K + "rf_data")
    n = c2.select_slider("Train points n", [100, 200, 300, 500, 800, 1000], value=300, key=K + "rf_n")
    kind = c3.radio("Features", KINDS, horizontal=True, key=K + "rf_kind")
    noise = c4.slider("Label noise (%)", 0, 50, 0, key=K + "rf_noise")
    a, b = st.columns([3, 1])
    shown = a.radio("Show", list(RF_METRICS), horizontal=True, key=K + "rf_metric",
                    help="Both on a linear axis; squared error is what the least-squares fit minimises.")
    bandwidth = b.selectbox("Fourier bandwidth sigma", RF_BANDWIDTHS, key=K + "rf_sigma", disabled=kind != "fourier",
                            format_func=lambda v: "median pairwise distance" if v == "median" else f"sigma = {v:g}",
                            help="Random Fourier features cos(x W / sigma + b); Belkin et al. use sigma = 5 on "
                                 "MNIST-like images.")
    cfg = config_or_stop(lambda: RFConfig(dataset=dataset, train_size=n, test_size=1000, kind=kind,
                                          features=features_around(n), noise=noise / 100,
                                          bandwidth=bandwidth if kind == "fourier" else "median"))
    key = job_key(RF_KIND, cfg)  # the fits' cache address: the same settings share one job, whoever asks
    if st.button("Compute", key=K + "rf_go") or st.session_state.get(K + "rf_last") == key:
        st.session_state[K + "rf_last"] = key
        job = get_job("dd_rf")
        if job is None or job.key != key:
            cache = app_cache()
            job = start_job("dd_rf", lambda ctx: cached_run(cfg, cache), name="random features", key=key)
        if job is None:  # the server is busy (start_job said so): Compute again later
            st.session_state.pop(K + "rf_last", None)
            return

        def draw(j) -> None:
            if j.state.value != "done":
                st.info("Fitting one minimum-norm solution per feature count...")
                return
            fits, entry = j.result
            df = pd.DataFrame([dataclasses.asdict(f) for f in fits])
            test_col, train_col = RF_METRICS[shown]
            long = df.melt(id_vars="features", value_vars=[test_col, train_col], var_name="set")
            long["set"] = long["set"].map({test_col: "test", train_col: "train"})
            x = alt.X("features:Q", scale=alt.Scale(type="log", nice=False, domain=[int(df["features"].min()),
                                                                                   int(df["features"].max())]),
                      title="number of random features p")
            # Linear axes: on a log axis the peak is squashed. Squared error explodes at p = n, so its axis ends
            # at a multiple of the median and the points above it are drawn at the top edge.
            top = 1.0 if test_col == "test_err" else RF_CLIP * float(df[test_col].median())
            y = alt.Y("value:Q", scale=alt.Scale(domain=[0, top], clamp=True, nice=False), title=shown)
            chart = alt.Chart(long).mark_line(point=True, clip=True).encode(
                x=x, y=y, color=alt.Color("set:N", title=None),
                tooltip=["features", "set", alt.Tooltip("value:Q", format=".3f")])
            rule = alt.Chart(pd.DataFrame({"n": [n]})).mark_rule(strokeDash=[4, 4]).encode(x="n:Q")
            st.altair_chart(for_lecture(chart + rule, bool(st.session_state.get(K + "lecture"))), width="stretch")
            by_p = df.set_index("features")
            below = by_p[by_p.index < n]
            low = f"from {below[test_col].min():.3f} (p = {below[test_col].idxmin()}) " if len(below) else ""
            clipped = (f" The axis ends at {top:.2f} ({RF_CLIP:g} x the median); the peak reaches "
                       f"{by_p[test_col].max():.3f}." if by_p[test_col].max() > top else "")
            st.caption(f"Dashed rule: p = n = {n}. The test {shown} rises {low}to {by_p.loc[n, test_col]:.3f} at "
                       f"p = n, then falls again as p grows; test error (argmax) at p = n: "
                       f"{by_p.loc[n, 'test_err']:.3f}.{clipped}")
            show_provenance(entry)

        poll_job(job, draw)


st.title("Double descent")
lecture_mode(K)
st.write("Bigger models and longer training first overfit, then generalise better again: the test error "
         "peaks where the model can just fit the (noisy) training labels.")
tab_sweeps, tab_rf = st.tabs(["Width and epoch sweeps", "Random features (instant)"])
with tab_sweeps:
    try:
        sweep_view()
    except (ConfigError, KeyError) as exc:
        st.error("This sweep cannot be shown: " + plain(exc))
    with st.expander("Compute a small sweep live"):
        live_sweep()
with tab_rf:
    random_features()
