"""Classifiers: train a CNN on an image data set, watch its curves, read its test errors, keep and compare runs."""

from __future__ import annotations

import json
import math

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core import settings
from explorer.core.cache import Entry, to_plain
from explorer.core.config import ConfigError, check_choice
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.data import datasets as D
from explorer.data import uploads as U
from explorer.labs.classifiers import presets as P
from explorer.labs.classifiers import workbench as W
from explorer.labs.classifiers.config import FAMILY_TITLES, ClassifierConfig, get_path, model_title, with_values
from explorer.nets.cnn import FAMILIES, CNNConfig
from explorer.render import gallery as G
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, job_key, lecture_mode,
                           lines_with_points, plain, poll_job, settings_from_url, show_provenance, split_dash,
                           start_job, stop_job)

K = "cl_"  # widget-key prefix
SLOT = "cl_run"  # this session's training job
UPLOAD, FOLDER = "upload", "folder"  # menu entries for the visitor's own images
DATASET_LABELS = {"cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST", "mnist": "MNIST",
                  "digits": "Digits (8x8, embedded)", UPLOAD: "Your images (upload a zip)",
                  FOLDER: "A folder on this server"}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
PADS = ("reflect", "zeros")
# widget name -> the setting it edits (a dotted path into ClassifierConfig); a preset fills them all
WIDGETS = {"model": "model.family", "width": "model.width", "dropout": "model.dropout", "n_train": "n_train",
           "n_val": "n_val", "n_test": "n_test", "optimizer": "fit.optimizer", "lr": "fit.lr",
           "momentum": "fit.momentum", "nesterov": "fit.nesterov", "wd": "fit.weight_decay",
           "schedule": "fit.schedule", "smoothing": "fit.label_smoothing", "clip": "fit.clip",
           "batch": "fit.batch_size", "epochs": "fit.epochs", "patience": "fit.patience",
           "flip": "fit.augment.flip", "translate": "fit.augment.translate", "rotate": "fit.augment.rotate",
           "zoom": "fit.augment.zoom", "cutout": "fit.augment.cutout", "pad": "fit.augment.pad", "seed": "seed"}
URL_WIDGETS = ("model", "width", "optimizer", "schedule", "lr", "wd", "batch", "epochs", "n_train", "flip",
               "translate")  # the main settings a link may carry (the rest come from its preset)
SCHEMA = {"preset": Param(str, P.DEFAULT), "scale": Param(str, "cpu"), "dataset": Param(str, "cifar10"),
          **{w: Param(type(get_path(P.PRESETS[P.DEFAULT].cpu, WIDGETS[w])), None) for w in URL_WIDGETS}}
GALLERY_PX = 128  # mistaken images enlarged (nearest neighbour) to about this size
GALLERY_COLS = 8
LOOK_FOR = ("**What to look for:** the gap between the training and validation curves (overfitting without "
            "augmentation), which classes the confusion matrix mixes up (cat and dog, automobile and truck on "
            "CIFAR-10), and how confident the network is when it is wrong.")


def _menu() -> list[str]:
    """The data sets a visitor may pick: the registered image sets, their upload, a server folder where allowed."""
    return [*W.IMAGE_SETS, UPLOAD, *([FOLDER] if settings.current().data_root_paths() else [])]


def _apply(cfg: ClassifierConfig) -> None:
    """Every setting widget set to cfg's value."""
    for name, path in WIDGETS.items():
        st.session_state[K + name] = get_path(cfg, path)


def _apply_preset() -> None:
    """The preset or scale selector's callback: its recipe goes into the widgets (the data set stays)."""
    _apply(P.PRESETS[st.session_state[K + "preset"]].at(st.session_state[K + "scale"]))


def _init_from_url() -> None:
    """First run of a session: the link's preset, then the settings it gives, checked by the core."""
    if K + "preset" in st.session_state:
        return

    def validate(v: dict) -> None:
        check_choice("preset", v["preset"], P.PRESETS)
        check_choice("scale", v["scale"], P.SCALES)
        check_choice("dataset", v["dataset"], _menu())
        _from_link(v)

    values = settings_from_url(SCHEMA, K, validate)
    st.session_state[K + "preset"], st.session_state[K + "scale"] = values["preset"], values["scale"]
    st.session_state[K + "dataset"] = values["dataset"]
    _apply(_from_link(values))


