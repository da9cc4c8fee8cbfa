"""Sharpness and sensitivity vs batch size: one small net trained at batch sizes 16 to 1024, its curvature measured."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.config import ConfigError
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.labs.sharpness import lab
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, init_from_url, job_key, job_panel,
                           lecture_mode, plain, show_provenance)

K = "sh_"  # widget-key prefix
START = lab.SharpConfig()
SCHEMA = {"dataset": Param(str, START.dataset), "arch": Param(str, START.arch), "budget": Param(str, START.budget),
          "steps": Param(int, START.steps), "epochs": Param(int, START.epochs), "lr": Param(float, START.lr),
          "n_hessian": Param(int, START.n_hessian), "seed": Param(int, START.seed)}
DATASET_LABELS = {"digits": "Digits (8x8, embedded)", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
ARCH_LABELS = {"mlp": "MLP", "cnn": "Small CNN"}
BUDGET_LABELS = {"steps": "the same number of steps", "epochs": "the same number of epochs"}
LOOK_FOR = ("**What to look for:** the same network from the same initial weights, trained with SGD at the same "
            "learning rate for the same number of steps, only the batch size changing. On the whole, the larger the "
            "batch, the larger the top Hessian eigenvalue and the epsilon-sharpness of the minimum it ends in "
            "(Keskar et al. 2017: large batches find sharp minima). Keskar's 28.6 vs 707 were on a far larger net: "
            "the trend is what carries over. "
            "With learning rate 0.1 every batch size ends about equally flat: the small batches' noise, which grows "
            "with the learning rate over the batch size, is what keeps them out of sharp minima.")
DEFINITIONS = (
    "**Top eigenvalue**: the largest eigenvalue of the Hessian of the mean training cross-entropy, by power "
    "iteration on Hessian-vector products (at most {iters} products, stopped when the estimate changes by less than "
    "{tol:g} relative), on a fixed subset of {n_h:,} training images. **Epsilon-sharpness** (Keskar et al.): "
    "100 (max L(θ+δ) − L(θ)) / (1 + L(θ)) over the box |δᵢ| ≤ ε (|θᵢ| + 1), ε = {eps:g}, the max by {asc} steps of "
    "projected sign-gradient ascent, on the same subset. **Input sensitivity**: the mean over test images of the "
    "Frobenius norm of the gradient of the image's loss with respect to its pixels.")


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    lab.SharpConfig(**v)


def settings_ui() -> lab.SharpConfig:
    """The page's widgets -> its frozen config (limits checked by the core)."""
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Data set", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "dataset")
    arch = c2.selectbox("Network", list(ARCH_LABELS), format_func=ARCH_LABELS.get, key=K + "arch")
    budget = c3.selectbox("Every batch size gets", list(BUDGET_LABELS), format_func=BUDGET_LABELS.get,
                          key=K + "budget")
    lr = c4.number_input("Learning rate (SGD)", format="%.4g", key=K + "lr", help="the same for every batch size")
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.number_input("Optimizer steps", step=100, key=K + "steps", disabled=budget != "steps",
                            help="1 to 100,000, the same for every batch size")
    epochs = c2.number_input("Epochs", step=5, key=K + "epochs", disabled=budget != "epochs", help="1 to 1,000")
    n_hessian = c3.number_input("Hessian subset (training images)", step=128, key=K + "n_hessian")
    seed = c4.number_input("Seed", step=1, key=K + "seed", help="initial weights (the same for every batch size)")
    return config_or_stop(lambda: lab.SharpConfig(dataset=dataset, arch=arch, budget=budget, steps=int(steps),
                                                  epochs=int(epochs), lr=float(lr), n_hessian=int(n_hessian),
                                                  seed=int(seed)))


def frame(m: dict) -> pd.DataFrame:
    """One row per batch size: every measured number."""
    return pd.DataFrame(m["rows"])


def _chart(df: pd.DataFrame, y: str, title: str, log_y: bool = False, color: str | None = None) -> alt.Chart:
    """A measure against batch size (log x), with tooltips and zoom."""
    enc = {"x": alt.X("batch_size:Q", title="batch size", scale=alt.Scale(type="log", base=2)),
           "y": alt.Y(f"{y}:Q", title=title, scale=alt.Scale(type="log" if log_y else "linear", zero=False),
                      # a log axis over decades: one grid line per decade (Vega's default draws 2..9 of each too)
                      axis=alt.Axis(tickCount=5, format="~g") if log_y else alt.Axis()),
           "tooltip": [alt.Tooltip("batch_size:Q", title="batch size"), *(["split"] if color else []),
                       alt.Tooltip(f"{y}:Q", format=".4g"), alt.Tooltip("steps:Q"),
                       alt.Tooltip("epochs:Q", format=".1f")]}
    if color:
        enc["color"] = alt.Color(f"{color}:N", legend=alt.Legend(orient="bottom", title=None))
    return alt.Chart(df).mark_line(point=True).encode(**enc).properties(height=280, title=title).interactive()


