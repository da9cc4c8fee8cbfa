"""Weight trajectories: 8 seeds of one network trained side by side, their weight paths drawn in PCA space."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.cache import Entry
from explorer.core.config import ConfigError
from explorer.core.urlstate import Param
from explorer.labs.weight_trajectories import paths, surface
from views.widgets import (app_cache, cached_or_job, chart_slots, config_or_stop, for_lecture, init_from_url,
                           lecture_mode, plain, show_provenance)

K = "wt_"  # widget-key prefix
IMG, TOY = paths.TrajConfig(), paths.ToyConfig()
SCHEMA = {"dataset": Param(str, IMG.dataset), "seeds": Param(int, IMG.seeds), "epochs": Param(int, IMG.epochs),
          "every": Param(int, IMG.every), "lr": Param(float, IMG.lr), "batch": Param(int, IMG.batch_size),
          "n_train": Param(int, IMG.n_train),
          "toy_data": Param(str, TOY.data), "toy_epochs": Param(int, TOY.epochs)}
DATASET_LABELS = {"digits": "Digits (8x8, embedded)", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
LOOK_FOR = ("**What to look for:** every seed starts somewhere else and walks its own way: the paths stay in their "
            "own regions of the plane and rarely cross, and PC1 and PC2 together explain only a small part of the "
            "variance (the seeds differ in many directions). Yet the accuracy at the end of every path is about "
            "the same: many different weights solve the task equally well.")


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    paths.TrajConfig(dataset=v["dataset"], seeds=v["seeds"], epochs=v["epochs"], every=v["every"], lr=v["lr"],
                     batch_size=v["batch"], n_train=v["n_train"])
    paths.ToyConfig(data=v["toy_data"], epochs=v["toy_epochs"])


def result_or_job(*args: Any, **kwargs: Any) -> Entry | None:
    """views.widgets.cached_or_job with this page's key prefix."""
    return cached_or_job(K, *args, **kwargs)


# --- the trajectories ----------------------------------------------------------------------------------

def path_frame(m: dict, part: str) -> pd.DataFrame:
    """Long table: seed, epoch, PC1, PC2, test accuracy, step order and whether the point is a start or an end."""
    rows = []
    last = len(m["snapshot_epochs"]) - 1
    for k, seed in enumerate(m["seeds"]):
        for j, epoch in enumerate(m["snapshot_epochs"]):
            pc1, pc2 = m["pca"][part]["coords"][k][j]
            rows.append({"seed": str(seed), "epoch": epoch, "order": j, "PC1": pc1, "PC2": pc2,
                         "test acc": m["test_acc"][j][k],
                         "mark": "start" if j == 0 else ("end" if j == last else "snapshot"),
                         "label": f"{100 * m['test_acc'][j][k]:.0f}%" if j == last else ""})
    return pd.DataFrame(rows)


def path_chart(m: dict, part: str, lecture: bool) -> alt.TopLevelMixin:
    """One PC1/PC2 plot: a line per seed through its snapshots, the start hollow, the end with its accuracy."""
    df = path_frame(m, part)
    ev = m["pca"][part]["explained"]
    tip = ["seed", "epoch", alt.Tooltip("PC1:Q", format=".3f"), alt.Tooltip("PC2:Q", format=".3f"),
           alt.Tooltip("test acc:Q", format=".3f")]
    color = alt.Color("seed:N", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="bottom", columns=8))
    pad = alt.Scale(padding=18)  # pixels of room around the points, so an end label at the edge is not cut off
    x = alt.X("PC1:Q", title=f"PC1 ({100 * ev[0]:.1f}% of the variance)", scale=pad)
    y = alt.Y("PC2:Q", title=f"PC2 ({100 * ev[1]:.1f}% of the variance)", scale=pad)
    base = alt.Chart(df).encode(x=x, y=y, color=color)
    lines = base.mark_line(opacity=0.8).encode(order="order:Q", tooltip=tip)
    dots = base.mark_point(filled=True, size=30).encode(
        shape=alt.Shape("mark:N", scale=alt.Scale(domain=["start", "snapshot", "end"],
                                                  range=["circle", "circle", "diamond"]), title=None),
        size=alt.Size("mark:N", scale=alt.Scale(domain=["start", "snapshot", "end"], range=[140, 25, 140]),
                      legend=None), tooltip=tip)
    labels = base.mark_text(dx=8, dy=-8, align="left", fontSize=11).encode(text="label:N")
    title = alt.TitleParams([f"{part} ({m['params'][part]:,} weights)",  # two lines: one fits half a 1280 screen
                             f"PC1 + PC2 explain {100 * (ev[0] + ev[1]):.1f}%"], anchor="start")
    chart = (lines + dots + labels).properties(height=380, title=title).interactive()
    return for_lecture(chart, lecture)


