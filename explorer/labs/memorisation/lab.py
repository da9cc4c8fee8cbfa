"""Memorisation lab (Zhang et al. 2017): corruption modes side by side, a p sweep, a width sweep.

Every run of one architecture under several modes (or several p) trains as ONE batched model
(explorer.train.stacked): same initial weights, same batch order, one forward for all. "Fits" means the
first epoch after which the model classifies its whole (possibly corrupted) training set correctly
in eval mode; a run that has not by `max_epochs` "did not fit within N epochs". Results are cached
by config (explorer.core.cache), so a page shows a stored run at once and says where it came from.
CLI: `python -m explorer memorise {modes,sweep-p,sweep-width} ...` (see `main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.command import add_ship_option, command_cache
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter, TerminalReporter, part
from explorer.data import noise as corrupt
from explorer.data.datasets import load_or_fallback, take
from explorer.nets.small import NetConfig
from explorer.train.evaluate import exit_codes
from explorer.train.stacked import METRICS, OPTIMIZER_KINDS, BatchConfig, ModelSpec, train_batched

DATASETS = ("mnist1d", "digits", "fashion_mnist", "cifar10")
MODELS = ("mlp", "small_cnn")
ALL_MODES = tuple(corrupt.MODES)
KINDS = {"modes": "memorise-modes", "sweep-p": "memorise-sweep-p", "sweep-width": "memorise-width"}


@dataclass(frozen=True)
class LabConfig:
    """Data, model and training settings shared by every view of the lab."""

    dataset: str = "mnist1d"
    n_train: int = 1000  # training examples (a seeded random subset); fewer memorise faster
    n_test: int = 1000  # test examples, always with their true labels
    model: str = "mlp"
    width: int = 128  # hidden units (MLP) or first-layer channels (small CNN)
    depth: int = 2  # hidden layers (MLP) or conv stages (small CNN)
    optimizer: str = "adam"
    lr: float = 1e-3  # step size
    batch_size: int = 32  # examples per step
    max_epochs: int = 200  # run cap: a model not fitted by then "did not fit"
    modes: tuple[str, ...] = ALL_MODES  # corruption modes trained side by side
    p: float = 0.5  # label corruption probability of "partial_labels"
    scheme: str = "uniform"  # corrupted label over all classes, or over the other classes
    seed: int = 0  # data subset, corruption draws, initial weights and batch order

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_range("training examples", self.n_train, 50, 20_000, integer=True)
        check_range("test examples", self.n_test, 50, 10_000, integer=True)
        check_choice("model", self.model, MODELS)
        if self.model == "small_cnn" and self.dataset == "mnist1d":
            raise ConfigError("the small CNN needs image data; MNIST-1D is 1-D (use the MLP)")
        check_range("width", self.width, 1, 2048 if self.model == "mlp" else 128, integer=True)
        check_range("depth", self.depth, 1, 4, integer=True)
        check_choice("optimizer", self.optimizer, OPTIMIZER_KINDS)
        check_range("learning rate", self.lr, 1e-5, 1.0)
        check_range("batch size", self.batch_size, 1, 4096, integer=True)
        check_range("epochs cap", self.max_epochs, 1, 2000, integer=True)
        if not isinstance(self.modes, tuple) or not 1 <= len(self.modes) <= len(ALL_MODES):
            raise ConfigError(f"choose 1 to {len(ALL_MODES)} corruption modes, got {self.modes!r}")
        if len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"each corruption mode may appear once, got {self.modes!r}")
        for m in self.modes:
            check_choice("corruption mode", m, ALL_MODES)
        check_range("corruption probability p", self.p, 0.0, 1.0)
        check_choice("label scheme", self.scheme, corrupt.LABEL_SCHEMES)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)


# The setting the page opens on: Zhang et al.'s SGD with momentum on the embedded digits (no download), where
# random labels take about 3.4x the epochs of true labels (25 vs 85 here; 9 s for all six modes on 2 CPU cores).
# MNIST-1D, the CLI's default, is so hard to fit with its true labels that random ones take only ~1.2x as long.
PAGE_DEFAULT = LabConfig(dataset="digits", width=256, optimizer="momentum", lr=0.01)


@dataclass(frozen=True)
class SweepPConfig:
    """Label corruption with probability p, one model per p, all trained together."""

    lab: LabConfig = LabConfig()
    ps: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

    def __post_init__(self) -> None:
        if not isinstance(self.ps, tuple) or not 2 <= len(self.ps) <= 21:
            raise ConfigError(f"choose 2 to 21 values of p, got {self.ps!r}")
        for p in self.ps:
            check_range("corruption probability p", p, 0.0, 1.0)


@dataclass(frozen=True)
class WidthConfig:
    """Widths of the lab's model, each trained for the full cap under the given modes."""

    lab: LabConfig = LabConfig()
    widths: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    modes: tuple[str, ...] = ("true_labels", "random_labels")

    def __post_init__(self) -> None:
        if not isinstance(self.widths, tuple) or not 2 <= len(self.widths) <= 16:
            raise ConfigError(f"choose 2 to 16 widths, got {self.widths!r}")
        for w in self.widths:
            dataclasses.replace(self.lab, width=w)  # validated like the lab's own width
        if not isinstance(self.modes, tuple) or not 1 <= len(self.modes) <= len(ALL_MODES):
            raise ConfigError(f"choose 1 to {len(ALL_MODES)} corruption modes, got {self.modes!r}")
        for m in self.modes:
            check_choice("corruption mode", m, ALL_MODES)


