"""Gradient check: hand-written backprop against the centred numerical gradient and against autograd.

Two models, written out as students write them (explicit matrix formulas, no autograd in the backward):
- softmax: S = X W + b, loss = mean cross-entropy + lambda * ||W||^2
- two_layer: H = relu(X W1 + b1), S = H W2 + b2, loss = mean cross-entropy + lambda * (||W1||^2 + ||W2||^2)

Each parameter's analytic gradient is compared with (f(x+h) - f(x-h)) / 2h, entry by entry (a seeded random subset
of entries when a parameter has more than `max_entries`), and with torch.autograd. A registry of planted bugs shows
what each classic mistake does to the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError, check_choice, check_range

MODELS = {"softmax": "Softmax classifier (one layer)", "two_layer": "Two-layer ReLU network"}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
DATA = {"digits": "scikit-learn digits (8x8, flattened, normalised)", "random": "Random batch (12 features, 5 classes)"}

PASS_BELOW = 1e-7  # relative error below this: the gradient is right
SUSPICIOUS_BELOW = 1e-4  # between PASS_BELOW and this: look again (kinks, float32, a too-large h); above: fail
REL_EPS = 1e-12  # floor of the denominator |a| + |b|: two exact zeros agree
THRESHOLDS_TEXT = (f"relative error < {PASS_BELOW:g}: pass; < {SUSPICIOUS_BELOW:g}: suspicious; otherwise: fail "
                   "(the worse of the two comparisons decides)")
SWEEP_H = tuple(10.0 ** -k for k in range(1, 11))  # 1e-1 .. 1e-10
INIT_SCALE = 0.5  # weights ~ N(0, (INIT_SCALE / sqrt(fan_in))^2): scores of order 1, so gradients are not tiny
RANDOM_FEATURES, RANDOM_CLASSES = 12, 5


@dataclass(frozen=True)
class Bug:
    """A planted mistake in the hand-written backward pass and the parameters whose gradient it corrupts."""

    title: str
    affects: dict[str, tuple[str, ...]]  # model -> parameter names whose analytic gradient is wrong


BUGS: dict[str, Bug] = {
    "none": Bug("No bug", {"softmax": (), "two_layer": ()}),
    "no_l2_grad": Bug("Forget the L2 term's gradient (2 lambda W)",
                      {"softmax": ("W",), "two_layer": ("W1", "W2")}),
    "no_bias_grad": Bug("Drop the bias gradient (db = 0)", {"softmax": ("b",), "two_layer": ("b1", "b2")}),
    "no_onehot": Bug("Softmax derivative without subtracting the one-hot (dS = P / B)",
                     {"softmax": ("W", "b"), "two_layer": ("W1", "b1", "W2", "b2")}),
    "transposed": Bug("Transposed matrix: reshape where a transpose is needed "
                      "(softmax: dW = (dS^T X).reshape; two-layer: dH = dS W2.reshape instead of dS W2^T)",
                      {"softmax": ("W",), "two_layer": ("W1", "b1")}),
}


@dataclass(frozen=True)
class CheckConfig:
    """One gradient check: which model, which planted bug, the finite-difference step and the numbers' type."""

    model: str = "softmax"  # a key of MODELS
    bug: str = "none"  # a key of BUGS
    h: float = 1e-5  # finite-difference step (1e-10 .. 1e-1); about eps^(1/3) is best for the centred difference
    dtype: str = "float64"  # a key of DTYPES: the type the whole check runs in
    lam: float = 0.1  # L2 strength lambda (0 .. 10), on weights only, not biases
    batch_size: int = 16  # examples in the batch (1 .. 256)
    hidden: int = 16  # hidden units of the two-layer network (2 .. 128; unused by softmax)
    seed: int = 0  # the batch, the initial weights and the checked entries
    data: str = "digits"  # a key of DATA
    max_entries: int = 40  # entries checked numerically per parameter (1 .. 5000); all of them when fewer

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODELS)
        check_choice("bug", self.bug, BUGS)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("data", self.data, DATA)
        check_range("h", self.h, 1e-10, 1e-1)
        check_range("lambda", self.lam, 0.0, 10.0)
        check_range("batch size", self.batch_size, 1, 256, integer=True)
        check_range("hidden width", self.hidden, 2, 128, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_range("entries per parameter", self.max_entries, 1, 5000, integer=True)
        if self.bug == "no_l2_grad" and self.lam == 0:
            raise ConfigError("the bug 'forget the L2 term's gradient' changes nothing with lambda = 0; "
                              "choose lambda > 0")


@dataclass(frozen=True)
class ParamCheck:
    """One row of the table: a parameter's two relative errors and the verdict."""

    name: str
    shape: tuple[int, ...]
    checked: int  # entries compared with the numerical gradient
    total: int  # entries of the parameter
    err_numerical: float  # max over checked entries of |analytic - numerical| / max(eps, |a| + |n|)
    err_autograd: float  # the same against autograd, over every entry
    verdict: str  # pass / suspicious / fail
    bugged: bool  # the planted bug corrupts this parameter's analytic gradient


@dataclass(frozen=True)
class CheckResult:
    """The table, the h-sweep, and what a reader needs to explain them."""

    config: CheckConfig
    loss: float
    rows: tuple[ParamCheck, ...]
    sweep: tuple[dict, ...]  # {"h", "dtype", "parameter", "rel_error"}: numerical vs float64 autograd
    data_note: str


# --- data and parameters ---------------------------------------------------------------------------------------

def make_batch(cfg: CheckConfig, cache: Cache | None = None) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """The batch (X (B, D) float64, y (B,) int64), the number of classes, and one line saying what it is."""
    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.data == "random":
        x = torch.randn(cfg.batch_size, RANDOM_FEATURES, generator=g, dtype=torch.float64)
        y = torch.randint(0, RANDOM_CLASSES, (cfg.batch_size,), generator=g)
        return x, y, RANDOM_CLASSES, f"{cfg.batch_size} random examples, {RANDOM_FEATURES} features"
    from explorer.data import datasets

    ds = datasets.load("digits", "train", cache=cache)
    full = ds.to_float().reshape(len(ds), -1).double()  # (N, 64) in [0, 1]
    mean, std = full.mean(0), full.std()  # one scalar std: pixels that are always 0 stay 0 (no 0/0)
    batch = datasets.take(ds, cfg.batch_size, cfg.seed)
    x = (batch.to_float().reshape(len(batch), -1).double() - mean) / std
    return x, batch.y.clone(), ds.num_classes, (f"{len(batch)} digits images (8x8 = 64 pixels), centred by the "
                                                "training set's pixel means, divided by its overall std")


def init_params(cfg: CheckConfig, d: int, c: int) -> dict[str, torch.Tensor]:
    """Seeded float64 weights ~ N(0, (INIT_SCALE/sqrt(fan_in))^2) and small random biases (not zero, so a
    dropped bias gradient is not hidden by a symmetric start)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)

    def w(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=g, dtype=torch.float64) * (INIT_SCALE / math.sqrt(rows))

    def b(n: int) -> torch.Tensor:
        return torch.randn(n, generator=g, dtype=torch.float64) * 0.1

    if cfg.model == "softmax":
        return {"W": w(d, c), "b": b(c)}
    return {"W1": w(d, cfg.hidden), "b1": b(cfg.hidden), "W2": w(cfg.hidden, c), "b2": b(c)}


# --- the loss and the hand-written backward ---------------------------------------------------------------------

def loss_fn(model: str, p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Mean cross-entropy + lambda * sum of squared weights (biases not penalised); a 0-d tensor."""
    if model == "softmax":
        scores = x @ p["W"] + p["b"]  # (B, C)
        l2 = (p["W"] ** 2).sum()
    else:
        hid = torch.relu(x @ p["W1"] + p["b1"])  # (B, H)
        scores = hid @ p["W2"] + p["b2"]  # (B, C)
        l2 = (p["W1"] ** 2).sum() + (p["W2"] ** 2).sum()
    shifted = scores - scores.max(dim=1, keepdim=True).values  # subtract the row max: exp never overflows
    logp = shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))
    return -logp[torch.arange(len(y)), y].mean() + lam * l2


