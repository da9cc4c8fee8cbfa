"""Optimizer registry: torch.optim's own classes, each with its hyperparameters, defaults and limits.

It is the one place that says what an optimizer kind is: every trainer declares the kinds it supports as
a subset of its keys (`supported_kinds`) and builds its optimizers from it (`config_for`, `build_optimizer`).

Every racer is a frozen `OptimizerConfig` (kind, learning rate, the kind's other hyperparameters);
`build_optimizer` turns it into the torch.optim optimizer itself, so a race runs exactly the code a
user would write. Nothing here re-implements an update rule. `build_shared_optimizers` serves many
racers with as few torch.optim optimizers as possible (one param group per racer, fused kernels where
torch has them); tests check that it steps exactly like one optimizer per racer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from explorer.core.config import ConfigError, check_choice, check_range

LR_RANGE = (1e-6, 100.0)  # learning rate limits for every optimizer (Adadelta's default is 1.0)
MAX_RACERS = 10


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its keyword, label, default and allowed range."""

    name: str
    label: str
    default: float
    lo: float
    hi: float
    log: bool = False  # a slider on a log scale suits it (eps, weight decay)
    help: str = ""


@dataclass(frozen=True)
class OptimizerSpec:
    """A registered optimizer: the torch.optim class, fixed keywords and tunable hyperparameters."""

    label: str
    cls: type[torch.optim.Optimizer]
    default_lr: float  # a sensible learning rate on the real tasks
    hparams: tuple[HParam, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)  # e.g. nesterov=True
    momentum_state: str | None = None  # the state entry drawn as the "momentum" arrow, if any


def _momentum(default: float = 0.9) -> HParam:
    return HParam("momentum", "momentum", default, 0.0, 0.999, help="fraction of the last velocity kept")


def _betas() -> tuple[HParam, HParam]:
    return (HParam("beta1", "β₁", 0.9, 0.0, 0.999, help="decay of the gradient average"),
            HParam("beta2", "β₂", 0.999, 0.0, 0.99999, help="decay of the squared-gradient average"))


def _eps(default: float) -> HParam:
    return HParam("eps", "ε", default, 1e-12, 1.0, log=True, help="added to the denominator")


def _wd(default: float = 0.0) -> HParam:
    return HParam("weight_decay", "weight decay", default, 0.0, 1.0, help="L2 penalty (decoupled for AdamW)")


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("SGD", torch.optim.SGD, 0.05, (_wd(),)),
    "momentum": OptimizerSpec("Momentum", torch.optim.SGD, 0.01, (_momentum(), _wd()),
                              momentum_state="momentum_buffer"),
    "nesterov": OptimizerSpec("Nesterov", torch.optim.SGD, 0.01, (_momentum(), _wd()),
                              fixed={"nesterov": True}, momentum_state="momentum_buffer"),
    "adagrad": OptimizerSpec("Adagrad", torch.optim.Adagrad, 0.01, (_eps(1e-10), _wd())),
    "rmsprop": OptimizerSpec("RMSProp", torch.optim.RMSprop, 0.001,
                             (HParam("alpha", "α", 0.99, 0.0, 0.9999, help="decay of the squared-gradient average"),
                              _momentum(0.0), _eps(1e-8), _wd()),
                             momentum_state="momentum_buffer"),
    "adadelta": OptimizerSpec("Adadelta", torch.optim.Adadelta, 1.0,
                              (HParam("rho", "ρ", 0.9, 0.0, 0.9999, help="decay of the running averages"),
                               _eps(1e-6), _wd())),
    "adam": OptimizerSpec("Adam", torch.optim.Adam, 0.001, (*_betas(), _eps(1e-8), _wd()), momentum_state="exp_avg"),
    "adamw": OptimizerSpec("AdamW", torch.optim.AdamW, 0.001, (*_betas(), _eps(1e-8), _wd(0.01)),
                           momentum_state="exp_avg"),
    "nadam": OptimizerSpec("NAdam", torch.optim.NAdam, 0.002,
                           (*_betas(), _eps(1e-8), _wd(),
                            HParam("momentum_decay", "momentum decay", 0.004, 0.0, 1.0, help="ψ in the NAdam schedule")),
                           momentum_state="exp_avg"),
    "radam": OptimizerSpec("RAdam", torch.optim.RAdam, 0.001, (*_betas(), _eps(1e-8), _wd()), momentum_state="exp_avg"),
}

