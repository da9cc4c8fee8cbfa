"""Transfer learning compared in one table: scratch, linear probe, fine-tuning at several learning rates, a
scikit-learn probe on frozen features and gradient boosting on pixels, on a small two-class CIFAR-10 task."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.jobs import Job
from explorer.core.urlstate import Param, encode_params
from explorer.data.datasets import title
from explorer.labs.transfer_learning import source as src
from explorer.labs.transfer_learning import transfer as tl
from views.widgets import (app_cache, config_or_stop, for_lecture, get_job, job_key, lecture_mode, plain, poll_job,
                           settings_from_url, show_provenance, start_job, stop_job)

K = "tl_"  # widget-key prefix
SLOT = "tl_table"
START = tl.TransferConfig()  # the page's default: the shipped table
LRS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)  # fine-tuning learning rates offered
SCHEMA = {"dataset": Param(str, START.dataset), "classes": Param(tuple, START.classes, item=str),
          "n_train": Param(int, START.n_train), "epochs": Param(int, START.epochs),
          "lrs": Param(tuple, START.finetune_lrs, item=float), "source": Param(str, START.source)}
DATASET_LABELS = {"cifar10": "CIFAR-10", "digits": "Digits (8x8, embedded)"}
SOURCE_LABELS = {"auto": "ImageNet ResNet18 if its weights are here, else self-trained",
                 "imagenet": "ImageNet ResNet18 (weights in the torch hub cache)",
                 "self": "self-trained on the other classes"}
METHOD_COLOURS = {"scratch": "#9d9da1", "probe": "#4c78a8", "finetune": "#e45756", "sklearn_probe": "#72b7b2",
                  "boosting": "#f58518"}
LOOK_FOR = ("**What to look for:** with a few hundred images per class, does starting from a source model's "
            "weights beat training from scratch, and does fine-tuning every layer beat reading the frozen features "
            "with a linear head? The course report found fine-tune 0.7475 > gradient boosting on pixels 0.735 > "
            "linear probe 0.7325 > scikit-learn probe 0.715 > scratch about 0.5 (cat vs dog): a shape to expect, "
            "not numbers to match. A too-large fine-tuning rate can wash out what the source knew.")


def _init_from_url() -> None:
    """First run of a session: settings from the URL, checked by the core; refused ones get a message."""
    if K + "dataset" in st.session_state:
        return

    def validate(v: dict) -> None:
        if v["dataset"] != START.dataset and v["classes"] == START.classes:
            v["classes"] = tl.DEFAULT_CLASSES.get(v["dataset"], v["classes"])  # a link without classes: its pair
        tl.TransferConfig(dataset=v["dataset"], classes=v["classes"], n_train=v["n_train"], epochs=v["epochs"],
                          finetune_lrs=v["lrs"], source=v["source"])

    values = settings_from_url(SCHEMA, K, validate)
    st.session_state[K + "dataset"] = values["dataset"]
    st.session_state[K + "classes_" + values["dataset"]] = list(values["classes"])
    st.session_state[K + "n_train"] = values["n_train"]
    st.session_state[K + "epochs"] = values["epochs"]
    st.session_state[K + "lrs"] = [float(v) for v in values["lrs"]]
    st.session_state[K + "source"] = values["source"]


def settings_ui() -> tl.TransferConfig:
    """The widgets -> the frozen config (limits checked by the core)."""
    c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
    dataset = c1.selectbox("Data set", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "dataset")
    ckey = K + "classes_" + dataset  # one widget per data set: their class names differ
    if ckey not in st.session_state:
        st.session_state[ckey] = list(tl.DEFAULT_CLASSES[dataset])
    classes = c2.multiselect("Task classes", list(tl.CLASS_NAMES[dataset]), key=ckey,
                             help="2 to 5 classes; the self-trained source learns the others")
    n_train = c3.number_input("Training images", step=100, key=K + "n_train",
                              help="20 to 10,000, split evenly over the classes (CIFAR-10 has 5,000 per class)")
    epochs = c4.number_input("Epochs", step=1, key=K + "epochs", help="1 to 100, for every network method")
    c5, c6 = st.columns([2, 2])
    lrs = c5.multiselect("Fine-tuning learning rates (Adam)", list(LRS), key=K + "lrs", format_func=lambda v: f"{v:g}",
                         help="one full fine-tuning per rate")
    source = c6.selectbox("Source model", list(SOURCE_LABELS), format_func=SOURCE_LABELS.get, key=K + "source")
    return config_or_stop(lambda: tl.TransferConfig(dataset=dataset, classes=tuple(classes), n_train=int(n_train),
                                                    epochs=int(epochs), finetune_lrs=tuple(lrs), source=source))


def _write_url(cfg: tl.TransferConfig) -> None:
    """The settings into the address bar (only those that differ from the defaults), so a link reopens them."""
    link = encode_params(SCHEMA, {"dataset": cfg.dataset, "classes": cfg.classes, "n_train": cfg.n_train,
                                  "epochs": cfg.epochs, "lrs": cfg.finetune_lrs, "source": cfg.source})
    if st.query_params.get("lecture"):
        link["lecture"] = st.query_params["lecture"]
    if link != st.query_params.to_dict():
        st.query_params.from_dict(link)


def _frame(m: dict) -> pd.DataFrame:
    """The table: method, test accuracy, train accuracy, trainable params, time (s)."""
    df = pd.DataFrame(tl.table(m), columns=["method", "test accuracy", "train accuracy", "trainable params",
                                            "time (s)"])
    df["trainable params"] = df["trainable params"].astype("Int64")
    return df


def _bars(m: dict, lecture: bool) -> alt.TopLevelMixin:
    """Test accuracy per method (bars, coloured by kind), train accuracy as a tick, chance as a dashed rule."""
    df = pd.DataFrame([{"method": r["label"], "kind": tl.SHORT[r["method"]], "test accuracy": r["test_acc"],
                        "train accuracy": r["train_acc"]} for r in m["rows"]])
    order = list(df["method"])
    kinds = [tl.SHORT[k] for k in METHOD_COLOURS]
    y = alt.Y("method:N", sort=order, title=None, axis=alt.Axis(labelLimit=420))
    bars = alt.Chart(df).mark_bar().encode(
        x=alt.X("test accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"), y=y,
        color=alt.Color("kind:N", scale=alt.Scale(domain=kinds, range=list(METHOD_COLOURS.values())),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["method", alt.Tooltip("test accuracy:Q", format=".4f"), alt.Tooltip("train accuracy:Q", format=".4f")])
    ticks = alt.Chart(df).mark_tick(color="black", thickness=2).encode(x="train accuracy:Q", y=y)
    text = bars.mark_text(align="left", dx=4, color="black").encode(text=alt.Text("test accuracy:Q", format=".3f"))
    chance = alt.Chart(pd.DataFrame({"chance": [1 / len(m["classes"])]})).mark_rule(strokeDash=[5, 3]).encode(
        x="chance:Q")
    chart = (bars + ticks + text + chance).properties(
        height=40 * len(df) + 40, title="Test accuracy per method (black tick: train accuracy; dashed: chance)")
    return for_lecture(chart, lecture)


def source_note(m: dict) -> None:
    """Which source model was used, and why (our own words and numbers: no user text)."""
    s = m.get("source")
    if not s:
        return
    info = s.get("info", {})
    if s["kind"] == "self":
        detail = (f"It learned {len(info.get('classes', []))} classes ({', '.join(info.get('classes', []))}) from "
                  f"{info.get('n_train', 0):,} training images in {info.get('epochs')} epochs "
                  f"({info.get('seconds', 0):.0f} s), reaching {info.get('test_acc', 0):.1%} test accuracy on them; "
                  f"{info.get('params', 0):,} parameters. The task's classes were never shown to it.")
    else:
        detail = (f"{info.get('params', 0):,} parameters trained on ImageNet's 1,000 classes; the task's "
                  f"{m['image_shape'][-1]}x{m['image_shape'][-1]} images are upsampled to "
                  f"{info.get('image_size')}x{info.get('image_size')} and normalised with ImageNet's mean and std.")
    st.info(f"**Source model:** {s['label']}, because {s['why']}. {detail}")


def look_for(m: dict) -> str | None:
    """What came out, as the report's ranking is written, and whether its shape holds."""
    rows = tl.ranking(m)
    if len(rows) < 5:
        return None
    got = [r["method"] for r in rows]
    want = [k for k, _ in tl.REPORT_RANKING]
    best_tune = max((r for r in m["rows"] if r["method"] == "finetune"), key=lambda r: r["test_acc"])
    same = "the same order as the report's" if got == want else "a different order from the report's"
    return (f"**What came out:** {tl.ranking_text(m)} ({same}: fine-tune > gradient boosting > linear probe > "
            f"sklearn probe > scratch). The best fine-tuning rate here was {best_tune['lr']:g}.")


