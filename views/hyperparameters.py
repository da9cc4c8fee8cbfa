"""Hyperparameter lab: learning rate x batch norm, batch size, and depth x width on a multi-class 2-D data set."""

from __future__ import annotations

import math
from typing import Any, Callable

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from explorer.core.cache import Entry
from explorer.core.config import ConfigError
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.labs.hyperparameters import lab
from explorer.labs.hyperparameters.config import (DATASETS, DOMAIN, GRID_DEPTH, GRID_WIDTH, LRS, MODES, BatchSizeConfig,
                                                  GridConfig, LRConfig, make_data, steps_table)
from explorer.labs.hyperparameters.kmlp import OPTIMIZERS, Shape, width_groups
from explorer.render.png import boundary_png
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, init_from_url, job_key,
                           lecture_mode, plain, poll_job, show_provenance, split_dash, start_job, stop_job)

K = "hp_"  # widget-key prefix
LR0, BS0, GR0 = LRConfig(), BatchSizeConfig(), GridConfig()
SCHEMA = {"dataset": Param(str, LR0.dataset), "noise": Param(int, LR0.noise), "points": Param(int, LR0.n_points),
          "optimizer": Param(str, LR0.optimizer), "epochs": Param(int, LR0.epochs),
          "batch": Param(int, LR0.batch_size), "width": Param(int, LR0.width),
          "bs_mode": Param(str, BS0.mode), "bs_epochs": Param(int, BS0.epochs), "bs_steps": Param(int, BS0.steps),
          "grid_epochs": Param(int, GR0.epochs), "grid_lr": Param(float, GR0.lr), "grid_bn": Param(bool, GR0.bn)}
LR_CHOICES = (1.0, 0.1, 1e-2, 1e-3, 1e-4, 1e-5)
BS_CHOICES = (1, 4, 16, 32, 128, 512, 1024)
INLINE_WORK = 20_000  # model-steps a part starts by itself (the LR default: 8 x 1,600); more waits for Train
OPT_LABELS = {"adam": "Adam", "sgd": "SGD", "momentum": "SGD + momentum 0.9"}


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    data = dict(dataset=v["dataset"], noise=v["noise"], n_points=v["points"])
    LRConfig(**data, optimizer=v["optimizer"], epochs=v["epochs"], batch_size=v["batch"], width=v["width"])
    BatchSizeConfig(**data, mode=v["bs_mode"], epochs=v["bs_epochs"], steps=v["bs_steps"])
    GridConfig(**data, epochs=v["grid_epochs"], lr=v["grid_lr"], bn=v["grid_bn"])


def _data_ui() -> dict:
    """The data settings every part shares."""
    with st.expander("Data: " + DATASETS[st.session_state.get(K + "dataset", LR0.dataset)][0], expanded=False):
        c1, c2, c3, c4 = st.columns(4)
        dataset = c1.selectbox("Data set", list(DATASETS), format_func=lambda k: DATASETS[k][0], key=K + "dataset")
        noise = c2.number_input("Noise (%)", step=5, key=K + "noise", help="0 to 50")
        points = c3.number_input("Points", step=100, key=K + "points", help="20 to 20,000; half train, half test")
        seed = c4.number_input("Seed", value=0, step=1, key=K + "seed", help="data, initial weights, batch order")
    return dict(dataset=dataset, noise=int(noise), n_points=int(points), seed=int(seed))


def _csv(df: pd.DataFrame, label: str, name: str, key: str) -> None:
    st.download_button(label, df.to_csv(index=False), file_name=name, mime="text/csv", key=K + key)


