"""Optimizer race: torch.optim's optimizers on 2-D loss surfaces, then on a real task from identical weights."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from explorer.core.config import check_choice
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.labs.optimizer_race.race import (TASK_DATASETS, SurfaceRaceConfig, TaskRaceConfig, cached_task_race,
                                               race_surface, task_race_job)
from explorer.labs.optimizer_race.surfaces import SURFACES
from explorer.nets.small import ARCHS, NetConfig
from explorer.train.optimizers import LR_RANGE, OPTIMIZERS, OptimizerConfig
from views.widgets import app_cache, config_or_stop, get_job, poll_job, settings_from_url, show_provenance, start_job

K = "opt_"  # widget-key prefix
SURFACE_NAMES = [*SURFACES, "custom"]
SURFACE_LABELS = {**{k: s.label for k, s in SURFACES.items()}, "custom": "Custom formula"}
DATASET_LABELS = {"mnist1d": "MNIST-1D", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10 (subset)"}
DEFAULT_KINDS = ["sgd", "momentum", "rmsprop", "adam"]
SCHEMA = {"surface": Param(str, "rosenbrock"), "x": Param(float, math.nan), "y": Param(float, math.nan),
          "steps": Param(int, 300)}
GRID = 70  # heat-map cells per side
ARROW = 0.08  # arrow length as a fraction of the plot width (directions only)
FRAME_S = 0.12  # seconds between animation frames


def _init_from_url() -> None:
    """First run of a session: surface, start and steps from the URL, checked on the server."""
    if K + "surface" in st.session_state:
        return
    values = settings_from_url(SCHEMA, K, lambda v: check_choice("surface", v["surface"], SURFACE_NAMES))
    surf = values["surface"]
    start = SURFACES[surf].start if surf in SURFACES else (-2.0, 2.0)
    st.session_state[K + "surface"] = surf
    st.session_state[K + "x"] = start[0] if math.isnan(values["x"]) else values["x"]
    st.session_state[K + "y"] = start[1] if math.isnan(values["y"]) else values["y"]
    st.session_state[K + "steps"] = values["steps"]


def _on_surface_change() -> None:
    """A new surface: move the start to its default and forget the old race."""
    name = st.session_state[K + "surface"]
    if name in SURFACES:
        st.session_state[K + "x"], st.session_state[K + "y"] = SURFACES[name].start
    st.session_state.pop(K + "race", None)


def racers_ui(kinds: list[str], lr_of: dict[str, float], where: str) -> list[tuple[str, float, tuple]]:
    """Each ticked optimizer's learning rate and other hyperparameters, in one expander per optimizer."""
    out = []
    cols = st.columns(min(4, max(1, len(kinds))))
    for i, kind in enumerate(kinds):
        spec = OPTIMIZERS[kind]
        with cols[i % len(cols)].expander(spec.label, expanded=False):
            lr = st.number_input("learning rate", value=float(lr_of[kind]), format="%.6g",
                                 key=f"{K}{where}_lr_{kind}", help=f"{LR_RANGE[0]:g} to {LR_RANGE[1]:g}")
            hps = tuple((h.name, st.number_input(h.label, value=float(h.default), format="%.6g", help=h.help,
                                                 key=f"{K}{where}_{kind}_{h.name}")) for h in spec.hparams)
        out.append((kind, lr, hps))
    return out


@st.cache_data(max_entries=64, show_spinner="Racing...")
def _surface_frames(cfg: SurfaceRaceConfig) -> tuple[pd.DataFrame, list[str], list[str]]:
    """All tracks as one long table (racer, step, x, y, loss, distance, arrows), the labels, and messages."""
    race = race_surface(cfg)
    x0, x1, _, _ = race.surface.domain
    length = ARROW * (x1 - x0)
    rows = []
    for tr in race.tracks:
        n = len(tr.path)
        if n == 0:
            continue
        path, g = tr.path.numpy(), tr.grad.numpy()
        gdir = -g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-300) * length  # descent direction
        m = tr.momentum.numpy() if tr.momentum is not None else np.zeros_like(g)
        mdir = -m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-300) * length
        mdir[np.linalg.norm(m, axis=1) == 0] = 0.0
        rows.append(pd.DataFrame({
            "racer": tr.label, "step": np.arange(n), "x": path[:, 0], "y": path[:, 1],
            "loss": tr.loss.numpy(), "distance": tr.distance.numpy() if tr.distance is not None else np.nan,
            "gx": path[:, 0] + gdir[:, 0], "gy": path[:, 1] + gdir[:, 1],
            "mx": path[:, 0] + mdir[:, 0], "my": path[:, 1] + mdir[:, 1],
        }))
    messages = [f"{tr.label}: {tr.message}" for tr in race.tracks if tr.message]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(), [t.label for t in race.tracks], messages


