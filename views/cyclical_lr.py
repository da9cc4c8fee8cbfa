"""Cyclical learning rates and the LR range test: the DD2424 assignment's nets on CIFAR-10 pixels."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.config import ConfigError
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.labs.cyclical_lr import lab, schedule
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, init_from_url, job_key,
                           lecture_mode, lines_with_points, plain, poll_job, show_provenance, split_dash, start_job,
                           stop_job)

K = "clr_"  # widget-key prefix
R = lab.REPORT
RT = lab.RangeConfig()
SE = lab.SearchConfig()
SCHEMA = {"dataset": Param(str, R.dataset), "model": Param(str, R.model), "lam": Param(float, R.lam),
          "eta_min": Param(float, R.eta_min), "eta_max": Param(float, R.eta_max), "n_s": Param(int, R.n_s),
          "cycles": Param(int, R.cycles), "batch": Param(int, R.batch_size), "n_train": Param(int, R.n_train)}
DATASET_LABELS = {"cifar10": "CIFAR-10 (3072 pixels)", "digits": "Digits (8x8, embedded)"}
INLINE_STEPS = 2000  # a run of at most this many steps starts by itself; a longer one waits for its button
SEARCH_STEPS = 20_000  # net-steps of a search that starts by itself (the embedded digits); CIFAR-10 waits
LOOK_FOR = ("**What to look for:** the cost drops fastest while the rate is high and settles each time the rate "
            "comes back down to eta_min: the accuracy curves have a bump per cycle, and the end of each cycle is "
            "the best moment to stop. With the report's setting (eta 1e-5..1e-1, lambda 0.01, n_s 800, batch 100, "
            "3 cycles, two-layer net with 50 hidden units, trained on one batch file of 10,000 images) the DD2424 report "
            "reached 48.09% test accuracy; set the training images to 0 to train on all 45,000 instead.")


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    lab.TrainConfig(dataset=v["dataset"], model=v["model"], lam=v["lam"], eta_min=v["eta_min"],
                    eta_max=v["eta_max"], n_s=v["n_s"], cycles=v["cycles"], batch_size=v["batch"],
                    n_train=v["n_train"])


def _train_stop(slot: str, label: str, cfg: Any, autostart: bool, disabled: bool = False) -> tuple[Job | None, bool]:
    """A button that starts cfg's job in `slot` (or a start on its own) and Stop while it runs; (job, mine)."""
    job = get_job(slot)
    mine = job is not None and st.session_state.get(K + slot + "_cfg") == cfg
    c1, c2 = st.columns([1, 4])
    pressed = c1.button(label, type="primary", key=K + slot + "_go", disabled=disabled or (mine and not job.is_final))
    if pressed or (autostart and not mine):
        job = start_job(slot, lab.job(cfg, app_cache()), name=f"cyclical LR {slot}", key=job_key(lab.kind_of(cfg), cfg))
        st.session_state[K + slot + "_cfg"] = cfg
        mine = job is not None
    if mine and not job.is_final and c2.button("Stop", key=K + slot + "_stop"):
        stop_job(slot)
    return job, mine


def _show(slot: str, label: str, cfg: Any, autostart: bool, draw: Callable[[dict, bool], None],
          idle: str) -> None:
    """A result panel: the cached entry drawn at once, else its job (started by itself or by the button) drawn live."""
    entry = app_cache().get(lab.kind_of(cfg), cfg)
    job, mine = _train_stop(slot, label, cfg, autostart and entry is None, disabled=entry is not None)
    if entry is not None and (not mine or job.is_final):
        draw(entry.metrics, True)
        show_provenance(entry, recompute=entry.meta.get("recompute"))
    elif mine:
        def panel(j: Job) -> None:
            st.progress(j.progress, text=j.message or j.state.value)
            if j.snapshot is not None:
                draw(j.snapshot, False)
        poll_job(job, panel, every=0.7)
    else:
        st.info(idle + f" From a terminal: `{lab.cli_command(cfg)}`.")