def _part(cfg: Any, slot: str, what: str, draw_entry: Callable[[Entry], None], draw_snap: Callable[[dict], None],
          autostart: bool) -> None:
    """A part's result: from the cache at once, else a background job (by itself when small, else on Train)
    drawn live as it trains."""
    cache = app_cache()
    kind = lab.kind_of(cfg)
    entry = cache.get(kind, cfg)
    if entry is not None:
        draw_entry(entry)
        show_provenance(entry, recompute=entry.meta.get("recompute"))
        return
    job = get_job(K + slot)
    mine = job is not None and st.session_state.get(K + slot + "_cfg") == cfg
    c1, c2 = st.columns([1, 4])
    pressed = c1.button("Train", type="primary", key=K + slot + "_train", disabled=mine and not job.is_final)
    if pressed or (autostart and not mine):
        job = start_job(K + slot, lab.job(cfg, cache), name=what, key=job_key(kind, cfg))
        st.session_state[K + slot + "_cfg"] = cfg
        mine = job is not None
    if not mine:
        st.info(f"These settings take {lab.work(cfg):,} model-steps: press **Train** to run them in the background "
                f"with a progress bar (the result is kept for the next visitor). From a terminal: "
                f"`{lab.cli_command(cfg)}`.")
        return
    if not job.is_final and c2.button("Stop", key=K + slot + "_stop"):
        stop_job(K + slot)

    def draw(j: Job) -> None:
        st.progress(min(1.0, j.progress), text=j.message or j.state.value)
        if j.snapshot is not None:
            draw_snap(j.snapshot)

    poll_job(job, draw, every=0.5)


def _curves(names: list[str], hist: dict, x: str, extra: dict[str, list] | None = None) -> pd.DataFrame:
    """Long table: model, x (epoch or step), split, loss, accuracy (diverged points dropped)."""
    rows = []
    for i, name in enumerate(names):
        for j, e in enumerate(hist[x]):
            if j >= len(hist["train_loss"][i]):
                break
            for split in ("train", "test"):
                loss, acc = hist[f"{split}_loss"][i][j], hist[f"{split}_acc"][i][j]
                if math.isfinite(loss):
                    rows.append({"model": name, x: e, "step": hist["step"][j], "split": split, "loss": loss,
                                 "accuracy": acc, **{k: v[i] for k, v in (extra or {}).items()}})
    return pd.DataFrame(rows)


def _line_charts(df: pd.DataFrame, x: str, names: list[str], lecture: bool, title: str) -> None:
    """Loss (log scale) and accuracy against x, one colour per model, train solid and test dashed; zoomable."""
    if df.empty:
        st.info("Waiting for the first evaluation...")
        return
    color = alt.Color("model:N", sort=names, scale=alt.Scale(scheme="tableau10"),
                      legend=alt.Legend(orient="right", title=None, labelLimit=0))
    slots = chart_slots(lecture)
    for slot, y, scale in ((slots[0], "loss", alt.Scale(type="log")), (slots[1], "accuracy", alt.Scale())):
        chart = alt.Chart(df).mark_line().encode(
            x=alt.X(f"{x}:Q"), y=alt.Y(f"{y}:Q", scale=scale), color=color, strokeDash=split_dash("train", "test"),
            tooltip=["model", "split", alt.Tooltip(f"{x}:Q", format=",.4g"), alt.Tooltip("step:Q", format=","),
                     alt.Tooltip(f"{y}:Q", format=".4f")]).properties(
            height=320, title=f"{title}: {y}" + (" (log scale)" if y == "loss" else "")).interactive()
        slot.altair_chart(for_lecture(chart, lecture), width="stretch")


# --- part 1: learning rate x batch norm -------------------------------------------------------------------

def lr_ui(data: dict) -> LRConfig:
    c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])
    lrs = c1.multiselect("Learning rates", LR_CHOICES, default=list(LRS), format_func=lambda v: f"{v:g}", key=K + "lrs")
    bn = c2.multiselect("Batch norm", ["off", "on"], default=["off", "on"], key=K + "bn")
    optimizer = c3.selectbox("Optimizer", list(OPTIMIZERS), format_func=OPT_LABELS.get, key=K + "optimizer")
    epochs = c4.number_input("Epochs", step=10, key=K + "epochs", help="1 to 1,000")
    batch = c5.number_input("Batch size", step=16, key=K + "batch")
    width = st.number_input("Width of the 6 hidden layers", step=8, key=K + "width", help="1 to 256")
    if not lrs or not bn:
        st.info("Choose at least one learning rate and one batch-norm setting.")
        st.stop()
    return config_or_stop(lambda: LRConfig(**data, lrs=tuple(sorted(lrs, reverse=True)),
                                           bn=tuple(v == "on" for v in bn), optimizer=optimizer, epochs=int(epochs),
                                           batch_size=int(batch), width=int(width)))


