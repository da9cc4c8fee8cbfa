"""Decision boundaries: a TensorFlow-Playground-style live view of a small MLP learning a 2D data set."""

from __future__ import annotations

import dataclasses
import random
import time
from urllib.parse import urlencode

import streamlit as st

from explorer.core.config import ConfigError
from explorer.core.jobs import JobState
from explorer.core.urlstate import Param, encode_params
from explorer.data.toy2d import DOMAIN, GENERATORS, INPUT_FEATURES, UPLOAD, parse_points_csv, task_of
from explorer.labs.boundaries.run import SPEEDS, PlaygroundRun, Snapshot, build_config, describe
from explorer.nets.mlp import ACTIVATIONS, MAX_LAYERS, MAX_WIDTH
from explorer.render.png import boundary_png, curves_png, data_uri, network_svg
from explorer.train.single_mlp import LOSSES, OPTIMIZER_KINDS
from views.widgets import (app_cache, config_or_stop, get_job, plain, queue_text, resume_job, settings_from_url,
                           show_busy, start_job)

LRS = (0.00001, 0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
# URL names (in shared links): "features" is the input-features group and setting
GROUPS = ("data", "features", "network", "training", "views")
SCHEMA = {
    "dataset": Param(str, "spiral"), "noise": Param(int, 0), "ratio": Param(int, 50), "points": Param(int, 500),
    "dseed": Param(int, 0), "features": Param(tuple, ("x1", "x2")), "hidden": Param(tuple, (8, 8, 8), int),
    "act": Param(str, "tanh"), "bn": Param(bool, False), "dropout": Param(float, 0.0), "reg": Param(str, "none"),
    "rate": Param(float, 0.0), "loss": Param(str, "cross_entropy"), "opt": Param(str, "adam"),
    "lr": Param(float, 0.01), "batch": Param(int, 10), "seed": Param(int, 0), "epochs": Param(int, 1000),
    "speed": Param(int, 30), "test": Param(bool, True), "discrete": Param(bool, False),
    "lecture": Param(bool, False), "hide": Param(tuple, ()),
}
K = "pg_"  # widget-key prefix
# A live loop pushes frames into elements it drew once; it ends after LIVE_LOOP_S (so a script run is bounded
# and elements left stale by a widget change are cleared within it) and the fragment's timer starts the next,
# which replaces each element in place: nothing is removed, nothing blinks.
LIVE_LOOP_S = 1.0
FRAME_S = 0.02  # how often the loop looks for a new snapshot
QUEUED_S = 0.25  # how often it looks while the run waits in the queue (the note changes slowly)
FULL_EVERY_S = 0.25  # the curves: at most 4 redraws per second (the boundary: every snapshot)
NETWORK_EVERY_S = 1.0  # the network graph, an SVG the browser parses as HTML (the costliest element to redraw)
BOUNDARY_CAPTION = "Output of the network over the input plane; points: train (white rim), test (black rim)"
CURVES_CAPTION = "Loss curves: train and test loss per epoch"


def _settings_to_config(v: dict, upload=None, upload_sha: str = ""):
    return build_config(dataset=v["dataset"], noise=v["noise"], train_ratio=v["ratio"], n_points=v["points"],
                        data_seed=v["dseed"], input_features=tuple(v["features"]), hidden=tuple(v["hidden"]),
                        activation=v["act"], batch_norm=v["bn"], dropout=v["dropout"], regularization=v["reg"],
                        reg_rate=v["rate"], loss=v["loss"], optimizer=v["opt"], lr=v["lr"], batch_size=v["batch"],
                        seed=v["seed"], epochs=v["epochs"], upload=upload, upload_sha=upload_sha)


def _init_from_url() -> None:
    """First run of a session: settings from the URL, validated on the server; refused ones get a message."""
    def validate(v: dict) -> None:
        if v["dataset"] != UPLOAD:
            _settings_to_config(v)
        if v["speed"] not in SPEEDS or any(g not in GROUPS for g in v["hide"]):
            raise ConfigError(f"speed must be one of {SPEEDS} and hide a list of {', '.join(GROUPS)}")

    values = settings_from_url(SCHEMA, K, validate)
    for name, val in values.items():
        if name == "hidden":
            st.session_state[K + "layers"] = len(val)
            for i, w in enumerate(val):
                st.session_state[f"{K}w{i}"] = w
        else:
            st.session_state[K + name] = list(val) if isinstance(val, tuple) else val
    if values["lr"] not in LRS:
        st.session_state[K + "extra_lr"] = values["lr"]


def _keep_widget_state() -> None:
    """Widgets hidden in lecture mode keep their values (Streamlit drops the state of unrendered widgets)."""
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(K) and not key.startswith((K + "btn", K + "upload")):
            st.session_state[key] = st.session_state[key]


def _reinit() -> None:
    st.session_state[K + "seed"] = random.randrange(1, 100_000)


def _controls(hide: set[str]) -> tuple[dict, object, str]:
    """Draw the control panels (skipping hidden groups) and return the settings dict."""
    s = st.session_state
    upload, upload_sha = None, ""
    c_data, c_net, c_train = st.columns([1, 1.3, 1])
    with c_data:
        if "data" not in hide:
            st.markdown("**Data**")
            st.selectbox("Data set", [*GENERATORS, UPLOAD], key=K + "dataset")
            st.slider("Noise (%)", 0, 50, key=K + "noise")
            st.slider("Training data (%)", 10, 90, key=K + "ratio")
            st.select_slider("Points", [100, 200, 500, 1000, 2000], key=K + "points")
            st.number_input("Data seed", 0, 2**31 - 1, key=K + "dseed")
        if s[K + "dataset"] == UPLOAD:
            f = st.file_uploader("Your points: CSV with x1, x2, label", type=["csv"], key=K + "upload")
            if f is None:
                st.info("Upload a CSV with columns x1, x2, label: up to 10 distinct whole-number labels are classes; "
                        "labels written with a decimal point (1.5, 2.0) are a regression target.")
                st.stop()
            upload, upload_sha = config_or_stop(lambda: parse_points_csv(f.getvalue()))
            st.caption("Understood: " + plain(upload.summary))
        if "features" not in hide:
            # a multiselect, not pills: seven pills overflow a narrow column at 1280 px and clip
            st.multiselect("Input features", list(INPUT_FEATURES), key=K + "features")
    with c_net:
        if "network" not in hide:
            st.markdown("**Network**")
            st.slider("Hidden layers", 0, MAX_LAYERS, key=K + "layers")
            n = s[K + "layers"]
            wcols = st.columns(4) if n else []
            for i in range(n):
                s.setdefault(f"{K}w{i}", 4)
                wcols[i % 4].number_input(f"Layer {i + 1}", 1, MAX_WIDTH, key=f"{K}w{i}")
            a, b = st.columns(2)
            a.selectbox("Activation", list(ACTIVATIONS), key=K + "act")
            b.slider("Dropout", 0.0, 0.9, step=0.05, key=K + "dropout")
            st.checkbox("Batch norm", key=K + "bn")
    with c_train:
        if "training" not in hide:
            st.markdown("**Training**")
            lrs = sorted(set(LRS) | ({s[K + "extra_lr"]} if K + "extra_lr" in s else set()))
            st.select_slider("Learning rate", lrs, key=K + "lr", help="Changes take effect at once, mid-run.")
            a, b = st.columns(2)
            a.selectbox("Optimizer", list(OPTIMIZER_KINDS), key=K + "opt")
            b.number_input("Batch size", 1, 100_000, key=K + "batch", help="Larger than the training set: full batch.")
            a.selectbox("Regularization", ["none", "L1", "L2"], key=K + "reg")
            b.select_slider("Rate", [0.0, 0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], key=K + "rate")
            a.selectbox("Loss", list(LOSSES), key=K + "loss", disabled=task_of(s[K + "dataset"]) == "regression")
            b.number_input("Stop at epoch", 1, 100_000, key=K + "epochs")
            st.number_input("Weight seed", 0, 2**31 - 1, key=K + "seed")
    values = {name: s[K + name] for name in SCHEMA if name != "hidden"}
    values["hidden"] = tuple(int(s[f"{K}w{i}"]) for i in range(s[K + "layers"]))
    values["features"] = tuple(f for f in INPUT_FEATURES if f in s[K + "features"])
    values["hide"] = tuple(s[K + "hide"])
    if upload is not None:
        values["points"] = len(upload.x)
    return values, upload, upload_sha


def _sidebar(values: dict) -> None:
    with st.sidebar:
        st.markdown("**Share and present**")
        st.toggle("Lecture mode", key=K + "lecture", help="Hide the control groups chosen below.")
        st.multiselect("Hide in lecture mode", GROUPS, key=K + "hide")
        if st.button("Copy link", key=K + "btn_link"):
            query = urlencode(encode_params(SCHEMA, values))
            base = (st.context.url or "").split("?")[0]
            st.code(f"{base}?{query}" if query else base, language=None)
            st.caption("The link reopens this page with these settings (the copy icon is at the right).")


def _frame(snap: Snapshot, run: PlaygroundRun, show_test: bool, discrete: bool, lecture: bool,
           full: bool, network: bool) -> dict:
    """One frame's content: the stats line and the boundary always; the curves when `full`, the network graph
    when `network`. Images go as data URIs: a media file could be deleted by the server (superseded by a newer
    frame) before a busy browser fetched it, and the image would vanish for a frame."""
    acc = snap.last("test_acc")
    line = (f"**Epoch {snap.epoch:,}** · step {snap.steps:,} · lr {snap.lr:g} · "
            f"train loss {snap.last('train_loss') or 0:.3f} · test loss {snap.last('test_loss') or 0:.3f}")
    if acc is not None:
        line += f" · test accuracy {acc:.1%}"
    split = run.split
    # lecture mode: drawn at about the size shown at 1920 px, so the 17 px fonts stay 17 px on the screen
    font, size = (17, 540) if lecture else (13, 300)
    boundary = boundary_png(snap.field, task=split.task, extent=DOMAIN, discretize=discrete, size=size,
                            train=(split.raw_train, split.y_train.cpu().numpy()),
                            test=(split.raw_test, split.y_test.cpu().numpy()) if show_test else None,
                            axes=True, font_px=font)
    frame = {"line": line, "stats": line + f" · *{snap.status}*", "boundary": data_uri(boundary)}
    if full:
        h = snap.history
        w, hgt = (720, 560) if lecture else (480, 330)
        frame["curves"] = data_uri(curves_png({"train loss": (h["epoch"], h["train_loss"]),
                                               "test loss": (h["epoch"], h["test_loss"])}, width=w, height=hgt,
                                              font_px=font))
    if network:
        frame["network"] = network_svg(snap.inputs, snap.neurons, snap.weights, snap.field,
                                       tile=56 if lecture else 40, width=1100 if lecture else 760, font_px=font)
    return frame


def _draw(frame: dict, slots: dict | None, lecture: bool) -> dict:
    """Draw a frame: the first time as new elements (returned as slots), then into those same elements."""
    width = "stretch" if lecture else "content"
    if slots is None:
        slots = {"stats": st.markdown(frame["stats"])}
        left, right = st.columns([1, 1] if lecture else [1, 1.25])
        slots["boundary"] = left.image(frame["boundary"], caption=BOUNDARY_CAPTION, width=width)
        slots["curves"] = right.image(frame["curves"], caption=CURVES_CAPTION, width=width)
        with st.expander("The network: what each neuron computes over the plane, and its weights", expanded=True):
            # markdown with HTML, not st.html: st.html's sanitiser drops inline SVG (the SVG holds no user text)
            slots["network"] = st.markdown(frame["network"], unsafe_allow_html=True)
            st.caption("Inputs on the left, the output on the right (up to 12 neurons per layer shown); each line is "
                       "a weight, blue positive, orange negative, thicker when larger; hover a line to read it.")
        slots["message"] = st.empty()
        return slots
    slots["stats"].markdown(frame["stats"])
    slots["boundary"].image(frame["boundary"], caption=BOUNDARY_CAPTION, width=width)
    if "curves" in frame:
        slots["curves"].image(frame["curves"], caption=CURVES_CAPTION, width=width)
    if "network" in frame:
        slots["network"].markdown(frame["network"], unsafe_allow_html=True)
    return slots


def _job_for(run: PlaygroundRun):
    """The session's job for this run; a new paused one, continuing the run where it stopped, when the runner reaped
    the old one (nobody polled it for its orphan timeout: an idle paused tab polls nothing) or forgot it."""
    job = get_job("playground")
    if job is None or (job.state is JobState.CANCELLED and not run.finished):
        run.restart()
        job = start_job("playground", run.job, name="playground", start_paused=True)
    return job


def _control(step: bool = False) -> None:
    """Play (or Step)'s callback: the run's job resumes (or trains one epoch); a full queue leaves the busy
    message for the page and the run stays paused."""
    run = st.session_state.get(K + "run")
    if run is None:
        return
    job = _job_for(run)
    if step:
        st.session_state[K + "await"] = job.version  # the panel waits for the stepped epoch
    resume_job("playground", step=step)


def page() -> None:
    st.title("Decision boundaries")
    st.caption("Train a small network on a 2D data set and watch its decision boundary form, epoch by epoch. "
               "What to look for: press Play; within seconds the background (the network's output) bends to separate "
               "the two classes (the default spiral's two arms), and each neuron's thumbnail in the network below "
               "shows the piece of the boundary it contributes.")
    if K + "init" not in st.session_state:
        st.session_state[K + "init"] = True
        _init_from_url()
    _keep_widget_state()
    if err := st.session_state.pop(K + "link_error", None):
        st.error(plain(err))
    s = st.session_state
    hide = set(s[K + "hide"]) if s[K + "lecture"] else set()
    bar = st.container()
    values, upload, upload_sha = _controls(hide)
    cfg = config_or_stop(lambda: _settings_to_config(values, upload, upload_sha))
    link = encode_params(SCHEMA, values)
    if link != st.query_params.to_dict():
        st.query_params.from_dict(link)
    _sidebar(values)

    run: PlaygroundRun | None = s.get(K + "run")
    run_key = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=1.0))  # lr changes live
    if run is None or s.get(K + "run_key") != run_key or s.pop(K + "reset", False):
        use_cache = not s.pop(K + "no_cache", False)
        run = config_or_stop(lambda: PlaygroundRun(cfg, upload, cache=app_cache(), use_cache=use_cache))  # bad data
        s[K + "run"], s[K + "run_key"] = run, run_key
        job = start_job("playground", run.job, name="playground", start_paused=True)
    else:
        job = _job_for(run)
        if cfg.train.lr != run.trainer.lr:
            run.set_lr(cfg.train.lr)
    run.set_speed(float(s[K + "speed"]))

    with bar:
        b = st.columns([1, 1, 1, 1, 1.4, 2.2])
        active = not job.pause_requested and not job.is_final
        # both buttons always drawn (one disabled): swapping one for the other would leave the old one stale
        # beside the new one until the script run ends, and the controls would jump
        b[0].button("Play", key=K + "btn_play", icon=":material/play_arrow:", on_click=_control,
                    use_container_width=True, disabled=run.finished or active, type="primary")
        b[1].button("Pause", key=K + "btn_pause", icon=":material/pause:", on_click=job.pause,
                    use_container_width=True, disabled=not active)
        b[2].button("Step", key=K + "btn_step", on_click=_control, args=(True,), disabled=run.finished or active,
                    use_container_width=True, help="Train one epoch.")
        b[3].button("Reset", key=K + "btn_reset", use_container_width=True,
                    on_click=lambda: s.update({K + "reset": True, K + "no_cache": True}),
                    help="Back to the same initial weights, so a rerun is comparable.")
        b[4].button("Re-initialise", key=K + "btn_reinit", on_click=_reinit, use_container_width=True,
                    help="New random initial weights (a new weight seed).")
        b[5].select_slider("Speed", list(SPEEDS), key=K + "speed", label_visibility="collapsed",
                           format_func=lambda v: "max speed" if v == 0 else f"{v} epochs/s",
                           help="Pace of training, so a lecture hall can follow; results do not depend on it.")
        show_busy("playground")
    if "views" not in hide:
        v = st.columns(4)
        v[0].toggle("Show test points", key=K + "test")
        v[1].toggle("Discretize output", key=K + "discrete")
    st.text(describe(cfg))
    if run.from_cache:
        meta = run.cache_meta
        st.info(f"Finished run loaded from the cache (computed {meta.get('created', '?')} on "
                f"{meta.get('device', '?')}, code {meta.get('code_version', '?')}). Press Reset to watch it train.")
    _live(job, run, bool(s[K + "test"]), bool(s[K + "discrete"]), bool(s[K + "lecture"]))


