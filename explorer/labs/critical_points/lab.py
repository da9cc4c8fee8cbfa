"""The minimal ratio at near-zero gradient: many tiny 1-h-h-1 tanh MLPs driven to critical points of a 1-D fit.

K runs (default 100) from different random initial weights are trained together as one (K, P) tensor of flat
parameter vectors: `torch.func.vmap` maps one functional forward over the K rows, and the gradient of the summed
losses gives each row its own gradient (a row's loss depends on that row only; Adam is elementwise, so the K runs
are exactly K separate runs). Phase 1 minimises the loss (Adam); phase 2 minimises the squared gradient norm
||grad L||^2 (Adam on it, its gradient 2 H grad L by double backward), then a few Levenberg-Marquardt steps on the
same objective (the Gauss-Newton step for grad L = 0) to reach a tiny norm: the point found may be a minimum or
a saddle. At each final point the exact Hessian (torch.func.hessian on the flat float64 vector) gives the
minimal ratio = share of positive eigenvalues; a second estimate is the share of small random perturbations that
raise the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.func import grad, hessian, vmap

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import check_choice, check_range
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter
from explorer.train.evaluate import Diverged, diverged_message, first_nonfinite

KIND = "critical-points"
DTYPE = torch.float64  # the Hessian's small eigenvalues need it; these nets are tiny
REPORT_EVERY = 100  # steps between progress reports and divergence checks
FLAT_REL = 1e-3  # an eigen-direction with |lambda| <= this * max |lambda| is "flat" (for the gradient's share there)


def _sinc5(x: torch.Tensor) -> torch.Tensor:
    z = 5 * math.pi * x
    return torch.sin(z) / z  # x starts at 0.01: z is never 0


TARGETS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor], float, float]] = {
    "sinc5": ("sin(5πx) / (5πx) on (0.01, 1]", _sinc5, 0.01, 1.0),
    "sine": ("sin(2πx) on [0, 1]", lambda x: torch.sin(2 * math.pi * x), 0.0, 1.0),
    "abs": ("|x| on [-1, 1]", torch.abs, -1.0, 1.0),
}


@dataclass(frozen=True)
class CriticalConfig:
    """K tiny runs: the target, the net, the two phases and the two ways of reading the Hessian."""

    target: str = "sinc5"
    n_points: int = 50  # evenly spaced training points
    hidden: int = 4  # 1-h-h-1: 4 gives 33 parameters
    runs: int = 100
    steps_loss: int = 1000  # phase 1: Adam on the loss
    lr_loss: float = 0.01
    steps_grad: int = 1000  # phase 2: Adam on ||grad L||^2
    lr_grad: float = 1e-3
    lm_steps: int = 20  # then Levenberg-Marquardt steps on ||grad L||^2 (0: none)
    zero_tol: float = 0.0  # |eigenvalue| <= zero_tol * max |eigenvalue| counts as zero (0: the sign decides)
    n_perturb: int = 200  # random directions of the perturbation estimate
    radius: float = 1e-3  # their length
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("target", self.target, TARGETS)
        check_range("training points", self.n_points, 2, 1000, integer=True)
        check_range("hidden width", self.hidden, 1, 16, integer=True)
        check_range("runs", self.runs, 1, 1000, integer=True)
        check_range("loss steps", self.steps_loss, 0, 50_000, integer=True)
        check_range("loss learning rate", self.lr_loss, 1e-6, 1.0)
        check_range("gradient-norm steps", self.steps_grad, 0, 50_000, integer=True)
        check_range("gradient-norm learning rate", self.lr_grad, 1e-7, 1.0)
        check_range("Levenberg-Marquardt steps", self.lm_steps, 0, 500, integer=True)
        check_range("zero tolerance", self.zero_tol, 0.0, 0.1)
        check_range("perturbations", self.n_perturb, 10, 5000, integer=True)
        check_range("perturbation radius", self.radius, 1e-8, 1.0)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)

    @property
    def params(self) -> int:
        """Parameters of one 1-h-h-1 net."""
        h = self.hidden
        return 2 * h + h * h + h + h + 1


def data(cfg: CriticalConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Evenly spaced points (N,) and the target's values there, float64."""
    _, fn, lo, hi = TARGETS[cfg.target]
    x = torch.linspace(lo, hi, cfg.n_points, dtype=DTYPE)
    return x, fn(x)


def forward(theta: torch.Tensor, x: torch.Tensor, h: int) -> torch.Tensor:
    """One 1-h-h-1 tanh MLP on inputs (N,), from its flat parameters (W1, b1, W2, b2, w3, b3)."""
    i = 0

    def take(n: int) -> torch.Tensor:
        nonlocal i
        i += n
        return theta[i - n:i]

    w1, b1 = take(h), take(h)
    w2, b2 = take(h * h).view(h, h), take(h)
    w3, b3 = take(h), take(1)
    a = torch.tanh(x[:, None] * w1 + b1)  # (N, h)
    a = torch.tanh(a @ w2.T + b2)
    return a @ w3 + b3