def _lr_draw(m: dict, lecture: bool, final: bool) -> None:
    if m.get("history") is None:
        return
    df = _curves(m["names"], m["history"], "epoch")
    _line_charts(df, "epoch", m["names"], lecture, "Learning rate x batch norm")
    for why in filter(None, m.get("diverged") or []):
        st.warning(plain(why))
    if final:
        table = pd.DataFrame(lab.lr_table(m))
        st.dataframe(table, hide_index=True, key=K + "lr_table")
        c1, c2 = st.columns(2)
        with c1:
            _csv(df, "Curves (CSV)", "hyperparameters-lr-curves.csv", "lr_dl_curves")
        with c2:
            _csv(table, "Final metrics (CSV)", "hyperparameters-lr-final.csv", "lr_dl_table")


def lr_tab(data: dict, lecture: bool) -> None:
    st.markdown("**What to look for:** the same network, the same initial weights and the same batches, only the "
                "learning rate differs. At 1 the loss explodes within a few steps: without batch norm the run is "
                "marked diverged, with it the network survives but stays at chance. 1e-2 and 1e-3 learn the "
                "spiral; at 1e-5 hardly anything moves in 100 epochs.")
    cfg = lr_ui(data)
    st.caption(f"{len(cfg.lrs) * len(cfg.bn)} models (every learning rate with every batch-norm setting) train as ONE "
               "batched run: one forward and one backward per step for all of them, each with its own learning rate "
               "and its own batch-norm statistics. Solid: training set; dashed: test set (evaluation mode).")
    _part(cfg, "lr", "hyperparameters: learning rates", lambda e: _lr_draw(e.metrics, lecture, True),
          lambda s: _lr_draw(s, lecture, False), autostart=lab.work(cfg) <= INLINE_WORK)


# --- part 2: batch size ------------------------------------------------------------------------------------

def batch_ui(data: dict) -> BatchSizeConfig:
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    sizes = c1.multiselect("Batch sizes", BS_CHOICES, default=list(BS0.batch_sizes), key=K + "bs_sizes")
    mode = c2.radio("Hold equal", list(MODES), format_func=MODES.get, key=K + "bs_mode", horizontal=True)
    epochs = c3.number_input("Epochs", step=5, key=K + "bs_epochs", disabled=mode != "epochs")
    steps = c4.number_input("Optimizer steps", step=100, key=K + "bs_steps", disabled=mode != "steps")
    c1, c2, c3 = st.columns(3)
    lr = c1.number_input("Learning rate", value=BS0.lr, format="%.4g", key=K + "bs_lr")
    optimizer = c2.selectbox("Optimizer", list(OPTIMIZERS), format_func=OPT_LABELS.get, key=K + "bs_optimizer")
    bn = c3.toggle("Batch norm", value=BS0.bn, key=K + "bs_bn", help="needs 2 or more examples in every batch")
    if not sizes:
        st.info("Choose at least one batch size.")
        st.stop()
    return config_or_stop(lambda: BatchSizeConfig(**data, batch_sizes=tuple(sorted(sizes)), mode=mode,
                                                  epochs=int(epochs), steps=int(steps), lr=float(lr),
                                                  optimizer=optimizer, bn=bn))


def _batch_draw(m: dict, lecture: bool, final: bool) -> None:
    runs = [r for r in m["runs"] if r.get("history")]
    if not runs:
        return
    x = st.radio("x axis", ["epoch", "step"], horizontal=True, key=K + "bs_x" + ("_f" if final else ""),
                 format_func={"epoch": "epochs", "step": "optimizer steps"}.get)
    df = pd.concat([_curves([r["name"]], r["history"], "epoch") for r in runs], ignore_index=True)
    names = [r["name"] for r in m["runs"]]
    _line_charts(df, x, names, lecture, "Batch size")
    for r in runs:
        if r.get("diverged"):
            st.warning(plain(r["diverged"]))
    if final:
        table = pd.DataFrame([{"batch size": r["batch size"], **r["finals"], "seconds": s}
                              for r, s in zip(m["runs"], m["seconds"])])
        st.dataframe(table, hide_index=True, key=K + "bs_final")
        _csv(df, "Curves (CSV)", "hyperparameters-batch-curves.csv", "bs_dl_curves")