@st.cache_data(max_entries=16)
def _heatmap(surface: str, formula: str) -> pd.DataFrame:
    """The surface on a GRID x GRID lattice, log-scaled and banded so the bands read as contour lines."""
    surf = SURFACES[surface] if surface in SURFACES else SurfaceRaceConfig("custom", (0.0, 0.0), 1,
                                                                           (OptimizerConfig(),),
                                                                           formula=formula).get_surface()
    xs, ys, z = surf.grid(GRID)
    z = z.numpy()
    finite = np.isfinite(z)
    zmin = z[finite].min() if finite.any() else 0.0
    level = np.log10(np.where(finite, z - zmin, np.nan) + 1e-3)
    band = np.floor(level * 3) / 3  # a third of a decade per band
    gx, gy = np.meshgrid(xs.numpy(), ys.numpy())
    dx, dy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
    return pd.DataFrame({"x": gx.ravel(), "y": gy.ravel(), "x2": gx.ravel() + dx, "y2": gy.ravel() + dy,
                         "log10 loss": band.ravel()})


def _race_chart(cfg: SurfaceRaceConfig, frames: pd.DataFrame, frame: int, arrows: bool) -> alt.Chart:
    """Contour heat map (click to pick the start), paths so far, current points, arrows and minima."""
    surf = cfg.get_surface()
    x0, x1, y0, y1 = surf.domain
    sx, sy = alt.Scale(domain=[x0, x1], nice=False), alt.Scale(domain=[y0, y1], nice=False)
    pick = alt.selection_point(name="start", fields=["x", "y"], on="click", nearest=True)
    heat = alt.Chart(_heatmap(cfg.surface, cfg.formula)).mark_rect().encode(
        x=alt.X("x:Q", scale=sx), x2="x2:Q", y=alt.Y("y:Q", scale=sy), y2="y2:Q",
        color=alt.Color("log10 loss:Q", scale=alt.Scale(scheme="greys", reverse=True), legend=None),
        tooltip=[alt.Tooltip("x:Q", format=".2f"), alt.Tooltip("y:Q", format=".2f")],
    ).add_params(pick)
    layers = [heat]
    minima = pd.DataFrame(surf.minima, columns=["x", "y"])
    if len(minima):
        layers.append(alt.Chart(minima).mark_point(shape="cross", size=160, color="#d62728", filled=True).encode(
            x=alt.X("x:Q", scale=sx), y=alt.Y("y:Q", scale=sy)))
    if len(frames):
        upto = frames[frames.step <= frame]
        now = upto.sort_values("step").groupby("racer", sort=False).tail(1)
        color = alt.Color("racer:N", legend=alt.Legend(orient="bottom", columns=2, title=None))
        layers.append(alt.Chart(upto).mark_line(strokeWidth=2, clip=True).encode(
            x=alt.X("x:Q", scale=sx), y=alt.Y("y:Q", scale=sy), order="step:Q", color=color))
        layers.append(alt.Chart(now).mark_circle(size=70, opacity=1, clip=True).encode(
            x=alt.X("x:Q", scale=sx), y=alt.Y("y:Q", scale=sy), color=color,
            tooltip=["racer", "step", alt.Tooltip("loss:Q", format=".4g"), alt.Tooltip("x:Q", format=".4f"),
                     alt.Tooltip("y:Q", format=".4f")]))
        if arrows:
            layers.append(alt.Chart(now).mark_rule(strokeWidth=2, clip=True).encode(
                x="x:Q", y="y:Q", x2="gx:Q", y2="gy:Q", color=color))
            layers.append(alt.Chart(now).mark_rule(strokeWidth=2, strokeDash=[4, 3], clip=True).encode(
                x="x:Q", y="y:Q", x2="mx:Q", y2="my:Q", color=color))
    return alt.layer(*layers).properties(width=460, height=460)


