"""Data: class balance, galleries and 2D maps (t-SNE, UMAP, PCA) of real image data sets.

A visitor brings their own images as an uploaded zip (explorer.data.uploads checks it); a folder on the server is
offered only where the operator lists data roots (settings.data_roots), and only inside them.
"""

from __future__ import annotations

import math
import re

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from explorer.core import settings
from explorer.core.cache import Cache
from explorer.core.config import ConfigError, check_choice
from explorer.core.jobs import Job, JobState
from explorer.core.urlstate import Param
from explorer.data import datasets as D
from explorer.data import uploads as U
from explorer.labs.data_maps import embed as E
from explorer.labs.data_maps import representations as R
from explorer.labs.data_maps.imbalance import ImbalanceConfig, compare_recall
from explorer.nets.small import ARCHS, NetConfig, describe
from explorer.render import gallery as G
from views.widgets import (app_cache, config_or_stop, for_lecture, get_job, lecture_mode, plain, poll_job,
                           settings_from_url, show_provenance, start_job)

K = "data_"  # widget-key prefix
UPLOAD = "upload"  # the menu entry for the visitor's own images, uploaded as a zip
FOLDER = "folder"  # the menu entry for a server folder: offered only where the operator lists data roots
OWN_LABELS = {UPLOAD: "Your images (upload a zip)", FOLDER: "A folder on this server"}
MIN_MAP_POINTS = 50  # the fewest points a map embeds (explorer.labs.data_maps.embed.MapConfig refuses fewer)
SCHEMA = {"dataset": Param(str, "fashion_mnist"), "method": Param(str, "tsne"), "points": Param(int, 2000),
          "folder": Param(str, ""), "features": Param(str, "pixels")}  # features: the embedding space (shared links)
# Every point of a map carries its hover thumbnail up to this page payload: all 20,000 points of a Fashion-MNIST
# map (about 0.9 KB each) or about 9,000 CIFAR-10 points (about 2.6 KB each as JPEG; 5.1 MB for the default 2,000).
MAX_THUMB_BYTES = 24_000_000
GALLERY_PX = 96  # gallery images enlarged (nearest neighbour) to about this size: 32-pixel CIFAR is unreadable
MAX_SELECTED = 120  # images shown for a selected region
MAX_GALLERY_CLASSES = 20
MAX_LIVE_POINTS = 2500  # points drawn while a map optimises (the finished map shows all)


def _menu() -> list[str]:
    """The data sets a visitor may pick: the registered ones, their upload, and a server folder where allowed."""
    return [*D.NAMES, UPLOAD, *([FOLDER] if settings.current().data_root_paths() else [])]


def _init_from_url() -> None:
    """First run of a session: settings from the URL, checked on the server; refused ones get a message."""
    if K + "dataset" in st.session_state:
        return
    def validate(v: dict) -> None:
        check_choice("dataset", v["dataset"], _menu())
        if v["folder"] and v["dataset"] != FOLDER:
            raise ConfigError("URL parameter folder is used only with dataset=folder, on a server that offers "
                              "its folders")
        E.MapConfig(method=v["method"], n_points=v["points"], space=v["features"])

    values = settings_from_url(SCHEMA, K, validate)
    st.session_state[K + "dataset"] = values["dataset"]
    st.session_state[K + "folder"] = values["folder"]
    st.session_state[K + "method"] = values["method"]
    st.session_state[K + "points"] = values["points"]
    st.session_state[K + "space"] = values["features"]


def _load(name: str) -> tuple[D.ArrayDataset, D.ArrayDataset]:
    """Train and test splits, or the embedded digits with a warning saying how to get the wanted set."""
    with st.spinner(plain(f"Loading {D.title(name)} (decoded once, then kept)...")):
        train, msg = D.load_or_fallback(name, "train")
        test, msg_test = D.load_or_fallback(name, "test") if msg is None else D.load_or_fallback(D.FALLBACK, "test")
    if msg or msg_test:
        st.warning(plain(msg or msg_test))
        if msg_test and not msg:
            train = D.load(D.FALLBACK, "train")
    return train, test


