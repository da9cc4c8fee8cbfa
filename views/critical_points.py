"""The minimal ratio at near-zero gradient: where K tiny nets stop when driven to a critical point, and what kind of
point it is."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from explorer.core.config import ConfigError
from explorer.core.urlstate import Param
from explorer.labs.critical_points import lab
from views.widgets import (app_cache, cached_or_job, chart_slots, config_or_stop, for_lecture, init_from_url,
                           lecture_mode, plain, show_provenance)

K = "cp_"  # widget-key prefix
START = lab.CriticalConfig()
SCHEMA = {"target": Param(str, START.target), "hidden": Param(int, START.hidden), "runs": Param(int, START.runs),
          "steps_loss": Param(int, START.steps_loss), "steps_grad": Param(int, START.steps_grad),
          "lm_steps": Param(int, START.lm_steps), "zero_tol": Param(float, START.zero_tol),
          "seed": Param(int, START.seed)}
TARGET_LABELS = {k: t[0] for k, t in lab.TARGETS.items()}
LOOK_FOR = ("**What to look for:** every dot is one run stopped where its gradient is small (the norm reached is "
            "drawn beside it): where the search for a critical point stopped, at a critical point or at a "
            "gradient-flat point (the summary below says which). The lower its loss, the larger its minimal ratio, "
            "the share of directions of positive curvature: high-loss points are saddles with many downhill "
            "directions, low-loss ones are closer to minima. A strict minimum would have 1, but these tiny nets keep "
            "many eigenvalues near zero whose signs split both ways.")
DEFINITION = (
    "**Minimal ratio** = (number of positive eigenvalues of the Hessian) / (number of parameters), at a point where "
    "the gradient is (nearly) zero. The Hessian is exact: torch.func.hessian of the training MSE on the flat "
    "float64 parameter vector, its eigenvalues by torch.linalg.eigvalsh; an eigenvalue with |λ| ≤ {tol:g} · max |λ| "
    "counts as zero (neither positive nor negative). **Perturbation estimate**: the share of {n:,} random directions "
    "of length {r:g} along which the loss rises; it is the share of *directions* of positive curvature, not of "
    "eigenvalues, so it sits above the exact ratio where the positive eigenvalues are the large ones.")


def _validate_link(v: dict) -> None:
    """A link's settings, checked by the core: a ConfigError says what is refused."""
    lab.CriticalConfig(**v)


def settings_ui() -> lab.CriticalConfig:
    """The page's widgets -> its frozen config (limits checked by the core)."""
    c1, c2, c3 = st.columns([2, 1, 1])
    target = c1.selectbox("Target", list(TARGET_LABELS), format_func=TARGET_LABELS.get, key=K + "target")
    hidden = c2.number_input("Hidden width h (1-h-h-1)", step=1, key=K + "hidden", help="1 to 16")
    runs = c3.number_input("Runs", step=10, key=K + "runs", help="1 to 1,000, trained together")
    c1, c2, c3, c4, c5 = st.columns(5)
    steps_loss = c1.number_input("Phase 1: Adam steps on the loss", step=100, key=K + "steps_loss")
    steps_grad = c2.number_input("Phase 2: Adam steps on |∇L|²", step=100, key=K + "steps_grad")
    lm_steps = c3.number_input("Then Levenberg-Marquardt steps", step=10, key=K + "lm_steps")
    zero_tol = c4.number_input("Zero tolerance", format="%.1e", key=K + "zero_tol",
                               help="|λ| ≤ this × max |λ| counts as zero (0 to 0.1; 0: the sign decides)")
    seed = c5.number_input("Seed", step=1, key=K + "seed", help="the K initial weights")
    return config_or_stop(lambda: lab.CriticalConfig(target=target, hidden=int(hidden), runs=int(runs),
                                                     steps_loss=int(steps_loss), steps_grad=int(steps_grad),
                                                     lm_steps=int(lm_steps), zero_tol=float(zero_tol),
                                                     seed=int(seed)))


def frame(m: dict) -> pd.DataFrame:
    """One row per run."""
    return pd.DataFrame(m["rows"])


