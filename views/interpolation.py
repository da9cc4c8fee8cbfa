"""Interpolation between solutions: the loss along straight lines in weight space and along random directions."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.cache import Entry
from explorer.core.config import ConfigError
from explorer.core.urlstate import Param
from explorer.labs.interpolation import lines, plane
from views.widgets import (app_cache, cached_or_job, chart_slots, config_or_stop, for_lecture, init_from_url,
                           lecture_mode, lines_with_points, plain, show_provenance, split_dash)

K = "ip_"  # widget-key prefix
START = lines.InterpConfig()
SCHEMA = {"dataset": Param(str, START.dataset), "net": Param(str, START.net), "epochs": Param(int, START.epochs),
          "batch_a": Param(int, START.batch_a), "lr_a": Param(float, START.lr_a),
          "batch_b": Param(int, START.batch_b), "lr_b": Param(float, START.lr_b),
          "points": Param(int, START.points), "n_train": Param(int, START.n_train),
          "recompute_bn": Param(bool, START.recompute_bn)}
DATASET_LABELS = {"digits": "Digits (8x8, embedded)", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
METRIC_LABELS = {"loss": "cross-entropy", "acc": "accuracy"}
LOOK_FOR = ("**What to look for:** from A (small batch, small step) to B (large batch, large step) the loss runs "
            "almost on the straight line between its two ends: the barrier (the most it rises above that line) is "
            "tiny, both solutions lie in one basin reached from the same initial weights. From the initial weights "
            "to a solution the loss falls smoothly, without bumps (Goodfellow et al. 2015), and rises again past "
            "the solution (alpha > 1). Along a random direction it climbs far faster: the straight path is special.")


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    lines.InterpConfig(**v)


def result_or_job(*args: Any, **kwargs: Any) -> Entry | None:
    """views.widgets.cached_or_job with this page's key prefix."""
    return cached_or_job(K, *args, **kwargs)


def settings_ui() -> lines.InterpConfig:
    """The widgets -> the frozen config (limits checked by the core)."""
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    dataset = c1.selectbox("Data set", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "dataset")
    net = c2.selectbox("Network", list(lines.NETS), format_func=lines.NETS.get, key=K + "net")
    epochs = c3.number_input("Epochs", step=1, key=K + "epochs")
    points = c4.number_input("Points per line", step=2, key=K + "points", help="alphas from -1 to 2")
    c1, c2, c3, c4 = st.columns(4)
    batch_a = c1.number_input("A: batch size", step=16, key=K + "batch_a")
    lr_a = c2.number_input("A: learning rate", format="%.4g", key=K + "lr_a")
    batch_b = c3.number_input("B: batch size", step=64, key=K + "batch_b")
    lr_b = c4.number_input("B: learning rate", format="%.4g", key=K + "lr_b")
    with st.expander("Network, data and batch norm"):
        c1, c2, c3, c4 = st.columns(4)
        n_train = c1.number_input("Training images", step=500, key=K + "n_train")
        channels = c2.number_input("Channels (first conv)", value=START.channels, step=2, key=K + "channels")
        width = c3.number_input("Hidden width", value=START.width, step=8, key=K + "width")
        seed = c4.number_input("Seed", value=START.seed, step=1, key=K + "seed",
                               help="initial weights (shared by A and B), subsets, batch order, random directions")
        recompute = st.checkbox("Recompute batch-norm statistics at every point", key=K + "recompute_bn",
                                help="off: the running statistics are interpolated with the weights, as a naive "
                                     "implementation would (only matters for the net with batch norm)")
    return config_or_stop(lambda: lines.InterpConfig(
        dataset=dataset, net=net, epochs=int(epochs), points=int(points), batch_a=int(batch_a), lr_a=float(lr_a),
        batch_b=int(batch_b), lr_b=float(lr_b), n_train=int(n_train), channels=int(channels), width=int(width),
        seed=int(seed), recompute_bn=bool(recompute)))


def line_frame(m: dict, names: list[str]) -> pd.DataFrame:
    """Long table: line, alpha, split, metric, value."""
    rows = []
    for name in names:
        ln = m["lines"][name]
        for i, alpha in enumerate(ln["alpha"]):
            for split in ("train", "test"):
                for metric in ("loss", "acc"):
                    rows.append({"line": name, "alpha": alpha, "split": split, "metric": METRIC_LABELS[metric],
                                 "value": ln[f"{split}_{metric}"][i]})
    return pd.DataFrame(rows)