def _curves(frames: pd.DataFrame, frame: int) -> None:
    """Loss and distance to the nearest minimum against the step, up to the current frame."""
    upto = frames[frames.step <= frame]
    for col, title in (("loss", "loss (log scale)"), ("distance", "distance to the nearest minimum (log)")):
        data = upto[upto[col] > 0] if col == "loss" else upto.dropna(subset=[col])
        if col == "loss" and (upto["loss"] <= 0).any():  # negative minima: plot the raw loss
            data, title = upto, "loss"
        if data.empty:
            continue
        scale = alt.Scale(type="log") if "log" in title else alt.Scale()
        st.altair_chart(alt.Chart(data).mark_line().encode(
            x=alt.X("step:Q", scale=alt.Scale(domain=[0, int(frames.step.max())])),
            y=alt.Y(f"{col}:Q", title=title, scale=scale), color=alt.Color("racer:N", legend=None),
        ).properties(height=190), width="stretch")


def surface_tab() -> None:
    """The 2-D race: settings, Race / Play / Step, the animated contour plot and the curves."""
    pending = st.session_state.pop(K + "picked", None)
    if pending is not None:  # a click on the plot picked a new start
        st.session_state[K + "x"], st.session_state[K + "y"] = pending
        st.session_state.pop(K + "race", None)
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    name = c1.selectbox("Surface", SURFACE_NAMES, format_func=SURFACE_LABELS.get, key=K + "surface",
                        on_change=_on_surface_change)
    x = c2.number_input("start x", format="%.4f", key=K + "x")
    y = c3.number_input("start y", format="%.4f", key=K + "y")
    steps = c4.number_input("steps", min_value=1, step=50, key=K + "steps")
    formula = ""
    if name == "custom":
        formula = st.text_input("f(x, y) =", value="x**2 + 5*y**2 + sin(3*x)", key=K + "formula",
                                help="numbers, x, y, + − * / ** (or ^), pi, e, sin cos tan exp log sqrt abs tanh "
                                     "sinh cosh atan sigmoid; plotted on [-3, 3]²")
    else:
        st.caption(f"{SURFACES[name].formula} — {SURFACES[name].note}")
    kinds = st.multiselect("Optimizers", list(OPTIMIZERS), default=DEFAULT_KINDS, key=K + "kinds",
                           format_func=lambda k: OPTIMIZERS[k].label)
    lr_of = {k: SURFACES[name].suggested_lr(k) if name in SURFACES else 0.02 for k in OPTIMIZERS}
    racers = racers_ui(kinds, lr_of, f"surf_{name}")
    noise_default = SURFACES[name].grad_noise if name in SURFACES else 0.0
    c1, c2, c3 = st.columns(3)
    noise = c1.number_input("gradient noise (std)", value=noise_default, min_value=0.0, key=f"{K}noise_{name}",
                            help="Gaussian noise added to every gradient; the same draws for every racer")
    arrows = c2.toggle("show gradient and momentum arrows", value=True, key=K + "arrows",
                       help="solid: −gradient, dashed: −momentum (directions only)")
    cfg = config_or_stop(lambda: SurfaceRaceConfig(
        name, (float(x), float(y)), int(steps),
        tuple(OptimizerConfig(k, float(lr), hps) for k, lr, hps in racers), float(noise), formula=formula))
    if c3.button("Race", type="primary", key=K + "race_btn"):
        st.session_state[K + "race"] = cfg
        st.session_state[K + "frame"] = 0
        st.session_state[K + "playing"] = True
    raced = st.session_state.get(K + "race")
    shown = raced if raced == cfg else None
    frames, _, messages = _surface_frames(shown) if shown else (pd.DataFrame(), [], [])
    if shown is None:
        st.info("Press **Race** to start every ticked optimizer from the start point, or click on the plot "
                "to pick another start.")
    _animation(shown or cfg, frames, messages, arrows)


