"""DeepSets (Zaheer et al., "Deep Sets", 2017): equivariant layers, an invariant readout, and a sweep over L x w.

An equivariant layer maps each element x_i (of a set padded to (B, N, d) with a mask) to
act(Lambda x_i + Gamma pool(x)), pool = sum, mean or max over the set's real elements only; permuting the elements
permutes the outputs the same way. The invariant readout pools the last layer's elements and maps the pooled vector
through rho (Linear-ReLU-Linear) to one number, so permuting the set leaves the prediction unchanged. The contrast
is an MLP on the flattened, padded set (and its mask): it sees positions, so a permutation changes its output.

A sweep trains every (L, w) (and the MLP) on the same sets with Adam and early stopping on the validation loss
(the best epoch's weights are kept), then measures the test MSE on sets of every test size, including sizes larger
than any seen in training. Models differ in shape, so they are looped; each gets its own seeded start and the same
minibatch order. Targets are standardised for training (an affine map, undone for every number reported).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter
from explorer.core.seeding import seeded
from explorer.data.datasets import load_or_fallback
from explorer.labs.deep_sets.tasks import TASKS, SetData, make_sets
from explorer.train.evaluate import Diverged, diverged_message

KIND = "deep-sets-sweep"  # cache kind of a finished sweep
POOLS = ("sum", "mean", "max")
DATASETS = ("digits", "mnist")  # image pools of the digit-sum task
MAX_LAYERS = 6
MAX_WIDTH = 512
MAX_TEST_SIZE = 200  # elements in the largest test set
EVAL_CHUNK = 1000  # sets per forward when evaluating
INIT_STRIDE = 1000  # model j of the sweep starts from seed + j * INIT_STRIDE


def masked_pool(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, N, d) elements, (B, N) mask -> (B, d): sum, mean or max over the real elements only."""
    m = mask[..., None].to(h.dtype)
    if how == "max":
        return h.masked_fill(~mask[..., None], float("-inf")).amax(1).clamp_min(-1e30)  # an empty set gives -1e30
    s = (h * m).sum(1)
    return s if how == "sum" else s / m.sum(1).clamp_min(1.0)


class Equivariant(nn.Module):
    """phi(x)_i = act(Lambda x_i + Gamma pool(x)); padded positions stay zero so they never reach a pool."""

    def __init__(self, d_in: int, d_out: int, pool: str) -> None:
        super().__init__()
        self.lam = nn.Linear(d_in, d_out)  # the element-wise transform (with the bias)
        self.gam = nn.Linear(d_in, d_out, bias=False)  # the pooled transform
        self.pool = pool

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = self.gam(masked_pool(x, mask, self.pool))[:, None, :]  # (B, 1, d_out): the same for every element
        return F.relu(self.lam(x) + pooled) * mask[..., None].to(x.dtype)


