"""Number of parameters vs generalisation: eleven two-conv CNNs from (8,8) to (128,96) filters, train and test."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.config import ConfigError
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.data.datasets import title
from explorer.labs.model_size import sizes
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, init_from_url, job_key,
                           lecture_mode, lines_with_points, plain, poll_job, show_provenance, split_dash, start_job,
                           stop_job)

K = "ms_"  # widget-key prefix
START = sizes.SizeConfig()  # the page's default: the shipped result
LABELS = {f"{a}x{b}": (a, b) for a, b in sizes.FAMILY}  # URL- and widget-friendly names (no commas)
SCHEMA = {"dataset": Param(str, START.dataset), "n_train": Param(int, START.n_train),
          "epochs": Param(int, START.epochs), "seeds": Param(int, START.seeds),
          "widths": Param(tuple, tuple(LABELS), item=str)}
DATASET_LABELS = {"digits": "Digits (8x8, embedded)", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
LOOK_FOR = ("**What to look for:** training and test accuracy against the parameter count, with clean labels and "
            "the same training for every width: does the test accuracy fall as the network grows, or does the gap "
            "between training and test widen?")


def look_for(m: dict) -> str | None:
    """The sentence under the charts, from the result shown: how far the parameter count, the accuracies and
    the train-test gap moved from the smallest width to the largest."""
    rows = sorted(sizes.table(m), key=lambda r: r["params"])
    if len(rows) < 2:
        return None
    small, big = rows[0], rows[-1]
    gaps = [r["train acc"] - r["test acc"] for r in rows]
    best = max(rows, key=lambda r: r["test acc"])
    return (f"From {small['width']} to {big['width']} the parameter count grows {big['params'] / small['params']:.3g}-fold; "
            f"test accuracy goes from {small['test acc']:.1%} to {big['test acc']:.1%} (best {best['test acc']:.1%} "
            f"at {best['width']}), training accuracy from {small['train acc']:.1%} to {big['train acc']:.1%}, and "
            f"the train-test gap stays between {100 * min(gaps):.1f} and {100 * max(gaps):.1f} points.")


def _pairs(labels: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Width labels '(c1,c2)' -> pairs; an unknown label is refused with the allowed ones."""
    unknown = [w for w in labels if w not in LABELS]
    if unknown:
        raise ConfigError(f"widths must be among {', '.join(LABELS)} (c1xc2); got {', '.join(unknown)}")
    return tuple(LABELS[w] for w in labels)


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    sizes.SizeConfig(dataset=v["dataset"], n_train=v["n_train"], epochs=v["epochs"], seeds=v["seeds"],
                     widths=_pairs(v["widths"]))


def settings_ui() -> sizes.SizeConfig:
    """The widgets -> the frozen config (limits checked by the core)."""
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Data set", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "dataset")
    n_train = c2.number_input("Training images", step=1000, key=K + "n_train",
                              help="100 to 60,000 (the report: 20,000)")
    epochs = c3.number_input("Epochs", step=1, key=K + "epochs", help="1 to 50")
    seeds = c4.number_input("Seeds per width", step=1, key=K + "seeds",
                            help="1 to 10 copies of each width, trained as one grouped model; charts show the mean")
    chosen = st.multiselect("Widths (c1, c2)", list(LABELS), key=K + "widths",
                            format_func=lambda w: f"{sizes.label(LABELS[w])} · {sizes.param_count(LABELS[w]):,} "
                                                  "params")
    if not chosen:
        st.info("Choose at least one width.")
        st.stop()
    return config_or_stop(lambda: sizes.SizeConfig(dataset=dataset, n_train=int(n_train), epochs=int(epochs),
                                                    seeds=int(seeds), widths=_pairs(tuple(chosen)),
                                                    n_test=START.n_test))


def _final_frame(m: dict) -> pd.DataFrame:
    """Long table width, params, split, loss, accuracy: the end point of every width."""
    rows = []
    for r in sizes.table(m):
        for split in ("train", "test"):
            rows.append({"width": r["width"], "params": r["params"], "split": split,
                         "accuracy": r[f"{split} acc"], "loss": r[f"{split} loss"]})
    return pd.DataFrame(rows)


def _curve_frame(m: dict) -> pd.DataFrame:
    """Long table width, params, epoch, split, accuracy, loss: every width's learning curves."""
    rows = []
    for r in sizes.history_rows(m):
        for split in ("train", "test"):
            rows.append({"width": r["width"], "params": r["params"], "epoch": r["epoch"], "split": split,
                         "accuracy": r[f"{split}_acc"], "loss": r[f"{split}_loss"]})
    return pd.DataFrame(rows)


def _vs_params(df: pd.DataFrame, y: str, lecture: bool) -> alt.TopLevelMixin:
    """y (accuracy or loss) against the parameter count on a log axis, train solid and test dashed."""
    chart = lines_with_points(
        df, x=alt.X("params:Q", title="parameters (log scale)",  # the widths' own range, not whole decades
                    scale=alt.Scale(type="log", domain=[df["params"].min() / 1.25, df["params"].max() * 1.25])),
        y=alt.Y(f"{y}:Q", scale=alt.Scale(zero=False), title=f"final {y}"),
        color=alt.Color("split:N", scale=alt.Scale(domain=["train", "test"], range=["#4c78a8", "#e45756"]),
                        legend=alt.Legend(orient="bottom", title=None)),
        strokeDash=split_dash("train", "test"),
        tooltip=["width", alt.Tooltip("params:Q", format=","), "split", alt.Tooltip(f"{y}:Q", format=".4f")],
    ).properties(height=340, title=f"Final {y} vs number of parameters").interactive()
    return for_lecture(chart, lecture)