def _split(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Train and test columns of one measure as a long table with a split column."""
    parts = [pd.DataFrame({"batch_size": df["batch_size"], "steps": df["steps"], "epochs": df["epochs"],
                           "split": s, what: df[f"{s}_{what}"]}) for s in ("train", "test")]
    return pd.concat(parts, ignore_index=True)


def draw(m: dict, lecture: bool) -> None:
    """The five charts, each with its data as CSV, and the table."""
    if not m["rows"]:
        st.info("Waiting for the first batch size...")
        return
    df = frame(m)
    charts = [("top_eigenvalue", "Top Hessian eigenvalue", df, _chart(df, "top_eigenvalue", "Top Hessian eigenvalue")),
              ("epsilon_sharpness", "Epsilon-sharpness", df,
               _chart(df, "epsilon_sharpness", "Epsilon-sharpness (Keskar)")),
              ("loss", "Loss", _split(df, "loss"), _chart(_split(df, "loss"), "loss", "Cross-entropy", True, "split")),
              ("acc", "Accuracy", _split(df, "acc"), _chart(_split(df, "acc"), "acc", "Accuracy", False, "split")),
              ("sensitivity", "Input sensitivity", df,
               _chart(df, "sensitivity", "Input sensitivity: mean |d loss / d x|"))]
    for i in range(0, len(charts), 2):
        slots = chart_slots(lecture, len(charts[i:i + 2]))
        for slot, (key, name, data, chart) in zip(slots, charts[i:i + 2]):
            slot.altair_chart(for_lecture(chart, lecture), width="stretch")
            slot.download_button(f"{name} (CSV)", data.to_csv(index=False), file_name=f"sharpness-{key}.csv",
                                 mime="text/csv", key=K + "dl_" + key)
    st.dataframe(df, hide_index=True, key=K + "table")


def _summary(m: dict) -> str:
    """Smallest against largest batch: the two curvature measures."""
    first, last = m["rows"][0], m["rows"][-1]
    return (f"Batch {first['batch_size']}: top eigenvalue {first['top_eigenvalue']:.3g}, epsilon-sharpness "
            f"{first['epsilon_sharpness']:.3g}. Batch {last['batch_size']}: top eigenvalue "
            f"{last['top_eigenvalue']:.3g}, epsilon-sharpness {last['epsilon_sharpness']:.3g}.")


def _caption(cfg: lab.SharpConfig, m: dict) -> None:
    if cfg.budget == "steps":
        fixed = (f"{cfg.steps:,} SGD steps at every batch size (so a batch of 1,024 sees 64x the examples of a "
                 "batch of 16)")
    else:
        fixed = (f"{cfg.epochs} epochs at every batch size (so a batch of 16 takes about 64x the steps of a batch "
                 "of 1,024); an epoch is n // batch full batches, so with a batch close to n the epochs column "
                 "(examples seen over n) is below the setting")
    st.caption(f"{m['network']}, {m['params']:,} parameters, on {m['dataset']} ({m['n_train']:,} training, "
               f"{m['n_test']:,} test images); learning rate {cfg.lr:g}, momentum {cfg.momentum:g}; {fixed}. The "
               "batch sizes train one after another (their minibatches differ in size, so they do not stack).")


def page(lecture: bool) -> None:
    st.markdown(LOOK_FOR)
    cfg = settings_ui()
    st.caption(DEFINITIONS.format(iters=cfg.power_iters, tol=cfg.power_tol, n_h=cfg.n_hessian, eps=cfg.eps,
                                  asc=cfg.ascent_steps))
    entry = app_cache().get(lab.KIND, cfg)
    if entry is not None:
        m = entry.metrics
        if m.get("notice"):
            st.warning(plain(m["notice"]))
        st.success(_summary(m))
        _caption(cfg, m)
        draw(m, lecture)
        show_provenance(entry, recompute=entry.meta.get("recompute"))
        return
    def panel(j: Job) -> None:
        st.progress(min(max(j.progress, 0.0), 1.0), text=j.message or j.state.value)
        if j.error:
            return
        if j.is_final and j.result is not None:
            st.success(_summary(j.result.metrics))
        if j.snapshot is not None:
            _caption(cfg, j.snapshot)
            draw(j.snapshot, lecture)

    job_panel(K, "sh_sweep", cfg, lambda: lab.job(cfg, app_cache()), name="sharpness vs batch size",
              key=job_key(lab.KIND, cfg), autostart=lab.work(cfg) <= lab.INLINE_WORK, draw=panel,
              hint=f"These settings push {lab.work(cfg):,} examples through the net, more than the page starts on "
                   f"its own: press **Train** to run them in the background. From a terminal: "
                   f"`{lab.cli_command(cfg)}`.", buttons=(K + "train", K + "stop"))


st.title("Sharpness and sensitivity vs batch size")
lecture = lecture_mode(K)
st.caption("Large-batch training ends in sharper minima: the curvature of the training loss, measured three ways, "
           "against the batch size.")
init_from_url(SCHEMA, K, _validate_link)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
try:
    page(lecture)
except ConfigError as exc:
    st.error("Setting refused: " + plain(exc))