def _upload_ui() -> str:
    """The visitor's zip of images, checked (sizes, names, layout) before anything is unpacked; its data-set name."""
    limits = U.limits_text()
    f = st.file_uploader("Your images: a zip of <class>/<image> folders (or of <train|test>/<class>/<image>)",
                         type=["zip"], key=K + "upload", help=limits,
                         max_upload_size=max(1, math.ceil(settings.current().max_upload_mb)))
    if f is None:
        st.info("Upload a zip with one folder of images per class; 20% of each class is held out as the test set "
                "unless the zip has train/ and test/ folders. " + limits)
        st.stop()
    try:
        return U.register(f.getvalue(), f.name)
    except D.DatasetUnavailable as err:
        st.error(plain(err))
        st.stop()
        raise  # unreachable: st.stop() raises


def _folder_ui() -> str:
    """A folder inside the operator's data roots (the menu offers this only where there are some); its name."""
    path = st.text_input("Folder inside the server's data folders (<folder>/<train|test>/<class>/<images>, or "
                         "<folder>/<class>/<images>)", key=K + "folder", max_chars=1000)
    if not path.strip():
        st.info("Type the path of an image folder inside the server's data folders (relative to one of them).")
        st.stop()
    try:
        return D.visitor_folder(path)
    except D.DatasetUnavailable as err:
        st.error(plain(err))
        st.stop()
        raise  # unreachable: st.stop() raises


def _own_data(choice: str) -> str:
    """The data-set name of the menu's choice: a registered set, the visitor's upload, or a server folder."""
    if choice == UPLOAD:
        return _upload_ui()
    if choice == FOLDER:
        return _folder_ui()
    return choice


def _balance(train: D.ArrayDataset, test: D.ArrayDataset) -> None:
    """Per-class counts for train and test, imbalance ratios, and the imbalanced-subset experiment."""
    st.subheader("Class balance")
    c_train, c_test = D.class_counts(train), D.class_counts(test)
    cols = st.columns(4)
    cols[0].metric("Train examples", f"{len(train):,}")
    cols[1].metric("Test examples", f"{len(test):,}")
    cols[2].metric("Imbalance (train)", f"{D.imbalance_ratio(c_train):.2f}x", help="largest class / smallest class")
    cols[3].metric("Imbalance (test)", f"{D.imbalance_ratio(c_test):.2f}x")
    n = train.num_classes
    df = pd.DataFrame({"class": list(train.classes) * 2, "split": ["train"] * n + ["test"] * n,
                       "count": c_train + c_test})
    st.altair_chart(alt.Chart(df).mark_bar().encode(
        x=alt.X("class:N", sort=list(train.classes), title=None), xOffset="split:N",
        y=alt.Y("count:Q", title="examples"), color=alt.Color("split:N", sort=["train", "test"]),
        tooltip=["class", "split", "count"]).properties(height=220), width="stretch")
    with st.expander("What does an imbalanced training set do to a classifier?"):
        _recall_ui(train)


def _recall_ui(train: D.ArrayDataset) -> None:
    """Train a softmax regression on a balanced and an imbalanced subset; compare per-class recall."""
    c = st.columns(3)
    per_class = c[0].number_input("Training examples per class", 10, 2000, 200, step=10, key=K + "rc_per_class")
    minority_class = c[1].selectbox("Class made rare", range(train.num_classes),
                                    format_func=lambda i: train.classes[i], key=K + "rc_class")
    minority = c[2].number_input("Its training examples", 0, 2000, 5, key=K + "rc_minority")
    cfg = config_or_stop(lambda: ImbalanceConfig(dataset=train.name, per_class=int(per_class),
                                              minority_class=int(minority_class), minority=int(minority)))
    if st.button("Train both classifiers", key=K + "rc_run"):
        start_job("data_recall", lambda ctx: {"config": cfg, **compare_recall(cfg)}, name="class recall")
    job = get_job("data_recall")
    if job is not None:
        poll_job(job, _draw_recall)