def _from_link(v: dict) -> ClassifierConfig:
    """The link's preset with the settings it gives applied (ConfigError for a refused one)."""
    given = {WIDGETS[w]: v[w] for w in URL_WIDGETS if v.get(w) is not None}
    return with_values(P.PRESETS[v["preset"]].at(v["scale"]), given)


def _upload_ui() -> str:
    """The visitor's zip of images, checked before anything is unpacked; its data-set name."""
    f = st.file_uploader("Your images: a zip of <class>/<image> folders (or of <train|test>/<class>/<image>)",
                         type=["zip"], key=K + "upload", help=U.limits_text(),
                         max_upload_size=max(1, math.ceil(settings.current().max_upload_mb)))
    if f is None:
        st.info("Upload a zip with one folder of images per class; 20% of each class is held out as the test set "
                "unless the zip has train/ and test/ folders. " + U.limits_text())
        st.stop()
    try:
        name = U.register(f.getvalue(), f.name)
    except D.DatasetUnavailable as err:
        st.error(plain(err))
        st.stop()
        raise
    st.session_state.setdefault(K + "uploads", set()).add(name)  # its runs are listed to this visitor only
    return name


def _folder_ui() -> str:
    """A folder inside the operator's data roots; its data-set name."""
    path = st.text_input("Folder inside the server's data folders", key=K + "folder", max_chars=1000)
    if not path.strip():
        st.info("Type the path of an image folder inside the server's data folders (relative to one of them).")
        st.stop()
    try:
        return D.visitor_folder(path)
    except D.DatasetUnavailable as err:
        st.error(plain(err))
        st.stop()
        raise


def data_ui() -> str:
    """Data set, preset and scale selectors; the data set's name."""
    c1, c2, c3 = st.columns([2, 2, 2])
    choice = c1.selectbox("Data set", _menu(), format_func=DATASET_LABELS.get, key=K + "dataset")
    c2.selectbox("Preset", list(P.PRESETS), format_func=lambda k: P.PRESETS[k].title, key=K + "preset",
                 on_change=_apply_preset, help="fills every setting below with the recipe")
    c3.selectbox("Scale", list(P.SCALES), format_func=P.SCALES.get, key=K + "scale", on_change=_apply_preset)
    preset = P.PRESETS[st.session_state[K + "preset"]]
    report = f" The report's top-1 test error at full scale: {preset.report_top1_err:.1%}." \
        if preset.report_top1_err is not None else ""
    st.caption(f"{preset.about}{report} CPU scale: {preset.scaled}.")
    if choice == UPLOAD:
        return _upload_ui()
    if choice == FOLDER:
        return _folder_ui()
    return choice


