"""Memorisation lab: random labels, corrupted inputs, and parameters vs generalisation (Zhang et al. 2017)."""

from __future__ import annotations

import dataclasses
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.cache import Entry
from explorer.core.config import ConfigError, check_choice
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.data.noise import LABEL_SCHEMES, MODES
from explorer.labs.memorisation import lab as mem
from explorer.train.stacked import OPTIMIZER_KINDS
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, init_from_url, job_key,
                           lecture_mode, lines_with_points, plain, poll_job, show_provenance, split_dash, start_job,
                           stop_job)

K = "mem_"  # widget-key prefix
VIEWS = {"modes": "Corruption modes", "sweep-p": "Corruption fraction p", "sweep-width": "Width vs parameters"}
DATASET_LABELS = {"mnist1d": "MNIST-1D", "digits": "Digits (8x8)", "fashion_mnist": "Fashion-MNIST",
                  "cifar10": "CIFAR-10 (subset)"}
MODEL_LABELS = {"mlp": "MLP", "small_cnn": "Small CNN"}
START = mem.PAGE_DEFAULT  # what the page opens on: random labels clearly slower to fit than true ones
SCHEMA = {"view": Param(str, "modes"), "dataset": Param(str, START.dataset), "model": Param(str, START.model),
          "width": Param(int, START.width), "n_train": Param(int, START.n_train),
          "max_epochs": Param(int, START.max_epochs), "p": Param(float, START.p)}
NO_PRESET = "(use the settings above)"
LOOK_FOR = {  # one line per view: what a student should see
    "modes": "**What to look for:** the solid *Random labels* curve reaches 100% training accuracy too, but after "
             "several times as many epochs as *True labels*, while its dashed test curve stays at chance.",
    "sweep-p": "**What to look for:** every p still fits its training set, but test accuracy falls towards chance "
               "as p grows, and any corruption at all takes longer to fit than p = 0.",
    "sweep-width": "**What to look for:** at small widths random labels stay below true labels in training "
                   "accuracy; once the network is large enough both fit, and random labels' test accuracy stays "
                   "at chance.",
}


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    check_choice("view", v["view"], VIEWS)
    check_choice("dataset", v["dataset"], DATASET_LABELS)
    check_choice("model", v["model"], MODEL_LABELS)
    # the core's own limits, so a link cannot put a widget outside its range (p=5 once crashed the p slider)
    dataclasses.replace(START, **{k: v[k] for k in ("dataset", "model", "width", "n_train", "max_epochs", "p")})


def lab_ui() -> mem.LabConfig:
    """Data, model and training widgets -> the lab config (out-of-range values refused on the server)."""
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Data set", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "dataset")
    n_train = c2.number_input("Training examples", step=100, key=K + "n_train",
                              help="50 to 20,000; fewer examples are memorised faster")
    model = c3.selectbox("Model", list(MODEL_LABELS), format_func=MODEL_LABELS.get, key=K + "model")
    width = c4.number_input("Width", step=32, key=K + "width",
                            help="hidden units (MLP, up to 2048) or first-layer channels (CNN, up to 128)")
    c1, c2, c3, c4, c5 = st.columns(5)
    depth = c1.number_input("Depth", value=START.depth, step=1, key=K + "depth",
                            help="hidden layers or conv stages, 1-4")
    optimizer = c2.selectbox("Optimizer", list(OPTIMIZER_KINDS), list(OPTIMIZER_KINDS).index(START.optimizer),
                             key=K + "optimizer")
    lr = c3.number_input("Learning rate", value=START.lr, format="%.5g", key=K + "lr")
    batch = c4.number_input("Batch size", value=START.batch_size, step=8, key=K + "batch")
    cap = c5.number_input("Epoch cap", step=50, key=K + "max_epochs",
                          help="a model that has not fitted by then 'did not fit within N epochs'")
    c1, c2 = st.columns(2)
    p = c1.slider("p for 'labels corrupted with probability p'", 0.0, 1.0, step=0.05, key=K + "p")
    scheme = c2.radio("A corrupted label becomes", list(LABEL_SCHEMES), horizontal=True, key=K + "scheme",
                      format_func=lambda s: f"{LABEL_SCHEMES[s].title} ({LABEL_SCHEMES[s].source})")
    return config_or_stop(lambda: mem.LabConfig(
        dataset=dataset, n_train=int(n_train), model=model, width=int(width), depth=int(depth),
        optimizer=optimizer, lr=float(lr), batch_size=int(batch), max_epochs=int(cap), p=float(p),
        scheme=scheme))


