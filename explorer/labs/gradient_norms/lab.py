"""Gradient norms and vanishing gradients: the Frobenius norm of every layer's weight gradient, per iteration.

A `RunConfig` is one network trained with plain SGD (no momentum: Adam would rescale the tiny gradients and hide
what they are). Its `network` is either "mlp", a deep MLP (`depth` Linear layers: input -> width, depth - 2 hidden
width -> width, width -> classes) in one `VARIANTS` arrangement (plain, batch norm after every hidden Linear, or
pre-activation residual blocks) with one activation and initialisation, on a 2D toy set or a flattened image set;
or one of the course's CNN families (explorer.nets.cnn: simple, resnet9, resnet20) at a width multiplier, on an
image set kept as (C, H, W). `train` records, at every iteration before the step, the loss, the total gradient
norm (all parameters) and the weight-gradient norm of each Linear (MLP) or each Conv2d and Linear layer (CNN), in
forward order. A non-finite loss stops the run with `Diverged`. A `CompareConfig` is several MLP variants at
several depths, the side-by-side view; each of its runs is cached on its own, so the depth explorer reuses them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache

import torch
from torch import nn

from explorer.core.cache import Cache, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.seeding import seeded
from explorer.data import datasets, toy2d
from explorer.nets import cnn
from explorer.train.evaluate import Diverged, diverged_message, first_nonfinite

VARIANTS = {"plain": "plain", "batchnorm": "batch norm", "residual": "residual"}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
INITS = {"pytorch": "PyTorch default (uniform ±1/√fan_in)", "he": "He (normal, gain √2)",
         "xavier": "Xavier / Glorot (normal)"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DATA = {"spiral": "2D spiral (toy)", "circle": "2D circle (toy)", "xor": "2D XOR (toy)",
        "digits": "Digits 8x8 (embedded)", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
TOY = ("spiral", "circle", "xor")
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
NETWORKS = {"mlp": "deep MLP", "simple": "simple CNN", "resnet9": "ResNet9", "resnet20": "ResNet20"}
assert set(NETWORKS) == {"mlp", *cnn.FAMILIES}  # every CNN family of explorer.nets.cnn, and the MLP
MLP_ONLY = ("depth", "width", "activation", "variant", "init")  # set to their defaults for a CNN
MAX_DEPTH = 60
MAX_WIDTH = 256
MAX_ITERATIONS = 2000
MAX_WORK = 200_000_000  # parameter-iterations (`work`) of one run: tens of seconds on a 2-core CPU
MAX_FLOPS = 2e12  # a CNN run's FLOPs (forward + backward): tens of seconds on a 2-core CPU
REPORT_EVERY = 10  # iterations between updates (one host sync each)


@dataclass(frozen=True)
class RunConfig:
    """One network (a deep MLP or a CNN) trained with SGD while its per-layer gradient norms are recorded."""

    data: str = "spiral"  # a key of DATA; a CNN needs an image set
    depth: int = 10  # MLP: Linear layers, input and output layers included (2..60)
    width: int = 32  # MLP: units of every hidden layer
    activation: str = "sigmoid"  # MLP
    variant: str = "plain"  # MLP: a key of VARIANTS
    init: str = "pytorch"  # MLP: a key of INITS
    dtype: str = "float32"  # "exactly 0 by layer 60" is float32's underflow; float64 shows the true size
    iterations: int = 100
    lr: float = 0.1  # plain SGD's step size
    batch_size: int = 64
    n_train: int = 500  # examples used (toy sets: points generated)
    seed: int = 0
    network: str = "mlp"  # a key of NETWORKS: the deep MLP or a CNN family of explorer.nets.cnn
    cnn_width: float = 0.25  # CNN: channel multiplier of the family's widths (explorer.nets.cnn.WIDTH_RANGE)

    def __post_init__(self) -> None:
        check_choice("network", self.network, NETWORKS)
        check_choice("data set", self.data, DATA)
        check_range("CNN width multiplier", self.cnn_width, *cnn.WIDTH_RANGE)
        check_range("depth", self.depth, 2, MAX_DEPTH, integer=True)
        check_range("width", self.width, 2, MAX_WIDTH, integer=True)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("variant", self.variant, VARIANTS)
        check_choice("initialisation", self.init, INITS)
        check_choice("dtype", self.dtype, DTYPES)
        check_range("iterations", self.iterations, 1, MAX_ITERATIONS, integer=True)
        check_range("learning rate", self.lr, 1e-6, 10.0)
        check_range("batch size", self.batch_size, 1, 1024, integer=True)
        check_range("training examples", self.n_train, 20, 20_000, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        # fields the network does not use take their defaults, so two runs that train the same network are equal
        unused = MLP_ONLY if self.is_cnn else ("cnn_width",)
        defaults = {f.name: f.default for f in fields(self)}
        for name in unused:
            object.__setattr__(self, name, defaults[name])
        object.__setattr__(self, "cnn_width", float(self.cnn_width))  # 1 and 1.0: one cache key
        if not self.is_cnn:
            if work(self) > MAX_WORK:
                raise ConfigError(f"this run is {work(self):,} parameter-iterations; at most {MAX_WORK:,} are "
                                  "allowed (fewer iterations, a smaller width or a smaller batch)")
            return
        if self.data in TOY:
            raise ConfigError(f"a CNN needs image data, not the 2D points of {DATA[self.data]}; choose one of "
                              + ", ".join(DATA[d] for d in IMAGE_SHAPES))
        if self.batch_size < 2:
            raise ConfigError("a CNN's batch norm needs at least 2 examples per batch; got batch size 1")
        f = flops(self)
        if f > MAX_FLOPS:
            raise ConfigError(f"this run is {f:.3g} FLOPs ({flops_per_image(self):,} per {DATA[self.data]} image x 3 "
                              f"for forward and backward x batch {self.batch_size} x {self.iterations:,} "
                              f"iterations); at most {MAX_FLOPS:.0e} are allowed (fewer iterations, a smaller "
                              "width multiplier, a smaller batch or smaller images)")

    @property
    def is_cnn(self) -> bool:
        """True for a CNN family, False for the deep MLP."""
        return self.network != "mlp"

    @property
    def name(self) -> str:
        """'plain, depth 10' or 'simple CNN, width x0.25'."""
        if self.is_cnn:
            return f"{NETWORKS[self.network]}, width x{self.cnn_width:g}"
        return f"{VARIANTS[self.variant]}, depth {self.depth}"


@dataclass(frozen=True)
class CompareConfig:
    """Several variants at several depths, everything else shared: the side-by-side view."""

    variants: tuple[str, ...] = ("plain", "batchnorm", "residual")
    depths: tuple[int, ...] = (10, 60)
    data: str = "spiral"
    width: int = 32
    activation: str = "sigmoid"
    init: str = "pytorch"
    dtype: str = "float32"
    iterations: int = 100
    lr: float = 0.1
    batch_size: int = 64
    n_train: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.variants, tuple) or not 1 <= len(self.variants) <= len(VARIANTS):
            raise ConfigError(f"choose 1 to {len(VARIANTS)} variants, got {self.variants!r}")
        for v in self.variants:
            check_choice("variant", v, VARIANTS)
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError("each variant may be chosen once")
        if not isinstance(self.depths, tuple) or not 1 <= len(self.depths) <= 4:
            raise ConfigError(f"choose 1 to 4 depths, got {self.depths!r}")
        if len(set(self.depths)) != len(self.depths):
            raise ConfigError("each depth may be chosen once")
        self.runs()  # every run's own limits

    def runs(self) -> list[RunConfig]:
        """The RunConfig of each (depth, variant), depth-major."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("variants", "depths")}
        return [RunConfig(depth=d, variant=v, **shared) for d in self.depths for v in self.variants]