def _csv(label: str, df: pd.DataFrame, name: str, key: str) -> None:
    st.download_button(label, df.to_csv(index=False), file_name=name, mime="text/csv", key=K + key)


# --- cyclical training -----------------------------------------------------------------------------------

def train_ui(dataset: str) -> lab.TrainConfig:
    """The schedule and regularisation widgets -> the run's frozen config (limits checked by the core)."""
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox("Network", list(lab.MODELS), format_func=lab.MODELS.get, key=K + "model")
    lam = c2.number_input("lambda (L2)", format="%.3g", key=K + "lam", help="lambda x sum of squared weights")
    eta_min = c3.number_input("eta_min", format="%.3g", key=K + "eta_min")
    eta_max = c4.number_input("eta_max", format="%.3g", key=K + "eta_max")
    c1, c2, c3, c4 = st.columns(4)
    n_s = c1.number_input("Step size n_s", step=100, key=K + "n_s", help="steps from eta_min to eta_max")
    cycles = c2.number_input("Cycles", step=1, key=K + "cycles", help="one cycle is 2 n_s update steps")
    batch = c3.number_input("Batch size", step=10, key=K + "batch")
    hidden = c4.number_input("Hidden units", value=R.hidden, step=10, key=K + "hidden",
                             disabled=model == "softmax")
    n_train = st.number_input("Training images (0: every one not held out)", step=5000, key=K + "n_train",
                              help="the assignment trains on one CIFAR-10 batch file, 10,000 images")
    return config_or_stop(lambda: lab.TrainConfig(
        dataset=dataset, model=model, hidden=int(hidden), lam=float(lam), eta_min=float(eta_min),
        eta_max=float(eta_max), n_s=int(n_s), cycles=int(cycles), batch_size=int(batch), n_train=int(n_train)))


def _history(m: dict) -> pd.DataFrame:
    """Long table step, split, cost, loss, accuracy of net 0 of a train result."""
    h = m["history"][0]
    return pd.DataFrame([{"step": s, "epoch": h["epoch"][i], "lr": h["lr"][i], "split": split,
                          "cost": h[f"{p}_cost"][i], "loss": h[f"{p}_loss"][i], "accuracy": h[f"{p}_acc"][i]}
                         for i, s in enumerate(h["step"]) for split, p in (("training", "train"),
                                                                             ("validation", "val"))])


def _curve(df: pd.DataFrame, y: str, title: str, steps: int, height: int = 260) -> alt.Chart:
    return lines_with_points(
        df, point_size=20, x=alt.X("step:Q", scale=alt.Scale(domain=[0, steps])),
        y=alt.Y(f"{y}:Q", scale=alt.Scale(zero=False)), strokeDash=split_dash("training", "validation"),
        color=alt.value("#4c78a8"),
        tooltip=["split", "step", alt.Tooltip("epoch:Q", format=".2f"), alt.Tooltip("lr:Q", format=".3g"),
                 alt.Tooltip(f"{y}:Q", format=".4f")]).properties(height=height, title=title).interactive()


def _schedule_chart(cfg: lab.TrainConfig) -> alt.Chart:
    pts = pd.DataFrame(schedule.curve(cfg.eta_min, cfg.eta_max, cfg.n_s, cfg.cycles), columns=["step", "lr"])
    return alt.Chart(pts).mark_line(color="#e45756").encode(
        x=alt.X("step:Q", scale=alt.Scale(domain=[0, cfg.steps])), y=alt.Y("lr:Q", title="learning rate"),
        tooltip=["step", alt.Tooltip("lr:Q", format=".3g")]).properties(height=110, title="Triangular schedule")