def _draw_recall(job: Job) -> None:
    """Per-class recall, balanced vs imbalanced training."""
    if job.state is not JobState.DONE:
        st.progress(job.progress, text=f"Training ({job.state.value})...")
        return
    res = job.result
    cfg: ImbalanceConfig = res["config"]
    rows = [{"class": cls, "training": name, "recall": res[name]["recall"][i]}
            for name in ("balanced", "imbalanced") for i, cls in enumerate(res["classes"])]
    st.altair_chart(alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
        x=alt.X("class:N", sort=res["classes"], title=None), xOffset="training:N",
        y=alt.Y("recall:Q", scale=alt.Scale(domain=[0, 1]), title="test recall"),
        color="training:N", tooltip=["class", "training", alt.Tooltip("recall:Q", format=".3f")],
    ).properties(height=220), width="stretch")
    rare = res["classes"][cfg.minority_class]
    i = cfg.minority_class
    rare = plain(rare)  # class names come from the visitor's folders
    st.caption(f"Softmax regression on {plain(D.title(cfg.dataset))}, {cfg.per_class} training examples per class vs "
               f"the same with '{rare}' cut to {cfg.minority}. Recall of '{rare}' on the test set: "
               f"{res['balanced']['recall'][i]:.1%} balanced, {res['imbalanced']['recall'][i]:.1%} imbalanced.")


