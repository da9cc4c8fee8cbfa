"""DeepSets: permutation-equivariant layers and an invariant readout on set tasks, swept over layers L and width w."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.jobs import Job
from explorer.core.urlstate import Param
from explorer.labs.deep_sets import sets
from explorer.labs.deep_sets.tasks import TASKS
from views.widgets import (app_cache, chart_slots, config_or_stop, for_lecture, get_job, init_from_url, job_key,
                           lecture_mode, lines_with_points, plain, poll_job, show_provenance, split_dash, start_job,
                           stop_job)

K = "ds_"  # widget-key prefix
SLOT = "ds_sweep"
START = sets.SetsConfig()  # the page's default: trains live in about 15 s (or shipped)
LAYER_CHOICES = (1, 2, 3, 4)
WIDTH_CHOICES = (8, 16, 32, 64, 128)
SCHEMA = {"task": Param(str, START.task), "dataset": Param(str, START.dataset),
          "layers": Param(tuple, START.layers, item=int), "widths": Param(tuple, START.widths, item=int),
          "epochs": Param(int, START.epochs), "layer_pool": Param(str, START.layer_pool),
          "readout_pool": Param(str, START.readout_pool), "baseline": Param(bool, START.baseline)}
DATASET_LABELS = {"digits": "Digits (8x8, embedded)", "mnist": "MNIST"}
LOOK_FOR = ("**What to look for:** every model trains on sets of 2-10 elements and is tested on sets of up to 50. "
            "A DeepSet is the same function of every ordering, so it can be applied to any set size; the MLP on the "
            "padded set fits the training sizes but has never seen the positions beyond them.")


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    sets.SetsConfig(**v)


def _as_widget(name: str, value: object) -> object:
    """The layers and widths multiselects take lists, not the URL's tuples."""
    return list(value) if name in ("layers", "widths") else value


def settings_ui() -> sets.SetsConfig:
    """The widgets -> the frozen config (limits checked by the core)."""
    c1, c2, c3 = st.columns(3)
    task = c1.selectbox("Task", list(TASKS), format_func=lambda t: TASKS[t].title, key=K + "task")
    dataset = c2.selectbox("Digit images", list(DATASET_LABELS), format_func=DATASET_LABELS.get, key=K + "dataset",
                           disabled=not TASKS[task].images, help="The image pool of the digit-sum task")
    epochs = c3.number_input("Epochs (at most)", step=5, key=K + "epochs",
                             help=f"1 to 500; early stopping after {START.patience} epochs without a better "
                                  "validation loss")
    c1, c2 = st.columns(2)
    layers = c1.multiselect("Equivariant layers L", LAYER_CHOICES, key=K + "layers")
    widths = c2.multiselect("Width w", WIDTH_CHOICES, key=K + "widths")
    c1, c2, c3 = st.columns(3)
    layer_pool = c1.selectbox("Pool inside the layers", sets.POOLS, key=K + "layer_pool",
                              help="phi(x)_i = relu(Lambda x_i + Gamma pool(x))")
    readout_pool = c2.selectbox("Pool of the readout", sets.POOLS, key=K + "readout_pool",
                                help="rho(pool(phi(x))): a sum can count the elements, a mean cannot")
    baseline = c3.toggle("MLP on the padded set", key=K + "baseline", help="the non-invariant contrast")
    if not layers or not widths:
        st.info("Choose at least one L and one w.")
        st.stop()
    return config_or_stop(lambda: sets.SetsConfig(task=task, dataset=dataset, layers=tuple(layers),
                                                  widths=tuple(widths), epochs=int(epochs), layer_pool=layer_pool,
                                                  readout_pool=readout_pool, baseline=bool(baseline)))


def _vs_params(df: pd.DataFrame, lecture: bool) -> alt.TopLevelMixin:
    """Test MSE against the parameter count (both log), one point per model, coloured by L."""
    chart = alt.Chart(df).mark_point(filled=True, size=120).encode(
        x=alt.X("params:Q", scale=alt.Scale(type="log"), title="parameters (log scale)"),
        y=alt.Y("test MSE:Q", scale=alt.Scale(type="log"), title="test MSE, mean over set sizes (log)"),
        color=alt.Color("L:N", title="L (MLP: none)"), shape=alt.Shape("kind:N", title=None),
        tooltip=["model", alt.Tooltip("params:Q", format=","), alt.Tooltip("test MSE:Q", format=".4g"),
                 "epochs", alt.Tooltip("seconds:Q", format=".1f")],
    ).properties(height=320, title="Test MSE vs number of parameters").interactive()
    return for_lecture(chart, lecture)


