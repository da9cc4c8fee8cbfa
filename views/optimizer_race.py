"""Optimizer race: torch.optim's optimizers on 2-D loss surfaces, then on a real task from identical weights."""

from __future__ import annotations

import base64
import hashlib
import html
import math
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import streamlit.components.v2 as components

from explorer.core.config import check_choice
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.labs.optimizer_race.race import (TASK_DATASETS, TASK_KIND, SurfaceRaceConfig, TaskRaceConfig,
                                               cached_task_race, race_surface, task_race_job)
from explorer.labs.optimizer_race.surfaces import SURFACES
from explorer.nets.small import ARCHS, NetConfig
from explorer.train.optimizers import LR_RANGE, OPTIMIZERS, OptimizerConfig
from views.widgets import (app_cache, config_or_stop, get_job, job_key, plain, poll_job, settings_from_url,
                           show_provenance, start_job)

K = "opt_"  # widget-key prefix
REPLAY_CSS = """
.race { font: 16px sans-serif; color: var(--st-text-color, #31333f); }
.race .bar { display: flex; flex-wrap: wrap; gap: 8px 12px; align-items: center; margin-bottom: 6px; }
.race button { font: inherit; padding: 4px 14px; border-radius: 8px; border: 1px solid #bbb; background: #fff;
  color: #31333f; cursor: pointer; }
.race button.play { min-width: 5.5em; font-weight: 600; }
.race .scrub { flex: 1 1 200px; min-width: 160px; }
.race .label { font-weight: 600; min-width: 9em; font-variant-numeric: tabular-nums; }
.race .legend { display: flex; flex-wrap: wrap; gap: 4px 18px; margin: 4px 0 8px; }
.race .legend i { display: inline-block; width: 22px; height: 4px; margin: 0 6px 4px 0; vertical-align: middle; }
.race .body { display: flex; gap: 24px; }
.race .curves { display: flex; flex-direction: column; gap: 8px; }
.race canvas.surface { cursor: crosshair; }
"""
SURFACE_NAMES = [*SURFACES, "custom"]
SURFACE_LABELS = {**{k: s.label for k, s in SURFACES.items()}, "custom": "Custom formula"}
DATASET_LABELS = {"mnist1d": "MNIST-1D", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10 (subset)"}
DEFAULT_KINDS = ["sgd", "momentum", "rmsprop", "adam"]
SCHEMA = {"surface": Param(str, "rosenbrock"), "x": Param(float, math.nan), "y": Param(float, math.nan),
          "steps": Param(int, 300)}
GRID = 70  # heat-map cells per side
# One fixed colour per optimizer kind, whichever are ticked (Tableau 10, the Vega default palette).
RACER_COLOURS = {"sgd": "#1f77b4", "momentum": "#ff7f0e", "nesterov": "#2ca02c", "adagrad": "#d62728",
                 "rmsprop": "#9467bd", "adadelta": "#8c564b", "adam": "#e377c2", "adamw": "#7f7f7f",
                 "nadam": "#bcbd22", "radam": "#17becf"}
_REPLAY = components.component(
    "explorer.optimizer_race_replay", js=(Path(__file__).with_name("optimizer_race_replay.js")).read_text(),
    css=REPLAY_CSS)


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


def _f32(values: np.ndarray | None) -> str | None:
    """A float array as base64 float32: a quarter of the JSON text, and exact enough to draw."""
    return None if values is None else base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def _angle(v: np.ndarray, sign: float) -> np.ndarray:
    """The direction of sign * v in radians (NaN where v is zero: no arrow)."""
    ang = np.arctan2(sign * v[:, 1], sign * v[:, 0])
    return np.where(np.linalg.norm(v, axis=1) > 0, ang, np.nan)


@st.cache_data(max_entries=64, show_spinner="Racing...")
def _race_data(cfg: SurfaceRaceConfig) -> tuple[list[dict], bool, list[str]]:
    """Every track encoded once for the browser (positions, loss, distance, arrow directions), whether every
    loss is positive (a log axis), and the messages."""
    race = race_surface(cfg)
    racers = []
    for tr in race.tracks:
        if len(tr.path) == 0:
            continue
        racers.append({
            "label": tr.label, "kind": tr.config.kind, "colour": RACER_COLOURS[tr.config.kind],
            "x": _f32(tr.path[:, 0].numpy()), "y": _f32(tr.path[:, 1].numpy()), "loss": _f32(tr.loss.numpy()),
            "dist": _f32(tr.distance.numpy() if tr.distance is not None else None),
            "gang": _f32(_angle(tr.grad.numpy(), -1.0)),  # descent direction
            "mang": _f32(_angle(tr.momentum.numpy(), -1.0) if tr.momentum is not None else None),
            "n": len(tr.path),
        })
    log_loss = all(bool((tr.loss > 0).all()) for tr in race.tracks)
    return racers, log_loss, [f"{tr.label}: {tr.message}" for tr in race.tracks if tr.message]


@st.cache_data(max_entries=16)
def _heatmap(surface: str, formula: str) -> list[float | None]:
    """The surface on a GRID x GRID lattice (row 0 the lowest y), log-scaled and banded so bands read as contours."""
    surf = SURFACES[surface] if surface in SURFACES else SurfaceRaceConfig("custom", (0.0, 0.0), 1,
                                                                           (OptimizerConfig(),),
                                                                           formula=formula).get_surface()
    _, _, z = surf.grid(GRID)
    z = z.numpy()
    finite = np.isfinite(z)
    zmin = z[finite].min() if finite.any() else 0.0
    level = np.log10(np.where(finite, z - zmin, np.nan) + 1e-3)
    band = np.floor(level * 3) / 3  # a third of a decade per band
    return [None if not math.isfinite(v) else round(float(v), 3) for v in band.ravel()]


def replay_data(cfg: SurfaceRaceConfig, raced: bool, autoplay: bool, run: int = 0) -> tuple[dict, list[str]]:
    """What the browser replay gets, once per race (`run` counts presses of Race): surface, minima, start and,
    once raced, every track."""
    surf = cfg.get_surface()
    racers, log_loss, messages = _race_data(cfg) if raced else ([], True, [])
    ident = hashlib.sha256(repr((cfg, raced, run)).encode()).hexdigest()[:16]
    return {"id": ident, "domain": list(surf.domain), "grid_n": GRID, "band": _heatmap(cfg.surface, cfg.formula),
            "minima": [list(map(float, m)) for m in surf.minima], "start": list(cfg.start),
            "steps": max((r["n"] - 1 for r in racers), default=0), "log_loss": log_loss, "racers": racers,
            "autoplay": autoplay}, messages


def surface_tab() -> None:
    """The 2-D race: settings, Race, then the replay drawn in the browser (Play / Pause / Step / scrub)."""
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
    c1, c2 = st.columns([2, 1])
    noise = c1.number_input("gradient noise (std)", value=noise_default, min_value=0.0, key=f"{K}noise_{name}",
                            help="Gaussian noise added to every gradient; the same draws for every racer")
    cfg = config_or_stop(lambda: SurfaceRaceConfig(
        name, (float(x), float(y)), int(steps),
        tuple(OptimizerConfig(k, float(lr), hps) for k, lr, hps in racers), float(noise), formula=formula))
    fresh = c2.button("Race", type="primary", key=K + "race_btn")
    if fresh:  # every press replays from the start, even of the same race
        st.session_state[K + "race"] = cfg
        st.session_state[K + "race_n"] = st.session_state.get(K + "race_n", 0) + 1
    raced = st.session_state.get(K + "race") == cfg
    if not raced:
        st.info("Press **Race** to start every ticked optimizer from the start point (the black circle), or "
                "click on the surface to pick another start. What to look for: plain SGD crawls along the valley; "
                "momentum swings across it at first, then builds up speed along it; RMSProp and Adam take steps of "
                "about the same size whatever the slope.")
    data, messages = replay_data(cfg, raced, autoplay=fresh, run=st.session_state.get(K + "race_n", 0))
    result = _REPLAY(data=data, key=K + "replay", on_pick_change=lambda: None)
    pick = getattr(result, "pick", None)
    if pick:  # a click on the surface: the new start, rounded to the inputs' precision
        st.session_state[K + "picked"] = (round(float(pick[0]), 4), round(float(pick[1]), 4))
        st.rerun()
    for m in messages:
        st.warning(m)


def legend(labels: list[str], kinds: list[str]) -> None:
    """One legend for both charts: a colour swatch and each racer's label (escaped: labels are never markup)."""
    items = "".join(f'<span style="margin-right:1.4em;white-space:nowrap"><span style="display:inline-block;'
                    f'width:22px;height:4px;margin:0 6px 4px 0;vertical-align:middle;background:{RACER_COLOURS[k]}">'
                    f'</span>{html.escape(lab)}</span>' for lab, k in zip(labels, kinds))
    st.html(f'<div style="font-size:16px;line-height:1.8">{items}</div>')


def _draw_task(snap: dict | None, final: bool, kinds: list[str]) -> None:
    """Live train-loss and validation-accuracy curves (racer i is of optimizer kinds[i]), and the table once the
    race is over."""
    if not snap or not snap.get("step"):
        st.caption("Waiting for the first steps...")
        return
    labels = snap["labels"]
    loss = pd.concat([pd.DataFrame({"racer": lab, "step": snap["step"][:len(c)], "train loss": c})
                      for lab, c in zip(labels, snap["train_loss"]) if c], ignore_index=True)
    acc = pd.concat([pd.DataFrame({"racer": lab, "epoch": snap["epoch"][:len(a)], "validation accuracy": a})
                     for lab, a in zip(labels, snap["val_acc"])], ignore_index=True)
    scale = alt.Scale(domain=labels, range=[RACER_COLOURS[k] for k in kinds])  # one colour per kind, always
    color = alt.Color("racer:N", scale=scale, legend=None)
    legend(labels, kinds)
    c1, c2 = st.columns(2)
    c1.altair_chart(alt.Chart(loss).mark_line().encode(
        x=alt.X("step:Q", scale=alt.Scale(domain=[0, snap["total_steps"]])),
        y=alt.Y("train loss:Q", scale=alt.Scale(type="log")), color=color).properties(height=280)
        .configure_axis(labelFontSize=16, titleFontSize=16),
        width="stretch")
    c2.altair_chart(alt.Chart(acc).mark_line(point=True).encode(
        x=alt.X("epoch:Q", scale=alt.Scale(domain=[0, max(snap["epoch"][-1], 1)])),
        y=alt.Y("validation accuracy:Q", scale=alt.Scale(domain=[0, 1])), color=color).properties(height=280)
        .configure_axis(labelFontSize=16, titleFontSize=16),
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
        # keyed by the race's cache address: everyone racing these settings shares one computation
        job = start_job("optrace", task_race_job(cfg, cache), name="optimizer race", key=job_key(TASK_KIND, cfg))
        st.session_state[K + "t_cfg"] = cfg
    if entry is not None and (job is None or job.is_final):
        _draw_task(entry.metrics, final=True, kinds=[r.kind for r in cfg.racers])
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
        _draw_task(result.metrics if result is not None else j.snapshot, final=result is not None,
                   kinds=[r.kind for r in cfg.racers])

    poll_job(job, draw, every=0.5)


_init_from_url()
st.title("Optimizer race")
st.caption("SGD, momentum, Nesterov, Adagrad, RMSProp, Adadelta, Adam, AdamW, NAdam and RAdam — torch.optim's own "
           "implementations — race from the same start: first on 2-D loss surfaces, then on a real network.")
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
tab1, tab2 = st.tabs(["On a loss surface", "On a real task"])
with tab1:
    surface_tab()
with tab2:
    task_tab()