class DeepSet(nn.Module):
    """L equivariant layers of width w, then pool over the set and rho: (B, N, d), (B, N) -> (B,)."""

    def __init__(self, d_in: int, layers: int, width: int, layer_pool: str, readout_pool: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Equivariant(d_in if i == 0 else width, width, layer_pool) for i in range(layers))
        self.readout_pool = readout_pool
        self.rho = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def elements(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last equivariant layer's output (B, N, w): one vector per element."""
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.rho(masked_pool(self.elements(x, mask), mask, self.readout_pool)).squeeze(-1)


class PaddedMLP(nn.Module):
    """The non-invariant contrast: an MLP on the flattened padded set and its mask, (B, N_max*(d+1)) -> (B,)."""

    def __init__(self, d_in: int, n_max: int, width: int) -> None:
        super().__init__()
        self.n_max = n_max
        self.net = nn.Sequential(nn.Linear(n_max * (d_in + 1), width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        pad = self.n_max - n  # sets are padded further to the largest size it was built for
        x, m = F.pad(x, (0, 0, 0, pad)), F.pad(mask, (0, pad)).to(x.dtype)
        return self.net(torch.cat([x, m[..., None]], -1).reshape(b, -1)).squeeze(-1)


def deepset_params(d_in: int, layers: int, width: int) -> int:
    """Parameters of DeepSet, by formula: each layer 2*d_in*d_out + d_out, rho w*w + w + w + 1."""
    total, d = 0, d_in
    for _ in range(layers):
        total += 2 * d * width + width
        d = width
    return total + width * width + 2 * width + 1


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _ints(name: str, value: Any) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be a list of whole numbers, got {value!r}") from err


@dataclass(frozen=True)
class SetsConfig:
    """A sweep over equivariant layers L and width w on one set task; the default runs live in seconds."""

    task: str = "sum"  # see tasks.TASKS
    dataset: str = "digits"  # the image pool of digit_sum (MNIST when present, else the embedded digits)
    layers: tuple[int, ...] = (1, 2)  # equivariant layers L
    widths: tuple[int, ...] = (16, 64)  # units per layer w
    baseline: bool = True  # also train the non-invariant MLP on the padded set (width = the largest w)
    layer_pool: str = "mean"  # the pooled term inside equivariant layers (mean keeps its scale on larger sets)
    readout_pool: str = "sum"  # the invariant readout (a sum can count; a mean cannot)
    min_size: int = 2  # training (and validation) set sizes, uniform in [min_size, max_size]
    max_size: int = 10
    test_sizes: tuple[int, ...] = (2, 5, 10, 20, 30, 50)  # test sets of exactly these sizes
    n_train: int = 2000  # training sets
    n_val: int = 500  # validation sets (early stopping)
    n_test: int = 200  # test sets per test size
    epochs: int = 30  # the most epochs; early stopping may end a model sooner
    patience: int = 5  # epochs without a better validation loss before a model stops
    lr: float = 3e-3  # Adam's step size
    batch_size: int = 64  # sets per step
    seed: int = 0  # sets, initial weights and minibatch order

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        check_choice("dataset", self.dataset, DATASETS)
        layers, widths, sizes = _ints("layers", self.layers), _ints("widths", self.widths), \
            _ints("test sizes", self.test_sizes)
        for name, vals, lo, hi in (("layers", layers, 1, MAX_LAYERS), ("widths", widths, 1, MAX_WIDTH),
                                   ("test sizes", sizes, 1, MAX_TEST_SIZE)):
            check_range(f"number of {name}", len(vals), 1, 12, integer=True)
            for v in vals:
                check_range(name[:-1] if name != "test sizes" else "test set size", v, lo, hi, integer=True)
            if len(set(vals)) != len(vals):
                raise ConfigError(f"each of the {name} may appear only once")
        object.__setattr__(self, "layers", tuple(sorted(layers)))
        object.__setattr__(self, "widths", tuple(sorted(widths)))
        object.__setattr__(self, "test_sizes", tuple(sorted(sizes)))
        check_choice("layer pool", self.layer_pool, POOLS)
        check_choice("readout pool", self.readout_pool, POOLS)
        need = 2 if self.task == "second_largest" else 1
        check_range("smallest training set", self.min_size, need, 100, integer=True)
        check_range("largest training set", self.max_size, self.min_size, 100, integer=True)
        if self.test_sizes[0] < need:
            raise ConfigError(f"the {self.task} task needs test sets of at least {need} elements")
        check_range("training sets", self.n_train, 50, 100_000, integer=True)
        check_range("validation sets", self.n_val, 20, 20_000, integer=True)
        check_range("test sets per size", self.n_test, 10, 10_000, integer=True)
        check_range("epochs", self.epochs, 1, 500, integer=True)
        check_range("patience", self.patience, 1, 100, integer=True)
        check_range("learning rate", self.lr, 1e-5, 1.0)
        check_range("batch size", self.batch_size, 1, 4096, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)


def models_of(cfg: SetsConfig) -> list[dict[str, Any]]:
    """The sweep's models in training order: every (L, w), then the MLP baseline."""
    out = [{"kind": "deepsets", "layers": L, "width": w, "label": f"L{L} w{w}"}
           for L, w in itertools.product(cfg.layers, cfg.widths)]
    if cfg.baseline:
        w = max(cfg.widths)
        out.append({"kind": "mlp", "layers": 2, "width": w, "label": f"MLP w{w} (not invariant)"})
    return out


def resolve(cfg: SetsConfig) -> SetsConfig:
    """The config that really runs: number tasks need no data set (dataset pinned to the default, so one result
    serves every dataset choice); MNIST replaced by the embedded digits when it is missing."""
    if not TASKS[cfg.task].images:
        return dataclasses.replace(cfg, dataset=SetsConfig.dataset)
    used = load_or_fallback(cfg.dataset, "train")[0].name
    return cfg if used == cfg.dataset else dataclasses.replace(cfg, dataset=used)


def _pools(cfg: SetsConfig) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, tuple | None, str | None, int]:
    """Standardised flattened train and test image pools (features, labels), the fallback notice, the input size."""
    if not TASKS[cfg.task].images:
        return None, None, None, 1
    tr, notice = load_or_fallback(cfg.dataset, "train")
    te, _ = load_or_fallback(tr.name, "test")
    x, xt = tr.to_float().flatten(1), te.to_float().flatten(1)
    mean, std = x.mean(), x.std().clamp_min(1e-6)
    return ((x - mean) / std, tr.y), ((xt - mean) / std, te.y), notice, int(x.shape[1])


def make_data(cfg: SetsConfig) -> tuple[SetData, SetData, dict[int, SetData], str | None, int]:
    """Train, validation and per-size test sets (test images from the test split), the notice, the input size."""
    train_pool, test_pool, notice, d = _pools(cfg)
    g = [torch.Generator().manual_seed(cfg.seed + k) for k in range(3)]
    train = make_sets(cfg.task, cfg.n_train, cfg.min_size, cfg.max_size, g[0], train_pool)
    val = make_sets(cfg.task, cfg.n_val, cfg.min_size, cfg.max_size, g[1], train_pool)
    test = {n: make_sets(cfg.task, cfg.n_test, n, n, g[2], test_pool) for n in cfg.test_sizes}
    return train, val, test, notice, d


def build(spec: dict[str, Any], cfg: SetsConfig, d_in: int, seed: int) -> nn.Module:
    """A DeepSet or the padded MLP (for sets up to the largest test size), its weights from `seed`."""
    with seeded(seed):
        if spec["kind"] == "mlp":
            return PaddedMLP(d_in, max(cfg.max_size, *cfg.test_sizes), spec["width"])
        return DeepSet(d_in, spec["layers"], spec["width"], cfg.layer_pool, cfg.readout_pool)


@torch.no_grad()
def predict(model: nn.Module, data: SetData) -> torch.Tensor:
    """(S,) predictions in chunks of EVAL_CHUNK sets."""
    return torch.cat([model(data.x[i:i + EVAL_CHUNK], data.mask[i:i + EVAL_CHUNK])
                      for i in range(0, len(data), EVAL_CHUNK)])


def permuted(data: SetData, gen: torch.Generator) -> tuple[SetData, torch.Tensor]:
    """Every set's positions (padding included) shuffled by its own random permutation; perm (S, N) gives, for each
    new position, the old one."""
    s, n = data.mask.shape
    perm = torch.argsort(torch.rand(s, n, generator=gen), dim=1).to(data.x.device)
    x = torch.gather(data.x, 1, perm[..., None].expand_as(data.x))
    return SetData(x, torch.gather(data.mask, 1, perm), data.y), perm


def permutation_diff(model: nn.Module, data: SetData, seed: int = 0) -> float:
    """max |f(P x) - f(x)| over the sets: about 1e-6 (float rounding of a reordered sum) for an invariant model."""
    p, _ = permuted(data, torch.Generator().manual_seed(seed))
    return float((predict(model, p) - predict(model, data)).abs().max())


@torch.no_grad()
def equivariance_diff(layer: Equivariant, data: SetData, seed: int = 0) -> float:
    """max |phi(P x) - P phi(x)|: about 1e-6 for an equivariant layer."""
    p, perm = permuted(data, torch.Generator().manual_seed(seed))
    out = layer(data.x, data.mask)
    moved = torch.gather(out, 1, perm[..., None].expand_as(out))
    return float((layer(p.x, p.mask) - moved).abs().max())


def check(cfg: SetsConfig, layers: int, width: int, n_sets: int = 4, device: torch.device | None = None
          ) -> dict[str, Any]:
    """The on-screen permutation check on freshly built (untrained) models: a few sets of the task (up to the
    largest test size, padded), each shuffled; the DeepSet's output, its first layer and the MLP's output."""
    device = device or torch.device("cpu")
    _, test_pool, _, d = _pools(cfg)
    n = max(cfg.max_size, *cfg.test_sizes)
    data = make_sets(cfg.task, n_sets, min(cfg.min_size, n), n, torch.Generator().manual_seed(cfg.seed + 7),
                     test_pool).to(device)
    ds = build({"kind": "deepsets", "layers": layers, "width": width}, cfg, d, cfg.seed).to(device)
    mlp = build({"kind": "mlp", "width": width}, cfg, d, cfg.seed).to(device)
    p, _ = permuted(data, torch.Generator().manual_seed(cfg.seed))
    rows = []
    for i in range(n_sets):
        rows.append({"set": i + 1, "size": int(data.mask[i].sum()), "target": float(data.y[i]),
                     "DeepSet f(x)": float(predict(ds, data)[i]), "DeepSet f(Px)": float(predict(ds, p)[i]),
                     "MLP f(x)": float(predict(mlp, data)[i]), "MLP f(Px)": float(predict(mlp, p)[i])})
    return {"rows": rows, "deepset_diff": permutation_diff(ds, data, cfg.seed),
            "layer_diff": equivariance_diff(ds.layers[0], data, cfg.seed),
            "mlp_diff": permutation_diff(mlp, data, cfg.seed), "padded_to": n}


def _mse(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(((pred - y) ** 2).mean())


def train_sweep(cfg: SetsConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """Train every model of the sweep with early stopping; history and final test MSE per size, published after
    every model's epoch. A non-finite training loss raises Diverged."""
    device = device or get_device()
    t_start = time.perf_counter()
    train, val, test, notice, d = make_data(cfg)
    train, val = train.to(device), val.to(device)
    test = {n: s.to(device) for n, s in test.items()}
    mu, sd = float(train.y.mean()), float(train.y.std().clamp_min(1e-6))  # target standardisation
    specs = models_of(cfg)
    base = {str(n): float(s.y.var(unbiased=False)) for n, s in test.items()}  # the best constant for each size
    out: dict[str, Any] = {
        "task": cfg.task, "title": TASKS[cfg.task].title, "dataset": cfg.dataset if TASKS[cfg.task].images else None,
        "notice": notice, "input_dim": d, "train_sizes": [cfg.min_size, cfg.max_size],
        "test_sizes": list(cfg.test_sizes), "n_train": cfg.n_train, "n_val": cfg.n_val, "n_test": cfg.n_test,
        "baseline": {"per_size": base, "test_mse": sum(base.values()) / len(base)},
        "models": []}
    steps = math.ceil(cfg.n_train / cfg.batch_size)
    report.publish(out, progress=0.0, message="training")
    for j, spec in enumerate(specs):
        model = build(spec, cfg, d, cfg.seed + j * INIT_STRIDE).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        row = {**spec, "params": count_params(model), "history": {"epoch": [], "train_loss": [], "val_loss": []},
               "final": None}
        out["models"].append(row)
        order = torch.Generator().manual_seed(cfg.seed)  # every model sees the same minibatch order
        best, best_state, best_epoch, t0 = math.inf, None, 0, time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            report.checkpoint()
            model.train()
            perm = torch.randperm(cfg.n_train, generator=order).to(device)
            total = torch.zeros((), device=device)
            for s in range(steps):
                idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                loss = F.mse_loss(model(train.x[idx], train.mask[idx]), (train.y[idx] - mu) / sd)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(idx)
            train_loss = float(total) / cfg.n_train * sd * sd  # in the target's own units
            if not math.isfinite(train_loss):
                raise Diverged(diverged_message(f"the {spec['label']} model", epoch * steps, epoch, cfg.lr),
                               epoch * steps, epoch)
            model.eval()
            val_loss = _mse(predict(model, val) * sd + mu, val.y)
            h = row["history"]
            h["epoch"].append(epoch)
            h["train_loss"].append(train_loss)
            h["val_loss"].append(val_loss)
            if val_loss < best:
                best, best_state, best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch
            done = (j + epoch / cfg.epochs) / len(specs)
            report.publish(out, progress=done, message=f"{spec['label']}: epoch {epoch}, val MSE {val_loss:.4g}")
            if epoch - best_epoch >= cfg.patience:
                break
        model.load_state_dict(best_state)  # early stopping keeps the best validation epoch's weights
        per_size = {str(n): _mse(predict(model, s) * sd + mu, s.y) for n, s in test.items()}
        row["final"] = {"test_mse": sum(per_size.values()) / len(per_size), "per_size": per_size,
                        "val_mse": best, "best_epoch": best_epoch, "epochs": len(row["history"]["epoch"]),
                        "seconds": time.perf_counter() - t0,
                        "perm_diff": permutation_diff(model, test[max(test)], cfg.seed)}
        report.publish(out, progress=(j + 1) / len(specs), message=f"{spec['label']} done ({j + 1}/{len(specs)})")
    out["seconds"] = time.perf_counter() - t_start
    return out


def table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per finished model: L, w, parameters, test MSE (mean over sizes and per size), epochs, time."""
    rows = []
    for m in result["models"]:
        f = m["final"]
        if f is None:
            continue
        row = {"model": m["label"], "L": m["layers"] if m["kind"] == "deepsets" else None, "w": m["width"],
               "params": m["params"], "test MSE": f["test_mse"], "val MSE": f["val_mse"], "epochs": f["epochs"],
               "best epoch": f["best_epoch"], "seconds": f["seconds"], "perm |Δ|": f["perm_diff"]}
        row.update({f"MSE@{n}": v for n, v in f["per_size"].items()})
        rows.append(row)
    return rows


def size_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Long rows model, set size, test MSE (and the best-constant baseline as a model)."""
    rows = [{"model": m["label"], "kind": m["kind"], "params": m["params"], "size": int(n), "test MSE": v}
            for m in result["models"] if m["final"] for n, v in m["final"]["per_size"].items()]
    rows += [{"model": "predict the mean", "kind": "baseline", "params": 0, "size": int(n), "test MSE": v}
             for n, v in result["baseline"]["per_size"].items()]
    return rows


def history_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Long rows model, epoch, split (train / val), MSE."""
    return [{"model": m["label"], "epoch": e, "split": split, "MSE": m["history"][f"{split}_loss"][i]}
            for m in result["models"] for i, e in enumerate(m["history"]["epoch"]) for split in ("train", "val")]


def cached(cfg: SetsConfig, cache: Cache) -> Entry | None:
    """The stored sweep for cfg (runtime first, then shipped), else that of the config that really runs."""
    return cache.get(KIND, cfg) or cache.get(KIND, resolve(cfg))


def run(cfg: SetsConfig, cache: Cache, report: Reporter = SILENT, device: torch.device | None = None) -> Entry:
    """The sweep for cfg: from the cache, else trained now and stored with the command that recomputes it."""
    cfg = resolve(cfg)

    def compute() -> ComputeResult:
        return ComputeResult(train_sweep(cfg, report, device), meta={"recompute": cli_command(cfg)})

    return cache.get_or_compute(KIND, cfg, compute)


def job(cfg: SetsConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job: publishes the sweep after every model's epoch."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="making the sets")
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn


FLAGS = {"task": "--task", "dataset": "--dataset", "layers": "--layers", "widths": "--widths",
         "baseline": "--no-baseline", "layer_pool": "--layer-pool", "readout_pool": "--readout-pool",
         "min_size": "--min-size", "max_size": "--max-size", "test_sizes": "--test-sizes", "n_train": "--n-train",
         "n_val": "--n-val", "n_test": "--n-test", "epochs": "--epochs", "patience": "--patience", "lr": "--lr",
         "batch_size": "--batch-size", "seed": "--seed"}


def parse_ints(text: str, name: str) -> tuple[int, ...]:
    """'1,2,3' -> (1, 2, 3); ConfigError for anything else."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as err:
        raise ConfigError(f"{name} must be comma-separated whole numbers like 1,2,3, got {text!r}") from err


def cli_command(cfg: SetsConfig) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = SetsConfig()
    parts = ["python -m explorer deepsets"]
    for k, flag in FLAGS.items():
        v = getattr(cfg, k)
        if v == getattr(default, k):
            continue
        if k == "baseline":
            parts.append(flag)
        else:
            parts.append(f"{flag} {','.join(map(str, v)) if isinstance(v, tuple) else v}")
    return " ".join(parts)