# --- data --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabData:
    """The lab's clean training and test sets, standardised, and what was actually loaded."""

    train: corrupt.Sample
    test: corrupt.Sample
    num_classes: int
    dataset: str  # the data set used (the embedded fallback when the wanted one is missing)
    notice: str | None  # why the fallback was used


def load_lab_data(cfg: LabConfig) -> LabData:
    """Seeded subsets of the train and test splits, standardised with training moments."""
    train_ds, notice = load_or_fallback(cfg.dataset, "train")
    test_ds, _ = load_or_fallback(train_ds.name, "test")
    train_ds = take(train_ds, cfg.n_train, cfg.seed)
    test_ds = take(test_ds, cfg.n_test, cfg.seed + 1)
    x, xt = train_ds.to_float(), test_ds.to_float()
    mean, std = corrupt.moments(x)  # per channel (images) or overall (1-D)
    shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
    x = (x - mean.view(shape)) / std.view(shape).clamp_min(1e-6)
    xt = (xt - mean.view(shape)) / std.view(shape).clamp_min(1e-6)
    return LabData(corrupt.Sample(x, train_ds.y), corrupt.Sample(xt, test_ds.y), train_ds.num_classes,
                   train_ds.name, notice)


def fallback_notice(cfg: LabConfig | SweepPConfig | WidthConfig) -> str | None:
    """None when the wanted data set is here, else the message saying how to provide it."""
    lab = cfg if isinstance(cfg, LabConfig) else cfg.lab
    return load_or_fallback(lab.dataset, "train")[1]


def resolve(cfg: LabConfig | SweepPConfig | WidthConfig) -> LabConfig | SweepPConfig | WidthConfig:
    """The config that will really run: the data set replaced by the embedded fallback if missing."""
    lab = cfg if isinstance(cfg, LabConfig) else cfg.lab
    used = load_or_fallback(lab.dataset, "train")[0].name
    if used == lab.dataset:
        return cfg
    lab = dataclasses.replace(lab, dataset=used)
    return lab if isinstance(cfg, LabConfig) else dataclasses.replace(cfg, lab=lab)


def net_config(cfg: LabConfig, width: int | None = None) -> NetConfig:
    """The lab's network: `width` is the MLP's hidden units or the CNN's first-stage channels; the CNN's
    conv stages feed the output layer directly (no hidden linear layer), as in Zhang et al.'s small nets."""
    width = width or cfg.width
    if cfg.model == "mlp":
        return NetConfig("mlp", width=width, depth=cfg.depth)
    return NetConfig("small_cnn", channels=width, depth=cfg.depth, hidden_fc=False)


def _spec(cfg: LabConfig, data: LabData, width: int | None = None) -> ModelSpec:
    """The lab's network for this data."""
    return ModelSpec(net_config(cfg, width), tuple(data.train.x.shape[1:]), data.num_classes)


def _batch_config(cfg: LabConfig, epochs: int) -> BatchConfig:
    """Training settings: the same initial weights for every model."""
    return BatchConfig(optimizer=cfg.optimizer, lr=cfg.lr, batch_size=cfg.batch_size, epochs=epochs,
                       seed=cfg.seed, init_seed=cfg.seed, same_init=True)


