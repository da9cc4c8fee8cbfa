"""Gradient norms: vanishing gradients in deep MLPs (plain, batch norm, residual) and their fixes, layer by layer;
and loss and gradient norms, live, of any lab model (the MLP or one of the course's CNNs)."""

from __future__ import annotations

from dataclasses import replace

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.config import ConfigError
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.labs.gradient_norms import lab
from explorer.nets.cnn import WIDTH_RANGE
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, init_from_url, job_key,
                           job_panel, lecture_mode, plain, poll_job, start_job)

K = "gn_"  # widget-key prefix
START = lab.CompareConfig()  # sigmoid, plain vs batch norm vs residual at depth 10 and 60: ~10 s on a busy 2-core CPU
SCHEMA = {"data": Param(str, START.data), "activation": Param(str, START.activation), "init": Param(str, START.init),
          "dtype": Param(str, START.dtype), "width": Param(int, START.width),
          "iterations": Param(int, START.iterations), "lr": Param(float, START.lr),
          "depth": Param(int, 60), "variant": Param(str, "plain"),
          # the "Any model" section (any_config): a CNN on digits, not the MLP above
          "any_network": Param(str, "simple"), "any_data": Param(str, "digits"),
          "any_cnn_width": Param(float, lab.RunConfig().cnn_width),
          "any_iterations": Param(int, lab.RunConfig().iterations), "any_lr": Param(float, lab.RunConfig().lr),
          "any_batch": Param(int, lab.RunConfig().batch_size)}
INLINE_WORK = 400_000_000  # summed `lab.work` the page starts on its own; more waits for the Train button
MAX_HEAT_COLUMNS = 100  # iterations drawn in the heatmap (a long run is thinned evenly)
ZERO = "exactly 0"
DTYPE_NOTE = {
    "float32": ("Numbers are **float32**, what a network trains in: the smallest positive float32 is about 1.4e-45 "
                "(denormals start below 1.2e-38), so a gradient that shrinks ~10x per layer reaches **exactly 0** "
                "by layer 60. That zero is real: those weights get no update at all. Switch to float64 to see how "
                "small the gradient would have been (~1e-52)."),
    "float64": ("Numbers are **float64**: nothing underflows before ~1e-308, so you see the true size of the "
                "vanished gradient (~1e-52 at layer 1 of a 60-layer sigmoid net) where float32 reads exactly 0."),
}
LOOK_FOR = ("**What to look for:** in the plain sigmoid net the input layer's gradient is many orders of magnitude "
            "below the last layer's at depth 10 and, at depth 60 in float32, **exactly 0**: "
            "the first layers do not learn. Batch norm and residual connections keep every layer's gradient within "
            "about two orders of magnitude. ReLU with He initialisation fixes the plain net too (choose them above).")


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    lab.CompareConfig(data=v["data"], activation=v["activation"], init=v["init"], dtype=v["dtype"],
                      width=v["width"], iterations=v["iterations"], lr=v["lr"])
    lab.RunConfig(depth=v["depth"], variant=v["variant"])
    any_config(v)


def settings_ui() -> lab.CompareConfig:
    """The shared settings -> the side-by-side config (limits checked by the core)."""
    c1, c2, c3, c4 = st.columns(4)
    data = c1.selectbox("Data", list(lab.DATA), format_func=lab.DATA.get, key=K + "data",
                        help="2D toy sets are generated; images are flattened (MNIST / Fashion-MNIST where the data "
                             "folder has them, else the embedded digits)")
    activation = c2.selectbox("Activation", list(lab.ACTIVATIONS), key=K + "activation")
    init = c3.selectbox("Initialisation", list(lab.INITS), format_func=lab.INITS.get, key=K + "init")
    dtype = c4.selectbox("Numbers", list(lab.DTYPES), key=K + "dtype")
    c1, c2, c3, c4 = st.columns(4)
    width = c1.number_input("Width", min_value=2, max_value=lab.MAX_WIDTH, step=8, key=K + "width")
    iterations = c2.number_input("Iterations", step=50, key=K + "iterations", help=f"1 to {lab.MAX_ITERATIONS:,}")
    lr = c3.number_input("Learning rate", format="%.4g", key=K + "lr", help="plain SGD (no momentum)")
    batch = c4.number_input("Batch size", value=START.batch_size, step=16, key=K + "batch")
    with st.expander("Side-by-side runs, data size, seed"):
        c1, c2, c3, c4 = st.columns(4)
        variants = c1.multiselect("Variants", list(lab.VARIANTS), default=list(START.variants),
                                  format_func=lab.VARIANTS.get, key=K + "variants")
        depths_text = c2.text_input("Depths (Linear layers)", value=",".join(map(str, START.depths)), key=K + "depths",
                                    help="up to 4, 2 to 60, comma-separated")
        n_train = c3.number_input("Training examples", value=START.n_train, step=100, key=K + "n_train")
        seed = c4.number_input("Seed", value=START.seed, step=1, key=K + "seed")
    if not variants:
        st.info("Choose at least one variant.")
        st.stop()

    def build() -> lab.CompareConfig:
        try:
            depths = tuple(int(t) for t in depths_text.split(",") if t.strip())
        except ValueError:
            raise ConfigError(f"depths are whole numbers separated by commas, e.g. 10,60; got {depths_text[:80]!r}")
        return lab.CompareConfig(variants=tuple(variants), depths=depths, data=data, width=int(width),
                                 activation=activation, init=init, dtype=dtype, iterations=int(iterations),
                                 lr=float(lr), batch_size=int(batch), n_train=int(n_train), seed=int(seed))

    return config_or_stop(build)