def line_chart(df: pd.DataFrame, metric: str, x: str, title: str, lecture: bool,
               marks: tuple[float, ...] = (0.0, 1.0)) -> alt.TopLevelMixin:
    """One metric against alpha (or t), a colour per line, train solid and test dashed, the ends marked."""
    d = df[df["metric"] == METRIC_LABELS[metric]]
    y = alt.Y("value:Q", title=METRIC_LABELS[metric], scale=alt.Scale(type="log" if metric == "loss" else "linear",
                                                                     zero=False))
    chart = lines_with_points(
        d, point_size=20, x=alt.X(f"{x}:Q", title=x), y=y,
        color=alt.Color("line:N", legend=alt.Legend(orient="bottom", title=None, labelLimit=0)),
        strokeDash=split_dash("train", "test"),
        tooltip=["line", "split", alt.Tooltip(f"{x}:Q", format=".2f"), alt.Tooltip("value:Q", format=".4f")])
    rules = alt.Chart(pd.DataFrame({x: list(marks)})).mark_rule(color="grey", strokeDash=[2, 2]).encode(x=f"{x}:Q")
    return for_lecture((rules + chart).properties(height=320, title=title).interactive(), lecture)


def summary(m: dict) -> str:
    """The numbers a student should read off: accuracies at 0, 0.5, 1 and the barrier."""
    ln, al = m["lines"]["A to B"], m["alphas"]
    parts = [f"alpha {a:g}: {100 * ln['test_acc'][al.index(a)]:.1f}%" for a in (0.0, 0.5, 1.0) if a in al]
    return (f"Test accuracy along A→B: {'; '.join(parts)}. Loss barrier (the most the training loss rises above "
            f"the straight line between its ends, alpha in [0, 1]): {m['barrier']['train_loss']:.4f} "
            f"(test {m['barrier']['test_loss']:.4f}).")


def ends_table(m: dict) -> pd.DataFrame:
    return pd.DataFrame([{"weights": n, **{k: v for k, v in p.items()}} for n, p in m["ends"].items()])


def draw_lines(entry: Entry, cfg: lines.InterpConfig, lecture: bool) -> None:
    """The A-B line, the init lines and the random 1D slices, with their numbers and downloads."""
    m = entry.metrics
    if m.get("notice"):
        st.warning(plain(m["notice"]))
    if m["bn"]:
        st.info("This network has batch norm: " + (
            "its running statistics are **recomputed on the training data at every point** (the statistics of A "
            "do not describe the activations of weights halfway to B)." if cfg.recompute_bn else
            "its running statistics are **interpolated with the weights**, not recomputed; switch recomputing on "
            "to see how much of the bump in between comes from stale statistics."))
    st.success(summary(m))
    ab = line_frame(m, ["A to B"])
    left, right = chart_slots(lecture)
    left.altair_chart(line_chart(ab, "loss", "alpha", "A (alpha 0) to B (alpha 1): loss", lecture),
                      width="stretch")
    right.altair_chart(line_chart(ab, "acc", "alpha", "A to B: accuracy", lecture), width="stretch")
    st.markdown("**From the initial weights to each solution** (alpha 0: init, 1: the solution).")
    init = line_frame(m, ["init to A", "init to B"])
    left, right = chart_slots(lecture)
    left.altair_chart(line_chart(init, "loss", "alpha", "init to A and to B: loss", lecture), width="stretch")
    right.altair_chart(line_chart(init, "acc", "alpha", "init to A and to B: accuracy", lecture), width="stretch")
    st.markdown("**A random direction through each solution**, filter-normalised (Li et al. 2018): every filter "
                "of the direction has the norm of the solution's filter, bias and batch-norm directions are zero, "
                "so t = 1 moves each filter by its own length. The flatter curve is the wider minimum.")
    rows = []
    for who, sl in m["slices"].items():
        for i, t in enumerate(sl["t"]):
            for split in ("train", "test"):
                for metric in ("loss", "acc"):
                    rows.append({"line": f"around {who}", "t": t, "split": split, "metric": METRIC_LABELS[metric],
                                 "value": sl[f"{split}_{metric}"][i]})
    slices = pd.DataFrame(rows)
    left, right = chart_slots(lecture)
    left.altair_chart(line_chart(slices, "loss", "t", "Random 1D slices: loss", lecture, marks=(0.0,)),
                      width="stretch")
    right.altair_chart(line_chart(slices, "acc", "t", "Random 1D slices: accuracy", lecture, marks=(0.0,)),
                       width="stretch")
    table = pd.DataFrame(lines.table(m))
    c1, c2, c3 = st.columns(3)
    c1.download_button("Lines (CSV)", table.to_csv(index=False), file_name="interpolation-lines.csv",
                       mime="text/csv", key=K + "dl_lines")
    c2.download_button("Random slices (CSV)", slices.to_csv(index=False), file_name="interpolation-slices.csv",
                       mime="text/csv", key=K + "dl_slices")
    c3.download_button("Solutions (CSV)", ends_table(m).to_csv(index=False), file_name="interpolation-ends.csv",
                       mime="text/csv", key=K + "dl_ends")
    with st.expander("Numbers"):
        st.dataframe(ends_table(m), hide_index=True, key=K + "ends")
        st.dataframe(table, hide_index=True, key=K + "table")
    st.caption(f"{m['dataset']}: {m['n_train']:,} training and {m['n_test']:,} test images; {lines.NETS[cfg.net]}, "
               f"{m['params']:,} parameters. A: batch {cfg.batch_a}, lr {cfg.lr_a:g}; B: batch {cfg.batch_b}, lr "
               f"{cfg.lr_b:g}; Adam, {cfg.epochs} epochs each from the same initial weights. Solid: train, dashed: "
               "test; loss on a log scale. Scroll to zoom, drag to pan.")
    show_provenance(entry, recompute=entry.meta.get("recompute"))