def num_params(cfg: RunConfig, n_in: int = 2, n_out: int = 2) -> int:
    """Weights and biases of the MLP (BN adds 2 per hidden unit of each hidden layer)."""
    sizes = (n_in, *([cfg.width] * (cfg.depth - 1)), n_out)
    n = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    return n + (2 * cfg.width * (cfg.depth - 2) if cfg.variant == "batchnorm" else 0)


def work(cfg: RunConfig) -> int:
    """An MLP's parameter-iterations times batch size / 64 (an image set's input layer counted at its pixels)."""
    n_in = math.prod(IMAGE_SHAPES[cfg.data]) if cfg.data in IMAGE_SHAPES else 2
    return num_params(cfg, n_in, 10) * cfg.iterations * max(1, cfg.batch_size // 64)


@lru_cache(maxsize=64)
def _flops_per_image(family: str, width: float, shape: tuple[int, int, int]) -> int:
    with torch.device("meta"):  # shapes only: no weights allocated, however wide the network
        model = cnn.build_cnn(cnn.CNNConfig(family=family, width=width, in_channels=shape[0]))
    return cnn.flops_per_image(model, shape)


def flops_per_image(cfg: RunConfig) -> int:
    """A CNN's forward FLOPs on one image of cfg's data set (explorer.nets.cnn.flops_per_image)."""
    return _flops_per_image(cfg.network, cfg.cnn_width, IMAGE_SHAPES[cfg.data])


def flops(cfg: RunConfig) -> int:
    """A CNN run's FLOPs: forward FLOPs per image x 3 (forward + backward) x batch size x iterations."""
    return flops_per_image(cfg) * 3 * cfg.batch_size * cfg.iterations


def cost_text(cfg: RunConfig) -> str:
    """The run's size in the unit its limit uses: '1.2e+11 FLOPs' or '3,200,000 parameter-iterations'."""
    return f"{flops(cfg):.2g} FLOPs" if cfg.is_cnn else f"{work(cfg):,} parameter-iterations"


# --- the network ---------------------------------------------------------------------------------------------

class DeepMLP(nn.Module):
    """input Linear, depth - 2 hidden Linear layers arranged as `variant`, output Linear."""

    def __init__(self, n_in: int, n_out: int, cfg: RunConfig) -> None:
        super().__init__()
        self.variant = cfg.variant
        self.act = ACTIVATIONS[cfg.activation]()
        self.inp = nn.Linear(n_in, cfg.width)
        self.hidden = nn.ModuleList(nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth - 2))
        self.norms = nn.ModuleList(nn.BatchNorm1d(cfg.width) for _ in self.hidden) if cfg.variant == "batchnorm" \
            else None
        self.out = nn.Linear(cfg.width, n_out)

    @property
    def linears(self) -> list[nn.Linear]:
        """Every Linear layer, input to output: layer 1 is the first."""
        return [self.inp, *self.hidden, self.out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        if self.variant == "residual":  # pre-activation blocks: h + W act(h); the identity carries the gradient
            for lin in self.hidden:
                h = h + lin(self.act(h))
        elif self.norms is not None:
            h = self.act(h)
            for lin, bn in zip(self.hidden, self.norms):
                h = self.act(bn(lin(h)))
        else:
            h = self.act(h)
            for lin in self.hidden:
                h = self.act(lin(h))
        return self.out(self.act(h) if self.variant == "residual" else h)


def _init(model: DeepMLP, how: str) -> None:
    """Re-initialise the Linear layers (PyTorch's default is already there)."""
    if how == "pytorch":
        return
    for lin in model.linears:
        if how == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        else:
            nn.init.xavier_normal_(lin.weight)
        nn.init.zeros_(lin.bias)


def make_model(cfg: RunConfig, n_in: int, n_out: int) -> DeepMLP:
    """The seeded MLP in cfg's dtype (on the CPU)."""
    with seeded(cfg.seed):
        model = DeepMLP(n_in, n_out, cfg)
        _init(model, cfg.init)
    return model.to(DTYPES[cfg.dtype])


def make_network(cfg: RunConfig, shape: tuple[int, ...], n_out: int) -> nn.Module:
    """The seeded network of cfg for inputs of one example's shape ((D,) for the MLP, (C, H, W) for a CNN)."""
    if not cfg.is_cnn:
        return make_model(cfg, math.prod(shape), n_out)
    with seeded(cfg.seed):
        model = cnn.build_cnn(cnn.CNNConfig(family=cfg.network, width=cfg.cnn_width, in_channels=shape[0],
                                            classes=n_out))
    return model.to(DTYPES[cfg.dtype])


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose weight-gradient norms are recorded, in forward order: the MLP's Linear layers, or every
    Conv2d and Linear layer of a CNN (its modules are registered in the order they run)."""
    if isinstance(model, DeepMLP):
        return model.linears
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def layer_names(model: nn.Module) -> list[str]:
    """'layer 1'... for the MLP; 'conv 1', ..., 'fc' for a CNN (numbered when there are several of a kind)."""
    layers = weight_layers(model)
    if isinstance(model, DeepMLP):
        return [f"layer {i}" for i in range(1, len(layers) + 1)]
    n_conv = sum(isinstance(m, nn.Conv2d) for m in layers)
    n_fc = len(layers) - n_conv
    names, counts = [], {"conv": 0, "fc": 0}
    for m in layers:
        kind = "conv" if isinstance(m, nn.Conv2d) else "fc"
        counts[kind] += 1
        names.append(kind if (n_conv if kind == "conv" else n_fc) == 1 else f"{kind} {counts[kind]}")
    return names


def scaled_norms(grads: torch.Tensor) -> torch.Tensor:
    """(G,) Frobenius norms of G stacked same-shape gradients (G, ...), in float64 and scaled by each one's
    largest entry: a float32 norm squares its entries, so gradients of ~1e-23 would read 0 although they are not."""
    g = grads.to(torch.float64).flatten(1)
    m = g.abs().amax(1, keepdim=True)
    return torch.linalg.vector_norm(g / torch.where(m > 0, m, 1.0), dim=1) * m.squeeze(1)


def layer_grad_norms(model: nn.Module) -> torch.Tensor:
    """(L,) Frobenius norms of each weight_layers layer's weight gradient, input layer first; 0 only when every
    entry of that gradient is exactly 0."""
    if not isinstance(model, DeepMLP):  # layers of many shapes: one norm each
        return torch.cat([scaled_norms(m.weight.grad.unsqueeze(0)) for m in weight_layers(model)])
    parts = [scaled_norms(model.inp.weight.grad.unsqueeze(0))]
    if len(model.hidden):
        parts.append(scaled_norms(torch.stack([lin.weight.grad for lin in model.hidden])))
    parts.append(scaled_norms(model.out.weight.grad.unsqueeze(0)))
    return torch.cat(parts)


def total_grad_norm(model: nn.Module) -> torch.Tensor:
    """The norm of the whole gradient (every parameter, biases and BN included), float64."""
    flat = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return scaled_norms(flat.unsqueeze(0))[0]


# --- data ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Data:
    """Training inputs in the run's dtype ((N, D) for the MLP, (N, C, H, W) for a CNN), labels (N,), classes, and
    a notice when a set fell back."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    notice: str | None = None


def make_data(cfg: RunConfig, cache: Cache | None = None) -> Data:
    """The run's training examples: toy points scaled to [-1, 1], or images in [0, 1] (flattened for the MLP)."""
    dtype = DTYPES[cfg.dtype]
    if cfg.data in TOY:
        pts = toy2d.make_points(toy2d.Data2DConfig(name=cfg.data, n_points=cfg.n_train, seed=cfg.seed))
        x = torch.tensor(pts.x, dtype=dtype) / toy2d.DOMAIN
        return Data(x, torch.tensor(pts.y), pts.num_classes)
    ds, notice = datasets.load_or_fallback(cfg.data, "train", cache=cache)
    ds = datasets.take(ds, cfg.n_train, cfg.seed)
    x = ds.to_float() if cfg.is_cnn else ds.to_float().flatten(1)
    return Data(x.to(dtype), ds.y, ds.num_classes, notice)


# --- training ------------------------------------------------------------------------------------------------

@dataclass
class RunHistory:
    """Per iteration (1-based): loss, total gradient norm, and each recorded layer's weight-gradient norm."""

    name: str
    depth: int  # recorded layers: the MLP's Linear layers, or a CNN's Conv2d and Linear layers
    iteration: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    total_norm: list[float] = field(default_factory=list)
    layer_norms: list[list[float]] = field(default_factory=list)  # [iteration][layer]
    notice: str | None = None
    layers: list[str] = field(default_factory=list)  # each recorded layer's name, input first

    def to_dict(self) -> dict:
        """Plain values (JSON); copies, so a published snapshot does not grow under the page."""
        return {"name": self.name, "depth": self.depth, "iteration": list(self.iteration), "loss": list(self.loss),
                "total_norm": list(self.total_norm), "layer_norms": list(self.layer_norms), "notice": self.notice,
                "layers": list(self.layers)}


def train(cfg: RunConfig, on_update: Callable[[RunHistory], None] | None = None, device: torch.device | None = None,
          cache: Cache | None = None) -> RunHistory:
    """Train cfg with SGD, recording the gradient norms before every step; on_update every REPORT_EVERY
    iterations. Raises Diverged when the loss stops being finite."""
    device = device or get_device()
    if device.type == "mps" and cfg.dtype == "float64":
        device = torch.device("cpu")  # MPS has no float64
    data = make_data(cfg, cache)
    x, y = data.x.to(device), data.y.to(device)
    model = make_network(cfg, tuple(x.shape[1:]), data.num_classes).to(device)
    drop_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    for m in model.modules():  # the simple CNN's dropout draws its masks from this run's own generator
        if isinstance(m, cnn.Dropout):
            m.generator = drop_gen
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    names = layer_names(model)
    hist = RunHistory(cfg.name, len(names), notice=data.notice, layers=names)
    n = len(x)
    batch = min(cfg.batch_size, n)
    if batch == 1 and cfg.variant == "batchnorm":
        raise ConfigError("batch norm needs at least 2 examples per batch")
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for it in range(1, cfg.iterations + 1):
        idx = torch.randint(0, n, (batch,), generator=gen).to(device)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        pending.append((loss.detach(), total_grad_norm(model), layer_grad_norms(model)))
        opt.step()
        if it % REPORT_EVERY and it != cfg.iterations:
            continue
        losses = torch.stack([p[0] for p in pending]).double().cpu()
        first = it - len(pending) + 1
        bad = first_nonfinite(losses)[0]
        if bad is not None:
            where = first + bad
            raise Diverged(diverged_message(cfg.name, where, None, cfg.lr,
                                            cause="its training loss became non-finite"), where, 0)
        hist.iteration += list(range(first, it + 1))
        hist.loss += losses.tolist()
        hist.total_norm += torch.stack([p[1] for p in pending]).double().cpu().tolist()
        hist.layer_norms += torch.stack([p[2] for p in pending]).double().cpu().tolist()
        pending = []
        if on_update is not None:
            on_update(hist)
    return hist


# --- cache and jobs ------------------------------------------------------------------------------------------

KIND = "gradient-norms-run"  # cache kind of one finished run


def cached(cfg: RunConfig, cache: Cache) -> Entry | None:
    """The stored finished run of cfg, or None."""
    return cache.get(KIND, cfg)


def store(cfg: RunConfig, hist: RunHistory, cache: Cache, wall_time_s: float) -> Entry:
    """Keep a finished run: the norms as a float64 tensor (exact zeros and 1e-300 survive), the rest as JSON."""
    tensors = {"loss": torch.tensor(hist.loss, dtype=torch.float64),
               "total_norm": torch.tensor(hist.total_norm, dtype=torch.float64),
               "layer_norms": torch.tensor(hist.layer_norms, dtype=torch.float64)}
    metrics = {"name": hist.name, "depth": hist.depth, "notice": hist.notice, "iterations": len(hist.iteration),
               "layers": hist.layers}
    return cache.put(KIND, cfg, metrics, tensors, meta={"wall_time_s": wall_time_s})


def from_entry(entry: Entry) -> RunHistory:
    """The history a stored run holds."""
    t, m = entry.tensors(), entry.metrics
    layers = m.get("layers") or [f"layer {i}" for i in range(1, m["depth"] + 1)]
    return RunHistory(m["name"], m["depth"], list(range(1, m["iterations"] + 1)), t["loss"].tolist(),
                      t["total_norm"].tolist(), t["layer_norms"].tolist(), m.get("notice"), layers)


def run(cfg: RunConfig, cache: Cache, on_update: Callable[[RunHistory], None] | None = None) -> RunHistory:
    """The cached run of cfg, or train it and store it."""
    entry = cached(cfg, cache)
    if entry is not None:
        return from_entry(entry)
    start = time.perf_counter()
    hist = train(cfg, on_update, cache=cache)
    store(cfg, hist, cache, time.perf_counter() - start)
    return hist


COMPARE_KIND = "gradient-norms-compare"  # job key kind of a side-by-side comparison (its runs are cached singly)
PUBLISH_S = 0.25


def compare(cfg: CompareConfig, cache: Cache, on_update: Callable[[dict], None] | None = None) -> dict:
    """Every run of cfg (cached ones read, others trained): {"runs": RunHistory dicts, "diverged": messages,
    "final": True}; a diverging run stops at once, is said in "diverged", and the others go on. on_update sees
    the same shape with the runs so far ("final" False until the last call)."""
    done: list[dict] = []
    diverged: list[str] = []
    for rc in cfg.runs():
        def live(h: RunHistory) -> None:
            if on_update is not None:
                on_update({"runs": [*done, h.to_dict()], "diverged": list(diverged), "final": False})
        try:
            done.append(run(rc, cache, live).to_dict())
        except Diverged as exc:
            diverged.append(str(exc))
    out = {"runs": done, "diverged": diverged, "final": True}
    if on_update is not None:
        on_update(out)
    return out


def job(cfg: CompareConfig, cache: Cache) -> Callable[[JobContext], dict]:
    """A job function for views.widgets.start_job: the comparison, publishing the runs so far every PUBLISH_S."""
    runs = cfg.runs()
    total = sum(r.iterations for r in runs)

    def fn(ctx: JobContext) -> dict:
        last = 0.0

        def on_update(snap: dict) -> None:
            nonlocal last
            ctx.checkpoint()
            now = time.perf_counter()
            hs = snap["runs"]
            if now - last >= PUBLISH_S or snap["final"]:
                last = now
                done_its = sum(len(h["iteration"]) for h in hs)
                what = f"{hs[-1]['name']}: iteration {len(hs[-1]['iteration']):,} of {cfg.iterations:,}" if hs else ""
                ctx.publish(snap, progress=done_its / total, message=f"{what} (run {len(hs)} of {len(runs)})")

        return compare(cfg, cache, on_update)

    fn.__name__ = COMPARE_KIND
    return fn


def all_cached(cfg: CompareConfig, cache: Cache) -> dict | None:
    """The comparison from the cache when every run of it is there, else None."""
    entries = [cached(rc, cache) for rc in cfg.runs()]
    if any(e is None for e in entries):
        return None
    return {"runs": [from_entry(e).to_dict() for e in entries], "diverged": [], "final": True}


def run_job(cfg: RunConfig, cache: Cache) -> Callable[[JobContext], dict]:
    """A job function for one run (the depth explorer's and the any-model section's): {"run": history so far,
    "diverged": message or None}."""
    def fn(ctx: JobContext) -> dict:
        last = 0.0

        def on_update(h: RunHistory) -> None:
            nonlocal last
            ctx.checkpoint()
            now = time.perf_counter()
            if now - last >= PUBLISH_S or len(h.iteration) == cfg.iterations:
                last = now
                ctx.publish({"run": h.to_dict(), "diverged": None}, progress=len(h.iteration) / cfg.iterations,
                            message=f"iteration {len(h.iteration):,} of {cfg.iterations:,}")

        try:
            out = {"run": run(cfg, cache, on_update).to_dict(), "diverged": None}
        except Diverged as exc:
            out = {"run": None, "diverged": str(exc)}
        ctx.publish(out, progress=1.0)
        return out

    fn.__name__ = KIND
    return fn


# --- summaries -----------------------------------------------------------------------------------------------

def zeros(h: dict) -> tuple[int, int]:
    """(layer norms exactly 0, all layer norms) over a run's iterations."""
    flat = [v for row in h["layer_norms"] for v in row]
    return sum(1 for v in flat if v == 0.0), len(flat)


def picks(depth: int) -> list[int]:
    """1-based first, middle and last layer (deduplicated)."""
    return sorted({1, (depth + 1) // 2, depth})


def table(hists: list[dict]) -> list[dict]:
    """Per run: first/middle/last layer's norm at the first and last iteration, and the exact zeros."""
    rows = []
    for h in hists:
        if not h["layer_norms"]:
            continue
        z, n = zeros(h)
        for layer in picks(h["depth"]):
            rows.append({"run": h["name"], "layer": layer, "first iteration": h["layer_norms"][0][layer - 1],
                         "last iteration": h["layer_norms"][-1][layer - 1], "exact zeros in run": f"{z} of {n}"})
    return rows


def ratio_text(h: dict, at: int = 0) -> str:
    """'layer 1 / layer L = 3.1e-12' (a CNN: 'conv 1 / fc = ...') at iteration index `at`, or 'layer 1 is exactly 0'."""
    row = h["layer_norms"][at]
    names = h.get("layers") or [f"layer {i}" for i in range(1, h["depth"] + 1)]
    first, last = names[0], names[-1]
    if row[0] == 0.0:
        return f"{first}'s gradient is exactly 0 ({last}: {row[-1]:.1e})"
    if row[-1] == 0.0:
        return f"{last}'s gradient is exactly 0"
    return f"{first} / {last} = {row[0] / row[-1]:.1e}"


def with_depth(cfg: CompareConfig, depth: int, variant: str) -> RunConfig:
    """The comparison's settings at one depth and variant (the depth explorer's run)."""
    return replace(cfg.runs()[0], depth=depth, variant=variant)


def log10_or_none(v: float) -> float | None:
    """log10 of a positive norm; None for exactly 0 (drawn apart, never dropped)."""
    return math.log10(v) if v > 0 else None