@dataclass(frozen=True)
class OptimizerConfig:
    """One racer: an optimizer kind, its learning rate and its other hyperparameters (defaults filled in)."""

    kind: str = "sgd"
    lr: float | None = None  # None: the kind's default learning rate
    hparams: tuple[tuple[str, float], ...] = ()  # (name, value) pairs; missing ones take the default

    def __post_init__(self) -> None:
        check_choice("optimizer", self.kind, OPTIMIZERS)
        spec = OPTIMIZERS[self.kind]
        lr = spec.default_lr if self.lr is None else self.lr
        check_range(f"{spec.label} learning rate", lr, *LR_RANGE)
        given = dict(self.hparams)
        if len(given) != len(self.hparams):
            raise ConfigError(f"{spec.label}: a hyperparameter is given twice")
        known = {h.name for h in spec.hparams}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(f"{spec.label} has no hyperparameter {', '.join(unknown)}; "
                              f"it has {', '.join(sorted(known)) or 'only a learning rate'}")
        full = []
        for h in spec.hparams:
            value = given.get(h.name, h.default)
            check_range(f"{spec.label} {h.label}", value, h.lo, h.hi)
            full.append((h.name, float(value)))
        # Normalise so that equal settings give equal configs (and equal cache keys).
        object.__setattr__(self, "lr", float(lr))
        object.__setattr__(self, "hparams", tuple(full))

    @property
    def spec(self) -> OptimizerSpec:
        """The registry entry of this kind."""
        return OPTIMIZERS[self.kind]

    def hp(self, name: str) -> float:
        """The value of one hyperparameter."""
        return dict(self.hparams)[name]

    @property
    def label(self) -> str:
        """A short name for legends: kind and learning rate, plus what differs from the defaults."""
        spec = self.spec
        extra = [f"{h.label} {self.hp(h.name):g}" for h in spec.hparams if self.hp(h.name) != h.default]
        return f"{spec.label} lr={self.lr:g}" + (f" ({', '.join(extra)})" if extra else "")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments for the torch.optim class."""
        hp = dict(self.hparams)
        if "beta1" in hp:  # torch.optim takes the two decays as one `betas` pair
            hp["betas"] = (hp.pop("beta1"), hp.pop("beta2"))
        return {"lr": self.lr, **self.spec.fixed, **hp}


def supported_kinds(*kinds: str) -> tuple[str, ...]:
    """A trainer's optimizer kinds, a subset of the registry's keys (checked, so a typo fails at import)."""
    for kind in kinds:
        check_choice("optimizer", kind, OPTIMIZERS)
    return kinds


def config_for(kind: str, lr: float, **settings: float) -> OptimizerConfig:
    """The OptimizerConfig of `kind` at `lr` from a trainer's own settings (momentum=..., weight_decay=...):
    those the kind has as hyperparameters are used, the others ignored; the rest keep the registry's defaults."""
    check_choice("optimizer", kind, OPTIMIZERS)
    names = {h.name for h in OPTIMIZERS[kind].hparams}
    return OptimizerConfig(kind, lr, tuple((k, float(v)) for k, v in settings.items() if k in names))


def build_optimizer(cfg: OptimizerConfig, params: Iterable[torch.Tensor], **extra: Any) -> torch.optim.Optimizer:
    """The torch.optim optimizer for one racer (`extra`: implementation switches such as foreach=True)."""
    return cfg.spec.cls(list(params), **cfg.kwargs(), **extra)