# --- frames and charts ---------------------------------------------------------------------------------------

def layer_frame(runs: list[dict], at: int) -> pd.DataFrame:
    """Long table run, variant, depth, layer, norm, exactly_zero at iteration index `at` (0 first, -1 last)."""
    rows = []
    for h in runs:
        if not h["layer_norms"]:
            continue
        row = h["layer_norms"][at]
        it = h["iteration"][at]
        for i, v in enumerate(row):
            rows.append({"run": h["name"], "variant": h["name"].split(",")[0], "depth": h["depth"], "layer": i + 1,
                         "iteration": it, "gradient norm": v, "exactly zero": v == 0.0})
    return pd.DataFrame(rows, columns=["run", "variant", "depth", "layer", "iteration", "gradient norm",
                                       "exactly zero"])


def _floor(values: pd.Series) -> float:
    """Where exact zeros sit on a log axis: a decade below the smallest positive value (1e-3 if none)."""
    pos = values[values > 0]
    return float(pos.min()) / 10 if len(pos) else 1e-3


def layer_chart(df: pd.DataFrame, depth: int, floor: float, lecture: bool) -> alt.TopLevelMixin:
    """Per-layer gradient norms of one depth on a log axis; exact zeros as red triangles on a labelled floor line."""
    d = df[df["depth"] == depth].copy()
    d["shown"] = d["gradient norm"].where(~d["exactly zero"], floor)
    y = alt.Y("shown:Q", title="‖∂loss/∂W‖ (log scale)", scale=alt.Scale(type="log"))
    tip = ["run", "layer", "iteration", alt.Tooltip("gradient norm:Q", format=".3e"), "exactly zero"]
    color = alt.Color("variant:N", legend=alt.Legend(orient="bottom", title=None))
    pos = d[~d["exactly zero"]]
    x = alt.X("layer:Q", title="layer (1 = input)", axis=alt.Axis(tickMinStep=1, format="d"))
    lines = alt.Chart(pos).mark_line(point=True).encode(x=x, y=y, color=color, tooltip=tip)
    layers = [lines]
    zeros = d[d["exactly zero"]]
    if len(zeros):
        layers.append(alt.Chart(zeros).mark_point(shape="triangle-down", filled=True, size=70, color="#d62728")
                      .encode(x="layer:Q", y=y, tooltip=tip))
        layers.append(alt.Chart(pd.DataFrame({"y": [floor]})).mark_rule(color="#d62728", strokeDash=[4, 3])
                      .encode(y=alt.Y("y:Q", scale=alt.Scale(type="log"))))
        layers.append(alt.Chart(pd.DataFrame({"y": [floor], "x": [1], "t": [f"{ZERO} ({len(zeros)} layers)"]}))
                      .mark_text(align="left", dy=-8, color="#d62728").encode(x="x:Q", y="y:Q", text="t:N"))
    n_zero = len(zeros)
    title = f"Depth {depth}: gradient norm per layer" + (f" ({n_zero} exactly 0)" if n_zero else "")
    chart = alt.layer(*layers).properties(height=320, title=title).interactive()
    return for_lecture(chart, lecture)


def curve_frame(runs: list[dict]) -> pd.DataFrame:
    """Long table run, iteration, loss, total gradient norm."""
    rows = [{"run": h["name"], "iteration": it, "loss": lo, "total gradient norm": tn}
            for h in runs for it, lo, tn in zip(h["iteration"], h["loss"], h["total_norm"])]
    return pd.DataFrame(rows, columns=["run", "iteration", "loss", "total gradient norm"])


