"""Trained models' representations as embedding spaces for maps: which cached models can embed a data set.

A map (explorer.labs.data_maps.embed) embeds raw pixels, or a trained model's *representations*: the
activations of its penultimate layer (the input of its last linear layer). Such a model is a ModelSpace.
Any cache kind whose entries keep weights can serve, through one registry: MODEL_KINDS maps a kind
to how to read one of its entries (which data set and input shape it was trained on, a label for
menus, its test accuracy) and how to rebuild the network from entry.config, load its weights from
entry.tensors() and run it up to its representation layer. Two kinds are registered:

- "representation_net": a small MLP or CNN (explorer.nets.small) trained here for this purpose, seeded, on
  a subset of the train split (`train_representation_net`; a few seconds on a CPU for the small sets);
- "dd_point": double-descent sweep points (that lab's cache entries, read from the cache) that kept checkpoints.

The other cached trainings (task races, the memorisation lab, the class-recall experiment) keep
metrics but no weights, so they cannot serve. A model is named in a MapConfig as
`model:<kind>:<cache key>`; resolving the name checks that the entry exists and verifies, and
that its model was trained on the map's data set with the same input shape. Every refusal is a
ModelSpaceError (a ConfigError) whose message says why.
CLI: `python -m explorer spaces {list,train} ...` (see `main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.cache import Cache, ComputeResult, Entry, default_cache
from explorer.core.config import ConfigError, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter, TerminalReporter
from explorer.data import datasets as D
from explorer.nets import grouped as ddmodels
from explorer.nets.small import ARCHS, NetConfig, build_net, describe, init_state
from explorer.train.evaluate import Diverged, diverged_message, evaluate, first_nonfinite

MODEL_PREFIX = "model:"  # MapConfig.space = "model:<kind>:<cache key>"
REF_PATTERN = re.compile(r"model:([A-Za-z0-9][A-Za-z0-9_-]*):([0-9a-f]{64})")
NET_KIND = "representation_net"
NET_VERSION = 1  # bump when training changes; older representation nets then miss
DD_KIND = "dd_point"  # the double-descent lab's POINT_KIND (a lab never imports another lab)
MAX_TRAIN = 60_000  # server-side cap on training examples of a representation net
MAX_EXAMPLE_PASSES = 1_200_000  # n_train * epochs: a few minutes at most for the small CNN on a CPU
ENCODE_BATCH = 1000  # examples per forward when computing representations
PROGRESS_REPORTS = 50  # progress messages per training run (no host sync: step counts only)

Encoder = Callable[[torch.Tensor], torch.Tensor]  # float inputs (B, *input_shape) on the device -> (B, F)


class ModelSpaceError(ConfigError):
    """A model named as an embedding space that is missing, corrupt, or trained on other data."""


@dataclasses.dataclass(frozen=True)
class ModelSpace:
    """A cached trained model whose representations can be a map's embedding space, and what it is."""

    ref: str  # "model:<kind>:<cache key>", the value of MapConfig.space
    kind: str
    dataset: str  # the data set it was trained on
    input_shape: tuple[int, ...]  # one example's shape
    label: str  # for menus: kind, architecture, training, test accuracy
    test_accuracy: float | None  # on (a subset of) the test split, None when unknown
    dims: int  # width of the representation layer
    entry: Entry


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """How the entries of one cache kind serve as embedding spaces."""

    dataset_of: Callable[[Any], str | None]  # from entry.config alone: a cheap filter before verification
    describe: Callable[[Entry], ModelSpace | None]  # None: this entry keeps no weights
    load: Callable[[Entry, torch.device], Encoder]  # rebuild, load weights, eval mode, cut at the representation layer


def make_ref(kind: str, key: str) -> str:
    """The MapConfig.space value naming one cached model."""
    return f"{MODEL_PREFIX}{kind}:{key}"


def is_model_ref(space: Any) -> bool:
    """True for an embedding-space value that names a model (well formed or not)."""
    return isinstance(space, str) and space.startswith(MODEL_PREFIX)