def _gallery(train: D.ArrayDataset) -> None:
    """N seeded samples of each class."""
    st.subheader("Gallery")
    c = st.columns([2, 1, 1])
    n = c[0].slider("Samples per class", 1, 16, 8, key=K + "per_class")
    seed = c[1].number_input("Seed", 0, 1_000_000, 0, key=K + "gallery_seed")
    c[2].button("Reshuffle", key=K + "reshuffle",
                on_click=lambda: st.session_state.update({K + "gallery_seed": int(seed) + 1}))
    sub = D.subset(train, int(n), int(seed))
    scale = max(1, GALLERY_PX // max(train.input_shape[-1], 1)) if train.is_image else 2
    shown = range(min(train.num_classes, MAX_GALLERY_CLASSES))
    cols = st.columns(2)
    for k, cls in enumerate(shown):
        xs = sub.x[sub.y == cls]
        if len(xs):
            cols[k % 2].image(G.png(G.grid(xs, ncols=int(n), scale=scale)),
                              caption=plain(train.classes[cls]))  # captions are Markdown; names are the visitor's
    if train.num_classes > MAX_GALLERY_CLASSES:
        st.caption(f"Showing the first {MAX_GALLERY_CLASSES} of {train.num_classes} classes.")


def _clamped(key: str, default: float, hi: float) -> None:
    """Keep a widget's value (default on first use) at most `hi` before it is drawn: small sets have fewer points."""
    st.session_state[key] = min(st.session_state.get(key, default), hi)


def _map_controls(train: D.ArrayDataset, test: D.ArrayDataset) -> E.MapConfig | None:
    """Method and settings of the map, within what the test split allows; None (with a note) when it is too small."""
    hi = min(len(test), E.MAX_POINTS)
    if hi < MIN_MAP_POINTS:
        st.info(f"A map needs at least {MIN_MAP_POINTS} test images; this data set has {len(test)}.")
        return None
    c = st.columns([2, 2, 1])
    method = c[0].radio("Method", list(E.METHODS), format_func=E.METHODS.get, horizontal=True, key=K + "method")
    lo = min(100, hi) if hi > 100 else MIN_MAP_POINTS
    if lo < hi:
        st.session_state[K + "points"] = min(max(int(st.session_state.get(K + "points", 2000)), lo), hi)
        points = c[1].slider("Points (seeded sample of the test set)", lo, hi, step=1, key=K + "points")
    else:
        points = hi
        c[1].caption(f"Points: all {hi} test images")
    seed = c[2].number_input("Seed", 0, 1_000_000, 0, key=K + "map_seed")
    s = st.columns(2)
    chosen = {}
    if method == "tsne":
        top = min(100.0, 5.0 * math.floor((int(points) - 1) / 3 / 5))  # t-SNE needs more than 3 x perplexity points
        _clamped(K + "perplexity", 30.0, top)
        chosen["perplexity"] = s[0].slider("Perplexity", 5.0, top, step=5.0, key=K + "perplexity")
        chosen["n_iter"] = s[1].select_slider("Most iterations after early exaggeration",
                                              [250, 500, 1000, 2000], 500, key=K + "n_iter")
    elif method == "umap":
        top = min(100, int(points) - 1)  # UMAP needs fewer neighbours than points
        _clamped(K + "neighbors", 15, top)
        chosen["n_neighbors"] = s[0].slider("Neighbours", 2, top, key=K + "neighbors")
        chosen["min_dist"] = s[1].slider("Minimum distance", 0.0, 0.99, 0.1, step=0.01, key=K + "min_dist")
    chosen["space"] = _space_ui(train, test)
    return config_or_stop(lambda: E.MapConfig(dataset=test.name, split="test", method=method,
                                              n_points=int(points), seed=int(seed), **chosen))


@st.cache_data(ttl=30, show_spinner=False)
def _model_labels(cache_root: str, dataset: str, input_shape: tuple[int, ...], _cache: Cache) -> dict[str, str]:
    """Cached models usable as embedding spaces for this data set: name -> menu label (listing reads every entry).

    Memoised by the cache's root; `_cache` itself is not hashed (Streamlit skips arguments named with an underscore).
    """
    return {m.ref: m.label for m in R.list_models(dataset, input_shape, cache=_cache)}


def _space_labels(test: D.ArrayDataset) -> dict[str, str]:
    """Every embedding space this data set can be mapped from: raw inputs, then cached trained models."""
    pixels = "Raw pixels" if test.is_image else "Raw input values"
    raw = {name: pixels if name == "pixels" else name for name in E.RAW_SPACES}
    cache = app_cache()
    return {**raw, **_model_labels(str(cache.root), test.name, test.input_shape, cache)}


def _space_ui(train: D.ArrayDataset, test: D.ArrayDataset) -> str:
    """'Embedding space': raw pixels or a cached model's representations; and training a representation net now."""
    if K + "space_pending" in st.session_state:  # a model just trained: select it
        st.session_state[K + "space"] = st.session_state.pop(K + "space_pending")
    labels = _space_labels(test)
    wanted = st.session_state.get(K + "space", "pixels")
    if wanted not in labels:
        try:
            # A model trained since the menu was listed.
            labels[wanted] = R.resolve(wanted, test.name, test.input_shape, cache=app_cache()).label
        except R.ModelSpaceError as exc:
            st.warning(plain(f"{exc}. Showing raw pixels instead."))
            st.session_state[K + "space"] = "pixels"
    space = st.selectbox("Embedding space", list(labels), format_func=labels.get, key=K + "space",
                         help="Raw pixels, or the representations (penultimate layer) of a model trained on this "
                              "data set's train split (the map is of the test set). t-SNE and UMAP first reduce "
                              "either to 50 dimensions by PCA.")
    with st.expander("Train a representation net now"):
        _train_net_ui(train)
    return space


def _train_net_ui(train: D.ArrayDataset) -> None:
    """A small seeded classifier trained as a background job; once done it is selected above."""
    c = st.columns(3)
    arch = c[0].radio("Network", list(ARCHS), list(ARCHS).index(R.default_arch(train)),
                      format_func=lambda a: describe(NetConfig(arch=a)), key=K + "fm_arch")
    epochs = c[1].slider("Epochs", 1, 30, 10, key=K + "fm_epochs")
    hi = min(len(train), R.MAX_TRAIN)
    n_train = c[2].number_input("Training examples", min(100, hi), hi, min(10_000, hi), step=100, key=K + "fm_n")
    cfg = config_or_stop(lambda: R.default_net_config(train, arch, int(epochs), int(n_train)))
    cache = app_cache()
    if R.cached_representation_net(cfg, cache) is not None:
        st.caption("A model with these settings is trained: choose it under 'Embedding space'.")
    elif st.button("Train", key=K + "fm_train"):
        start_job("data_net", R.representation_net_job(cfg, cache), name=f"representation net {cfg.dataset}")
    job = get_job("data_net")
    if job is not None:
        poll_job(job, _draw_training)


def _draw_training(job: Job) -> None:
    """Training progress; when done, the new model becomes the selected embedding space (once)."""
    if job.state is JobState.DONE:
        model: R.ModelSpace = job.result
        if st.session_state.get(K + "net_job_seen") != job.id:
            st.session_state[K + "net_job_seen"] = job.id
            st.session_state[K + "space_pending"] = model.ref
            _model_labels.clear()
            st.rerun(scope="app")
    elif job.state is JobState.CANCELLED:
        st.info("Training stopped.")
    elif not job.is_final:
        st.progress(job.progress, text=job.message or job.state.value)


def _scatter(df: pd.DataFrame, classes: tuple[str, ...], tooltip: list) -> alt.Chart:
    """Points coloured by class."""
    return alt.Chart(df).mark_circle(size=14, opacity=0.75).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
        color=alt.Color("class:N", sort=list(classes), legend=alt.Legend(title=None),
                        scale=alt.Scale(scheme="tableau10" if len(classes) <= 10 else "tableau20")),
        tooltip=tooltip,
    ).properties(height=520)