def step_family(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """The torch.optim class whose step() `cls` runs (AdamW -> Adam: AdamW only sets decoupled_weight_decay)."""
    return next(c for c in cls.__mro__ if "step" in vars(c))


def fast_kwargs(cls: type[torch.optim.Optimizer], device: torch.device) -> dict[str, Any]:
    """torch.optim's fastest implementation switch for `cls` on `device`: fused=True where the class has a
    fused kernel there (SGD, Adam, AdamW, Adagrad on CPU and CUDA); otherwise torch.optim's default choice
    (foreach on accelerators, the single-tensor loop on the CPU, the faster one there for one flat tensor)."""
    if device.type in ("cpu", "cuda") and "fused" in inspect.signature(cls.__init__).parameters:
        return {"fused": True}
    return {}


@dataclass
class SharedOptimizers:
    """Many racers' torch.optim optimizers, as few as possible: racers whose classes share one step()
    share one optimizer, with one param group per racer. Each group is exactly the group the racer's own
    class makes (`build_optimizer`), so SGD / momentum / Nesterov are groups of one torch.optim.SGD and
    Adam / AdamW groups of one torch.optim.Adam (AdamW's group carries decoupled_weight_decay=True)."""

    optimizers: list[torch.optim.Optimizer]
    groups: list[tuple[torch.optim.Optimizer, dict[str, Any]]]  # per racer: its optimizer and its group

    def step(self) -> None:
        """One step of every racer still in the race."""
        for opt in self.optimizers:
            if opt.param_groups:
                opt.step()

    def drop(self, i: int) -> None:
        """Racer i leaves the race: its group is no longer stepped (the others' are untouched)."""
        opt, group = self.groups[i]
        opt.param_groups = [g for g in opt.param_groups if g is not group]


def build_shared_optimizers(racers: Iterable[OptimizerConfig], params: Iterable[list[torch.Tensor]],
                            device: torch.device) -> SharedOptimizers:
    """torch.optim optimizers for all racers (racer i updates params[i]), grouped by step() class, each
    with torch.optim's fastest implementation on `device` (`fast_kwargs`)."""
    families: dict[type, list[tuple[int, dict[str, Any]]]] = {}
    for i, (r, ps) in enumerate(zip(racers, params)):
        family = step_family(r.spec.cls)
        extra = fast_kwargs(family, device)
        (group,) = build_optimizer(r, ps, **extra).param_groups  # the class's own defaults and switches
        families.setdefault(family, []).append((i, group))
    optimizers, groups = [], {}
    for family, members in families.items():
        opt = family([g for _, g in members], **fast_kwargs(family, device))
        optimizers.append(opt)
        for (i, _), g in zip(members, opt.param_groups):
            groups[i] = (opt, g)
    return SharedOptimizers(optimizers, [groups[i] for i in range(len(groups))])


def momentum_of(cfg: OptimizerConfig, opt: torch.optim.Optimizer, param: torch.Tensor) -> torch.Tensor | None:
    """The optimizer's velocity / first-moment state for `param`, or None where it keeps none."""
    name = cfg.spec.momentum_state
    if name is None or (cfg.kind == "rmsprop" and cfg.hp("momentum") == 0):
        return None
    return opt.state.get(param, {}).get(name)


def check_racers(racers: tuple[OptimizerConfig, ...]) -> None:
    """Refuse an empty race, too many racers, or something that is not an OptimizerConfig."""
    if not isinstance(racers, tuple) or not racers:
        raise ConfigError("tick at least one optimizer")
    if len(racers) > MAX_RACERS:
        raise ConfigError(f"at most {MAX_RACERS} optimizers can race at once, got {len(racers)}")
    for r in racers:
        if not isinstance(r, OptimizerConfig):
            raise ConfigError(f"a racer must be an OptimizerConfig, got {type(r).__name__}")


def default_racers(kinds: Iterable[str] = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
                   ) -> tuple[OptimizerConfig, ...]:
    """Racers with default settings, one per kind."""
    return tuple(OptimizerConfig(k) for k in kinds)