def accuracy_chart(m: dict, lecture: bool) -> alt.TopLevelMixin:
    """Test accuracy per epoch, one line per seed."""
    c = m["curves"]
    df = pd.DataFrame([{"epoch": e, "seed": str(s), "test acc": c["test_acc"][i][k], "train acc": c["train_acc"][i][k]}
                       for i, e in enumerate(c["epoch"]) for k, s in enumerate(m["seeds"])])
    chart = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y("test acc:Q", scale=alt.Scale(zero=False)),
        color=alt.Color("seed:N", scale=alt.Scale(scheme="tableau10"), legend=None),
        tooltip=["seed", "epoch", alt.Tooltip("test acc:Q", format=".3f"), alt.Tooltip("train acc:Q", format=".3f")]
    ).properties(height=220, title="Test accuracy of every seed").interactive()
    return for_lecture(chart, lecture)


def draw_paths(entry: Entry, lecture: bool, key: str) -> None:
    """Both PCA plots side by side, the accuracy curves, the numbers and the downloads."""
    m = entry.metrics
    if m.get("notice"):
        st.warning(plain(m["notice"]))
    left, right = chart_slots(lecture)
    for slot, part in ((left, "layer 1"), (right, "whole model")):
        slot.altair_chart(path_chart(m, part, lecture), width="stretch")
    ev = {p: m["pca"][p]["explained"] for p in paths.PARTS}
    st.success(f"Explained variance: layer 1 PC1 {100 * ev['layer 1'][0]:.1f}%, PC2 {100 * ev['layer 1'][1]:.1f}%; "
               f"whole model PC1 {100 * ev['whole model'][0]:.1f}%, PC2 {100 * ev['whole model'][1]:.1f}%. Final "
               f"test accuracy {100 * min(m['test_acc'][-1]):.1f}% to {100 * max(m['test_acc'][-1]):.1f}% over "
               f"{len(m['seeds'])} seeds.")
    st.altair_chart(accuracy_chart(m, lecture), width="stretch")
    table = pd.DataFrame(paths.table(m))
    c1, c2 = st.columns(2)
    c1.download_button("Path coordinates (CSV)", table.to_csv(index=False), file_name=f"weight-paths-{key}.csv",
                       mime="text/csv", key=K + key + "_dl")
    ev_df = pd.DataFrame([{"part": p, "component": f"PC{i + 1}", "explained variance": v}
                          for p in paths.PARTS for i, v in enumerate(ev[p])])
    c2.download_button("Explained variance (CSV)", ev_df.to_csv(index=False), file_name=f"explained-{key}.csv",
                       mime="text/csv", key=K + key + "_dl_ev")
    with st.expander("Numbers"):
        st.dataframe(ev_df, hide_index=True, key=K + key + "_ev")
        st.dataframe(table, hide_index=True, key=K + key + "_table")
    st.caption(f"{m['dataset']}: {m['n_train']:,} training and {m['n_test']:,} test examples; one PCA fitted to all "
               f"{len(m['seeds']) * len(m['snapshot_epochs'])} snapshots (every seed, epochs "
               f"{', '.join(map(str, m['snapshot_epochs']))}). Big points: start (circle) and end (diamond, labelled "
               "with its test accuracy). Scroll to zoom, drag to pan.")
    show_provenance(entry, recompute=entry.meta.get("recompute"))