def _softmax_and_onehot(scores: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
    probs = e / e.sum(dim=1, keepdim=True)  # (B, C)
    onehot = torch.zeros_like(probs)
    onehot[torch.arange(len(y)), y] = 1.0
    return probs, onehot


def analytic_grads(model: str, p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, lam: float,
                   bug: str = "none") -> dict[str, torch.Tensor]:
    """Backpropagation by hand, with the planted `bug` (a key of BUGS) if any."""
    n = len(y)
    l2 = 0.0 if bug == "no_l2_grad" else 2.0 * lam  # d/dW of lam * ||W||^2 is 2 lam W
    if model == "softmax":
        probs, onehot = _softmax_and_onehot(x @ p["W"] + p["b"], y)
        d_scores = (probs if bug == "no_onehot" else probs - onehot) / n  # (B, C)
        if bug == "transposed":
            d_w = (d_scores.T @ x).reshape(p["W"].shape)  # (C, D) laid out as (D, C): the wrong fix for a shape error
        else:
            d_w = x.T @ d_scores  # (D, C)
        d_b = torch.zeros_like(p["b"]) if bug == "no_bias_grad" else d_scores.sum(0)
        return {"W": d_w + l2 * p["W"], "b": d_b}
    z1 = x @ p["W1"] + p["b1"]  # (B, H)
    hid = torch.relu(z1)
    probs, onehot = _softmax_and_onehot(hid @ p["W2"] + p["b2"], y)
    d_scores = (probs if bug == "no_onehot" else probs - onehot) / n  # (B, C)
    d_w2 = hid.T @ d_scores  # (H, C)
    d_b2 = d_scores.sum(0)
    w2_back = p["W2"].reshape(p["W2"].shape[1], p["W2"].shape[0]) if bug == "transposed" else p["W2"].T  # (C, H)
    d_hid = d_scores @ w2_back  # (B, H)
    d_z1 = d_hid * (z1 > 0).to(d_hid.dtype)  # ReLU passes the gradient where its input was positive
    d_w1 = x.T @ d_z1  # (D, H)
    d_b1 = d_z1.sum(0)
    if bug == "no_bias_grad":
        d_b1, d_b2 = torch.zeros_like(d_b1), torch.zeros_like(d_b2)
    return {"W1": d_w1 + l2 * p["W1"], "b1": d_b1, "W2": d_w2 + l2 * p["W2"], "b2": d_b2}


def autograd_grads(model: str, p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                   lam: float) -> dict[str, torch.Tensor]:
    """The same gradients from torch.autograd."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    grads = torch.autograd.grad(loss_fn(model, leaves, x, y, lam), list(leaves.values()))
    return dict(zip(leaves, grads))


def pick_entries(p: dict[str, torch.Tensor], max_entries: int, seed: int) -> dict[str, torch.Tensor]:
    """Flat indices checked numerically per parameter: all of them, or a seeded random max_entries."""
    g = torch.Generator().manual_seed(seed + 2)
    out = {}
    for name, t in p.items():
        n = t.numel()
        out[name] = torch.arange(n) if n <= max_entries else torch.randperm(n, generator=g)[:max_entries].sort().values
    return out


def numerical_grads(f: Callable[[], float], p: dict[str, torch.Tensor], entries: dict[str, torch.Tensor],
                    h: float) -> dict[str, torch.Tensor]:
    """(f(x+h) - f(x-h)) / 2h at each listed entry, in the parameters' own dtype (they are restored after)."""
    out = {}
    for name, t in p.items():
        flat = t.view(-1)
        vals = []
        for i in entries[name].tolist():
            old = flat[i].item()
            flat[i] = old + h
            up = f()
            flat[i] = old - h
            down = f()
            flat[i] = old
            vals.append((up - down) / (2 * h))
        out[name] = torch.tensor(vals, dtype=torch.float64)
    return out


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over entries of |a - b| / max(REL_EPS, |a| + |b|), computed in float64; 0 for no entries."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    if a.numel() == 0:
        return 0.0
    return float(((a - b).abs() / ((a.abs() + b.abs()).clamp_min(REL_EPS))).max())


def verdict(err: float) -> str:
    """pass / suspicious / fail by PASS_BELOW and SUSPICIOUS_BELOW (a NaN fails)."""
    if err < PASS_BELOW:
        return "pass"
    return "suspicious" if err < SUSPICIOUS_BELOW else "fail"


# --- the check ---------------------------------------------------------------------------------------------------

def _in(p: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype).clone() for k, v in p.items()}