def parse_ref(ref: str) -> tuple[str, str]:
    """(kind, key) of a model name; a malformed name or an unregistered kind raises ModelSpaceError."""
    m = REF_PATTERN.fullmatch(ref) if isinstance(ref, str) else None
    if m is None:
        raise ModelSpaceError(f"embedding space {ref!r} is not a model name; expected "
                              f"{MODEL_PREFIX}<kind>:<64-hex cache key>")
    if m.group(1) not in MODEL_KINDS:
        raise ModelSpaceError(f"embedding space: {m.group(1)!r} models cannot serve as embedding spaces; "
                              f"usable kinds: {', '.join(MODEL_KINDS)}")
    return m.group(1), m.group(2)


# ---------------------------------------------------------------- representation nets trained here


@dataclasses.dataclass(frozen=True)
class RepresentationNetConfig:
    """A small classifier trained so that its representations give a data set's maps a learned embedding space."""

    dataset: str = "digits"  # a datasets.NAMES key or folder:<path>
    net: NetConfig = NetConfig()  # architecture; the representation layer is the input of its last linear layer
    n_train: int = 10_000  # training examples (a seeded subset of the train split; all if it is smaller)
    epochs: int = 10  # passes over the training examples
    batch_size: int = 128  # examples per Adam step
    lr: float = 3e-3  # Adam learning rate (measured on digits: 97% after 10 epochs, 1e-3 gives 95%)
    seed: int = 0  # subset, initial weights, batch order and dropout masks

    def __post_init__(self) -> None:
        D.check_name("dataset", self.dataset)
        if not isinstance(self.net, NetConfig):
            raise ConfigError(f"net must be a NetConfig, got {type(self.net).__name__}")
        check_range("training examples", self.n_train, 100, MAX_TRAIN, integer=True)
        check_range("epochs", self.epochs, 1, 100, integer=True)
        check_range("batch size", self.batch_size, 8, 4096, integer=True)
        check_range("learning rate", self.lr, 1e-5, 1.0)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        if self.n_train * self.epochs > MAX_EXAMPLE_PASSES:
            raise ConfigError(f"training examples x epochs must be at most {MAX_EXAMPLE_PASSES:,}; "
                              f"got {self.n_train * self.epochs:,}")


def net_config_from_plain(data: Any) -> RepresentationNetConfig:
    """A RepresentationNetConfig from an entry's stored config (plain data); raises ConfigError if malformed."""
    try:
        fields = dict(data)
        fields["net"] = NetConfig(**fields["net"])
        return RepresentationNetConfig(**fields)
    except (TypeError, KeyError, ValueError) as err:  # ConfigError is a ValueError
        raise ModelSpaceError(f"the stored representation-net config is malformed ({err})") from err