def _animation(cfg: SurfaceRaceConfig, frames: pd.DataFrame, messages: list[str], arrows: bool) -> None:
    """Replays the computed tracks frame by frame; Play / Pause / Step / a slider move the frame."""
    last = int(frames.step.max()) if len(frames) else 0
    playing = bool(st.session_state.get(K + "playing")) and len(frames) > 0

    @st.fragment(run_every=FRAME_S if playing else None)
    def panel() -> None:
        frame = int(st.session_state.get(K + "frame", 0))
        clicked = st.session_state.get(K + "step") or st.session_state.get(K + "play")
        if st.session_state.get(K + "playing") and len(frames) and not clicked:
            frame = min(last, frame + max(1, last // 60))
            if frame >= last:
                st.session_state[K + "playing"] = False
        st.session_state[K + "frame"] = min(frame, last)
        b1, b2, b3 = st.columns([1, 1, 4])
        if b1.button("Pause" if st.session_state.get(K + "playing") else "Play", key=K + "play", disabled=not last):
            st.session_state[K + "playing"] = not st.session_state.get(K + "playing")
            if st.session_state[K + "playing"] and st.session_state[K + "frame"] >= last:
                st.session_state[K + "frame"] = 0
            st.rerun()
        if b2.button("Step", key=K + "step", disabled=not last, help="one iteration forward"):
            st.session_state[K + "playing"] = False
            st.session_state[K + "frame"] = min(last, st.session_state[K + "frame"] + 1)
            st.rerun()
        b3.markdown(f"**Step {st.session_state[K + 'frame']}** of {last}")
        left, right = st.columns([3, 2])
        with left:
            event = st.altair_chart(_race_chart(cfg, frames, st.session_state[K + "frame"], arrows),
                                    on_select="rerun", key=K + "chart", selection_mode="start")
            picked = (event or {}).get("selection", {}).get("start") or []
            point = (round(float(picked[0]["x"]), 4), round(float(picked[0]["y"]), 4)) \
                if picked and "x" in picked[0] else None
            if point is not None and point != st.session_state.get(K + "last_pick"):  # a new click
                st.session_state[K + "last_pick"] = st.session_state[K + "picked"] = point
                st.rerun(scope="app")
        with right:
            if len(frames):
                _curves(frames, st.session_state[K + "frame"])
        for m in messages:
            st.warning(m)
        if not st.session_state.get(K + "playing") and playing:
            st.rerun(scope="app")  # stop the timer

    panel()


def _draw_task(snap: dict | None, final: bool) -> None:
    """Live train-loss and validation-accuracy curves, and the table once the race is over."""
    if not snap or not snap.get("step"):
        st.caption("Waiting for the first steps...")
        return
    labels = snap["labels"]
    loss = pd.concat([pd.DataFrame({"racer": lab, "step": snap["step"][:len(c)], "train loss": c})
                      for lab, c in zip(labels, snap["train_loss"]) if c], ignore_index=True)
    acc = pd.concat([pd.DataFrame({"racer": lab, "epoch": snap["epoch"][:len(a)], "validation accuracy": a})
                     for lab, a in zip(labels, snap["val_acc"])], ignore_index=True)
    color = alt.Color("racer:N", legend=alt.Legend(orient="bottom", columns=3, title=None))
    c1, c2 = st.columns(2)
    c1.altair_chart(alt.Chart(loss).mark_line().encode(
        x=alt.X("step:Q", scale=alt.Scale(domain=[0, snap["total_steps"]])),
        y=alt.Y("train loss:Q", scale=alt.Scale(type="log")), color=color).properties(height=280),
        width="stretch")
    c2.altair_chart(alt.Chart(acc).mark_line(point=True).encode(
        x=alt.X("epoch:Q", scale=alt.Scale(domain=[0, max(snap["epoch"][-1], 1)])),
        y=alt.Y("validation accuracy:Q", scale=alt.Scale(domain=[0, 1])), color=color).properties(height=280),
        width="stretch")
    for m, lab in zip(snap["messages"], labels):
        if m:
            st.warning(f"{lab}: {m}")
    if final and "table" in snap:
        st.dataframe(pd.DataFrame(snap["table"]), hide_index=True, key=K + "table",
                     column_config={"final val accuracy": st.column_config.NumberColumn(format="%.3f"),
                                    "best val accuracy": st.column_config.NumberColumn(format="%.3f"),
                                    "final train loss": st.column_config.NumberColumn(format="%.4f")})
        fair = snap.get("fairness", {})
        st.caption(f"Fair start: initial weights sha256 {fair.get('initial_weights_sha256', '?')[:12]}…, "
                   f"batch order sha256 {fair.get('batch_order_sha256', '?')[:12]}… (seed "
                   f"{fair.get('batch_order_seed')}), {fair.get('dropout_masks')}; identical for every racer.")


def task_tab() -> None:
    """The real-task race: data, network, racers; runs as a background job with live curves."""
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Data", TASK_DATASETS, format_func=DATASET_LABELS.get, key=K + "t_data")
    arch = c2.selectbox("Network", list(ARCHS), format_func=lambda a: ARCHS[a].label, key=K + "t_arch")
    dropout_on = c3.toggle("dropout", value=False, key=K + "t_drop_on")
    dropout = c4.number_input("dropout rate", value=0.3, min_value=0.0, step=0.1, key=K + "t_drop",
                              disabled=not dropout_on)
    c1, c2, c3, c4, c5 = st.columns(5)
    n_train = c1.number_input("training examples", value=4000, step=500, key=K + "t_n")
    epochs = c2.number_input("epochs", value=10, min_value=1, key=K + "t_epochs")
    batch = c3.number_input("batch size", value=64, min_value=1, key=K + "t_batch")
    width = c4.number_input("hidden width", value=128, min_value=4, key=K + "t_width")
    seed = c5.number_input("seed", value=0, min_value=0, key=K + "t_seed")
    kinds = st.session_state.get(K + "kinds", DEFAULT_KINDS)
    st.caption("The same optimizers as on the surface tab; learning rates for this task:")
    racers = racers_ui(kinds, {k: OPTIMIZERS[k].default_lr for k in OPTIMIZERS}, "task")
    cfg = config_or_stop(lambda: TaskRaceConfig(
        dataset, NetConfig(arch, int(width), dropout=float(dropout) if dropout_on else 0.0),
        tuple(OptimizerConfig(k, float(lr), hps) for k, lr, hps in racers),
        n_train=int(n_train), epochs=int(epochs), batch_size=int(batch), seed=int(seed)))
    cache = app_cache()
    entry = cached_task_race(cfg, cache)
    job = get_job("optrace")
    if st.button("Race on real data", type="primary", key=K + "t_go", disabled=entry is not None):
        job = start_job("optrace", task_race_job(cfg, cache), name="optimizer race")
        st.session_state[K + "t_cfg"] = cfg
    if entry is not None and (job is None or job.is_final):
        _draw_task(entry.metrics, final=True)
        show_provenance(entry)
        return
    if job is None or st.session_state.get(K + "t_cfg") != cfg:
        st.info("Every optimizer trains a copy of the same network from the same initial weights on the same "
                "mini-batches (and dropout masks). Press **Race on real data**.")
        return

    def draw(j: Job) -> None:
        st.progress(j.progress, text=j.message or "queued")
        result = j.result
        if result is not None and result.notice:
            st.warning(result.notice)
        _draw_task(result.metrics if result is not None else j.snapshot, final=result is not None)

    poll_job(job, draw, every=0.5)


_init_from_url()
st.title("Optimizer race")
st.caption("SGD, momentum, Nesterov, Adagrad, RMSProp, Adadelta, Adam, AdamW, NAdam and RAdam — torch.optim's own "
           "implementations — race from the same start: first on 2-D loss surfaces, then on a real network.")
if K + "link_error" in st.session_state:
    st.warning(st.session_state.pop(K + "link_error"))
tab1, tab2 = st.tabs(["On a loss surface", "On a real task"])
with tab1:
    surface_tab()
with tab2:
    task_tab()