def _heatmap(df: pd.DataFrame, lecture: bool) -> alt.TopLevelMixin:
    """An L x w heatmap of the DeepSets' test MSE (log colour)."""
    ds = df[df["kind"] == "deepsets"]
    base = alt.Chart(ds).encode(x=alt.X("w:O", title="width w", axis=alt.Axis(labelAngle=0)), y=alt.Y("L:O", title="layers L"))
    cells = base.mark_rect().encode(color=alt.Color("test MSE:Q", scale=alt.Scale(type="log", scheme="viridis")),
                                    tooltip=["model", alt.Tooltip("test MSE:Q", format=".4g"),
                                             alt.Tooltip("params:Q", format=",")])
    text = base.mark_text(color="white").encode(text=alt.Text("test MSE:Q", format=".3g"))
    return for_lecture(alt.layer(cells, text).properties(height=320, title="Test MSE over L x w"), lecture)


def _vs_size(df: pd.DataFrame, train_max: int, lecture: bool) -> alt.TopLevelMixin:
    """Test MSE against the set size per model (log y), the largest training size marked."""
    lines = lines_with_points(
        df, x=alt.X("size:Q", title="set size at test"),
        y=alt.Y("test MSE:Q", scale=alt.Scale(type="log"), title="test MSE (log)"),
        color=alt.Color("model:N", title=None, legend=alt.Legend(orient="bottom", columns=3)),
        strokeDash=alt.StrokeDash("kind:N", scale=alt.Scale(domain=["deepsets", "mlp", "baseline"],
                                                             range=[[1, 0], [1, 0], [5, 3]]),
                                  legend=alt.Legend(title=None, symbolType="stroke", symbolStrokeColor="#555",
                                                    symbolStrokeWidth=2, symbolSize=300)),
        tooltip=["model", "size", alt.Tooltip("test MSE:Q", format=".4g")])
    rule = alt.Chart(pd.DataFrame({"size": [train_max]})).mark_rule(color="#888", strokeDash=[2, 2]).encode(x="size:Q")
    chart = alt.layer(lines, rule).properties(height=340, title=f"Test error vs set size (training sets: up to "
                                                                f"{train_max} elements, dotted line)")
    return for_lecture(chart.interactive(), lecture)


def _curves(df: pd.DataFrame, lecture: bool) -> alt.TopLevelMixin:
    """Train (solid) and validation (dashed) MSE per epoch, one colour per model."""
    chart = alt.Chart(df).mark_line().encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y("MSE:Q", scale=alt.Scale(type="log")),
        color=alt.Color("model:N", title=None, legend=alt.Legend(orient="bottom", columns=3)),
        strokeDash=split_dash("train", "val"),
        tooltip=["model", "epoch", "split", alt.Tooltip("MSE:Q", format=".4g")],
    ).properties(height=300, title="Training (solid) and validation (dashed) MSE").interactive()
    return for_lecture(chart, lecture)


def draw(m: dict, lecture: bool) -> None:
    """A (finished or live) sweep: charts, the sortable table, the downloads."""
    curves = pd.DataFrame(sets.history_rows(m))
    if curves.empty:
        st.info("Waiting for the first model's first epoch...")
        return
    table = pd.DataFrame(sets.table(m))
    if not table.empty:
        table["kind"] = ["mlp" if r.startswith("MLP") else "deepsets" for r in table["model"]]
        table["L"] = ["MLP" if pd.isna(v) else str(int(v)) for v in table["L"]]
        left, right = chart_slots(lecture)
        left.altair_chart(_vs_params(table, lecture), width="stretch")
        if (table["kind"] == "deepsets").any():
            right.altair_chart(_heatmap(table, lecture), width="stretch")
        st.altair_chart(_vs_size(pd.DataFrame(sets.size_rows(m)), m["train_sizes"][1], lecture), width="stretch")
    st.altair_chart(_curves(curves, lecture), width="stretch")
    if not table.empty:
        b = m["baseline"]
        st.caption(f"Predicting the mean target of each test size scores a test MSE of {b['test_mse']:.4g}. "
                   "Click a column header to sort.")
        st.dataframe(table.drop(columns=["kind"]), hide_index=True, key=K + "table")
        c1, c2 = st.columns(2)
        c1.download_button("Sweep table (CSV)", table.to_csv(index=False), file_name="deep-sets-sweep.csv",
                           mime="text/csv", key=K + "dl_table")
        c2.download_button("Test MSE per set size (CSV)", pd.DataFrame(sets.size_rows(m)).to_csv(index=False),
                           file_name="deep-sets-sizes.csv", mime="text/csv", key=K + "dl_sizes")
    st.caption(f"{m['title']}: {m['n_train']:,} training and {m['n_val']:,} validation sets of "
               f"{m['train_sizes'][0]}-{m['train_sizes'][1]} elements, {m['n_test']:,} test sets of each size "
               f"{', '.join(map(str, m['test_sizes']))}; the weights of the best validation epoch are kept.")