def draw_train(m: dict, cfg: lab.TrainConfig, lecture: bool, tag: str, done: bool) -> None:
    """Cost over the schedule, loss and accuracy (training and validation), the numbers and the CSV."""
    if not m["history"][0]["step"]:
        st.info("Waiting for the first evaluation...")
        return
    df = _history(m)
    cost = alt.vconcat(_curve(df, "cost", "Cost (loss + L2)", cfg.steps), _schedule_chart(cfg))
    slots = chart_slots(lecture, 3)
    slots[0].altair_chart(for_lecture(cost, lecture), width="stretch")
    slots[1].altair_chart(for_lecture(_curve(df, "loss", "Cross-entropy loss", cfg.steps), lecture), width="stretch")
    slots[2].altair_chart(for_lecture(_curve(df, "accuracy", "Accuracy", cfg.steps), lecture), width="stretch")
    st.caption(f"{m['dataset']}: trained on {m['n_train']:,} images of the training split ({m['n_val']:,} others "
               f"held out for validation); the training curves are measured on {min(m['n_train'], lab.EVAL_TRAIN):,} "
               f"fixed training images, the validation curves on all {m['n_val']:,}. Solid: training, dashed: "
               f"validation. {cfg.steps:,} steps of {m['batch']} ({cfg.steps / max(1, m['n_train'] // m['batch']):.1f}"
               " epochs).")
    if done and m.get("test_acc"):
        h = m["history"][0]
        st.success(f"Test accuracy **{100 * m['test_acc'][0]:.2f}%** on {m['n_test']:,} test images (validation "
                   f"{100 * h['val_acc'][-1]:.2f}%, training {100 * h['train_acc'][-1]:.2f}%), trained in "
                   f"{m['seconds']:.1f} s.")
    _csv("Curves (CSV)", df, f"cyclical-lr-{tag}.csv", "dl_" + tag)


def train_tab(dataset: str, lecture: bool) -> None:
    st.markdown(LOOK_FOR)
    cfg = train_ui(dataset)
    auto = cfg.steps <= INLINE_STEPS
    _show("train", "Train", cfg, auto, lambda m, done: draw_train(m, cfg, lecture, "run", done),
          f"{cfg.steps:,} steps: press **Train** to run them in the background with live curves.")
    if cfg.cycles > 1:
        one = replace(cfg, cycles=1)
        st.subheader(f"1 cycle vs {cfg.cycles} cycles")
        st.caption(f"The same net and schedule stopped after one cycle ({one.steps:,} steps): the cost at the end "
                   f"of each cycle keeps falling, and more cycles buy a few more points of accuracy.")
        _show("one", "Train 1 cycle", one, one.steps <= INLINE_STEPS, lambda m, done: _compare(m, cfg, lecture),
              "Press **Train 1 cycle** to compare.")