def _curves(df: pd.DataFrame, lecture: bool) -> alt.TopLevelMixin:
    """Test accuracy per epoch, one line per width (coloured by its parameter count)."""
    test = df[df["split"] == "test"]
    chart = alt.Chart(test).mark_line(point=True).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y("accuracy:Q", scale=alt.Scale(zero=False),
                                                                 title="test accuracy"),
        color=alt.Color("params:Q", scale=alt.Scale(type="log", scheme="viridis"), title="parameters"),
        detail="width:N",
        tooltip=["width", alt.Tooltip("params:Q", format=","), "epoch", alt.Tooltip("accuracy:Q", format=".4f"),
                 alt.Tooltip("loss:Q", format=".4f")],
    ).properties(height=300, title="Test accuracy after every epoch").interactive()
    return for_lecture(chart, lecture)


def draw(m: dict, lecture: bool) -> None:
    """A (finished or live) sweep: the two end-point charts, the learning curves, the table, the downloads."""
    final, curves = _final_frame(m), _curve_frame(m)
    if curves.empty:
        st.info("Waiting for the first width's first epoch...")
        return
    if not final.empty:
        left, right = chart_slots(lecture)
        left.altair_chart(_vs_params(final, "accuracy", lecture), width="stretch")
        right.altair_chart(_vs_params(final, "loss", lecture), width="stretch")
    st.altair_chart(_curves(curves, lecture), width="stretch")
    if not final.empty and (sentence := look_for(m)):
        st.markdown(sentence)
    table = pd.DataFrame(sizes.table(m))
    if not table.empty:
        st.dataframe(table, hide_index=True, key=K + "table")
    c1, c2 = st.columns(2)
    c1.download_button("Final metrics vs parameters (CSV)", final.to_csv(index=False), file_name="model-size-final.csv",
                       mime="text/csv", key=K + "dl_final")
    c2.download_button("Per-epoch metrics (CSV)", curves.to_csv(index=False), file_name="model-size-epochs.csv",
                       mime="text/csv", key=K + "dl_epochs")
    st.caption(f"{title(m['dataset'])}: {m['n_train']:,} training and {m['n_test']:,} test images of shape "
               f"{tuple(m['image_shape'])}, {m['epochs']} epochs, {m['seeds']} seed(s) per width (means shown). "
               "Final training numbers are the whole training set evaluated with the final weights; per-epoch "
               "training numbers are running means over the epoch's minibatches.")


def _train_panel(cfg: sizes.SizeConfig, lecture: bool) -> None:
    """No stored result for cfg: Train starts a background job, drawn live; Stop ends it."""
    slot = "ms_sweep"
    job = get_job(slot)
    mine = job is not None and st.session_state.get(K + "job_cfg") == cfg
    c1, c2 = st.columns([1, 4])
    if c1.button("Train", type="primary", key=K + "train", disabled=mine and not job.is_final):
        job = start_job(slot, sizes.job(cfg, app_cache()), name="parameters vs generalisation",
                        key=job_key(sizes.KIND, sizes.resolve(cfg)))
        st.session_state[K + "job_cfg"] = cfg
        mine = job is not None
    if mine and not job.is_final and c2.button("Stop", key=K + "stop"):
        stop_job(slot)
    if not mine:
        st.info(f"These settings are not computed yet (about {sizes.work(cfg) / 1e9:,.3g} billion multiply-adds): "
                f"press **Train** to run them in the background with live charts. From a terminal: "
                f"`{sizes.cli_command(cfg)}`.")
        return

    def panel(j: Job) -> None:
        st.progress(j.progress, text=j.message or j.state.value)
        if j.snapshot is not None:
            draw(j.snapshot, lecture)

    poll_job(job, panel, every=1.0)


# --- page ------------------------------------------------------------------------------------------------

st.title("Number of parameters vs generalisation")
lecture = lecture_mode(K)
st.caption(f"Eleven two-layer CNNs, conv3x3(c1)-pool-conv3x3(c2)-pool-linear, from {sizes.label(sizes.FAMILY[0])} to "
           f"{sizes.label(sizes.FAMILY[-1])} filters ({sizes.param_count(sizes.FAMILY[0]):,} to "
           f"{sizes.param_count(sizes.FAMILY[-1]):,} parameters on 28x28 images), trained alike with Adam (lr 1e-3): "
           "how do training and test accuracy move with the number of parameters?")
init_from_url(SCHEMA, K, _validate_link, lambda name, v: list(v) if name == "widths" else v)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
st.markdown(LOOK_FOR)
st.markdown("With noisy labels the picture changes: test error can rise and fall again as the network grows. "
            "See [Double descent](/double_descent).")
cfg = settings_ui()
entry = sizes.cached(cfg, app_cache())
job = get_job("ms_sweep")
running = job is not None and not job.is_final and st.session_state.get(K + "job_cfg") == cfg
if entry is not None and not running:
    if entry.metrics.get("notice"):
        st.warning(plain(entry.metrics["notice"]))
    draw(entry.metrics, lecture)
    show_provenance(entry, recompute=entry.meta.get("recompute"))
else:
    _train_panel(cfg, lecture)