def view_ui(view: str, lab: mem.LabConfig) -> mem.LabConfig | mem.SweepPConfig | mem.WidthConfig:
    """The view's own widgets -> its frozen config."""
    if view == "modes":
        modes = st.multiselect("Corruption modes (trained together, from the same initial weights)", list(MODES),
                               default=list(MODES), format_func=lambda m: MODES[m].title, key=K + "modes")
        return config_or_stop(lambda: dataclasses.replace(lab, modes=tuple(modes)))
    if view == "sweep-p":
        text = st.text_input("Values of p", value="0, 0.2, 0.4, 0.6, 0.8, 1", key=K + "ps",
                             help="each p trains one model on labels corrupted with probability p")
        return config_or_stop(lambda: mem.SweepPConfig(lab, _numbers(text, float, "p")))
    text = st.text_input("Widths", value="1, 2, 4, 8, 16, 32, 64, 128, 256, 512", key=K + "widths",
                         help="each width trains the model on true and on random labels for the full epoch cap")
    return config_or_stop(lambda: mem.WidthConfig(lab, _numbers(text, int, "widths")))


def _numbers(text: str, kind: type, name: str) -> tuple:
    """'1, 2, 3' -> (1, 2, 3), or a ConfigError naming the bad value."""
    try:
        return tuple(kind(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of numbers, got {text!r}") from None


# --- drawing -----------------------------------------------------------------------------------------

def _curves(m: dict[str, Any]) -> pd.DataFrame:
    """Long table: epoch, model, split, accuracy, loss."""
    h = m["history"]
    rows = []
    for i, title in enumerate(m["titles"]):
        for j, epoch in enumerate(h.get("epoch", [])):
            for split in ("train", "test"):
                rows.append({"epoch": epoch, "run": title, "split": split,
                             "accuracy": 1 - h[f"{split}_err"][i][j], "loss": h[f"{split}_loss"][i][j]})
    return pd.DataFrame(rows)


def _line(df: pd.DataFrame, x: str, y: str, color: str, chance: float | None = None,
          log_x: bool = False) -> alt.Chart:
    """Lines coloured by `color`, solid for train and dashed for test, with an optional chance rule."""
    scale = alt.Scale(type="log") if log_x else alt.Undefined
    enc = dict(
        x=alt.X(f"{x}:Q", scale=scale), y=alt.Y(f"{y}:Q"),
        # Distinct hues, not shades, in the runs' own order; one column with no label limit, so that no long
        # mode title is truncated or runs past the chart's edge in a half-width column.
        color=alt.Color(f"{color}:N", scale=alt.Scale(scheme="tableau10"), sort=list(df[color].unique()),
                        legend=alt.Legend(orient="bottom", columns=1, title=None, labelLimit=0,
                                          symbolType="stroke", symbolStrokeWidth=3)),
        strokeDash=split_dash("train", "test"),
        tooltip=[color, "split", x, alt.Tooltip(f"{y}:Q", format=".3f")])
    chart = lines_with_points(df, **enc) if log_x else alt.Chart(df).mark_line().encode(**enc)
    if chance is not None:
        rule = alt.Chart(pd.DataFrame({"chance": [chance]})).mark_rule(strokeDash=[2, 2], color="grey").encode(
            y="chance:Q", tooltip=[alt.Tooltip("chance:Q", format=".2f")])
        chart = chart + rule
    # The height holds the bottom legend too (Streamlit fits charts to it): a row per run on top of the plot's.
    return chart.properties(height=300 + 20 * df[color].nunique())


def draw_modes(m: dict[str, Any]) -> None:
    """Curves of every mode, the lesson in one sentence, and the epochs-to-fit table."""
    df = _curves(m)
    if df.empty:
        st.info("Waiting for the first epoch...")
        return
    lecture = bool(st.session_state.get(K + "lecture"))
    c1, c2 = chart_slots(lecture)
    c1.altair_chart(for_lecture(_line(df, "epoch", "accuracy", "run", m["chance"]), lecture), width="stretch")
    c2.altair_chart(for_lecture(_line(df, "epoch", "loss", "run"), lecture), width="stretch")
    c1.caption("Solid: training set (with its corrupted labels or inputs). Dashed: test set, true labels. "
               "Grey: chance.")
    rows = mem.fit_table(m)
    if "random_labels" in m["modes"]:
        i = m["modes"].index("random_labels")
        fit, test_acc = m["fit_epoch"][i], rows[i]["final test acc"]
        slow = rows[i]["slowdown vs true labels"]
        if fit is not None:
            st.success(f"Random labels: 100% training accuracy after {fit} epochs, while test accuracy is "
                       f"{test_acc:.1%} (chance {m['chance']:.0%})" + (f"; {slow} as long as with true labels."
                                                                       if slow != "–" else "."))
        if fit is not None and "true_labels" in m["modes"]:
            j = m["modes"].index("true_labels")
            base, true_acc = m["fit_epoch"][j], rows[j]["final test acc"]
            if base is not None and fit <= base:  # the shipped CIFAR-10 subset: an artefact worth one line
                st.caption(f"Here random labels fitted no slower than true ones: this network reaches only "
                           f"{true_acc:.0%} test accuracy on the true labels of these {m['n_train']:,} examples, "
                           f"so it has to memorise them too. Zhang et al.'s gap needs a network that learns the "
                           f"true labels well, as in the page's default.")
    # Short headers, so that all six columns fit a 1280-pixel laptop screen without a horizontal scroll.
    st.dataframe(pd.DataFrame(rows), hide_index=True, key=K + "table",
                 column_config={"slowdown vs true labels": st.column_config.TextColumn("slowdown"),
                                "final train acc": st.column_config.NumberColumn("train acc", format="%.3f"),
                                "final test acc": st.column_config.NumberColumn("test acc", format="%.3f"),
                                "labels agreeing with truth": st.column_config.NumberColumn(
                                    "labels true", format="%.3f", help="fraction of labels agreeing with truth")})
    st.caption(f"Fits = first epoch after which the whole training set ({m['n_train']} examples, its own labels) "
               f"is classified correctly; training stops when every model fits or at the cap of "
               f"{m['max_epochs']} epochs. {m['num_params']:,} parameters per model; data set {m['dataset']}.")


def draw_sweep_p(m: dict[str, Any]) -> None:
    """Final train and test accuracy against p, and the curves per p."""
    h = m["history"]
    if not h.get("epoch"):
        st.info("Waiting for the first epoch...")
        return
    rows = [{"p": p, "split": split, "accuracy": 1 - h[f"{split}_err"][i][-1], "epochs to fit": m["fit_epoch"][i]}
            for i, p in enumerate(m["ps"]) for split in ("train", "test")]
    df = pd.DataFrame(rows)
    lecture = bool(st.session_state.get(K + "lecture"))
    c1, c2 = chart_slots(lecture)
    chart = lines_with_points(
        df, x="p:Q", y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])), strokeDash=split_dash("train", "test"),
        tooltip=["p", "split", alt.Tooltip("accuracy:Q", format=".3f"), "epochs to fit"])
    rule = alt.Chart(pd.DataFrame({"chance": [m["chance"]]})).mark_rule(strokeDash=[2, 2], color="grey").encode(
        y="chance:Q")
    c1.altair_chart(for_lecture((chart + rule).properties(height=300, title="Accuracy after training vs p"), lecture),
                    width="stretch")
    c2.altair_chart(for_lecture(_line(_curves(m), "epoch", "accuracy", "run", m["chance"]), lecture), width="stretch")
    st.dataframe(pd.DataFrame(mem.fit_table(m)), hide_index=True, key=K + "table")