def _compare(m1: dict, cfg: lab.TrainConfig, lecture: bool) -> None:
    """The one-cycle run's final numbers beside the full run's (when that one is in the cache)."""
    full = app_cache().get(lab.KIND_TRAIN, cfg)
    rows = []
    for label, m in ((f"1 cycle ({2 * cfg.n_s:,} steps)", m1),
                     (f"{cfg.cycles} cycles ({cfg.steps:,} steps)", full.metrics if full else None)):
        if m is None or not m["history"][0]["step"]:
            continue
        h = m["history"][0]
        rows.append({"run": label, "train acc": h["train_acc"][-1], "val acc": h["val_acc"][-1],
                     "val cost": h["val_cost"][-1], "test acc": (m.get("test_acc") or [math.nan])[0],
                     "seconds": m.get("seconds", math.nan)})
    if not rows:
        return
    curves = pd.concat([_history(m).assign(run=label) for label, m in
                        ((rows[0]["run"], m1), *(((rows[1]["run"], full.metrics),) if len(rows) > 1 else ()))])
    chart = alt.Chart(curves[curves["split"] == "validation"]).mark_line(point=True).encode(
        x=alt.X("step:Q", scale=alt.Scale(domain=[0, cfg.steps])), y=alt.Y("accuracy:Q", scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", legend=alt.Legend(orient="bottom", title=None, labelLimit=0)),
        tooltip=["run", "step", alt.Tooltip("lr:Q", format=".3g"), alt.Tooltip("accuracy:Q", format=".4f")]).properties(
        height=280, title="Validation accuracy: 1 cycle vs all cycles").interactive()
    left, right = chart_slots(lecture)
    left.altair_chart(for_lecture(chart, lecture), width="stretch")
    df = pd.DataFrame(rows)
    right.dataframe(df, hide_index=True, key=K + "compare")
    st.download_button("1 vs N cycles (CSV)", curves.to_csv(index=False), file_name="cyclical-lr-cycles.csv",
                       mime="text/csv", key=K + "dl_cycles")


# --- LR range test ---------------------------------------------------------------------------------------

def _use_range(lo: float, hi: float) -> None:
    """The button's callback: the suggestion goes into the schedule widgets (before they are drawn again)."""
    st.session_state[K + "eta_min"] = float(f"{lo:.3g}")
    st.session_state[K + "eta_max"] = float(f"{hi:.3g}")


def range_tab(dataset: str, lecture: bool) -> None:
    st.markdown("**What to look for:** as the rate grows exponentially the loss first barely moves, then falls "
                "steeply, then blows up. A good cyclical range spans the steep part (Smith 2015, section 3.3).")
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox("Network", list(lab.MODELS), index=list(lab.MODELS).index(RT.model), format_func=lab.MODELS.get,
                         key=K + "r_model")
    lam = c2.number_input("lambda (L2)", value=RT.lam, format="%.3g", key=K + "r_lam")
    lo = c3.number_input("Lowest rate", value=RT.lr_low, format="%.3g", key=K + "r_lo")
    hi = c4.number_input("Highest rate", value=RT.lr_high, format="%.3g", key=K + "r_hi")
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.number_input("Steps", value=RT.steps, step=50, key=K + "r_steps")
    th = c2.number_input("Stop at x best loss", value=RT.diverge_th, step=0.5, key=K + "r_th")
    beta = c3.number_input("Smoothing beta", value=RT.beta, format="%.3f", key=K + "r_beta")
    rule = c4.selectbox("Suggestion rule", list(lab.SUGGEST_RULES), key=K + "r_rule")
    cfg = config_or_stop(lambda: lab.RangeConfig(dataset=dataset, model=model, lam=float(lam), lr_low=float(lo),
                                                 lr_high=float(hi), steps=int(steps), diverge_th=float(th),
                                                 beta=float(beta)))
    st.caption("Rule: " + lab.SUGGEST_RULES[rule])
    _show("range", "Run the range test", cfg, cfg.steps <= INLINE_STEPS,
          lambda m, done: _draw_range(m, rule, lecture) if done else None, "Press **Run the range test**.")


def _draw_range(m: dict, rule: str, lecture: bool) -> None:
    lo, hi = m["suggestions"][rule]
    df = pd.DataFrame({"lr": m["lr"], "loss": m["loss"], "smoothed loss": m["smoothed"]})
    x = alt.X("lr:Q", scale=alt.Scale(type="log"), title="learning rate (log scale)")
    raw = alt.Chart(df).mark_line(opacity=0.3, color="#4c78a8").encode(
        x=x, y=alt.Y("loss:Q", title="training loss"),
        tooltip=[alt.Tooltip("lr:Q", format=".3g"), alt.Tooltip("loss:Q", format=".4f")])
    smooth = alt.Chart(df).mark_line(color="#4c78a8", strokeWidth=2.5).encode(
        x=x, y="smoothed loss:Q", tooltip=[alt.Tooltip("lr:Q", format=".3g"),
                                           alt.Tooltip("smoothed loss:Q", format=".4f")])
    marks = pd.DataFrame({"lr": [lo, hi], "mark": ["suggested eta_min", "suggested eta_max"]})
    rules = alt.Chart(marks).mark_rule(color="#e45756", strokeDash=[5, 3], size=2).encode(
        x="lr:Q", tooltip=["mark", alt.Tooltip("lr:Q", format=".3g")])
    band = alt.Chart(pd.DataFrame({"lo": [lo], "hi": [hi]})).mark_rect(color="#e45756", opacity=0.08).encode(
        x="lo:Q", x2="hi:Q")
    chart = (band + raw + smooth + rules).properties(height=360, title="LR range test").interactive()
    st.altair_chart(for_lecture(chart, lecture), width="stretch")
    st.markdown(f"Stopped: {plain(m['stopped'])}. Lowest smoothed loss at rate {m['best_lr']:.3g}. "
                f"**Suggested range: eta_min {lo:.3g}, eta_max {hi:.3g}.**")
    st.button("Use this range in the schedule", key=K + "use_range", on_click=_use_range, args=(lo, hi),
              help="puts the suggestion into eta_min and eta_max of the Cyclical training tab")
    _csv("Range test (CSV)", df, "lr-range-test.csv", "dl_range")


# --- lambda search ---------------------------------------------------------------------------------------

def search_tab(dataset: str, lecture: bool) -> None:
    st.markdown("**What to look for:** a coarse log-uniform sweep of lambda narrows the good region to a decade or "
                "so; a fine sweep around the best finds the best setting, which is then retrained on more data. "
                "All samples of a stage train together as one stacked run of two-layer nets.")
    c1, c2, c3, c4, c5 = st.columns(5)
    lo = c1.number_input("log10 lambda from", value=SE.log_lo, step=0.5, key=K + "s_lo")
    hi = c2.number_input("log10 lambda to", value=SE.log_hi, step=0.5, key=K + "s_hi")
    nc = c3.number_input("Coarse samples", value=SE.n_coarse, step=1, key=K + "s_nc")
    nf = c4.number_input("Fine samples", value=SE.n_fine, step=1, key=K + "s_nf")
    half = c5.number_input("Fine half-width (decades)", value=SE.fine_half, step=0.1, key=K + "s_half")
    c1, c2, c3, c4 = st.columns(4)
    n_s = c1.number_input("n_s", value=SE.n_s, step=100, key=K + "s_ns")
    cycles = c2.number_input("Cycles per sample", value=SE.cycles, step=1, key=K + "s_cycles")
    eta_min = c3.number_input("eta_min", value=SE.eta_min, format="%.3g", key=K + "s_emin")
    eta_max = c4.number_input("eta_max", value=SE.eta_max, format="%.3g", key=K + "s_emax")
    cfg = config_or_stop(lambda: lab.SearchConfig(
        dataset=dataset, log_lo=float(lo), log_hi=float(hi), n_coarse=int(nc), n_fine=int(nf),
        fine_half=float(half), n_s=int(n_s), cycles=int(cycles), eta_min=float(eta_min), eta_max=float(eta_max)))
    _show("search", "Search", cfg, lab.work(cfg) <= SEARCH_STEPS, lambda m, done: _draw_search(m, lecture),
          f"{lab.work(cfg):,} net-steps: press **Search** to run it in the background.")


def _draw_search(m: dict, lecture: bool) -> None:
    if not m.get("rows"):
        st.info("Waiting for the coarse stage...")
        return
    df = pd.DataFrame(m["rows"])
    chart = alt.Chart(df).mark_circle(size=90).encode(
        x=alt.X("lambda:Q", scale=alt.Scale(type="log"), title="lambda (log scale)"),
        y=alt.Y("val acc:Q", scale=alt.Scale(zero=False), title="validation accuracy"),
        color=alt.Color("stage:N", sort=["coarse", "fine"]),
        tooltip=["stage", alt.Tooltip("lambda:Q", format=".3e"), alt.Tooltip("val acc:Q", format=".4f"),
                 alt.Tooltip("train acc:Q", format=".4f")]).properties(
        height=340, title="Validation accuracy vs lambda").interactive()
    st.altair_chart(for_lecture(chart, lecture), width="stretch")
    st.dataframe(df.sort_values("val acc", ascending=False), hide_index=True, key=K + "search_table")
    _csv("Search results (CSV)", df, "lambda-search.csv", "dl_search")
    st.caption(f"{m['dataset']}: each sample trained on {m['n_train']:,} images, validated on {m['n_val']:,} held "
               "out of the training split. Click a column header to sort.")
    f = m.get("final")
    if f:
        st.success(f"Best lambda {f['lambda']:.3e}, retrained on {f['n_train']:,} images ({f['n_val']:,} held out) "
                   f"for {f['cycles']} cycles: **test accuracy {100 * f['test acc']:.2f}%** (validation "
                   f"{100 * f['val acc']:.2f}%).")


# --- overfit a small set ---------------------------------------------------------------------------------

def overfit_tab(dataset: str, lecture: bool) -> None:
    st.markdown("**What to look for:** a sanity check before any long run: with 100 training images and no "
                "regularisation the net should reach 100% training accuracy while validation stays low. If it "
                "cannot, the code (or the rate) is wrong.")
    model = st.selectbox("Network", list(lab.MODELS), index=1, format_func=lab.MODELS.get, key=K + "o_model")
    cfg = lab.overfit_config(dataset, model)
    _show("overfit", "Overfit", cfg, True, lambda m, done: _draw_overfit(m, cfg, lecture, done),
          "Press **Overfit**.")


def _draw_overfit(m: dict, cfg: lab.TrainConfig, lecture: bool, done: bool) -> None:
    h = m["history"][0]
    if not h["step"]:
        return
    df = _history(m)
    slots = chart_slots(lecture)
    slots[0].altair_chart(for_lecture(_curve(df, "accuracy", "Accuracy: 100 training images", cfg.steps), lecture),
                          width="stretch")
    slots[1].altair_chart(for_lecture(_curve(df, "loss", "Loss", cfg.steps), lecture), width="stretch")
    if done:
        hit = next((s for s, a in zip(h["step"], h["train_acc"]) if a >= 1.0), None)
        text = (f"Training accuracy reached 100% at step {hit:,}" if hit is not None else
                f"Training accuracy reached {100 * h['train_acc'][-1]:.1f}% (not 100%)")
        st.success(f"{text}; validation accuracy {100 * h['val_acc'][-1]:.1f}% on {m['n_val']:,} held-out images.")
    _csv("Overfit curves (CSV)", df, "overfit-small-set.csv", "dl_overfit")


# --- page ------------------------------------------------------------------------------------------------

st.title("Cyclical learning rates and the LR range test")
lecture = lecture_mode(K)
st.caption("A softmax classifier and a two-layer ReLU net on raw CIFAR-10 pixels (flattened to 3072, normalised "
           "by the training mean and std), L2-regularised, trained by mini-batch SGD with the triangular cyclical "
           "rate of Smith (2015), as in the KTH DD2424 assignment.")
init_from_url(SCHEMA, K, _validate_link)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
wanted = st.selectbox("Data set", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "dataset")
try:
    used, notice = lab.resolve(wanted)
except ConfigError as exc:
    st.error("Setting refused: " + plain(exc))
    st.stop()
if notice:
    st.warning(plain(notice) + " " + plain(f"Set EXPLORER_DATA_DIR to the folder that holds it; the page uses "
                                           f"{DATASET_LABELS.get(used, used)} until then."))
tabs = st.tabs(["Cyclical training", "LR range test", "Lambda search", "Overfit a small set"])
for tab, fn in zip(tabs, (train_tab, range_tab, search_tab, overfit_tab)):
    with tab:
        try:
            fn(used, lecture)
        except ConfigError as exc:
            st.error("Setting refused: " + plain(exc))