@st.cache_data(max_entries=4, show_spinner=False)
def _thumbnails(dataset: str, split: str, n_points: int, seed: int) -> dict[int, str]:
    """Data-URI thumbnails of a map's points: every point, or a seeded sample within MAX_THUMB_BYTES."""
    test = D.load(dataset, split)
    index = E.point_index(len(test), n_points, seed).numpy()
    thumbs, size = {}, 0
    for i in np.random.default_rng(seed).permutation(index):
        uri = G.data_uri(test.x[int(i)])
        size += len(uri)
        if size > MAX_THUMB_BYTES:
            break
        thumbs[int(i)] = uri
    return thumbs


def _draw_map(result: E.MapResult, test: D.ArrayDataset) -> None:
    """The finished map: hover thumbnails, region selection, quality figures, CSV, provenance."""
    c = result.config
    thumbs = _thumbnails(c.dataset, c.split, c.n_points, c.seed)
    df = pd.DataFrame({"x": result.coords[:, 0], "y": result.coords[:, 1], "index": result.index,
                       "class": [result.classes[i] for i in result.labels],
                       "image": [thumbs.get(int(i), "") for i in result.index]})
    brush = alt.selection_interval(name="region", encodings=["x", "y"])
    chart = _scatter(df, result.classes, ["class", "index", "image"]).add_params(brush)
    event = st.altair_chart(for_lecture(chart, bool(st.session_state.get(K + "lecture"))), on_select="rerun",
                            key=K + "map_chart", width="stretch")
    m = result.metrics
    figures = [f"{m['n_points']:,} points", f"trustworthiness {m['trustworthiness']:.3f} (10 neighbours)"]
    if R.is_model_ref(c.space):
        figures.insert(0, f"embedding space: {_space_labels(test).get(c.space, c.space)}")
    ev = m["explained_variance"]
    if result.config.method == "pca":
        figures.append(f"PC1 explains {ev[0]:.1%}, PC2 {ev[1]:.1%} of the variance")
    else:
        figures.append(f"PCA to {len(ev)} dimensions first keeps {sum(ev):.1%} of the variance")
    if "kl_divergence" in m:
        figures.append(f"{m['iterations']} iterations, KL {m['kl_divergence']:.3f}"
                       + (", stopped: converged" if m.get("converged") else ""))
    shown = ("every point" if len(thumbs) == len(df)
             else f"{len(thumbs):,} of {len(df):,} points (the page's payload limit)")
    st.caption(" · ".join(figures) + f". Hover a point for its image: {shown}.")
    space = f" --space {c.space}" if c.space != "pixels" else ""
    recompute = (f"python -m explorer map --dataset {c.dataset} --method {c.method} --points {c.n_points}{space}"
                 if c.dataset in D.NAMES else None)  # a visitor's upload or folder has no command line to show
    show_provenance(result.entry, recompute=recompute)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", c.dataset)[:40]
    st.download_button("Download coordinates (CSV)", E.coords_csv(result), file_name=f"{stem}-{c.method}-map.csv",
                       mime="text/csv", key=K + "csv")
    region = (event.selection.get("region") if event and event.selection else None) or {}
    if "x" in region and "y" in region:
        (x0, x1), (y0, y1) = sorted(region["x"]), sorted(region["y"])
        inside = df[(df.x >= x0) & (df.x <= x1) & (df.y >= y0) & (df.y <= y1)]
        counts = inside["class"].value_counts()
        st.markdown(f"**{len(inside):,} points selected:** "
                    + ", ".join(f"{plain(cls)} {n}" for cls, n in counts.items()))
        if len(inside):
            idx = inside["index"].to_numpy()[:MAX_SELECTED]
            scale = max(1, 40 // max(test.input_shape[-1], 1)) if test.is_image else 2
            st.image(G.png(G.grid(test.x[idx], ncols=20 if test.is_image else 6, scale=scale)),
                     caption=f"first {len(idx)} selected" if len(inside) > len(idx) else None)


def _draw_progress(job: Job, cfg: E.MapConfig, labels: np.ndarray, classes: tuple[str, ...]) -> None:
    """Progress with ETA and the embedding as it forms; reruns the page once the map is cached."""
    if job.state is JobState.DONE:
        if E.cached_map(cfg, app_cache()) is not None:
            st.rerun(scope="app")
        st.error("The map finished but could not be read back from the cache; press Compute again.")
        return
    if job.state is JobState.CANCELLED:
        st.info("Stopped. Press Compute to start again.")
        return
    st.progress(job.progress, text=job.message or job.state.value)
    coords = job.snapshot
    if coords is not None and len(coords) == len(labels):
        keep = np.random.default_rng(0).permutation(len(labels))[:MAX_LIVE_POINTS]  # a light live chart
        df = pd.DataFrame({"x": coords[keep, 0], "y": coords[keep, 1], "class": [classes[i] for i in labels[keep]]})
        st.altair_chart(for_lecture(_scatter(df, classes, ["class"]), bool(st.session_state.get(K + "lecture"))),
                        width="stretch")
    if not job.is_final and st.button("Stop", key=K + "stop"):
        job.cancel()


def _maps(train: D.ArrayDataset, test: D.ArrayDataset) -> None:
    """Compute (as a job) or show the cached 2D map of the test set."""
    st.subheader("Map of the test set")
    st.markdown("**What to look for:** no label is used to place the points, yet most classes gather into their "
                "own islands; classes that look alike sit side by side or overlap. Hover a point to see its image.")
    cfg = _map_controls(train, test)
    if cfg is None:
        return
    cache = app_cache()
    result = E.cached_map(cfg, cache)
    first_map = not st.session_state.get(K + "map_seen")  # the map a visitor lands on computes by itself
    st.session_state[K + "map_seen"] = True
    if result is not None:
        _draw_map(result, test)
        return
    if st.button("Compute", key=K + "compute", type="primary") or first_map:
        if R.is_model_ref(cfg.space):  # the menu may be up to a minute old: check the model is still here
            config_or_stop(lambda: R.resolve(cfg.space, test.name, test.input_shape, cache=cache))
        start_job("data_map", E.map_job(cfg, cache), name=f"map {cfg.dataset} {cfg.method}")
        st.session_state[K + "job_cfg"] = cfg
    job = get_job("data_map")
    if job is None or st.session_state.get(K + "job_cfg") != cfg:
        st.info("Press Compute to embed these points with the settings above; every map is cached by its settings.")
        return
    labels = test.y[E.point_index(len(test), cfg.n_points, cfg.seed)].numpy()
    poll_job(job, lambda j: _draw_progress(j, cfg, labels, test.classes), every=1.0)


st.title("Data maps")
lecture_mode(K)
st.caption("How many images each class has, what they look like, and how the classes sit in a 2D map.")
_init_from_url()
if K + "link_error" in st.session_state:
    st.error(plain(st.session_state.pop(K + "link_error")))
choice = st.selectbox("Data set", _menu(), key=K + "dataset", format_func=lambda n: OWN_LABELS.get(n) or D.title(n))
train_set, test_set = _load(_own_data(choice))
_balance(train_set, test_set)
_gallery(train_set)
_maps(train_set, test_set)