def draw_width(m: dict[str, Any]) -> None:
    """Train and test loss and accuracy against the number of parameters."""
    if not m["rows"]:
        st.info("Waiting for the first width to finish...")
        return
    rows = []
    for r in m["rows"]:
        for split in ("train", "test"):
            rows.append({"parameters": r["num_params"], "width": r["width"], "run": r["title"], "split": split,
                         "accuracy": 1 - r[f"{split}_err"], "loss": r[f"{split}_loss"]})
    df = pd.DataFrame(rows)
    n = pd.DataFrame({"parameters": [m["n_train"]]})
    threshold = alt.Chart(n).mark_rule(strokeDash=[1, 3], color="black").encode(x="parameters:Q")
    lecture = bool(st.session_state.get(K + "lecture"))
    c1, c2 = chart_slots(lecture)
    c1.altair_chart(for_lecture(_line(df, "parameters", "accuracy", "run", m["chance"], log_x=True) + threshold,
                                lecture), width="stretch")
    c2.altair_chart(for_lecture(_line(df, "parameters", "loss", "run", log_x=True) + threshold, lecture),
                    width="stretch")
    st.caption(f"Each point is one width trained for the full cap of {m['max_epochs']} epochs; the dotted "
               f"vertical line marks parameters = training examples ({m['n_train']}).")
    st.dataframe(df.pivot_table(index=["width", "parameters"], columns=["run", "split"], values="accuracy"),
                 key=K + "table")