def _net_cache_key(cfg: RepresentationNetConfig, train: D.ArrayDataset) -> dict[str, Any]:
    """What identifies a trained representation net: its settings and the shape of the data it saw."""
    return {"net": cfg, "train_split_size": len(train), "input_shape": list(train.input_shape),
            "version": NET_VERSION}


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardisation constants: per channel (C, 1, 1) for images, one (1,) for signals."""
    if x.dim() == 4:
        return x.mean((0, 2, 3)).view(-1, 1, 1), x.std((0, 2, 3)).clamp_min(1e-6).view(-1, 1, 1)
    return x.mean().view(1), x.std().clamp_min(1e-6).view(1)


def train_representation_net(cfg: RepresentationNetConfig, report: Reporter = SILENT) -> ComputeResult:
    """Train the net on the device (whole subset there, index-slice batches); weights and metrics for the cache."""
    train, test = D.load(cfg.dataset, "train"), D.load(cfg.dataset, "test")
    dev = get_device()
    sub = D.take(train, cfg.n_train, cfg.seed)
    x = sub.to_float()
    mean, std = _moments(x)
    x, y = ((x - mean) / std).to(dev), sub.y.to(dev)
    shape, classes = train.input_shape, train.num_classes
    net = build_net(cfg.net, shape, classes)
    net.load_state_dict(init_state(cfg.net, shape, classes, cfg.seed))
    net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    order = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(x), min(cfg.batch_size, len(x))
    steps = math.ceil(n / bs)
    total, every = cfg.epochs * steps, max(1, cfg.epochs * steps // PROGRESS_REPORTS)
    epoch_loss: list[float] = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # dropout masks
        for epoch in range(cfg.epochs):
            net.train()
            perm = torch.randperm(n, generator=order).to(dev)
            xs, ys = x[perm], y[perm]  # one shuffled copy per epoch; batches are views of it
            losses = torch.empty(steps, device=dev)
            for s in range(steps):
                report.checkpoint()
                loss = F.cross_entropy(net(xs[s * bs:(s + 1) * bs]), ys[s * bs:(s + 1) * bs])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses[s] = loss.detach()
                done = epoch * steps + s + 1
                if done % every == 0:
                    last = f", last epoch's loss {epoch_loss[-1]:.3f}" if epoch_loss else ""
                    report.publish(progress=0.95 * done / total, message=f"epoch {epoch + 1}/{cfg.epochs}{last}")
            [bad] = first_nonfinite(losses)  # the one host sync of the epoch
            if bad is not None:
                step = epoch * steps + bad + 1
                raise Diverged(diverged_message("the representation net", step, epoch + 1, cfg.lr), step, epoch + 1)
            epoch_loss.append(round(float(losses.mean()), 6))
    net.eval()
    x_test = ((test.to_float() - mean) / std).to(dev)
    [(_, err)] = evaluate(lambda xb: net(xb).unsqueeze(0), x_test, [test.y.to(dev)], ENCODE_BATCH)  # K = 1
    acc = 1.0 - float(err[0])
    report.publish(progress=1.0, message=f"trained: test accuracy {acc:.1%}")
    tensors = {**{f"net.{k}": v for k, v in net.state_dict().items()}, "input.mean": mean, "input.std": std}
    metrics = {"train_loss": epoch_loss, "test_accuracy": round(acc, 6), "input_shape": list(shape),
               "num_classes": classes, "n_train": n, "dims": net.out.in_features}
    return ComputeResult(metrics, tensors)


def cached_representation_net(cfg: RepresentationNetConfig, cache: Cache) -> Entry | None:
    """The trained net for cfg if it is in the cache (None also when its data set is unavailable)."""
    try:
        train = D.load(cfg.dataset, "train")
    except D.DatasetUnavailable:
        return None
    return cache.get(NET_KIND, _net_cache_key(cfg, train))


def representation_net(cfg: RepresentationNetConfig, cache: Cache, report: Reporter = SILENT) -> ModelSpace:
    """The trained net for cfg, from the cache or trained now; raises DatasetUnavailable, Diverged."""
    train = D.load(cfg.dataset, "train")
    entry = cache.get_or_compute(NET_KIND, _net_cache_key(cfg, train), lambda: train_representation_net(cfg, report))
    return _describe_net(entry)


def representation_net_job(cfg: RepresentationNetConfig, cache: Cache) -> Callable[[JobContext], ModelSpace]:
    """A job function (explorer.core.jobs): trains the net with progress, cancellable between steps."""

    def fn(ctx: JobContext) -> ModelSpace:
        ctx.publish(None, progress=0.0, message="loading data")
        return representation_net(cfg, cache, ctx)

    fn.__name__ = NET_KIND
    return fn


def default_arch(train: D.ArrayDataset) -> str:
    """The architecture offered first: the small CNN for 1-D signals, the MLP for images.

    Measured on a 2-core CPU, 1 thread, 10 epochs: MNIST-1D (4,000) CNN 81% in 2 s vs MLP 60% in 2 s;
    Fashion-MNIST (10,000) MLP 85% in 3 s vs CNN 88% in 34 s; digits 97% either way.
    """
    return "mlp" if train.is_image else "small_cnn"


def default_net_config(train: D.ArrayDataset, arch: str | None = None, epochs: int = 10,
                       n_train: int = 10_000) -> RepresentationNetConfig:
    """A representation net for this train split: `n_train` capped at its size (one cache entry for "all")."""
    return RepresentationNetConfig(dataset=train.name, net=NetConfig(arch=arch or default_arch(train)),
                                   epochs=epochs, n_train=max(100, min(n_train, len(train), MAX_TRAIN)))


def _net_dataset(config: Any) -> str | None:
    """The data set of a representation-net entry's config, None if it names none."""
    net = config.get("net") if isinstance(config, dict) else None
    return net.get("dataset") if isinstance(net, dict) else None