def draw(m: dict, lecture: bool) -> None:
    """A (finished or partial) table: the source, the bar chart, the table, the sentence, the download."""
    source_note(m)
    if not m.get("rows"):
        st.info("Waiting for the first method to finish...")
        return
    st.altair_chart(_bars(m, lecture), width="stretch")
    if sentence := look_for(m):
        st.markdown(sentence)
    df = _frame(m)
    st.dataframe(df, hide_index=True, key=K + "table",
                 column_config={"test accuracy": st.column_config.NumberColumn(format="%.4f"),
                                "train accuracy": st.column_config.NumberColumn(format="%.4f"),
                                "time (s)": st.column_config.NumberColumn(format="%.1f")})
    st.download_button("Table (CSV)", df.to_csv(index=False), file_name="transfer-learning.csv", mime="text/csv",
                       key=K + "dl")
    st.caption(f"{title(m['dataset'])}: {' vs '.join(m['classes'])}, {m['n_train']:,} training and {m['n_test']:,} "
               f"test images. Network methods: Adam, no augmentation, fixed epochs; train accuracy is the whole "
               "training set evaluated with the final weights. Trainable params of gradient boosting: the leaf "
               "values of its trees. Time: training and evaluation of that method (the self-trained source's own "
               "training not included).")


def _run_panel(cfg: tl.TransferConfig, plan: tl.Plan, lecture: bool) -> None:
    """No stored table for cfg: Run starts a background job, drawn live; Stop ends it."""
    job = get_job(SLOT)
    mine = job is not None and st.session_state.get(K + "job_cfg") == plan.cfg
    c1, c2 = st.columns([1, 4])
    if c1.button("Run", type="primary", key=K + "run", disabled=mine and not job.is_final):
        job = start_job(SLOT, tl.job(cfg, app_cache()), name="transfer learning",
                        key=job_key(tl.KIND, tl.cache_key(plan.cfg)))
        st.session_state[K + "job_cfg"] = plan.cfg
        mine = job is not None
    if mine and not job.is_final and c2.button("Stop", key=K + "stop"):
        stop_job(SLOT)
    if not mine:
        st.info(f"This table is not computed yet. Press **Run** to train every method in the background "
                f"(minutes on a CPU at the default scale; the embedded digits take seconds). Source: "
                f"{plan.why}. From a terminal: `{tl.cli_command(plan.cfg)}`.")
        return

    def panel(j: Job) -> None:
        st.progress(min(max(j.progress, 0.0), 1.0), text=j.message or j.state.value)
        if j.snapshot is not None:
            draw(j.snapshot, lecture)

    poll_job(job, panel, every=1.0)