def images_ui() -> paths.TrajConfig:
    c1, c2, c3, c4, c5, c6 = st.columns(6)
    dataset = c1.selectbox("Data set", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "dataset")
    seeds = c2.number_input("Seeds", step=1, key=K + "seeds", help="2 to 16 runs, trained as one batched run")
    epochs = c3.number_input("Epochs", step=1, key=K + "epochs")
    every = c4.number_input("Snapshot every (epochs)", step=1, key=K + "every")
    lr = c5.number_input("Learning rate", format="%.4g", key=K + "lr", help="Adam's step size")
    batch = c6.number_input("Batch size", step=16, key=K + "batch")
    with st.expander("Network and data"):
        c1, c2, c3, c4 = st.columns(4)
        channels = c1.number_input("Channels (first conv)", value=IMG.channels, step=2, key=K + "channels")
        width = c2.number_input("Hidden width", value=IMG.width, step=8, key=K + "width")
        n_train = c3.number_input("Training images", step=500, key=K + "n_train")
        seed = c4.number_input("First seed", value=IMG.seed, step=1, key=K + "seed")
    return config_or_stop(lambda: paths.TrajConfig(
        dataset=dataset, seeds=int(seeds), epochs=int(epochs), every=int(every), lr=float(lr), batch_size=int(batch),
        channels=int(channels), width=int(width), n_train=int(n_train), seed=int(seed)))


def images_tab(lecture: bool) -> paths.TrajConfig:
    st.markdown(LOOK_FOR)
    st.caption("A small CNN (conv3x3-ReLU-pool twice, a hidden layer, 10 outputs); the seeds differ only in their "
               "initial weights (same minibatch order) and train as one batched run. The report's setting: Adam "
               "1e-3, batch 128, 9 epochs, a snapshot every 3 epochs.")
    cfg = images_ui()
    entry = result_or_job("wt_img", paths.KIND, cfg, lambda: paths.job(cfg, app_cache()), "weight trajectories",
                          "Train", autostart=cfg.dataset == "digits" and cfg.epochs <= 20 and not REFUSED,
                          hint=f"Press **Train** to run {cfg.seeds} seeds in the background. From a terminal: "
                               f"`{paths.cli_command(cfg)}`.")
    if entry is not None:
        draw_paths(entry, lecture, "images")
    return cfg


def toy_tab(lecture: bool) -> paths.ToyConfig:
    st.markdown("**The toy version:** MLPs (2 hidden layers) on 2D points, with a snapshot every few steps, so "
                "the paths are smooth curves: fast at first, then slowing down as each run settles.")
    c1, c2, c3, c4, c5 = st.columns(5)
    data = c1.selectbox("2D data", list(paths.TOY_DATA), key=K + "toy_data")
    epochs = c2.number_input("Epochs", step=50, key=K + "toy_epochs",
                             help=f"{TOY.n_points // 2 // TOY.batch_size} steps each at the defaults")
    every = c3.number_input("Snapshot every (epochs)", value=TOY.every, step=1, key=K + "toy_every")
    lr = c4.number_input("Learning rate", value=TOY.lr, format="%.4g", key=K + "toy_lr")
    width = c5.number_input("Hidden width", value=TOY.width, step=8, key=K + "toy_width")
    cfg = config_or_stop(lambda: paths.ToyConfig(data=data, epochs=int(epochs), every=int(every), lr=float(lr),
                                                 width=int(width)))
    entry = result_or_job("wt_toy", paths.TOY_KIND, cfg, lambda: paths.job(cfg, app_cache()), "toy trajectories",
                          "Train", autostart=cfg.epochs <= 1000 and not REFUSED,
                          hint=f"Press **Train**. From a terminal: `{paths.cli_command(cfg)}`.")
    if entry is not None:
        draw_paths(entry, lecture, "toy")
    return cfg


# --- the loss surface ----------------------------------------------------------------------------------

