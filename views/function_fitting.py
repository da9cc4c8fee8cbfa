"""Function fitting: deep-narrow vs shallow-wide networks of equal parameter count, on 1-D functions and images."""

from __future__ import annotations

from typing import Callable

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.config import ConfigError, check_choice
from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.labs.function_fitting import fit1d, images
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, init_from_url, job_key,
                           lecture_mode, lines_with_points, plain, poll_job, show_provenance, split_dash, start_job,
                           stop_job)

K = "ff_"  # widget-key prefix
START = fit1d.FitConfig()  # the page's default: the report's three nets on sinc5, a few seconds on a CPU
IMG = images.ImageConfig()
SCHEMA = {"target": Param(str, START.target), "activation": Param(str, START.activation),
          "epochs": Param(int, START.epochs), "lr": Param(float, START.lr)}
TARGET_LABELS = {k: t.title for k, t in fit1d.TARGETS.items()}
DATASET_LABELS = {"digits": "Digits (8x8, embedded)", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
MAX_DRAWN_EPOCHS = 1000  # loss points drawn per network (a long run is thinned evenly)
LOOK_FOR = ("**What to look for:** the three networks have about the same number of parameters (571, 712, 571). "
            "Within a few hundred epochs the two deep, narrow ones are an order of magnitude below the shallow, "
            "wide 1-190-1 in training loss, and their curves follow sinc's wiggles where the shallow one smooths "
            "them over.")


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    check_choice("target", v["target"], fit1d.TARGETS)
    fit1d.FitConfig(target=v["target"], activation=v["activation"], epochs=v["epochs"], lr=v["lr"])


# --- 1-D tab ---------------------------------------------------------------------------------------------

def _networks_ui() -> tuple[tuple[int, ...], ...]:
    """Presets, typed layer lists and a 'depth d, budget P' network -> the hidden widths of each network."""
    chosen = st.multiselect("Networks from the report", list(fit1d.PRESETS), default=list(fit1d.PRESETS),
                            key=K + "presets")
    c1, c2, c3 = st.columns([2, 1, 1])
    typed = c1.text_input("More networks (layer lists, separated by ';')", value="", key=K + "layers",
                          placeholder="e.g. 1-20-20-1; 1-50-1")
    depth = c2.number_input("Depth d (0: none)", min_value=0, max_value=fit1d.MAX_HIDDEN_LAYERS, value=0, step=1,
                            key=K + "depth", help="adds d equal hidden layers whose parameter count is closest to P")
    budget = c3.number_input("Parameter budget P", min_value=4, max_value=fit1d.MAX_PARAMS, value=571, step=10,
                             key=K + "budget")
    models = [fit1d.PRESETS[n] for n in chosen]
    models += config_or_stop(lambda: [fit1d.parse_layers(t) for t in typed.split(";") if t.strip()])
    if depth:
        hidden, n = config_or_stop(lambda: fit1d.budget_widths(int(depth), int(budget)))
        models.append(hidden)
        c1.caption(f"Depth {int(depth)}, budget {int(budget):,}: width {hidden[0]} gives {n:,} parameters "
                   f"({fit1d.layer_list(hidden)}).")
    return tuple(models)


def fit_ui() -> fit1d.FitConfig:
    """The 1-D tab's widgets -> its frozen config (limits checked by the core)."""
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    target = c1.selectbox("Target", list(TARGET_LABELS), format_func=TARGET_LABELS.get, key=K + "target")
    activation = c2.selectbox("Activation", list(fit1d.ACTIVATIONS), key=K + "activation")
    epochs = c3.number_input("Epochs", step=100, key=K + "epochs", help="1 to 50,000")
    lr = c4.number_input("Learning rate", format="%.4g", key=K + "lr", help="Adam's step size")
    models = _networks_ui()
    with st.expander("Data and minibatches"):
        c1, c2, c3 = st.columns(3)
        n_train = c1.number_input("Training points", value=START.n_train, step=50, key=K + "n_train",
                                  help="evenly spaced over the interval")
        batch = c2.number_input("Batch size (0: full batch)", value=START.batch_size, step=16, key=K + "batch")
        seed = c3.number_input("Seed", value=START.seed, step=1, key=K + "seed",
                               help="initial weights and minibatch order")
    if not models:
        st.info("Choose at least one network.")
        st.stop()
    return config_or_stop(lambda: fit1d.FitConfig(
        target=target, n_train=int(n_train), models=models, activation=activation, epochs=int(epochs),
        lr=float(lr), batch_size=int(batch), seed=int(seed)))


def _params_table(cfg: fit1d.FitConfig) -> pd.DataFrame:
    return pd.DataFrame([{"network": fit1d.layer_list(h), "hidden layers": len(h), "parameters": fit1d.num_params(h)}
                         for h in cfg.models])


def _loss_frame(h: dict) -> pd.DataFrame:
    """Long table epoch, network, loss; a long run thinned to MAX_DRAWN_EPOCHS points per network."""
    epochs = h["epoch"]
    stride = max(1, len(epochs) // MAX_DRAWN_EPOCHS)
    keep = list(range(0, len(epochs), stride))
    if keep and keep[-1] != len(epochs) - 1:
        keep.append(len(epochs) - 1)
    return pd.DataFrame([{"epoch": epochs[j], "network": name, "train MSE": h["loss"][i][j]}
                         for i, name in enumerate(h["names"]) for j in keep if j < len(h["loss"][i])])


def _curve_frame(h: dict, data: fit1d.FitData) -> pd.DataFrame:
    """Long table x, curve, y: the target and each network's prediction on the grid."""
    gx = data.grid_x.squeeze(1).tolist()
    rows = [{"x": x, "curve": "target", "y": y} for x, y in zip(gx, data.grid_y.squeeze(1).tolist())]
    for name, pred in zip(h["names"], h["curves"] or []):
        rows += [{"x": x, "curve": name, "y": y} for x, y in zip(gx, pred)]
    return pd.DataFrame(rows)


def _charts(h: dict, data: fit1d.FitData, lecture: bool) -> tuple[alt.TopLevelMixin, alt.TopLevelMixin]:
    """The log-scale loss curves and the predicted curves over the target and the training points."""
    names = list(h["names"])
    color = alt.Color("network:N", scale=alt.Scale(scheme="tableau10"), sort=names,
                      legend=alt.Legend(orient="bottom", columns=1, title=None, labelLimit=0))
    loss = alt.Chart(_loss_frame(h)).mark_line().encode(
        x=alt.X("epoch:Q"), y=alt.Y("train MSE:Q", scale=alt.Scale(type="log")), color=color,
        tooltip=["network", "epoch", alt.Tooltip("train MSE:Q", format=".3e")]).properties(
        height=300 + 20 * len(names), title="Training loss (log scale)")
    curves = _curve_frame(h, data)
    domain = ["target", *names]
    palette = ["#000000", *["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b"][:len(names)]]
    pred = alt.Chart(curves).mark_line().encode(
        x="x:Q", y=alt.Y("y:Q", title="f(x)"),
        color=alt.Color("curve:N", scale=alt.Scale(domain=domain, range=palette), sort=domain,
                        legend=alt.Legend(orient="bottom", columns=1, title=None, labelLimit=0)),
        strokeDash=alt.condition(alt.datum.curve == "target", alt.value([4, 3]), alt.value([1, 0])),
        tooltip=["curve", alt.Tooltip("x:Q", format=".3f"), alt.Tooltip("y:Q", format=".4f")])
    pts = pd.DataFrame({"x": data.x.squeeze(1).tolist(), "y": data.y.squeeze(1).tolist()})
    points = alt.Chart(pts).mark_circle(size=14, color="grey", opacity=0.6).encode(
        x="x:Q", y="y:Q", tooltip=[alt.Tooltip("x:Q", format=".3f"), alt.Tooltip("y:Q", format=".4f")])
    epoch = h.get("curves_epoch")
    title = f"Predictions after epoch {epoch:,}" if epoch else "Predictions"
    fit = (points + pred).properties(height=300 + 20 * len(domain), title=title)
    return for_lecture(loss, lecture), for_lecture(fit, lecture)


def _draw_finished(h: dict, data: fit1d.FitData, status: str, lecture: bool) -> None:
    """A finished fit's status line and its two charts."""
    st.markdown(status)
    loss, fit = _charts(h, data, lecture)
    left, right = chart_slots(lecture)
    left.altair_chart(loss, width="stretch")
    right.altair_chart(fit, width="stretch")


def _summary(h: dict) -> str:
    """'Final training MSE: ...' with the ratio of the worst to the best."""
    finals = [row[-1] for row in h["loss"] if row]
    if not finals:
        return ""
    parts = [f"{name}: {v:.2e}" for name, v in zip(h["names"], finals)]
    best, worst = min(finals), max(finals)
    ratio = f" The worst is {worst / best:,.0f}x the best." if best > 0 and worst / best >= 2 else ""
    return f"Training MSE after epoch {h['epoch'][-1]:,}: " + "; ".join(parts) + "." + ratio


def _downloads(h: dict, data: fit1d.FitData) -> None:
    c1, c2 = st.columns(2)
    c1.download_button("Loss curves (CSV)", _loss_frame(h).to_csv(index=False), file_name="function-fitting-loss.csv",
                       mime="text/csv", key=K + "dl_loss")
    c2.download_button("Predicted curves (CSV)", _curve_frame(h, data).to_csv(index=False),
                       file_name="function-fitting-curves.csv", mime="text/csv", key=K + "dl_curves")


def _final(h: dict, data: fit1d.FitData) -> None:
    """What comes under a finished fit: the numbers and the downloads."""
    st.success(_summary(h))
    if h.get("grid_mse"):
        st.dataframe(pd.DataFrame({"network": h["names"], "parameters": h["params"],
                                   "final train MSE": [row[-1] for row in h["loss"]],
                                   "MSE vs target on the grid": h["grid_mse"]}), hide_index=True, key=K + "final")
    _downloads(h, data)


def fit_tab(lecture: bool) -> None:
    st.markdown(LOOK_FOR)
    st.caption("Adam on the mean squared error, every network from the same seed. With ReLU the narrow deep "
               "net often dies (its output stays constant): that is a real failure mode of thin layers, not a "
               "bug; change the seed to see it recover.")
    cfg = fit_ui()
    st.dataframe(_params_table(cfg), hide_index=True, key=K + "params")
    data = fit1d.make_data(cfg)
    entry = fit1d.cached(cfg, app_cache())
    if entry is not None:
        h = fit1d.from_entry(entry).to_dict()
        _draw_finished(h, data, f"**Finished**: {cfg.epochs:,} epochs (from the cache).", lecture)
        _final(h, data)
        show_provenance(entry)
        return
    # Every run trains on the shared job runner (admission, fair slots, a closed tab's job released), never in the
    # page's own script run; a small one starts by itself, a long one waits for Train.
    _fit_job(cfg, data, lecture, autostart=fit1d.work(cfg) <= fit1d.INLINE_WORK)


def _train_stop(slot: str, wkey: str, label: str, cfg, make: Callable[[], Callable], name: str, kind: str,
                disabled: bool | None = None, autostart: bool = False) -> tuple[Job | None, bool]:
    """A Train button (or a start on its own) and, while the job runs, Stop, for the job in `slot` training `cfg`;
    returns (job, mine), mine when that job is this config's. Widget keys start K + wkey. `disabled` None: disabled while this config runs."""
    job = get_job(slot)
    mine = job is not None and st.session_state.get(K + wkey + "_cfg") == cfg
    c1, c2 = st.columns([1, 4])
    pressed = c1.button(label, type="primary", key=K + wkey + "_train",
                        disabled=(mine and not job.is_final) if disabled is None else disabled)
    if pressed or (autostart and not mine):
        job = start_job(slot, make(), name=name, key=job_key(kind, cfg))
        st.session_state[K + wkey + "_cfg"] = cfg
        mine = job is not None
    if mine and not job.is_final and c2.button("Stop", key=K + wkey + "_stop"):
        stop_job(slot)
    return job, mine


def _fit_job(cfg: fit1d.FitConfig, data: fit1d.FitData, lecture: bool, autostart: bool) -> None:
    """The 1-D fit as a background job drawn as it goes: started on its own when small, by Train when long."""
    job, mine = _train_stop("ff_fit", "fit", "Train", cfg, lambda: fit1d.job(cfg, app_cache()), "function fitting 1-D",
                            fit1d.KIND, autostart=autostart)
    if not mine:
        st.info(f"These settings take {fit1d.work(cfg):,} parameter-steps, more than the page trains at once "
                f"({fit1d.INLINE_WORK:,}): press **Train** to run them in the background with live curves.")
        return

    def draw(j: Job) -> None:
        st.progress(j.progress, text=j.message or j.state.value)
        if j.snapshot is not None and j.snapshot["epoch"]:
            h = j.snapshot
            loss, fit = _charts(h, data, lecture)
            left, right = chart_slots(lecture)
            left.altair_chart(loss, width="stretch")
            right.altair_chart(fit, width="stretch")
            if j.is_final:
                st.success(_summary(h))

    poll_job(job, draw, every=0.5)


# --- image tab -------------------------------------------------------------------------------------------

def image_ui() -> images.ImageConfig:
    c1, c2, c3, c4, c5 = st.columns(5)
    dataset = c1.selectbox("Data set", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "img_dataset")
    epochs = c2.number_input("Epochs", value=IMG.epochs, step=1, key=K + "img_epochs")
    n_train = c3.number_input("Training images", value=IMG.n_train, step=500, key=K + "img_n_train")
    lr = c4.number_input("Learning rate", value=IMG.lr, format="%.4g", key=K + "img_lr")
    batch = c5.number_input("Batch size", value=IMG.batch_size, step=16, key=K + "img_batch")
    return config_or_stop(lambda: images.ImageConfig(dataset=dataset, epochs=int(epochs), n_train=int(n_train),
                                                      lr=float(lr), batch_size=int(batch)))


def draw_images(m: dict, lecture: bool) -> None:
    rows = []
    for name, h in m["history"].items():
        for i, e in enumerate(h["epoch"]):
            for split in ("train", "test"):
                rows.append({"epoch": e, "model": f"{name} ({m['params'][name]:,} params)", "split": split,
                             "accuracy": h[f"{split}_acc"][i], "loss": h[f"{split}_loss"][i]})
    if not rows:
        st.info("Waiting for the first epoch...")
        return
    df = pd.DataFrame(rows)
    c1, c2 = chart_slots(lecture)
    for slot, y in ((c1, "accuracy"), (c2, "loss")):
        chart = lines_with_points(
            df, x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y(f"{y}:Q"),
            color=alt.Color("model:N", legend=alt.Legend(orient="bottom", columns=1, title=None, labelLimit=0)),
            strokeDash=split_dash("train", "test"),
            tooltip=["model", "split", "epoch", alt.Tooltip(f"{y}:Q", format=".4f")]).properties(height=340)
        slot.altair_chart(for_lecture(chart, lecture), width="stretch")
    table = pd.DataFrame(images.table(m))
    st.dataframe(table, hide_index=True, key=K + "img_table")
    st.download_button("Per-epoch metrics (CSV)", table.to_csv(index=False), file_name="shallow-vs-deep-cnn.csv",
                       mime="text/csv", key=K + "img_dl")
    st.caption(f"Both networks: {m['params']['shallow']:,} and {m['params']['deep']:,} parameters; data set "
               f"{m['dataset']}, {m['n_train']:,} training and {m['n_test']:,} test images of shape "
               f"{tuple(m['image_shape'])}. Solid: training (mean over the epoch's minibatches); dashed: test.")


def image_tab(lecture: bool) -> None:
    st.markdown("**What to look for:** two CNNs with exactly the same number of parameters (112,970): two wide "
                "convolutions against six narrow ones with pooling. The deep one usually reaches a higher test "
                "accuracy in the same epochs.")
    st.caption("Shallow: conv3x3(1→96)-ReLU-conv3x3(96→128)-ReLU-global average pool-FC(128→10). Deep: six 3x3 "
               "convs of 40, 16, 64, 56, 64, 56 channels with a 2x2 max-pool after the 2nd and 4th, global average "
               "pool, FC(56→10). Every layer has a bias.")
    cfg = image_ui()
    entry = app_cache().get(images.KIND, cfg)
    job, mine = _train_stop("ff_cnn", "img", "Train both", cfg, lambda: images.job(cfg, app_cache()), "shallow vs deep CNN",
                            images.KIND, disabled=entry is not None)
    if entry is not None and (not mine or job.is_final):
        if entry.metrics.get("notice"):
            st.warning(plain(entry.metrics["notice"]))
        draw_images(entry.metrics, lecture)
        show_provenance(entry, recompute=entry.meta.get("recompute"))
    elif mine:
        def draw(j: Job) -> None:
            st.progress(j.progress, text=j.message or j.state.value)
            if j.snapshot is not None:
                draw_images(j.snapshot, lecture)
        poll_job(job, draw, every=0.5)
    else:
        st.info(f"Press **Train both**: the two CNNs train in the background, one epoch each in turn, with live "
                f"curves. From a terminal: `{images.cli_command(cfg)}`.")


# --- page ------------------------------------------------------------------------------------------------

st.title("Function fitting: depth vs width")
lecture = lecture_mode(K)
st.caption("Networks with the same number of parameters, arranged deep and narrow or shallow and wide, fitting "
           "the same function: depth buys far more than width.")
init_from_url(SCHEMA, K, _validate_link)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
tab1, tab2 = st.tabs(["1D functions", "Images: shallow vs deep CNN"])
with tab2:  # drawn first: the 1-D tab's live training holds the script run until it ends
    image_tab(lecture)
with tab1:
    try:
        fit_tab(lecture)
    except ConfigError as exc:
        st.error("Setting refused: " + plain(exc))