def settings_ui(dataset: str) -> ClassifierConfig:
    """The model and training widgets -> the frozen config (limits checked by the core)."""
    s = st.session_state
    base = P.PRESETS[s[K + "preset"]].at(s[K + "scale"])
    for name, path in WIDGETS.items():  # Streamlit forgets a widget's value after a run that did not draw it
        s.setdefault(K + name, get_path(base, path))
    with st.expander("Model and training settings (the preset's; change any)", expanded=False):
        c = st.columns(5)
        c[0].selectbox("Model", FAMILIES, format_func=lambda f: FAMILY_TITLES.get(f, f), key=K + "model")
        c[1].number_input("Width multiplier", step=0.125, format="%.3g", key=K + "width", help="0.125 to 4 x the "
                          "channels of the paper's network")
        c[2].number_input("Dropout", step=0.05, format="%.2f", key=K + "dropout",
                          help="the simple CNN's blocks only", disabled=s[K + "model"] != "simple")
        c[3].number_input("Training images", step=1000, key=K + "n_train",
                          help="a seeded subset of the training split")
        c[4].number_input("Validation images", step=500, key=K + "n_val", help="held out from the training split")
        c = st.columns(6)
        c[0].selectbox("Optimizer", OPTIMIZERS, key=K + "optimizer")
        c[1].number_input("Learning rate", format="%.3g", step=1e-4, key=K + "lr")
        c[2].selectbox("Schedule", SCHEDULES, key=K + "schedule")
        c[3].number_input("Weight decay", format="%.3g", step=1e-4, key=K + "wd")
        c[4].number_input("Batch size", step=32, key=K + "batch")
        c[5].number_input("Epochs", step=1, key=K + "epochs")
        c = st.columns(5)
        c[0].number_input("Label smoothing", step=0.05, format="%.2f", key=K + "smoothing")
        c[1].number_input("Gradient clip (norm)", step=0.05, format="%.3g", key=K + "clip", help="0: off")
        c[2].number_input("Early stopping patience", step=1, key=K + "patience",
                          help="epochs without a better validation loss before stopping (0: off); the best "
                               "weights are kept")
        c[3].number_input("Momentum (SGD)", step=0.05, format="%.2f", key=K + "momentum",
                          disabled=s[K + "optimizer"] != "sgd")
        c[4].checkbox("Nesterov (SGD)", key=K + "nesterov", disabled=s[K + "optimizer"] != "sgd")
        st.markdown("**Augmentation** (batched tensor ops on the device)")
        c = st.columns(6)
        c[0].checkbox("Horizontal flips", key=K + "flip")
        c[1].number_input("Translate (px)", step=1, key=K + "translate", help="random shifts up to this many pixels")
        c[5].selectbox("Translation padding", PADS, key=K + "pad", help="how a shift fills the pixels it uncovers")
        c[2].number_input("Rotate (degrees)", step=5.0, format="%.3g", key=K + "rotate")
        c[3].number_input("Zoom (fraction)", step=0.05, format="%.2f", key=K + "zoom", help="0.1: scale 0.9 to 1.1")
        c[4].number_input("Cutout (px)", step=4, key=K + "cutout", help="side of a blanked square (0: off)")
        st.markdown("**Test images and seed**")
        c = st.columns(6)
        c[0].number_input("Test images", step=1000, key=K + "n_test")
        c[1].number_input("Seed", step=1, key=K + "seed")
    values = {path: s[K + name] for name, path in WIDGETS.items()}
    return config_or_stop(lambda: W.resolve(with_values(base, {**values, "dataset": dataset})))


@st.cache_data(max_entries=64, show_spinner=False)
def _cost(model_json: str, shape: tuple[int, int, int]) -> tuple[int, int]:
    """Parameters and FLOPs per image of a network config (built once per config and kept)."""
    return W.model_cost(CNNConfig(**json.loads(model_json)), shape)


def cost_row(cfg: ClassifierConfig) -> None:
    """Parameters, FLOPs per image and the training's total FLOPs, live as the settings change."""
    shape, _ = W.data_shape(cfg.dataset)
    params, flops = _cost(json.dumps(to_plain(cfg.model), sort_keys=True), tuple(shape))
    st.caption(f"**{params:,} parameters** ({model_title(cfg.model)} on {shape[0]}x{shape[1]}x{shape[2]} images, "
               f"{cfg.model.classes} classes) · **{flops / 1e6:,.1f} MFLOPs per image** (forward: multiply-adds x 2) "
               f"· **{W.work(cfg, flops) / 1e12:,.2f} TFLOPs to train** (about 3 x forward x training images x "
               "epochs)")  # one line, not a row of metrics: the run's results start on a 1280x800 first screen


# ---------------------------------------------------------------- charts


def _curves(df: pd.DataFrame, y: str, lecture: bool, epochs: int | None = None, color: str | None = None,
            title: str = "") -> alt.TopLevelMixin:
    """Train (solid) and validation (dashed) `y` per epoch; one colour per run when `color` names the column."""
    x = alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1),
              scale=alt.Scale(domain=[1, max(epochs, 2)]) if epochs else alt.Undefined)
    enc = dict(x=x, y=alt.Y(f"{y}:Q", scale=alt.Scale(zero=False), title=y), strokeDash=split_dash("train", "val"),
               tooltip=[*([color] if color else []), "split", "epoch", alt.Tooltip(f"{y}:Q", format=".4f")])
    if color:
        enc["color"] = alt.Color(f"{color}:N", legend=alt.Legend(orient="bottom", title=None, labelLimit=0,
                                                                 direction="vertical"))
        enc["detail"] = "split:N"
    if not color:
        enc["color"] = alt.value("#4c78a8")
    chart = lines_with_points(df, point_size=20, **enc)
    title = (title or f"{y} per epoch") + " (solid: train, dashed: validation)"
    return for_lecture(chart.properties(height=300, title=title).interactive(), lecture)