def loss_fn(cfg: CriticalConfig, x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """theta (P,) -> mean squared error on the training points."""
    return lambda theta: ((forward(theta, x, cfg.hidden) - y) ** 2).mean()


def init(cfg: CriticalConfig) -> torch.Tensor:
    """(K, P) initial weights, PyTorch's default uniform(+-1/sqrt(fan_in)) per layer, from cfg.seed."""
    g = torch.Generator().manual_seed(cfg.seed)
    h = cfg.hidden
    bounds = [1.0] * (2 * h) + [h ** -0.5] * (h * h + h) + [h ** -0.5] * (h + 1)
    u = torch.rand(cfg.runs, cfg.params, generator=g, dtype=DTYPE) * 2 - 1
    return u * torch.tensor(bounds, dtype=DTYPE)


def minimal_ratio(eigs: torch.Tensor, zero_tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Share of positive eigenvalues (..., P) -> (...), and the counts negative, zero, positive; an eigenvalue with
    |lambda| <= zero_tol * max |lambda| (of its own matrix) counts as zero."""
    scale = eigs.abs().amax(-1, keepdim=True)
    zero = eigs.abs() <= zero_tol * scale
    pos = (eigs > 0) & ~zero
    neg = (eigs < 0) & ~zero
    n_pos = pos.sum(-1)
    return n_pos / eigs.shape[-1], neg.sum(-1), zero.sum(-1), n_pos


def perturbation_ratio(f: Callable[[torch.Tensor], torch.Tensor], thetas: torch.Tensor, n: int, radius: float,
                       seed: int) -> torch.Tensor:
    """Per row of (K, P) parameters, the share of n random directions of length `radius` that raise the loss."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, thetas.shape[1], generator=g, dtype=thetas.dtype)
    u = radius * u / u.norm(dim=1, keepdim=True)
    base = vmap(f)(thetas)  # (K,)
    moved = vmap(lambda t: vmap(f)(t + u))(thetas)  # (K, n)
    return (moved > base[:, None]).to(thetas.dtype).mean(1)


def _adam(params: torch.Tensor, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam([params], lr=lr)


def _check(values: list[torch.Tensor], step: int, phase: str, lr: float) -> None:
    """Raise Diverged naming the first run whose value (K,) went non-finite in these steps."""
    bad = first_nonfinite(torch.stack(values))
    for run, b in enumerate(bad):
        if b is not None:
            at = step - len(values) + 1 + b
            raise Diverged(diverged_message(f"run {run} ({phase})", at, None, lr,
                                            cause="its value became non-finite"), at, 0)


def optimise(cfg: CriticalConfig, thetas: torch.Tensor, report: Reporter = SILENT) -> torch.Tensor:
    """Both phases on (K, P) parameters; the final parameters."""
    x, y = data(cfg)
    f = loss_fn(cfg, x, y)
    gnorm2 = lambda t: (grad(f)(t) ** 2).sum()  # noqa: E731 - the phase-2 objective
    total = cfg.steps_loss + cfg.steps_grad + cfg.lm_steps
    phases = (("loss", f, cfg.steps_loss, cfg.lr_loss), ("gradient norm", gnorm2, cfg.steps_grad, cfg.lr_grad))
    theta = thetas.detach().clone()
    done = 0
    for phase, obj, steps, lr in phases:
        p = theta.clone().requires_grad_(False)
        opt = _adam(p, lr)
        obj_grad = vmap(grad(obj))
        pending: list[torch.Tensor] = []
        for s in range(1, steps + 1):
            p.grad = obj_grad(p)
            pending.append(p.grad.abs().sum(1))  # non-finite exactly when the objective's gradient is
            opt.step()
            if s % REPORT_EVERY == 0 or s == steps:
                _check(pending, s, phase, lr)
                pending = []
                report.checkpoint()
                report.publish(None, progress=0.9 * (done + s) / max(total, 1), message=f"{phase}: step {s:,}")
        theta, done = p.detach(), done + steps

    def on_step(s: int) -> None:
        report.checkpoint()
        report.publish(None, progress=0.9 * (done + s) / max(total, 1), message=f"Levenberg-Marquardt: step {s}")

    return levenberg_marquardt(f, theta, cfg.lm_steps, on_step=on_step)


def levenberg_marquardt(f: Callable[[torch.Tensor], torch.Tensor], thetas: torch.Tensor, steps: int,
                        mu: float = 1e-6, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Damped Gauss-Newton on ||grad L||^2 for every row: with H = V diag(lam) V^T, the step
    d = -V diag(lam / (lam^2 + mu max lam^2)) V^T g (the damping relative to the spectrum, so the scale of the loss
    does not matter); a step that lowers the gradient norm is kept (mu / 3), else refused (mu * 4)."""
    g_fn, h_fn = vmap(grad(f)), vmap(hessian(f))
    damp = torch.full((thetas.shape[0], 1), mu, dtype=thetas.dtype)
    g = g_fn(thetas)
    for s in range(1, steps + 1):
        if on_step is not None:
            on_step(s)
        lam, v = torch.linalg.eigh(h_fn(thetas))
        scale = (lam ** 2).amax(1, keepdim=True)
        c = (v.transpose(1, 2) @ g[:, :, None])[:, :, 0]
        new = thetas - (v @ (c * lam / (lam ** 2 + damp * scale))[:, :, None])[:, :, 0]
        g_new = g_fn(new)
        ok = (g_new.norm(dim=1) < g.norm(dim=1)) & torch.isfinite(g_new).all(1)
        thetas = torch.where(ok[:, None], new, thetas)
        g = torch.where(ok[:, None], g_new, g)
        damp = torch.where(ok[:, None], damp / 3, damp * 4).clamp(1e-30, 1e3)
    return thetas


def analyse(cfg: CriticalConfig, thetas: torch.Tensor) -> dict[str, list]:
    """Per run: loss, gradient norm, eigenvalue counts, minimal ratio (exact) and the perturbation estimate."""
    x, y = data(cfg)
    f = loss_fn(cfg, x, y)
    eigs, vecs = torch.linalg.eigh(vmap(hessian(f))(thetas))  # (K, P) ascending, (K, P, P)
    ratio, neg, zero, pos = minimal_ratio(eigs, cfg.zero_tol)
    g = vmap(grad(f))(thetas)
    coef = (vecs.transpose(1, 2) @ g[:, :, None])[:, :, 0]  # the gradient in the Hessian's eigenbasis
    flat = eigs.abs() <= FLAT_REL * eigs.abs().amax(1, keepdim=True)
    flat_share = (coef ** 2 * flat).sum(1).sqrt() / g.norm(dim=1).clamp_min(1e-300)
    return {"run": list(range(len(thetas))), "loss": vmap(f)(thetas).tolist(),
            "grad_norm": g.norm(dim=1).tolist(), "grad_flat_share": flat_share.tolist(), "ratio": ratio.tolist(),
            "neg": neg.tolist(), "zero": zero.tolist(), "pos": pos.tolist(),
            "perturb_ratio": perturbation_ratio(f, thetas, cfg.n_perturb, cfg.radius, cfg.seed + 1).tolist(),
            "min_eig": eigs[:, 0].tolist(), "max_eig": eigs[:, -1].tolist()}


def compute(cfg: CriticalConfig, report: Reporter = SILENT) -> dict[str, Any]:
    """Every run through both phases and the Hessian: one row per run and the settings they ran with."""
    report.publish(None, progress=0.0, message="phase 1: the loss")
    final = optimise(cfg, init(cfg), report)
    report.publish(None, progress=0.95, message="exact Hessians and perturbations")
    rows = analyse(cfg, final)
    return {"params": cfg.params, "runs": cfg.runs, "target": TARGETS[cfg.target][0], "rows": rows}


def run(cfg: CriticalConfig, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The result for cfg: from the cache, else computed now and stored with the command that recomputes it."""
    def make() -> ComputeResult:
        return ComputeResult(compute(cfg, report), meta={"recompute": cli_command(cfg)})

    return cache.get_or_compute(KIND, cfg, make)


def job(cfg: CriticalConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job."""
    def fn(ctx: JobContext) -> Entry:
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn


FLAGS = {"target": "--target", "n_points": "--n-points", "hidden": "--hidden", "runs": "--runs",
         "steps_loss": "--steps-loss", "lr_loss": "--lr-loss", "steps_grad": "--steps-grad", "lr_grad": "--lr-grad",
         "lm_steps": "--lm-steps", "zero_tol": "--zero-tol", "n_perturb": "--n-perturb", "radius": "--radius",
         "seed": "--seed"}


def cli_command(cfg: CriticalConfig) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = CriticalConfig()
    parts = ["python -m explorer critical"]
    parts += [f"{flag} {getattr(cfg, k)}" for k, flag in FLAGS.items() if getattr(cfg, k) != getattr(default, k)]
    return " ".join(parts)


def summary(rows: dict[str, list]) -> dict[str, float]:
    """The numbers a page and the CLI state: ranges of the ratio, the loss and the gradient norm."""
    return {"ratio_min": min(rows["ratio"]), "ratio_max": max(rows["ratio"]), "loss_min": min(rows["loss"]),
            "loss_max": max(rows["loss"]), "grad_median": sorted(rows["grad_norm"])[len(rows["grad_norm"]) // 2],
            "grad_max": max(rows["grad_norm"]),
            "flat_share_median": sorted(rows["grad_flat_share"])[len(rows["grad_flat_share"]) // 2]}