def surface_frames(s: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The grid (a, b, loss) and the projected path (epoch, a, b)."""
    grid = pd.DataFrame([{"a": a, "b": b, "loss": s["loss"][j][i]} for j, b in enumerate(s["b"])
                         for i, a in enumerate(s["a"])])
    path = pd.DataFrame([{"epoch": e, "a": a, "b": b} for e, (a, b) in zip(s["path_epochs"], s["path"])])
    return grid, path


def surface_chart(s: dict, lecture: bool) -> alt.TopLevelMixin:
    """The training loss as a heatmap (log colour) with the path on top, start to end."""
    grid, path = surface_frames(s)
    da, db = s["a"][1] - s["a"][0], s["b"][1] - s["b"][0]  # cells centred on the grid points
    grid = grid.assign(a0=grid["a"] - da / 2, a1=grid["a"] + da / 2, b0=grid["b"] - db / 2, b1=grid["b"] + db / 2)
    ev = s["explained"]
    heat = alt.Chart(grid).mark_rect().encode(
        x=alt.X("a0:Q", title=f"direction 1 ({100 * ev[0]:.1f}% of the path's variance)"), x2="a1:Q",
        y=alt.Y("b0:Q", title=f"direction 2 ({100 * ev[1]:.1f}%)"), y2="b1:Q",
        color=alt.Color("loss:Q", scale=alt.Scale(type="log", scheme="viridis"), title="train loss"),
        tooltip=[alt.Tooltip("a:Q", format=".3f"), alt.Tooltip("b:Q", format=".3f"),
                 alt.Tooltip("loss:Q", format=".4f")])
    line = alt.Chart(path).mark_line(color="white", point=alt.OverlayMarkDef(color="white", size=40)).encode(
        x="a:Q", y="b:Q", order="epoch:Q",
        tooltip=["epoch", alt.Tooltip("a:Q", format=".3f"), alt.Tooltip("b:Q", format=".3f")])
    ends = alt.Chart(path.iloc[[0, -1]].assign(label=["start", "end"])).mark_text(
        color="white", dx=10, dy=-10, fontWeight="bold").encode(x="a:Q", y="b:Q", text="label:N")
    chart = (heat + line + ends).properties(height=440, title="Run 0's path over the training loss (Li et al. 2018)")
    return for_lecture(chart.interactive(), lecture)


def surface_section(img: paths.TrajConfig, toy: paths.ToyConfig, lecture: bool) -> None:
    st.markdown("**Beyond the homework: the path over the loss surface.** For run 0 alone, a PCA of its every-epoch "
                "snapshots minus its final weights gives two directions; the path is projected on them (the end at "
                "the origin) and the training loss is measured on a grid in that plane (Li et al. 2018, fig. 9). "
                "Almost all of the path's variance lies in the first direction: training moves along a nearly "
                "straight line, curving only at the end.")
    c1, c2 = st.columns(2)
    which = c1.radio("Run", ["images", "toy"], format_func={"images": "the image CNN above",
                                                             "toy": "the toy MLP"}.get, key=K + "surf_run",
                     horizontal=True)
    grid = c2.number_input("Grid points per axis", value=surface.SurfaceConfig().grid, step=2, key=K + "surf_grid")
    cfg = config_or_stop(lambda: surface.SurfaceConfig(run=img if which == "images" else toy, grid=int(grid)))
    entry = result_or_job("wt_surf", surface.KIND, cfg, lambda: surface.job(cfg, app_cache()), "loss surface",
                          "Compute the surface", autostart=False,
                          hint=f"Press **Compute the surface**: {cfg.grid}x{cfg.grid} points in the background "
                               f"(it trains the run first if needed).")
    if entry is None:
        return
    s = entry.metrics
    st.altair_chart(surface_chart(s, lecture), width="stretch")
    grid_df, path_df = surface_frames(s)
    c1, c2 = st.columns(2)
    c1.download_button("Loss grid (CSV)", grid_df.to_csv(index=False), file_name="loss-surface.csv", mime="text/csv",
                       key=K + "surf_dl")
    c2.download_button("Projected path (CSV)", path_df.to_csv(index=False), file_name="loss-surface-path.csv",
                       mime="text/csv", key=K + "surf_dl_path")
    st.caption(f"Loss on {s['n_eval']:,} training examples; the directions explain {100 * s['explained'][0]:.1f}% and "
               f"{100 * s['explained'][1]:.1f}% of the path's variance. Colour on a log scale.")
    show_provenance(entry, recompute=entry.meta.get("recompute"))


# --- page ----------------------------------------------------------------------------------------------

st.title("Weight trajectories in PCA space")
lecture = lecture_mode(K)
st.caption("The same network trained from different seeds: where do the weights go? Each run's snapshots are "
           "flattened and one PCA of all of them gives a plane to draw every path in.")
init_from_url(SCHEMA, K, _validate_link)
REFUSED = K + "link_error" in st.session_state  # a refused link starts nothing until the student changes a setting
if REFUSED:
    st.warning(plain(st.session_state.pop(K + "link_error")))
try:
    tab1, tab2, tab3 = st.tabs(["Images: 8 seeds", "Toy: 2D data", "Loss surface"])
    with tab1:
        img_cfg = images_tab(lecture)
    with tab2:
        toy_cfg = toy_tab(lecture)
    with tab3:
        surface_section(img_cfg, toy_cfg, lecture)
except ConfigError as exc:
    st.error("Setting refused: " + plain(exc))