def batch_tab(data: dict, lecture: bool) -> None:
    st.markdown("**What to look for:** for the same number of *epochs*, small batches take many more optimizer "
                "steps and get much further (batch size 1 takes one step per example); held to the same number "
                "of *steps*, large batches catch up, since each step sees more examples. The table says how many "
                "steps each takes.")
    cfg = batch_ui(data)
    table = pd.DataFrame(steps_table(cfg))
    st.dataframe(table, hide_index=True, key=K + "bs_steps_table",
                 column_config={"epochs": st.column_config.NumberColumn(format="%.2f")})
    _csv(table, "Steps table (CSV)", "hyperparameters-steps.csv", "bs_dl_steps")
    st.caption("Steps per epoch = ceil(n / b) for n training points; the total is that times the epochs, or the "
               "steps you hold equal. One model per batch size (the same initial weights); they run one after "
               "another, since their step counts differ. Batch size 1 is a long Python loop: it runs as a "
               "background job.")
    _part(cfg, "batch", "hyperparameters: batch sizes", lambda e: _batch_draw(e.metrics, lecture, True),
          lambda s: _batch_draw(s, lecture, False), autostart=lab.work(cfg) <= INLINE_WORK)


# --- part 3: depth x width ---------------------------------------------------------------------------------

def grid_ui(data: dict) -> GridConfig:
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", step=10, key=K + "grid_epochs")
    lr = c2.number_input("Learning rate", format="%.4g", key=K + "grid_lr")
    optimizer = c3.selectbox("Optimizer", list(OPTIMIZERS), format_func=OPT_LABELS.get, key=K + "grid_optimizer")
    bn = c4.toggle("Batch norm", key=K + "grid_bn")
    return config_or_stop(lambda: GridConfig(**data, epochs=int(epochs), lr=float(lr), optimizer=optimizer, bn=bn))


def _boundary(cfg: GridConfig, field: np.ndarray, size: int, axes: bool = False) -> bytes:
    d = make_data(cfg)
    return boundary_png(field, task="classification", extent=DOMAIN, size=size, axes=axes,
                        train=(d.raw_train, d.y_train.numpy()), test=(d.raw_test, d.y_test.numpy()))