def charts(df: pd.DataFrame, lecture: bool) -> list[tuple[str, str, alt.TopLevelMixin]]:
    """The ratio-vs-loss scatter (exact and perturbation), the gradient norms reached, exact vs perturbation."""
    tips = [alt.Tooltip("run:Q"), alt.Tooltip("grad_norm:Q", title="gradient norm", format=".2e"),
            alt.Tooltip("loss:Q", format=".4e"), alt.Tooltip("neg:Q", title="# negative"),
            alt.Tooltip("zero:Q", title="# zero"), alt.Tooltip("pos:Q", title="# positive"),
            alt.Tooltip("grad_flat_share:Q", title="share of gradient along flat directions", format=".2f"),
            alt.Tooltip("ratio:Q", title="minimal ratio", format=".3f"),
            alt.Tooltip("perturb_ratio:Q", title="perturbation estimate", format=".3f")]
    long = df.melt(id_vars=[c for c in df.columns if c not in ("ratio", "perturb_ratio")],
                   value_vars=["ratio", "perturb_ratio"], var_name="method", value_name="value")
    long["method"] = long["method"].map({"ratio": "exact Hessian", "perturb_ratio": "perturbations"})
    long = long.merge(df[["run", "ratio", "perturb_ratio"]], on="run")
    scatter = alt.Chart(long).mark_circle(size=60, opacity=0.75).encode(
        x=alt.X("loss:Q", scale=alt.Scale(type="log"), title="training loss (MSE, log)"),
        y=alt.Y("value:Q", title="minimal ratio", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("method:N", legend=alt.Legend(orient="bottom", title=None)),
        tooltip=tips).properties(height=340, title="Minimal ratio against loss").interactive()
    norms = alt.Chart(df).mark_circle(size=50).encode(
        x=alt.X("loss:Q", scale=alt.Scale(type="log"), title="training loss (MSE, log)"),
        y=alt.Y("grad_norm:Q", scale=alt.Scale(type="log"), title="gradient norm reached (log)"),
        tooltip=tips).properties(height=340, title="Gradient norm reached per run").interactive()
    compare = alt.Chart(df).mark_circle(size=50).encode(
        x=alt.X("ratio:Q", title="minimal ratio (exact Hessian)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("perturb_ratio:Q", title="perturbation estimate", scale=alt.Scale(domain=[0, 1])),
        tooltip=tips).properties(height=340, title="Exact against perturbation estimate").interactive()
    return [("scatter", "Minimal ratio vs loss", for_lecture(scatter, lecture)),
            ("norms", "Gradient norms", for_lecture(norms, lecture)),
            ("compare", "Exact vs perturbation", for_lecture(compare, lecture))]


def draw(m: dict, lecture: bool) -> None:
    """Summary, the charts (each with a CSV of its data) and the table."""
    df = frame(m)
    s = lab.summary(m["rows"])
    flat = s["flat_share_median"]
    why = ("these are *gradient-flat* points (Frye et al., Neural Computation 2021): the gradient lies in the "
           "Hessian's near-null space, so the loss is locally linear along it and minimising ‖∇L‖² (whose gradient is "
           "2H∇L) stalls there, at a stationary point of the gradient norm rather than a critical point of the loss"
           if flat >= 0.5 else
           "most of what is left lies along curved directions, where Newton-type steps can still shrink it")
    st.success(f"{m['runs']} runs of a {m['params']}-parameter net. Minimal ratio from {s['ratio_min']:.3f} to "
               f"{s['ratio_max']:.3f}; loss from {s['loss_min']:.2e} to {s['loss_max']:.2e}; gradient norm reached: "
               f"median {s['grad_median']:.1e}, largest {s['grad_max']:.1e}. Of the gradient that is left, a median "
               f"{100 * flat:.0f}% lies along flat directions (curvature below {lab.FLAT_REL:g} of the largest): "
               f"{why}. Near-zero eigenvalues split both ways.")
    drawn = charts(df, lecture)
    slots = chart_slots(lecture, 2)
    for slot, (key, name, chart) in zip(slots + chart_slots(lecture, 1), drawn):
        slot.altair_chart(chart, width="stretch")
        slot.download_button(f"{name} (CSV)", df.to_csv(index=False), file_name=f"critical-points-{key}.csv",
                             mime="text/csv", key=K + "dl_" + key)
    st.dataframe(df, hide_index=True, key=K + "table")


def page(lecture: bool) -> None:
    st.markdown(LOOK_FOR)
    cfg = settings_ui()
    st.caption(f"Each run: a 1-{cfg.hidden}-{cfg.hidden}-1 tanh MLP ({cfg.params} parameters) on {cfg.n_points} "
               f"evenly spaced points of {lab.TARGETS[cfg.target][0]}; phase 1: {cfg.steps_loss:,} Adam steps "
               f"(lr {cfg.lr_loss:g}) on the MSE; phase 2: {cfg.steps_grad:,} Adam steps (lr {cfg.lr_grad:g}) on "
               f"the squared gradient norm |∇L|², then {cfg.lm_steps} Levenberg-Marquardt steps on it. All "
               f"{cfg.runs} runs train at once as one ({cfg.runs}, {cfg.params}) tensor (torch.func.vmap).")
    entry = cached_or_job(K, "cp_runs", lab.KIND, cfg, lambda: lab.job(cfg, app_cache()), name="critical points",
                          label="Run", autostart=True,  # every setting runs in seconds to minutes: start on its own
                          hint="", buttons=(K + "train", K + "stop"))
    if entry is not None:
        draw(entry.metrics, lecture)
    st.markdown(DEFINITION.format(tol=cfg.zero_tol, n=cfg.n_perturb, r=cfg.radius))  # below the result it defines
    if entry is not None:
        show_provenance(entry, recompute=entry.meta.get("recompute"))


st.title("Critical points: the minimal ratio")
lecture = lecture_mode(K)
st.caption("Drive many tiny networks to points of zero gradient and ask each Hessian how many directions still go "
           "down.")
init_from_url(SCHEMA, K, _validate_link)
if K + "link_error" in st.session_state:
    st.warning(plain(st.session_state.pop(K + "link_error")))
try:
    page(lecture)
except ConfigError as exc:
    st.error("Setting refused: " + plain(exc))