def permutation_panel(cfg: sets.SetsConfig) -> None:
    """The check on screen: shuffle every set's elements and compare the outputs (fresh models, no training)."""
    st.subheader("Permutation check")
    c1, c2 = st.columns(2)
    layers = c1.selectbox("L", cfg.layers, key=K + "check_L")
    width = c2.selectbox("w", cfg.widths, key=K + "check_w")
    r = sets.check(cfg, int(layers), int(width))
    st.markdown(f"Four sets padded to {r['padded_to']} elements, each shuffled by its own random permutation P "
                "(padding moves too; the mask follows it). Freshly initialised models:")
    st.code(f"DeepSet    max |f(Px) - f(x)|        = {r['deepset_diff']:.2e}   (float rounding of a reordered sum)\n"
            f"layer 1    max |phi(Px) - P phi(x)|  = {r['layer_diff']:.2e}   (equivariant: permuted the same way)\n"
            f"MLP        max |g(Px) - g(x)|        = {r['mlp_diff']:.2e}   (not invariant)", language=None)
    st.dataframe(pd.DataFrame(r["rows"]), hide_index=True, key=K + "check_table")


def _train_panel(cfg: sets.SetsConfig, lecture: bool, autostart: bool) -> None:
    """No stored result for cfg: Train (or the default, by itself) starts a background job drawn live; Stop ends it."""
    job = get_job(SLOT)
    mine = job is not None and st.session_state.get(K + "job_cfg") == cfg
    c1, c2 = st.columns([1, 4])
    pressed = c1.button("Train", type="primary", key=K + "train", disabled=mine and not job.is_final)
    if pressed or (autostart and not mine):
        job = start_job(SLOT, sets.job(cfg, app_cache()), name="deep sets sweep",
                        key=job_key(sets.KIND, sets.resolve(cfg)))
        st.session_state[K + "job_cfg"] = cfg
        mine = job is not None
    if mine and not job.is_final and c2.button("Stop", key=K + "stop"):
        stop_job(SLOT)
    if not mine:
        st.info(f"These settings are not computed yet ({len(sets.models_of(cfg))} models): press **Train** to run "
                f"them in the background with live charts. From a terminal: `{sets.cli_command(cfg)}`.")
        return

    def panel(j: Job) -> None:
        st.progress(min(max(j.progress, 0.0), 1.0), text=j.message or j.state.value)
        if j.snapshot is not None:
            draw(j.snapshot, lecture)

    poll_job(job, panel, every=1.0)


# --- page ------------------------------------------------------------------------------------------------

st.title("DeepSets: functions of sets")
lecture = lecture_mode(K)
st.caption("Zaheer et al. (2017): an equivariant layer phi(x)_i = relu(Lambda x_i + Gamma pool(x)) treats every "
           "element alike, and a readout rho(sum_i phi(x)_i) gives the same answer for every ordering of the set. "
           "Padded sets with a mask let sets of different sizes share a batch.")
init_from_url(SCHEMA, K, _validate_link, _as_widget)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
st.markdown(LOOK_FOR)
cfg = settings_ui()
entry = sets.cached(cfg, app_cache())
job = get_job(SLOT)
running = job is not None and not job.is_final and st.session_state.get(K + "job_cfg") == cfg
if entry is not None and not running:
    if entry.metrics.get("notice"):
        st.warning(plain(entry.metrics["notice"]))
    draw(entry.metrics, lecture)
    show_provenance(entry, recompute=entry.meta.get("recompute"))
else:
    _train_panel(cfg, lecture, autostart=cfg == START)
permutation_panel(cfg)