def h_sweep(cfg: CheckConfig, x: torch.Tensor, y: torch.Tensor, p64: dict[str, torch.Tensor],
            entries: dict[str, torch.Tensor]) -> list[dict]:
    """Error of the numerical gradient against float64 autograd at the same point, for each h in SWEEP_H and
    both dtypes: truncation error (~h^2) on the right, round-off (~eps/h) on the left."""
    rows = []
    for dname, dtype in DTYPES.items():
        p = _in(p64, dtype)
        xd = x.to(dtype)
        ref = autograd_grads(cfg.model, _in(p, torch.float64), xd.double(), y, cfg.lam)  # exact at p's own point
        def f() -> float:
            return float(loss_fn(cfg.model, p, xd, y, cfg.lam))
        for h in SWEEP_H:
            num = numerical_grads(f, p, entries, h)
            for name in p:
                rows.append({"h": h, "dtype": dname, "parameter": name,
                             "rel_error": rel_error(ref[name].reshape(-1)[entries[name]], num[name])})
    return rows


def run_check(cfg: CheckConfig, cache: Cache | None = None, sweep: bool = True) -> CheckResult:
    """The table of relative errors and verdicts, and (if `sweep`) the h-sweep for both dtypes."""
    x, y, c, note = make_batch(cfg, cache)
    p64 = init_params(cfg, x.shape[1], c)
    dtype = DTYPES[cfg.dtype]
    p, xd = _in(p64, dtype), x.to(dtype)
    entries = pick_entries(p, cfg.max_entries, cfg.seed)
    with torch.no_grad():
        ana = analytic_grads(cfg.model, p, xd, y, cfg.lam, cfg.bug)
        num = numerical_grads(lambda: float(loss_fn(cfg.model, p, xd, y, cfg.lam)), p, entries, cfg.h)
        loss = float(loss_fn(cfg.model, p, xd, y, cfg.lam))
    auto = autograd_grads(cfg.model, p, xd, y, cfg.lam)
    bugged = BUGS[cfg.bug].affects[cfg.model]
    rows = []
    for name, t in p.items():
        e_num = rel_error(ana[name].reshape(-1)[entries[name]], num[name])
        e_auto = rel_error(ana[name], auto[name])
        worst = e_num if math.isnan(e_num) or e_num > e_auto else e_auto
        rows.append(ParamCheck(name, tuple(t.shape), len(entries[name]), t.numel(), e_num, e_auto,
                               verdict(worst), name in bugged))
    swept = h_sweep(cfg, x, y, p64, entries) if sweep else []
    return CheckResult(cfg, loss, tuple(rows), tuple(swept), note)


def table_rows(result: CheckResult) -> list[dict]:
    """The table as plain rows, for a dataframe or the CLI."""
    return [{"parameter": r.name, "shape": "x".join(map(str, r.shape)),
             "entries checked": f"{r.checked} of {r.total}" + (" (random)" if r.checked < r.total else ""),
             "rel. error vs numerical": r.err_numerical, "rel. error vs autograd": r.err_autograd,
             "verdict": r.verdict} for r in result.rows]