DRAW = {"modes": draw_modes, "sweep-p": draw_sweep_p, "sweep-width": draw_width}


def _draw_job(job: Job) -> None:
    """The live panel: progress, message and the newest snapshot."""
    st.progress(job.progress, text=job.message or job.state.value)
    snap = job.snapshot
    if snap is not None:
        DRAW[snap["view"]](snap)
    if job.state.value == "cancelled":
        st.warning("Training was stopped; the curves above are what it reached.")


def _presets(view: str) -> list[Entry]:
    """Precomputed results shipped with the app for this view."""
    return [e for e in app_cache().entries(mem.KINDS[view]) if e.shipped]


# --- page --------------------------------------------------------------------------------------------

st.title("Memorisation: random labels")
lecture_mode(K)
st.caption("Zhang et al. (2017), *Understanding deep learning requires rethinking generalization*: the same "
           "network fits real labels, random labels and pure noise; only the real ones generalise.")
init_from_url(SCHEMA, K, _validate_link)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))

view = st.segmented_control("View", list(VIEWS), format_func=VIEWS.get, key=K + "view") or "modes"
st.markdown(LOOK_FOR[view])
presets = _presets(view)
labels = {f"{e.config.get('dataset', e.config.get('lab', {}).get('dataset'))} · "
          f"{e.config.get('model', e.config.get('lab', {}).get('model'))} · {e.key[:8]}": e for e in presets}
preset = st.selectbox("Precomputed results", [NO_PRESET, *labels], key=K + "preset",
                      help="larger configurations computed ahead of time with the CLI") if labels else NO_PRESET
if preset != NO_PRESET:
    entry = labels[preset]
    st.info("Showing a precomputed result shipped with the app (not computed in this session).")
    DRAW[view](entry.metrics)
    show_provenance(entry, recompute=entry.meta.get("recompute"))
    st.stop()

with st.expander("Data, model and training", expanded=True):
    lab = lab_ui()
cfg = view_ui(view, lab)
notice = mem.fallback_notice(cfg)
if notice:
    st.warning(notice)

resolved = mem.resolve(cfg)
entry = mem.cached(resolved, app_cache())
job = get_job("memorise")
running = job is not None and not job.is_final
c1, c2 = st.columns([1, 4])
if c1.button("Train", type="primary", key=K + "train", disabled=entry is not None):
    # keyed by the result's cache address: everyone who presses Train on these settings shares one training
    job = start_job("memorise", mem.job(cfg, app_cache()), name=f"memorisation {view}",
                    key=job_key(mem.kind_of(resolved), resolved))
    st.session_state[K + "job_cfg"] = cfg
if running and c2.button("Stop", key=K + "stop"):
    if not stop_job("memorise"):
        st.info("Others are watching this training too: it goes on for them; you no longer follow it.")
        job = None

if entry is not None and (job is None or job.is_final or st.session_state.get(K + "job_cfg") != cfg):
    DRAW[view](entry.metrics)
    show_provenance(entry, recompute=entry.meta.get("recompute"))
elif job is not None and st.session_state.get(K + "job_cfg") == cfg:
    poll_job(job, _draw_job, every=0.5)
else:
    st.info("Press **Train**: every model trains together as one batched network, with live curves. "
            f"Recompute from a terminal with `{mem.cli_command(cfg)}`.")