def _describe_net(entry: Entry) -> ModelSpace:
    """A representation net's menu entry."""
    cfg = net_config_from_plain(entry.config.get("net"))
    m = entry.metrics
    acc = m.get("test_accuracy")
    label = (f"Representation net: {describe(cfg.net)}; {cfg.epochs} epochs on "
             f"{m.get('n_train', cfg.n_train):,} examples, seed {cfg.seed}"
             + (f"; test accuracy {acc:.1%}" if acc is not None else ""))
    return ModelSpace(make_ref(NET_KIND, entry.key), NET_KIND, cfg.dataset,
                      tuple(entry.config.get("input_shape", ())), label, acc, int(m["dims"]), entry)


def _load_net(entry: Entry, device: torch.device) -> Encoder:
    """The representation net up to its last linear layer, with its own input standardisation."""
    cfg = net_config_from_plain(entry.config.get("net"))
    t = entry.tensors(device)
    net = build_net(cfg.net, tuple(entry.config["input_shape"]), int(entry.metrics["num_classes"]))
    net.load_state_dict({k[len("net."):]: v for k, v in t.items() if k.startswith("net.")})
    body = net[:-1].to(device).eval()  # everything before "out": the penultimate activations
    mean, std = t["input.mean"], t["input.std"]
    return lambda x: body((x - mean) / std)


# ---------------------------------------------------------------- double-descent sweep points


def _dd_checkpoint_epoch(entry: Entry) -> int | None:
    """The latest epoch whose weights the sweep point kept."""
    epochs = [int(name.split("/")[0][len("epoch"):]) for name in _dd_tensor_names(entry)]
    return max(epochs) if epochs else None


def _dd_tensor_names(entry: Entry) -> list[str]:
    """Names of the kept tensors, from the safetensors header only (no weights read)."""
    from safetensors import safe_open

    path = entry.path / "tensors.safetensors"
    if not path.exists():
        return []
    with safe_open(path, framework="pt") as f:
        return [k for k in f.keys() if k.startswith("epoch") and "/" in k]


def _dd_dataset(config: Any) -> str | None:
    """The data set of a trained sweep point that kept checkpoints, else None."""
    if not isinstance(config, dict) or config.get("family") not in DD_REPRESENTATIONS:
        return None
    if not config.get("checkpoint_epochs"):
        return None
    return config.get("dataset")


def _dd_shape(entry: Entry) -> tuple[int, ...]:
    """One example's shape, from the data set the point was trained on."""
    return D.load(entry.config["dataset"], "test").input_shape