def curve_charts(df: pd.DataFrame, lecture: bool) -> tuple[alt.TopLevelMixin, alt.TopLevelMixin]:
    """Training loss and total gradient norm (log) against iteration, one line per run."""
    color = alt.Color("run:N", legend=alt.Legend(orient="bottom", columns=2, title=None, labelLimit=0))
    loss = alt.Chart(df).mark_line().encode(
        x="iteration:Q", y=alt.Y("loss:Q", title="training loss (cross-entropy)"), color=color,
        tooltip=["run", "iteration", alt.Tooltip("loss:Q", format=".4f")]).properties(
        height=300, title="Loss per iteration").interactive()
    pos = df[df["total gradient norm"] > 0]
    norm = alt.Chart(pos).mark_line().encode(
        x="iteration:Q", y=alt.Y("total gradient norm:Q", scale=alt.Scale(type="log")), color=color,
        tooltip=["run", "iteration", alt.Tooltip("total gradient norm:Q", format=".3e")]).properties(
        height=300, title="Total gradient norm (log scale)").interactive()
    return for_lecture(loss, lecture), for_lecture(norm, lecture)


def heat_frame(h: dict) -> pd.DataFrame:
    """Long table iteration, layer, log10 norm (None for exactly 0); a long run thinned to MAX_HEAT_COLUMNS."""
    its = h["iteration"]
    stride = max(1, -(-len(its) // MAX_HEAT_COLUMNS))
    keep = list(range(0, len(its), stride))
    if keep and keep[-1] != len(its) - 1:
        keep.append(len(its) - 1)
    names = h.get("layers") or [f"layer {i}" for i in range(1, h["depth"] + 1)]
    rows = []
    for j in keep:
        for i, v in enumerate(h["layer_norms"][j]):
            rows.append({"iteration": its[j], "layer": i + 1, "name": names[i], "gradient norm": v,
                         "log10 norm": lab.log10_or_none(v), "exactly zero": v == 0.0})
    return pd.DataFrame(rows, columns=["iteration", "layer", "name", "gradient norm", "log10 norm", "exactly zero"])


def heat_chart(df: pd.DataFrame, title: str, lecture: bool) -> alt.TopLevelMixin:
    """Layer x iteration heatmap of log10 gradient norms; exact zeros black, with their own legend entry."""
    tip = ["layer", "name", "iteration", alt.Tooltip("gradient norm:Q", format=".3e"), "exactly zero"]
    x = alt.X("iteration:O", axis=alt.Axis(labelOverlap=True, labelAngle=0))
    y = alt.Y("layer:O", sort="descending", title="layer (1 = input)")
    pos = alt.Chart(df[~df["exactly zero"]]).mark_rect().encode(
        x=x, y=y, color=alt.Color("log10 norm:Q", scale=alt.Scale(scheme="viridis"), title="log10 ‖∂L/∂W‖"),
        tooltip=tip)
    zeros = df[df["exactly zero"]].assign(kind=ZERO)
    layers = [pos]
    if len(zeros):
        layers.append(alt.Chart(zeros).mark_rect().encode(
            x=x, y=y, fill=alt.Fill("kind:N", scale=alt.Scale(domain=[ZERO], range=["#000000"]), title=None),
            tooltip=tip))
    chart = alt.layer(*layers).resolve_scale(color="independent").properties(height=360, title=title)
    return for_lecture(chart, lecture)


def _download(df: pd.DataFrame, label: str, name: str, key: str) -> None:
    st.download_button(label, df.to_csv(index=False), file_name=name, mime="text/csv", key=K + key)


# --- side by side --------------------------------------------------------------------------------------------

def draw_compare(result: dict, cfg: lab.CompareConfig, lecture: bool, final: bool) -> None:
    """The per-layer charts (one per depth), the loss and total-norm curves, and when final the table."""
    runs = [h for h in result["runs"] if h["layer_norms"]]
    for message in result.get("diverged") or []:
        st.error(plain(message))
    if not runs:
        st.info("Waiting for the first iterations...")
        return
    notice = next((h["notice"] for h in runs if h.get("notice")), None)
    if notice:
        st.warning(plain(notice))
    at = st.session_state.get(K + "at", "first")
    df = layer_frame(runs, 0 if at == "first" else -1)
    floor = _floor(df["gradient norm"])
    depths = [d for d in cfg.depths if d in set(df["depth"])]
    for slot, depth in zip(chart_slots(lecture, len(depths)), depths):
        slot.altair_chart(layer_chart(df, depth, floor, lecture), width="stretch")
    z = int(df["exactly zero"].sum())
    st.caption(f"At the {at} iteration: {z} of {len(df)} layer gradients are exactly 0 (red triangles on the dashed "
               "line, which stands for 0: a log axis has no 0)." if z else
               f"At the {at} iteration no layer's gradient is exactly 0.")
    for h in runs:
        if h["layer_norms"]:
            st.markdown(f"- **{plain(h['name'])}**: {plain(lab.ratio_text(h, 0 if at == 'first' else -1))}")
    curves = curve_frame(runs)
    loss, norm = curve_charts(curves, lecture)
    left, right = chart_slots(lecture)
    left.altair_chart(loss, width="stretch")
    right.altair_chart(norm, width="stretch")
    c1, c2 = st.columns(2)
    with c1:
        _download(df, "Per-layer norms (CSV)", "gradient-norms-per-layer.csv", "dl_layers" + ("" if final else "_live"))
    with c2:
        _download(curves, "Loss and total norm (CSV)", "gradient-norms-curves.csv", "dl_curves" + ("" if final else "_live"))
    if final:
        st.dataframe(pd.DataFrame(lab.table(runs)), hide_index=True, key=K + "table",
                     column_config={"first iteration": st.column_config.NumberColumn(format="%.3e"),
                                    "last iteration": st.column_config.NumberColumn(format="%.3e")})


def compare_section(cfg: lab.CompareConfig, lecture: bool) -> Job | None:
    """The side-by-side runs: from the cache at once, else as a live background job; returns the job if running."""
    st.radio("Per-layer norms at the", ["first", "last"], horizontal=True, key=K + "at",
             format_func=lambda s: f"{s} iteration")
    done = lab.all_cached(cfg, app_cache())
    if done is not None:
        draw_compare(done, cfg, lecture, final=True)
        return None
    total = sum(lab.work(r) for r in cfg.runs())

    def draw(j: Job) -> None:
        st.progress(j.progress, text=j.message or j.state.value)
        if j.snapshot is not None:
            draw_compare(j.snapshot, cfg, lecture, final=j.is_final)

    job = job_panel(K, "gn_compare", cfg, lambda: lab.job(cfg, app_cache()), name="gradient norms",
                    key=job_key(lab.COMPARE_KIND, cfg), autostart=total <= INLINE_WORK, draw=draw,
                    hint=f"These runs take {total:,} parameter-iterations, more than the page starts on its own "
                         f"({INLINE_WORK:,}): press **Train** to run them in the background with live charts.",
                    buttons=(K + "train", K + "stop"))
    return None if job is None or job.is_final else job


# --- depth explorer ------------------------------------------------------------------------------------------

def draw_heat(h: dict, rc: lab.RunConfig, lecture: bool) -> None:
    """The heatmap of one run, its zero count and its CSV."""
    df = heat_frame(h)
    z, n = lab.zeros(h)
    title = f"{rc.name}, {rc.activation}, {rc.dtype}: log10 gradient norm per layer and iteration"
    st.altair_chart(heat_chart(df, title, lecture), width="stretch")
    st.caption((f"{z:,} of {n:,} layer gradients over the run are exactly 0 (black). " if z else
                "No layer gradient is exactly 0 in this run. ") + plain(lab.ratio_text(h, 0)) + " at iteration 1.")
    _download(df, "Heatmap data (CSV)", f"gradient-norms-depth{rc.depth}-{rc.variant}.csv", "dl_heat")


def explorer_section(cfg: lab.CompareConfig, lecture: bool, busy: Job | None) -> None:
    """Variant and depth slider -> the layer x iteration heatmap; a depth computed before is drawn at once."""
    c1, c2 = st.columns([1, 3])
    variant = c1.selectbox("Variant", list(lab.VARIANTS), format_func=lab.VARIANTS.get, key=K + "variant")
    depth = c2.slider("Depth (Linear layers)", 2, lab.MAX_DEPTH, key=K + "depth")
    rc = config_or_stop(lambda: lab.with_depth(cfg, int(depth), variant))
    entry = lab.cached(rc, app_cache())
    if entry is not None:
        draw_heat(lab.from_entry(entry).to_dict(), rc, lecture)
        return
    if busy is not None and rc in cfg.runs():
        st.info("The side-by-side runs above are computing this one; it is drawn when they finish.")
        return
    job = get_job("gn_heat")
    if job is None or st.session_state.get(K + "heat_cfg") != rc:
        if lab.work(rc) > INLINE_WORK and not st.button("Train this depth", key=K + "heat_train"):
            st.info("This run is large: press **Train this depth** to run it in the background.")
            return
        job = start_job("gn_heat", lab.run_job(rc, app_cache()), name="gradient norms heatmap",
                        key=job_key(lab.KIND, rc))
        st.session_state[K + "heat_cfg"] = rc
        if job is None:
            return

    poll_job(job, _live(draw_heat, rc, lecture), every=0.5)


def _live(draw_run, rc, lecture: bool):
    """A job's drawer: its progress, then why it diverged or draw_run(run so far, rc, lecture)."""
    def draw(j: Job) -> None:
        st.progress(j.progress, text=j.message or j.state.value)
        snap = j.snapshot
        if snap is None:
            return
        if snap.get("diverged"):
            st.error(plain(snap["diverged"]))
        elif snap.get("run") and snap["run"]["layer_norms"]:
            draw_run(snap["run"], rc, lecture)

    return draw


# --- any model ----------------------------------------------------------------------------------------------

def any_config(v: dict, base: lab.RunConfig | None = None) -> lab.RunConfig:
    """The "Any model" run from the URL schema's any_* values (and, for an MLP, `base`'s shape settings)."""
    return replace(base or lab.RunConfig(), network=v["any_network"], data=v["any_data"],
                   cnn_width=float(v["any_cnn_width"]), iterations=int(v["any_iterations"]), lr=float(v["any_lr"]),
                   batch_size=int(v["any_batch"]))


def profile_frame(h: dict) -> pd.DataFrame:
    """Long table layer, name, when (first / last iteration), norm; exact zeros left out (a log axis has no 0)."""
    names = h.get("layers") or [f"layer {i}" for i in range(1, h["depth"] + 1)]
    rows = [{"layer": i + 1, "name": names[i], "when": f"{when} iteration ({h['iteration'][at]:,})",
             "gradient norm": v}
            for when, at in (("first", 0), ("last", -1)) for i, v in enumerate(h["layer_norms"][at]) if v > 0]
    return pd.DataFrame(rows, columns=["layer", "name", "when", "gradient norm"])


def profile_chart(df: pd.DataFrame, title: str, lecture: bool) -> alt.TopLevelMixin:
    """Each recorded layer's gradient norm at the first and the last iteration, log scale, layers in forward order."""
    order = list(dict.fromkeys(df.sort_values("layer")["name"]))
    chart = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("name:N", sort=order, title="layer (forward order)", axis=alt.Axis(labelAngle=-45)),
        y=alt.Y("gradient norm:Q", title="‖∂loss/∂W‖ (log scale)", scale=alt.Scale(type="log")),
        color=alt.Color("when:N", legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["name", "layer", "when", alt.Tooltip("gradient norm:Q", format=".3e")]).properties(
        height=320, title=title)
    return for_lecture(chart, lecture)


def draw_any(h: dict, rc: lab.RunConfig, lecture: bool) -> None:
    """Loss and total gradient norm against iteration, then the per-layer norms (profile and heatmap)."""
    if h.get("notice"):
        st.warning(plain(h["notice"]))
    curves = curve_frame([h])
    loss, norm = curve_charts(curves, lecture)
    left, right = chart_slots(lecture)
    left.altair_chart(loss, width="stretch", key=K + "any_loss")
    right.altair_chart(norm, width="stretch", key=K + "any_norm")
    what = "Conv2d and Linear" if rc.is_cnn else "Linear"
    st.altair_chart(profile_chart(profile_frame(h), f"{h['name']}: every {what} layer's gradient norm", lecture),
                    width="stretch", key=K + "any_profile")
    heat = heat_frame(h)
    st.altair_chart(heat_chart(heat, f"{h['name']}: log10 gradient norm per layer and iteration", lecture),
                    width="stretch", key=K + "any_heat")
    z, n = lab.zeros(h)
    st.caption(plain(f"{h['name']}: {len(h['iteration']):,} iterations, loss {h['loss'][0]:.3f} to "
                     f"{h['loss'][-1]:.3f}, {h['depth']} {what} layers recorded"
                     + (f", {z:,} of {n:,} layer norms exactly 0" if z else "") + "; "
                     + lab.ratio_text(h, 0) + " at iteration 1."))
    c1, c2 = st.columns(2)
    with c1:
        _download(curves, "Loss and total norm (CSV)", "gradient-norms-any-curves.csv", "dl_any_curves")
    with c2:
        _download(heat, "Per-layer norms (CSV)", "gradient-norms-any-layers.csv", "dl_any_layers")


def any_model_ui(cfg: lab.CompareConfig) -> lab.RunConfig:
    """Network, data, width multiplier, iterations, learning rate, batch size -> one RunConfig (an MLP takes its
    width, activation, initialisation, numbers and seed from the settings above, its depth and variant from the
    depth explorer)."""
    c1, c2, c3 = st.columns(3)
    network = c1.selectbox("Network", list(lab.NETWORKS), format_func=lab.NETWORKS.get, key=K + "any_network")
    data = c2.selectbox("Data", list(lab.DATA), format_func=lab.DATA.get, key=K + "any_data",
                        help="a CNN needs an image set (kept as channels x height x width)")
    lo, hi = WIDTH_RANGE
    cnn_width = c3.number_input("Width multiplier (CNN)", min_value=lo, max_value=hi, step=0.125, format="%.3g",
                                key=K + "any_cnn_width", disabled=network == "mlp",
                                help="the family's channels times this, rounded (at least 4)")
    c1, c2, c3 = st.columns(3)
    iterations = c1.number_input("Iterations", step=50, key=K + "any_iterations", help=f"1 to {lab.MAX_ITERATIONS:,}")
    lr = c2.number_input("Learning rate", format="%.4g", key=K + "any_lr", help="plain SGD (no momentum)")
    batch = c3.number_input("Batch size", step=16, key=K + "any_batch")
    depth = int(st.session_state.get(K + "depth", SCHEMA["depth"].default))
    variant = st.session_state.get(K + "variant", SCHEMA["variant"].default)
    values = {"any_network": network, "any_data": data, "any_cnn_width": cnn_width, "any_iterations": iterations,
              "any_lr": lr, "any_batch": batch}
    return config_or_stop(lambda: any_config(values, replace(cfg.runs()[0], depth=depth, variant=variant)))


def any_model_section(cfg: lab.CompareConfig, lecture: bool) -> None:
    """One run of any lab model: drawn from the cache at once, else trained as a live background job on request."""
    rc = any_model_ui(cfg)
    entry = lab.cached(rc, app_cache())
    if entry is not None:
        draw_any(lab.from_entry(entry).to_dict(), rc, lecture)
        return
    job_panel(K, "gn_any", rc, lambda: lab.run_job(rc, app_cache()), name="gradient norms, any model",
              key=job_key(lab.KIND, rc), label="Train this model", draw=_live(draw_any, rc, lecture),
              hint=f"{rc.name} on {lab.DATA[rc.data]}: {lab.cost_text(rc)}. Press **Train this model** to train it "
                   "in the background with live charts.", buttons=(K + "any_train", K + "any_stop"))


# --- page ----------------------------------------------------------------------------------------------------

st.title("Gradient norms and vanishing gradients")
lecture = lecture_mode(K)
st.caption("The Frobenius norm of every Linear layer's weight gradient, at every iteration of plain SGD, in deep "
           "MLPs: plain, with batch norm after each hidden layer, and with residual (pre-activation) connections.")
init_from_url(SCHEMA, K, _validate_link)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
try:
    cfg = settings_ui()
    st.markdown(LOOK_FOR)
    st.info(DTYPE_NOTE[cfg.dtype] + " Norms are computed in float64 and scaled by the largest entry, so a norm "
            "reads 0 only when every entry of that gradient is exactly 0.")
    st.subheader("Side by side")
    running = compare_section(cfg, lecture)
    st.subheader("Depth explorer: layer x iteration")
    st.caption("Move the slider: a depth already computed (here or by anyone with the same settings) is drawn at "
               "once from the cache; a new one trains in seconds.")
    explorer_section(cfg, lecture, running)
    st.subheader("Any model: loss and gradient norm, live")
    st.caption("Train one network, the deep MLP or one of the course's CNNs, with the same plain SGD, and watch its "
               "loss, its total gradient norm and every layer's gradient norm (each Conv2d and Linear layer of a "
               "CNN, in forward order). The MLP uses the width, activation and initialisation above and the depth "
               "explorer's depth and variant; a CNN uses its width multiplier.")
    any_model_section(cfg, lecture)
except ConfigError as exc:
    st.error("Setting refused: " + plain(exc))