# --- page ------------------------------------------------------------------------------------------------

st.title("Transfer learning, compared in one table")
lecture = lecture_mode(K)
st.caption("A small two-class task (cat vs dog from CIFAR-10, a thousand training images): the same network "
           "trained from scratch, a linear probe on its frozen source features, full fine-tuning at several "
           "learning rates, scikit-learn's logistic regression on the frozen features, and gradient boosting on "
           "the raw pixels. The source is torchvision's ImageNet ResNet18 when its weights are on this server, "
           "else a CNN this app trained on CIFAR-10's other eight classes.")
_init_from_url()
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
st.markdown(LOOK_FOR)
cfg = settings_ui()
_write_url(cfg)
plan = config_or_stop(lambda: tl.resolve(cfg))  # an ImageNet source asked for without its weights is refused
if plan.notice:
    st.warning(plain(plan.notice))
entry = app_cache().get(tl.KIND, tl.cache_key(plan.cfg))
job = get_job(SLOT)
running = job is not None and not job.is_final and st.session_state.get(K + "job_cfg") == plan.cfg
if entry is not None and not running:
    draw(entry.metrics, lecture)
    show_provenance(entry, recompute=entry.meta.get("recompute"))
    st.caption(f"At a larger scale (a GPU): `{tl.cli_command(tl.resolve(tl.GPU_RECIPE).cfg)}`; with ImageNet "
               f"weights: put torchvision's {src.imagenet_weights_name()} into the torch hub cache's checkpoints/ "
               "folder, or `python -m explorer transfer --weights PATH`.")
else:
    _run_panel(cfg, plan, lecture)