def _live(job, run: PlaygroundRun, show_test: bool, discrete: bool, lecture: bool) -> None:
    """Draw the live view at once, then push each new snapshot into the same elements while training.

    The first frame is the job's newest snapshot, or the run's start state when the job has published none yet
    (it may wait for a compute slot): the page never waits to draw. Only while training (or waiting in the queue
    to train) does the fragment rerun (every LIVE_LOOP_S, a new loop); paused, stepped or finished, it draws what
    changed and stops, so nothing is redrawn, and nothing costs the server, while nothing changes. While the run
    waits in the queue, the stats line says where: "Waiting for a compute slot: position N of M, about T".
    """
    training = not job.pause_requested and not job.is_final

    @st.fragment(run_every=LIVE_LOOP_S if training else None)
    def panel() -> None:
        job.touch()
        deadline = time.monotonic() + LIVE_LOOP_S
        awaited = st.session_state.pop(K + "await", None)  # after Step: wait for the stepped epoch
        seen = job.version
        snap = job.snapshot or run.start_state
        memo = st.session_state.get(K + "frame")  # the last first frame: unchanged while paused or queued
        options = (show_test, discrete, lecture)
        if memo is not None and memo[0] is snap and memo[1] == options:
            frame = dict(memo[2])
        else:
            frame = _frame(snap, run, show_test, discrete, lecture, True, True)
            st.session_state[K + "frame"] = (snap, options, dict(frame))
        note = queue_text(job)
        if note is not None:
            frame["stats"] = frame["line"] + f" · *{note}*"
        slots = _draw(frame, None, lecture)
        last_full = last_network = time.monotonic()
        while time.monotonic() < deadline:
            job.touch()
            state = job.state
            busy = state in (JobState.RUNNING, JobState.QUEUED, JobState.SLEEPING)
            if job.version != seen and job.snapshot is not None:
                seen, snap = job.version, job.snapshot
                now = time.monotonic()
                full = now - last_full >= FULL_EVERY_S or not busy
                network = now - last_network >= NETWORK_EVERY_S or not busy
                frame = _frame(snap, run, show_test, discrete, lecture, full, network)
                _draw(frame, slots, lecture)
                note = None
                last_full = now if full else last_full
                last_network = now if network else last_network
                continue  # a frame took a while: look for the next at once
            if not busy and seen != awaited:
                break
            if state is JobState.QUEUED:
                if (text := queue_text(job)) != note:
                    note = text
                    slots["stats"].markdown(frame["line"] + f" · *{note or snap.status}*")
                time.sleep(QUEUED_S)
                continue
            time.sleep(FRAME_S)
        if snap.status == "diverged":
            slots["message"].error(plain(snap.message))
        if job.state is JobState.FAILED:
            slots["message"].error("The run failed: " + plain(job.error))
        if training and job.is_final:
            st.rerun()  # finished on its own: redraw the buttons (Play disabled) and stop the fragment's timer

    panel()

page()