def _stack(samples: list[corrupt.Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs as shared (N, ...) when every model sees the same ones, else (K, N, ...); labels (K, N)."""
    xs = [s.x for s in samples]
    same = all(x is xs[0] for x in xs)
    return (xs[0] if same else torch.stack(xs)), torch.stack([s.y for s in samples])


# --- fit detection -----------------------------------------------------------------------------------

def fit_epoch(train_err: list[float]) -> int | None:
    """The first epoch (1-based) with zero training error, or None if it never happened."""
    for e, err in enumerate(train_err, start=1):
        if err == 0.0:
            return e
    return None


def fit_table(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per mode: epochs to fit (or 'did not fit within N epochs'), slowdown, final accuracies."""
    fits = metrics["fit_epoch"]
    if "true_labels" in metrics["modes"]:
        base = fits[metrics["modes"].index("true_labels")]
    else:  # a p sweep compares with its p = 0 model, which has the true labels
        base = fits[metrics["ps"].index(0.0)] if 0.0 in metrics.get("ps", []) else None
    cap = metrics["max_epochs"]
    rows = []
    for i, mode in enumerate(metrics["modes"]):
        fit = fits[i]
        diverged = metrics["diverged"][i]
        outcome = (f"{fit}" if fit is not None else "diverged" if diverged
                   else f"did not fit within {cap} epochs" if len(metrics["history"]["epoch"]) >= cap
                   else "not yet")
        rows.append({
            "mode": metrics["titles"][i],
            "epochs to fit": outcome,
            "slowdown vs true labels": (f"{fit / base:.2f}x" if fit is not None and base else "–"),
            "final train acc": _last_acc(metrics["history"]["train_err"][i]),
            "final test acc": _last_acc(metrics["history"]["test_err"][i]),
            "labels agreeing with truth": metrics["label_agreement"][i],
        })
    return rows


def _last_acc(errs: list[float]) -> float:
    """Accuracy after the last epoch, NaN before the first."""
    return 1.0 - errs[-1] if errs else math.nan


# --- runs ------------------------------------------------------------------------------------------

def _train_models(cfg: LabConfig, data: LabData, spec: ModelSpec, sets: list[corrupt.Corrupted],
                  epochs: int, until_fit: bool, base: dict[str, Any], report: Reporter) -> dict[str, Any]:
    """Train one model per corrupted set together; metrics dict (also published live, after every epoch)."""
    x, y = _stack([c.train for c in sets])
    xt, _ = _stack([c.test for c in sets])
    yt = data.test.y
    k = len(sets)
    out = {**base, "max_epochs": epochs, "num_params": spec.num_params,
           "label_agreement": [corrupt.label_agreement(c.train.y, data.train.y) for c in sets],
           "fit_epoch": [None] * k, "diverged": [None] * k, "history": {}}

    history: dict[str, list] = {"epoch": [], **{m: [[] for _ in range(k)] for m in METRICS}}

    def on_epoch(epoch: int, metrics: dict[str, list[float]]) -> None:
        history["epoch"].append(epoch)
        for m in METRICS:
            for i, v in enumerate(metrics[m]):
                history[m][i].append(v)
        out["fit_epoch"] = [fit_epoch(errs) for errs in history["train_err"]]
        report.publish({**out, "history": history})  # train_batched publishes the epoch count after this

    def stop(epoch: int, metrics: dict[str, list[float]]) -> bool:
        return until_fit and all(e == 0.0 or math.isnan(e) for e in metrics["train_err"])

    res = train_batched(spec, _batch_config(cfg, epochs), k, x, y, xt, yt, on_epoch=on_epoch, report=report,
                        stop=stop)
    out["history"] = res.history.to_dict()
    out["fit_epoch"] = [fit_epoch(errs) for errs in res.history.train_err]
    out["diverged"] = list(res.diverged)
    return out


def _modes_sets(cfg: LabConfig, data: LabData, modes: tuple[str, ...]) -> list[corrupt.Corrupted]:
    """The corrupted data set of each mode."""
    return [corrupt.apply(m, data.train, data.test, num_classes=data.num_classes, p=cfg.p, scheme=cfg.scheme,
                          seed=cfg.seed) for m in modes]


def mode_title(cfg: LabConfig, mode: str) -> str:
    """A mode's label, with p and the scheme where they apply."""
    if mode == "partial_labels":
        return f"Labels corrupted, p={cfg.p:g} ({cfg.scheme})"
    return corrupt.MODES[mode].title


def compute_modes(cfg: LabConfig, report: Reporter = SILENT) -> dict[str, Any]:
    """Train every mode of cfg from the same initial weights until all fit or the cap."""
    data = load_lab_data(cfg)
    spec = _spec(cfg, data)
    base = {"view": "modes", "modes": list(cfg.modes), "titles": [mode_title(cfg, m) for m in cfg.modes],
            "chance": 1.0 / data.num_classes, "n_train": len(data.train.y), "n_test": len(data.test.y),
            "dataset": data.dataset}
    return _train_models(cfg, data, spec, _modes_sets(cfg, data, cfg.modes), cfg.max_epochs, True, base, report)


def compute_sweep_p(cfg: SweepPConfig, report: Reporter = SILENT) -> dict[str, Any]:
    """One model per p (labels corrupted with probability p), trained together until all fit or the cap."""
    lab = cfg.lab
    data = load_lab_data(lab)
    spec = _spec(lab, data)
    sets = [corrupt.apply("partial_labels", data.train, data.test, num_classes=data.num_classes, p=p,
                          scheme=lab.scheme, seed=lab.seed) for p in cfg.ps]
    base = {"view": "sweep-p", "ps": list(cfg.ps), "modes": ["partial_labels"] * len(cfg.ps),
            "titles": [f"p={p:g}" for p in cfg.ps], "chance": 1.0 / data.num_classes,
            "n_train": len(data.train.y), "n_test": len(data.test.y), "dataset": data.dataset}
    return _train_models(lab, data, spec, sets, lab.max_epochs, True, base, report)


def compute_width(cfg: WidthConfig, report: Reporter = SILENT) -> dict[str, Any]:
    """For each width, the given modes trained together for the full cap; final metrics per width."""
    lab = cfg.lab
    data = load_lab_data(lab)
    sets = _modes_sets(lab, data, cfg.modes)
    rows: list[dict[str, Any]] = []
    result = {"view": "sweep-width", "widths": list(cfg.widths), "modes": list(cfg.modes),
              "max_epochs": lab.max_epochs,
              "titles": [mode_title(lab, m) for m in cfg.modes], "chance": 1.0 / data.num_classes,
              "n_train": len(data.train.y), "n_test": len(data.test.y), "dataset": data.dataset, "rows": rows}
    n = len(cfg.widths)
    for j, width in enumerate(cfg.widths):
        spec = _spec(lab, data, width)
        # The page draws the whole sweep so far, not one width's curves.
        sub = part(report, j / n, (j + 1) / n, prefix=f"width {width}: ", snapshot=lambda _: result)
        run = _train_models(lab, data, spec, sets, lab.max_epochs, False, {}, sub)
        h = run["history"]
        for i, mode in enumerate(cfg.modes):
            rows.append({"width": width, "num_params": spec.num_params, "mode": mode,
                         "title": result["titles"][i], "fit_epoch": run["fit_epoch"][i],
                         "diverged": run["diverged"][i],
                         **{m: h[m][i][-1] for m in METRICS}})
        report.publish(result, progress=(j + 1) / n, message=f"width {width} done")
    return result


# --- cache and jobs ----------------------------------------------------------------------------------

COMPUTE: dict[str, Callable[..., dict[str, Any]]] = {
    "memorise-modes": compute_modes, "memorise-sweep-p": compute_sweep_p, "memorise-width": compute_width}


def kind_of(cfg: LabConfig | SweepPConfig | WidthConfig) -> str:
    """The cache kind of a config."""
    return {LabConfig: KINDS["modes"], SweepPConfig: KINDS["sweep-p"], WidthConfig: KINDS["sweep-width"]}[type(cfg)]


def cached(cfg: LabConfig | SweepPConfig | WidthConfig, cache: Cache) -> Entry | None:
    """The stored result for cfg (runtime first, then shipped), or None."""
    return cache.get(kind_of(cfg), cfg)


def run(cfg: LabConfig | SweepPConfig | WidthConfig, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The result for cfg: from the cache, else computed now and stored with its provenance.

    A data set missing here is replaced by the embedded fallback, and the result is stored under the
    config that really ran (so it never poses as the wanted data set).
    """
    cfg = resolve(cfg)
    kind = kind_of(cfg)

    def compute() -> ComputeResult:
        metrics = COMPUTE[kind](cfg, report)
        return ComputeResult(metrics, meta={"recompute": cli_command(cfg, full=True)})

    return cache.get_or_compute(kind, cfg, compute)


def job(cfg: LabConfig | SweepPConfig | WidthConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views/widgets.start_job: publishes a live snapshot after every epoch."""

    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = kind_of(cfg)
    return fn


# --- command line ------------------------------------------------------------------------------------

_LAB_FLAGS = {  # field -> (flag, type)
    "dataset": ("--dataset", str), "n_train": ("--n-train", int), "n_test": ("--n-test", int),
    "model": ("--model", str), "width": ("--width", int), "depth": ("--depth", int),
    "optimizer": ("--optimizer", str), "lr": ("--lr", float), "batch_size": ("--batch-size", int),
    "max_epochs": ("--max-epochs", int), "p": ("--p", float), "scheme": ("--scheme", str),
    "seed": ("--seed", int),
}


def _csv(kind: type) -> Callable[[str], tuple]:
    """Parse 'a,b,c' into a tuple of kind."""
    return lambda s: tuple(kind(v) for v in s.split(",") if v.strip())


def cli_command(cfg: LabConfig | SweepPConfig | WidthConfig, full: bool = False) -> str:
    """The command that recomputes cfg: non-default settings only, or every setting (`full`)."""
    view = {v: k for k, v in KINDS.items()}[kind_of(cfg)]
    lab = cfg if isinstance(cfg, LabConfig) else cfg.lab
    default_lab = LabConfig() if isinstance(cfg, LabConfig) else type(cfg)().lab
    parts = ["python -m explorer memorise", view]
    for name, (flag, _) in _LAB_FLAGS.items():
        if full or getattr(lab, name) != getattr(default_lab, name):
            parts.append(f"{flag} {getattr(lab, name)}")
    extras = {LabConfig: [("modes", "--modes")], SweepPConfig: [("ps", "--ps")],
              WidthConfig: [("widths", "--widths"), ("modes", "--modes")]}[type(cfg)]
    default = type(cfg)()
    for name, flag in extras:
        value = getattr(cfg, name)
        if full or value != getattr(default, name):
            parts.append(f"{flag} {','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}")
    return " ".join(parts)


def config_from_args(args: argparse.Namespace) -> LabConfig | SweepPConfig | WidthConfig:
    """Build the view's frozen config from parsed flags (validated there)."""
    default_lab = WidthConfig().lab if args.view == "sweep-width" else LabConfig()
    lab = dataclasses.replace(default_lab, **{k: v for k, v in vars(args).items()
                                              if k in _LAB_FLAGS and v is not None})
    if args.view == "modes":
        return dataclasses.replace(lab, modes=args.modes) if args.modes else lab
    if args.view == "sweep-p":
        return SweepPConfig(lab, args.ps) if args.ps else SweepPConfig(lab)
    extra = {k: v for k, v in (("widths", args.widths), ("modes", args.modes)) if v}
    return WidthConfig(lab, **extra)


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of a result, for the terminal."""
    if metrics["view"] == "sweep-width":
        lines = [f"{'width':>6} {'params':>9} {'mode':28s} {'train acc':>9} {'test acc':>8} {'train loss':>10} "
                 f"{'test loss':>9}"]
        for r in metrics["rows"]:
            lines.append(f"{r['width']:>6} {r['num_params']:>9} {r['title'][:28]:28s} {1 - r['train_err']:>9.3f} "
                         f"{1 - r['test_err']:>8.3f} {r['train_loss']:>10.4f} {r['test_loss']:>9.4f}")
        return "\n".join(lines)
    rows = fit_table(metrics)
    lines = [f"{'mode':42s} {'epochs to fit':>30s} {'slowdown':>9s} {'train acc':>9s} {'test acc':>8s} "
             f"{'labels true':>11s}"]
    for r in rows:
        lines.append(f"{r['mode'][:42]:42s} {r['epochs to fit']:>30s} {r['slowdown vs true labels']:>9s} "
                     f"{r['final train acc']:>9.3f} {r['final test acc']:>8.3f} "
                     f"{r['labels agreeing with truth']:>11.3f}")
    return "\n".join(lines)


@exit_codes
def main(argv: list[str]) -> int:
    """`python -m explorer memorise VIEW [flags]`: compute (or read) a result and print its table."""
    ap = argparse.ArgumentParser(prog="python -m explorer memorise", description=__doc__.splitlines()[0])
    ap.add_argument("view", choices=list(KINDS))
    for name, (flag, kind) in _LAB_FLAGS.items():
        ap.add_argument(flag, dest=name, type=kind, default=None)
    ap.add_argument("--modes", type=_csv(str), default=None, help="comma-separated corruption modes")
    ap.add_argument("--ps", type=_csv(float), default=None, help="comma-separated p values (sweep-p)")
    ap.add_argument("--widths", type=_csv(int), default=None, help="comma-separated widths (sweep-width)")
    add_ship_option(ap)
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    cache = command_cache(args.ship)
    with TerminalReporter() as report:
        entry = run(cfg, cache, report)
    print(f"{cli_command(cfg)}\n{entry.meta.get('device')} · {entry.meta.get('wall_time_s', 0):.1f} s · "
          f"{entry.meta.get('code_version')} · {entry.path}")
    print(format_table(entry.metrics))
    return 0