def draw_history(h: dict, lecture: bool, epochs: int | None = None) -> None:
    """Loss and accuracy per epoch, training and validation, side by side."""
    df = pd.DataFrame(W.history_rows(h))
    if df.empty:
        st.info("Waiting for the first epoch...")
        return
    left, right = chart_slots(lecture)
    left.altair_chart(_curves(df, "loss", lecture, epochs, title="Loss per epoch"), width="stretch")
    right.altair_chart(_curves(df, "accuracy", lecture, epochs, title="Accuracy per epoch"), width="stretch")


def _confusion_chart(m: dict, lecture: bool) -> alt.TopLevelMixin:
    """The test confusion matrix: rows true, columns predicted, colour the row's share, text the count."""
    classes, cm = m["classes"], m["test"]["confusion"]
    rows = []
    for i, true in enumerate(classes):
        total = max(1, sum(cm[i]))
        for j, pred in enumerate(classes):
            rows.append({"true": true, "predicted": pred, "count": cm[i][j], "share": cm[i][j] / total})
    df = pd.DataFrame(rows)
    side = max(280, min(640, 44 * len(classes)))  # px: about 44 per class, so 4-digit counts fit in a cell
    base = alt.Chart(df).encode(
        x=alt.X("predicted:N", sort=classes, title="predicted class",
                axis=alt.Axis(labelAngle=-40, labelLimit=120, labelOverlap=False)),
        y=alt.Y("true:N", sort=classes, title="true class", axis=alt.Axis(labelLimit=120, labelOverlap=False)))
    cells = base.mark_rect().encode(
        color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="share of true class",
                        legend=alt.Legend(orient="bottom", gradientLength=200)),
        tooltip=["true", "predicted", "count", alt.Tooltip("share:Q", format=".1%")])
    text = base.mark_text(fontSize=11 if len(classes) > 12 else 13).encode(
        text="count:Q", color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("#222")))
    # a fixed row height (px): a height for the whole chart is shared with the legend, squeezing the rows
    chart = (cells + text).properties(height=alt.Step(side // len(classes)), title="Confusion matrix (test)")
    return for_lecture(chart, lecture)


def _per_class(m: dict) -> pd.DataFrame:
    """Per-class accuracy (recall), precision, F1 and support on the test images."""
    p = m["test"]["per_class"]
    return pd.DataFrame({"class": m["classes"], "accuracy (recall)": p["accuracy"], "precision": p["precision"],
                         "f1": p["f1"], "test images": [int(v) for v in p["support"]]})


def draw_gallery(entry: Entry) -> None:
    """The most confidently misclassified test images with their predicted and true class."""
    m = entry.metrics
    images = W.mistake_images(entry)
    if images is None or not m["mistakes"]:
        st.info("No test image was misclassified.")
        return
    classes = m["classes"]
    scale = max(1, GALLERY_PX // max(int(images.shape[-1]), 1))
    cols = st.columns(GALLERY_COLS)
    for k, (x, info) in enumerate(zip(images, m["mistakes"])):
        pic = G.grid(x[None], ncols=1, scale=scale, gap=0)
        cols[k % GALLERY_COLS].image(G.png(pic), width="stretch", caption=plain(
            f"{classes[info['pred']]} {info['confidence']:.0%} (true: {classes[info['true']]})"))


def _scale_note(entry: Entry) -> None:
    """Which preset and scale the shown run is, and what the report got at full scale."""
    which = P.which(W.config_of(entry))
    if which is None:
        return
    preset = P.PRESETS[which[0]]
    if which[1] == "cpu":
        report = f"; the report got {preset.report_top1_err:.1%} top-1 error at full scale" \
            if preset.report_top1_err is not None else ""
        st.info(f"This is **{preset.title}** at CPU scale{report}. Full scale (a GPU): "
                f"`{W.cli_command(preset.full)}`.")
    else:
        st.info(f"This is **{preset.title}** at the report's full scale.")


def draw_run(entry: Entry, lecture: bool) -> None:
    """A finished run: test metrics, its curves, confusion matrix, per-class table and mistakes gallery."""
    m, t = entry.metrics, entry.metrics["test"]
    if m.get("notice"):
        st.warning(plain(m["notice"]))
    st.subheader(plain(f"{m['title']} on {D.title(m['dataset'])}"))
    _scale_note(entry)
    c = st.columns(6)  # one short number each: a longer value is cut off at 1280 px
    c[0].metric("Test loss", f"{t['loss']:.3f}")
    c[1].metric("Top-1 error", f"{t['top1_err']:.1%}")
    c[2].metric("Top-5 error", f"{t['top5_err']:.1%}")
    c[3].metric("Epochs run", f"{m['epochs_run']}")
    c[4].metric("Best epoch", f"{m.get('best_epoch') or m['epochs_run']}",
                help="the best epoch's weights are kept when early stopping is on")
    c[5].metric("Training time", f"{m['train_seconds']:.0f} s", help=f"{m['images_per_s']:,.0f} images/s")
    st.markdown(LOOK_FOR)  # beside the curves it reads, below the numbers (on a 1280x800 first screen)
    draw_history(m["history"], lecture)
    # the matrix needs the room: 3/5 of the width beside the table (full width, one per row, in lecture mode)
    left, right = [st.container(), st.container()] if lecture else st.columns([3, 2])
    left.altair_chart(_confusion_chart(m, lecture), width="stretch")
    right.dataframe(_per_class(m), hide_index=True, key=K + "per_class",
                    column_config={k: st.column_config.NumberColumn(format="%.3f")
                                   for k in ("accuracy (recall)", "precision", "f1")})
    st.markdown(f"**The {len(m['mistakes'])} most confident mistakes** (predicted class and confidence, true class):")
    draw_gallery(entry)
    st.caption(f"{m['n_train']:,} training, {m['n_val']:,} validation and {m['n_test']:,} test images of shape "
               f"{tuple(m['image_shape'])}; {m['params']:,} parameters, {m['flops_per_image'] / 1e6:,.1f} MFLOPs "
               f"per image; {plain(m['optimizer'])}; augmentation: {plain(m['augmentation'])}.")
    show_provenance(entry, recompute=entry.meta.get("recompute"))


# ---------------------------------------------------------------- training


def train_panel(cfg: ClassifierConfig, lecture: bool) -> bool:
    """Train (a background job) with progress, ETA and Stop, and live curves; True while this session's job for
    cfg runs or has just failed (then nothing else is drawn for cfg)."""
    job = get_job(SLOT)
    mine = job is not None and st.session_state.get(K + "job_cfg") == cfg
    c1, c2 = st.columns([1, 5])
    if c1.button("Train", type="primary", key=K + "train", disabled=mine and not job.is_final):
        job = start_job(SLOT, W.job(cfg, app_cache()), name="classifier", key=job_key(W.KIND, cfg))
        st.session_state[K + "job_cfg"] = cfg
        st.session_state.setdefault(K + "mine", set()).add(cfg)
        mine = job is not None
    if mine and not job.is_final and c2.button("Stop", key=K + "stop"):
        stop_job(SLOT)
    if not mine:
        c2.caption(f"These settings are not trained yet: **Train** runs them in the background with live curves. "
                   f"From a terminal: `{W.cli_command(cfg)}`.")
        return False

    def panel(j: Job) -> None:
        st.progress(min(max(j.progress, 0.0), 1.0), text=plain(j.message or j.state.value))
        if isinstance(j.snapshot, dict) and j.snapshot.get("history"):
            draw_history(j.snapshot["history"], lecture, j.snapshot.get("epochs"))

    poll_job(job, panel, every=1.0)
    return True


# ---------------------------------------------------------------- comparison


def compare_ui(entries: list[Entry], shown: Entry | None, lecture: bool) -> None:
    """Every kept run side by side, the CSV, and any two runs' curves overlaid."""
    st.subheader("Kept runs")
    mine = st.session_state.get(K + "mine", set())
    if st.radio("Show", ["all", "mine"], horizontal=True, key=K + "kept_filter",
                format_func={"all": "every kept run (shipped, and any visitor's on the shared data sets)",
                             "mine": f"the runs I started in this session ({len(mine)})"}.get) == "mine":
        entries = W.runs(app_cache(), uploads=st.session_state.get(K + "uploads", ()), only=mine)
    if not entries:
        st.info("No runs kept yet: train one above, or from a terminal with `python -m explorer classify`.")
        return
    table = pd.DataFrame(W.compare(entries))
    st.dataframe(table.drop(columns=["key"]), hide_index=True, key=K + "table",
                 column_config={"top-1 err": st.column_config.NumberColumn(format="percent"),
                                "top-5 err": st.column_config.NumberColumn(format="percent"),
                                "loss": st.column_config.NumberColumn(format="%.3f"),
                                "FLOPs/image": st.column_config.NumberColumn(format="%.3e")})
    st.download_button("Kept runs (CSV)", table.to_csv(index=False), file_name="classifier-runs.csv",
                       mime="text/csv", key=K + "dl_runs")
    labels = {e.key: W.run_label(e) for e in entries}
    default = [shown.key] if shown is not None and shown.key in labels else list(labels)[:1]
    if len(labels) > 1:
        default += [k for k in labels if k not in default][:1]
    picked = st.multiselect("Overlay the curves of two runs", list(labels), default=default, max_selections=2,
                            format_func=labels.get, key=K + "overlay")
    chosen = [e for e in entries if e.key in picked]
    if not chosen:
        return
    df = pd.DataFrame(W.curve_rows(chosen))
    if df.empty:
        return
    left, right = chart_slots(lecture)
    left.altair_chart(_curves(df, "loss", lecture, color="run", title="Loss per epoch"), width="stretch")
    right.altair_chart(_curves(df, "accuracy", lecture, color="run", title="Accuracy per epoch"), width="stretch")


def _fallback_run(entries: list[Entry]) -> Entry | None:
    """What the page shows when the settings are not trained yet: the shipped default preset's run, else the
    newest kept run."""
    default = P.PRESETS[P.DEFAULT].cpu
    return next((e for e in entries if e.shipped and W.config_of(e) == default), None) or \
        (entries[0] if entries else None)


# --- page ------------------------------------------------------------------------------------------------

st.title("Classifiers")
lecture = lecture_mode(K)
st.caption("Train an image classifier (a simple 3-block CNN, ResNet9 or ResNet20, each with a width multiplier) on "
           "CIFAR-10, Fashion-MNIST, MNIST, the embedded digits or your own images, watch its training and "
           "validation curves, read its test errors and mistakes, and compare every kept run, like the course "
           "report's table of three models.")
_init_from_url()
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
dataset = data_ui()
_, notice = D.name_or_fallback(dataset, "train")
if notice:
    st.warning(plain(notice))
cfg = settings_ui(dataset)
try:
    cost_row(cfg)
except (ConfigError, D.DatasetUnavailable) as exc:
    st.error("Setting refused: " + plain(exc))
    st.stop()
cache = app_cache()
entry = W.cached(cfg, cache)
running = False
if entry is None:
    running = train_panel(cfg, lecture)
kept = W.runs(cache, uploads=st.session_state.get(K + "uploads", ()))
if entry is not None:
    draw_run(entry, lecture)
elif not running:
    shown = _fallback_run(kept)
    if shown is not None:
        st.markdown(plain(f"Meanwhile, the newest kept run: {W.run_label(shown)}") if not shown.shipped else
                    plain(f"Meanwhile, the shipped run: {W.run_label(shown)}"))
        draw_run(shown, lecture)
        entry = shown
if entry is None:  # no run drawn (draw_run says it with the run): the lesson before the training panel's curves
    st.markdown(LOOK_FOR)
compare_ui(kept, entry, lecture)