def _grid_draw(cfg: GridConfig, entry: Entry, lecture: bool) -> None:
    m = entry.metrics
    fields = entry.tensors()["fields"].numpy()
    rows = lab.grid_table(m)
    index = {(r["depth"], r["width"]): i for i, r in enumerate(rows)}
    small = 220 if lecture else 170
    for title, keys in ((f"Depth at width {GRID_WIDTH}", [(d, GRID_WIDTH) for d in cfg.depths]),
                        (f"Width at depth {GRID_DEPTH}", [(GRID_DEPTH, w) for w in cfg.widths])):
        st.markdown(f"**{title}**")
        cols = st.columns(len(keys))
        for col, key in zip(cols, keys):
            i = index[key]
            r = rows[i]
            col.image(_boundary(cfg, fields[i], small), caption=f"{r['model']}: train {r['train loss']:.3f} · "
                      f"test {r['test loss']:.3f}", width=small)
    best, worst = lab.best_worst(m)
    c1, c2 = chart_slots(lecture)
    for slot, i, what in ((c1, best, "Best"), (c2, worst, "Worst")):
        r = rows[i]
        slot.image(_boundary(cfg, fields[i], 420, axes=True), width=420,
                   caption=f"{what} (test loss): {r['model']}, {r['params']:,} parameters · train loss "
                           f"{r['train loss']:.3f}, test loss {r['test loss']:.3f} · test accuracy {r['test acc']:.3f}")
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, key=K + "grid_table")
    long = table.melt(id_vars=["model", "params"], value_vars=["train loss", "test loss"], var_name="split",
                      value_name="loss")
    c1, c2 = chart_slots(lecture)
    bars = alt.Chart(long).mark_bar().encode(
        x=alt.X("model:N", sort=list(table["model"]), title=None), xOffset="split:N",
        y=alt.Y("loss:Q"), color=alt.Color("split:N", legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["model", "params", "split", alt.Tooltip("loss:Q", format=".4f")]).properties(
        height=300, title="Final train and test loss").interactive()
    c1.altair_chart(for_lecture(bars, lecture), width="stretch")
    regions = alt.Chart(table).mark_point(filled=True, size=80).encode(
        x=alt.X("params:Q", scale=alt.Scale(type="log"), title="parameters"),
        y=alt.Y("regions counted (lower estimate):Q", scale=alt.Scale(type="log"), title="linear regions counted"),
        color=alt.Color("model:N", sort=list(table["model"]), legend=alt.Legend(orient="bottom", columns=2, title=None)),
        tooltip=["model", "params", "regions counted (lower estimate)", "region bound (1 hidden layer)"]).properties(
        height=300, title="Linear regions on the grid").interactive()
    c2.altair_chart(for_lecture(regions, lecture), width="stretch")
    one = [r for r in rows if r["depth"] == 1]
    if one:
        r = one[0]
        st.markdown(f"**Linear regions, one hidden layer of {r['width']} ReLUs:** at most "
                    f"sum over i = 0..2 of C({r['width']}, i) = **{r['region bound (1 hidden layer)']:,}** regions "
                    f"of the plane; **{r['regions counted (lower estimate)']:,}** counted (distinct on/off patterns of "
                    f"the units at {cfg.region_grid}x{cfg.region_grid} points of [-6, 6]²). The count is a lower "
                    "estimate: regions between grid points, or outside the square, are missed.")
    _csv(table, "Grid results (CSV)", "hyperparameters-grid.csv", "grid_dl")


def _grid_snap(s: dict, lecture: bool) -> None:
    if s.get("history") is not None:
        df = _curves(s["names"], s["history"], "epoch")
        _line_charts(df, "epoch", s["names"], lecture, "Depth x width")


def grid_tab(data: dict, lecture: bool) -> None:
    st.markdown("**What to look for:** the decision boundary of each network over the plane (colour: the class it "
                "predicts, paler where unsure; points: white rim train, black rim test). One hidden layer draws a "
                "few straight cuts; depth folds them into spirals; too narrow a deep net cannot, too deep a narrow "
                "one trains slowly.")
    cfg = grid_ui(data)
    groups = width_groups([Shape(d, w) for d, w in cfg.shapes])
    st.caption(f"The {len(cfg.shapes)} networks train batched, in {len(groups)} stacks grouped by width (widths up "
               "to twice the narrowest of a group): each stack is one forward and one backward per step for its "
               "networks, padded to its widest with zero units and to its deepest by letting a shallower network "
               "pass its hidden vector past the deeper layers, which hold no weights for it. Each trains exactly "
               "as it would alone (same initial weights, same batches).")
    _part(cfg, "grid", "hyperparameters: depth x width", lambda e: _grid_draw(cfg, e, lecture),
          lambda s: _grid_snap(s, lecture), autostart=False)


# --- page --------------------------------------------------------------------------------------------------

st.title("Hyperparameters: learning rate, batch size, depth and width")
lecture = lecture_mode(K)
st.caption("The course's MLP (6 hidden ReLU layers) on a 2-D data set of several classes: what the learning rate, "
           "batch norm, the batch size and the shape of the network do to training.")
init_from_url(SCHEMA, K, _validate_link)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
try:
    data = _data_ui()
    tab1, tab2, tab3 = st.tabs(["Learning rate x batch norm", "Batch size", "Depth x width"])
    with tab1:
        lr_tab(data, lecture)
    with tab2:
        batch_tab(data, lecture)
    with tab3:
        grid_tab(data, lecture)
except ConfigError as exc:
    st.error("Setting refused: " + plain(exc))