def _describe_dd(entry: Entry) -> ModelSpace | None:
    """A sweep point's menu entry: family, width, label noise, seed, checkpoint epoch, test accuracy."""
    c = entry.config
    epoch = _dd_checkpoint_epoch(entry)
    if epoch is None or c.get("family") not in DD_REPRESENTATIONS:
        return None
    m = entry.metrics
    acc = None
    if epoch in m.get("epochs", []):
        err = m["test_err"][m["epochs"].index(epoch)]
        acc = None if err is None or not math.isfinite(err) else round(1.0 - err, 6)
    family = {"mlp": "MLP", "cnn5": "5-layer CNN", "resnet18": "ResNet18"}[c["family"]]
    label = (f"Double-descent sweep point: {family} width {c['width']}, {c['noise']:.0%} label noise, "
             f"seed {c['seed']}; epoch {epoch} of {c['epochs']} on {c['train_size']:,} examples"
             + (f"; test accuracy {acc:.1%}" if acc is not None else ""))
    try:
        shape = _dd_shape(entry)
    except D.DatasetUnavailable:
        return None
    dims = {"mlp": 1, "cnn5": 8, "resnet18": 8}[c["family"]] * int(c["width"])
    return ModelSpace(make_ref(DD_KIND, entry.key), DD_KIND, c["dataset"], shape, label, acc, dims, entry)


def _dd_mlp_representation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """GroupedMLP (K=1): ReLU activations of the second hidden layer."""
    a = x.reshape(len(x), -1)
    for layer in model.layers[:-1]:
        a = F.relu(layer(a))
    return a[0]  # (B, width)


def _dd_cnn5_representation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """GroupedCNN5 (K=1): the globally max-pooled last conv layer."""
    return model.features(x).flatten(1)  # (B, 8 * width)


def _dd_resnet_representation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """GroupedPreActResNet18 (K=1): the average-pooled final activations."""
    return F.adaptive_avg_pool2d(F.relu(model.bn(model.blocks(model.stem(x)))), 1).flatten(1)


DD_REPRESENTATIONS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "mlp": _dd_mlp_representation, "cnn5": _dd_cnn5_representation, "resnet18": _dd_resnet_representation}


def _load_dd(entry: Entry, device: torch.device) -> Encoder:
    """The sweep point's model at its latest checkpoint, cut before its last layer (inputs as the sweep saw them)."""
    c = entry.config
    epoch = _dd_checkpoint_epoch(entry)
    prefix = f"epoch{epoch}/"
    state = {k[len(prefix):]: v for k, v in entry.tensors(device).items() if k.startswith(prefix)}
    test = D.load(c["dataset"], "test")
    model = ddmodels.build(c["family"], int(c["width"]), 1, test.input_shape, test.num_classes)
    model.load_state_dict(state)
    model.to(device).eval()
    representation = DD_REPRESENTATIONS[c["family"]]
    return lambda x: representation(model, x)


# ---------------------------------------------------------------- registry and public API

MODEL_KINDS: dict[str, ModelKind] = {
    NET_KIND: ModelKind(_net_dataset, _describe_net, _load_net),
    DD_KIND: ModelKind(_dd_dataset, _describe_dd, _load_dd),
}


def list_models(dataset: str, input_shape: tuple[int, ...] | None = None, *, cache: Cache) -> list[ModelSpace]:
    """Cached models trained on `dataset` (and this input shape) that can embed it: representation nets first,
    newest first."""
    found: list[ModelSpace] = []
    for kind, mk in MODEL_KINDS.items():
        entries = cache.entries(kind, where=lambda c, mk=mk: mk.dataset_of(c) == dataset)
        models = []
        for entry in entries:
            try:
                model = mk.describe(entry)
            except (ConfigError, KeyError, TypeError, ValueError):
                continue  # a malformed entry is not offered
            if model is not None and (input_shape is None or model.input_shape == tuple(input_shape)):
                models.append(model)
        if kind == DD_KIND:
            models.sort(key=lambda m: tuple(m.entry.config[k] for k in ("width", "noise", "seed", "epochs")))
        else:
            models.sort(key=lambda m: m.entry.meta.get("created", ""), reverse=True)
        found += models
    return found