def plane_chart(p: dict, lecture: bool) -> tuple[alt.TopLevelMixin, pd.DataFrame]:
    """The 2D slice as a heatmap of the training loss (log colour), and its data."""
    cs = p["coords"]
    h = (cs[1] - cs[0]) / 2
    df = pd.DataFrame([{"a": a, "b": b, "loss": p["loss"][j][i], "acc": p["acc"][j][i]}
                       for j, b in enumerate(cs) for i, a in enumerate(cs)])
    df = df.assign(a0=df["a"] - h, a1=df["a"] + h, b0=df["b"] - h, b1=df["b"] + h)
    chart = alt.Chart(df).mark_rect().encode(
        x=alt.X("a0:Q", title="direction 1"), x2="a1:Q", y=alt.Y("b0:Q", title="direction 2"), y2="b1:Q",
        color=alt.Color("loss:Q", scale=alt.Scale(type="log", scheme="viridis"), title="train loss"),
        tooltip=[alt.Tooltip("a:Q", format=".2f"), alt.Tooltip("b:Q", format=".2f"),
                 alt.Tooltip("loss:Q", format=".4f"), alt.Tooltip("acc:Q", format=".3f")])
    centre = alt.Chart(pd.DataFrame({"a": [0.0], "b": [0.0]})).mark_point(
        color="white", shape="cross", size=120, filled=True).encode(x="a:Q", y="b:Q")
    title = f"Training loss around solution {p['around']} in two filter-normalised random directions"
    return for_lecture((chart + centre).properties(height=440, title=title).interactive(), lecture), df


def plane_section(cfg: lines.InterpConfig, lecture: bool) -> None:
    st.markdown("**2D slice** around one solution along two filter-normalised random directions (Li et al. 2018), "
                "a background job.")
    c1, c2, c3 = st.columns(3)
    around = c1.radio("Around", list(plane.AROUND), key=K + "plane_around", horizontal=True)
    grid = c2.number_input("Grid points per axis", value=plane.PlaneConfig().grid, step=2, key=K + "plane_grid")
    span = c3.number_input("Span", value=plane.PlaneConfig().span, format="%.2f", key=K + "plane_span",
                           help="a and b run from -span to span")
    pcfg = config_or_stop(lambda: plane.PlaneConfig(run=cfg, around=around, grid=int(grid), span=float(span)))
    entry = result_or_job("ip_plane", plane.KIND, pcfg, lambda: plane.job(pcfg, app_cache()), "interpolation 2D",
                          "Compute the 2D slice", autostart=False,
                          hint=f"Press **Compute the 2D slice**: {pcfg.grid}x{pcfg.grid} points on {pcfg.n_eval} "
                               "training images, in the background.")
    if entry is None:
        return
    p = entry.metrics
    chart, df = plane_chart(p, lecture)
    st.altair_chart(chart, width="stretch")
    st.download_button("2D slice (CSV)", df[["a", "b", "loss", "acc"]].to_csv(index=False),
                       file_name=f"interpolation-plane-{p['around']}.csv", mime="text/csv", key=K + "dl_plane")
    st.caption(f"Training loss on {p['n_eval']:,} training images" + (
        ", batch-norm statistics recomputed at every point" if p["bn"] and cfg.recompute_bn else "") + ".")
    show_provenance(entry, recompute=entry.meta.get("recompute"))


def page(lecture: bool) -> None:
    st.markdown(LOOK_FOR)
    cfg = settings_ui()
    small = cfg.dataset == "digits" and cfg.epochs <= 20
    entry = result_or_job("ip_lines", lines.KIND, cfg, lambda: lines.job(cfg, app_cache()), "interpolation",
                          "Train and interpolate", autostart=small and not REFUSED,
                          hint=f"Press **Train and interpolate**: A and B train in the background, then every "
                               f"line is measured. From a terminal: `{lines.cli_command(cfg)}`.")
    if entry is None:
        return
    draw_lines(entry, cfg, lecture)
    plane_section(cfg, lecture)


# --- page ----------------------------------------------------------------------------------------------

st.title("Interpolation between solutions")
lecture = lecture_mode(K)
st.caption("Two networks trained from the same start with different recipes: what lies between them in weight "
           "space, and what does the landscape look like around each?")
init_from_url(SCHEMA, K, _validate_link)
REFUSED = K + "link_error" in st.session_state  # a refused link starts nothing until the student changes a setting
if REFUSED:
    st.warning(plain(st.session_state.pop(K + "link_error")))
try:
    page(lecture)
except ConfigError as exc:
    st.error("Setting refused: " + plain(exc))