def resolve(ref: str, dataset: str | None = None, input_shape: tuple[int, ...] | None = None, *,
            cache: Cache) -> ModelSpace:
    """The cached model a name refers to, checked against the data it should embed; ModelSpaceError if unusable."""
    kind, key = parse_ref(ref)
    entry = cache.by_key(kind, key)
    if entry is None:
        raise ModelSpaceError(f"no cached {kind} model {key[:12]}... here (never trained on this server, "
                              "deleted, or removed because its files were corrupt); train one or choose another")
    try:
        model = MODEL_KINDS[kind].describe(entry)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelSpaceError(f"the cached {kind} model {key[:12]}... is malformed ({err})") from err
    if model is None:
        raise ModelSpaceError(f"the cached {kind} entry {key[:12]}... keeps no weights to compute "
                              "representations with")
    if dataset is not None and model.dataset != dataset:
        raise ModelSpaceError(f"model {key[:12]}... was trained on {D.title(model.dataset)}, not on "
                              f"{D.title(dataset)}; its representations would mean nothing here")
    if input_shape is not None and model.input_shape != tuple(input_shape):
        raise ModelSpaceError(f"model {key[:12]}... takes inputs of shape {model.input_shape}, but "
                              f"{D.title(dataset or model.dataset)} has {tuple(input_shape)}")
    return model


def representations(ref: str, ds: D.ArrayDataset, index: torch.Tensor, cache: Cache) -> torch.Tensor:
    """The model's representations (n, dims) float32 on the cpu of the examples `index` of ds (eval mode, no grad)."""
    model = resolve(ref, ds.name, ds.input_shape, cache=cache)
    dev = get_device()
    try:
        encode = MODEL_KINDS[model.kind].load(model.entry, dev)
    except (KeyError, RuntimeError, TypeError, ValueError) as err:  # load_state_dict mismatches are RuntimeErrors
        raise ModelSpaceError(f"the weights of model {model.entry.key[:12]}... do not load ({err})") from err
    out = []
    with torch.no_grad():
        for s in range(0, len(index), ENCODE_BATCH):
            idx = index[s:s + ENCODE_BATCH]
            xb = D.ArrayDataset(ds.name, ds.x[idx], ds.y[idx], ds.classes).to_float()  # (b, *input_shape)
            out.append(encode(xb.to(dev)).float().cpu())  # (b, dims)
    return torch.cat(out) if out else torch.empty(0, model.dims)


# ---------------------------------------------------------------- command line


def main(argv: list[str]) -> int:
    """python -m explorer spaces list --dataset D | train --dataset D [--arch mlp|small_cnn] [--epochs N]."""
    ap = argparse.ArgumentParser(prog="python -m explorer spaces", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="cached models usable as embedding spaces for a data set")
    ls.add_argument("--dataset", default="digits")
    tr = sub.add_parser("train", help="train a representation net (cached) and print its name for `map --space`")
    d = RepresentationNetConfig()
    tr.add_argument("--dataset", default=d.dataset)
    tr.add_argument("--arch", choices=list(ARCHS), help="default: small CNN for 1-D signals, MLP for images")
    tr.add_argument("--width", type=int, default=d.net.width)
    tr.add_argument("--epochs", type=int, default=d.epochs)
    tr.add_argument("--n-train", type=int, default=d.n_train)
    tr.add_argument("--seed", type=int, default=d.seed)
    args = ap.parse_args(argv)
    cache = default_cache()
    try:
        if args.command == "list":
            models = list_models(args.dataset, cache=cache)
            for m in models:
                print(f"{m.ref}\n    {m.label}")
            if not models:
                print(f"No trained embedding space for {args.dataset} yet. Train one (cached) with:\n"
                      f"  python -m explorer spaces train --dataset {args.dataset}")
            return 0
        cfg = default_net_config(D.load(args.dataset, "train"), args.arch, args.epochs, args.n_train)
        cfg = dataclasses.replace(cfg, net=dataclasses.replace(cfg.net, width=args.width), seed=args.seed)
        with TerminalReporter() as report:
            model = representation_net(cfg, cache, report)
    except (ConfigError, D.DatasetUnavailable, Diverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{model.label}\n{model.ref}")
    return 0
