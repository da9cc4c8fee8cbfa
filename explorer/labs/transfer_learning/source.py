"""Source models for transfer learning: torchvision's ImageNet ResNet18 when its weights file is on this machine,
else a CNN this app trains itself on the data set's other classes (never the task's), cached as safetensors.

ImageNet weights. torchvision keeps downloaded weights in `torch.hub.get_dir()/checkpoints/` under the file name of
`ResNet18_Weights.IMAGENET1K_V1.url` (resnet18-f37072fd.pth). That file, or one a user names (`--weights PATH`), is
read with `torch.load(weights_only=True)` (tensors only, nothing executed) and checked key by key and shape by
shape against `torchvision.models.resnet18()` before it is used, so a wrong file fails with a message that says
what is wrong instead of a traceback from load_state_dict. Nothing is downloaded unless a command asks for it
(`download_imagenet_weights`) and the settings allow downloads; offline that fails quietly and the self-trained
source is used.

Self-trained source. Without those weights the source is `explorer.nets.cnn`'s "simple" CNN (3 blocks of two
conv3x3-BN-ReLU, max-pool, dropout; 32-64-128 channels x width) trained with `image_fit.fit` on the classes NOT in
the task (for cat vs dog: the other eight CIFAR-10 classes). Why that net and not ResNet18 at 32x32: ResNet18's
ImageNet stem (7x7 stride 2, then a max-pool) shrinks a 32x32 image to 8x8 before the first block and its last
stage sees 1x1 maps, so from scratch on a few thousand images per class in a few CPU minutes it learns poor
features; the simple CNN is built for 32x32 inputs, learns useful features in a few epochs, and at width 0.5 costs
about 20 MFLOPs per image (ResNet18 at 32x32: about 37 MFLOPs, at 64x64 about 300). The source model is cached
(kind "transfer-source") by its config, the data set and the excluded classes, so every table that shares them
trains it once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from explorer.core.cache import Cache, ComputeResult
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.report import SILENT, Reporter
from explorer.core.seeding import seeded
from explorer.data.datasets import ArrayDataset, load_or_fallback, subset

log = logging.getLogger(__name__)

SOURCE_KIND = "transfer-source"  # cache kind of a self-trained source model (its weights as safetensors)
SOURCE_VERSION = 1  # bump when the source's training changes; older cached sources then miss
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation, pixels scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET18_FEATURES = 512  # the width of ResNet18's pooled features (the input of its fc layer)
OPTIONAL_KEYS = ("num_batches_tracked",)  # BatchNorm counters: older torchvision files do not carry them
SHOWN_KEYS = 4  # keys named in a message about a wrong weights file
SOURCE_FAMILIES = ("simple", "resnet20")  # explorer.nets.cnn families offered as a self-trained source


class WeightsError(ConfigError):
    """A weights file that is not a torchvision ResNet18 state_dict; the message says what is wrong with it."""


# --- torchvision's ImageNet ResNet18 ---------------------------------------------------------------------------

def imagenet_weights_name() -> str:
    """The file name torchvision gives ResNet18_Weights.IMAGENET1K_V1 in the hub cache (resnet18-f37072fd.pth)."""
    from torchvision.models import ResNet18_Weights

    return os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)


def hub_weights_path() -> Path:
    """Where torchvision would have stored ResNet18's ImageNet weights: torch.hub.get_dir()/checkpoints/<name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / imagenet_weights_name()


def find_imagenet_weights(path: str | Path | None = None) -> Path | None:
    """The weights file to use: `path` if given (WeightsError if it is not a file), else the hub cache's, else
    None. Never downloads."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"the weights file {str(path)[:200]} does not exist (or is not a file)")
        return p
    hub = hub_weights_path()
    return hub if hub.is_file() else None


def downloads_allowed() -> bool:
    """False when EXPLORER_OFFLINE=1 (the data sets' rule): then nothing tries the network."""
    return os.environ.get("EXPLORER_OFFLINE", "").strip() not in ("1", "true", "yes")


def download_imagenet_weights() -> Path | None:
    """Ask torchvision to download the ImageNet weights into the hub cache (only when downloads are allowed);
    None, quietly, when that fails (offline): the caller then uses the self-trained source."""
    if not downloads_allowed():
        return None
    from torchvision.models import ResNet18_Weights

    try:
        torch.hub.load_state_dict_from_url(ResNet18_Weights.IMAGENET1K_V1.url, progress=False, check_hash=True,
                                           weights_only=True)
    except Exception as err:  # no network, a proxy, a half-written file: all mean "not available here"
        log.info("downloading ResNet18's ImageNet weights failed: %s", err)
        return None
    return find_imagenet_weights()


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a weights file (memoised by path, size and mtime: a page rerun does not re-read 45 MB)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def check_state(state: Any, model: nn.Module, what: str = "the weights file") -> dict[str, torch.Tensor]:
    """The state dict if its keys and shapes are `model`'s (BatchNorm counters may be missing), else WeightsError
    naming the missing keys, the unexpected ones and the first shapes that differ."""
    if isinstance(state, dict) and set(state) == {"state_dict"} and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint's wrapper
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise WeightsError(f"{what} does not hold a state_dict (a dict of named tensors) but a "
                           f"{type(state).__name__}")
    want = model.state_dict()
    missing = [k for k in want if k not in state and not k.endswith(OPTIONAL_KEYS)]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} is {tuple(state[k].shape)}, not {tuple(want[k].shape)}" for k in want
              if k in state and state[k].shape != want[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ ({_names(shapes)})")
    if problems:
        raise WeightsError(f"{what} is not a torchvision resnet18 state_dict: " + "; ".join(problems))
    return state


def load_resnet18_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision ResNet18 state dict from a .pth file: torch.load(weights_only=True), then check_state."""
    import torchvision

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, a pickle of a whole model, a truncated download
        raise WeightsError(f"the weights file {path.name[:200]} cannot be read as tensors with "
                           f"torch.load(weights_only=True): {str(err).splitlines()[0][:200]}") from err
    return check_state(state, torchvision.models.resnet18(), f"the weights file {path.name[:200]}")


def resnet18_from_file(path: str | Path) -> nn.Module:
    """torchvision's resnet18 with the file's weights (checked by load_resnet18_state)."""
    import torchvision

    model = torchvision.models.resnet18()
    model.load_state_dict(load_resnet18_state(path), strict=False)  # strict=False: only the counters may miss
    return model


# --- heads and backbones ---------------------------------------------------------------------------------------

def last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """The classifier of a network: its last nn.Linear, with the module that holds it and its attribute name."""
    found = None
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, name, child)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return found


def strip_head(model: nn.Module) -> tuple[nn.Module, int]:
    """The network without its classifier (the last Linear becomes Identity): images -> features, and their width."""
    parent, name, linear = last_linear(model)
    setattr(parent, name, nn.Identity())
    return model, linear.in_features


# --- the self-trained source ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceConfig:
    """A CNN trained from scratch on the data set's classes outside the task: the source when no ImageNet
    weights are here. The defaults train in a few minutes on 2 CPU cores (see the module's docstring)."""

    family: str = "simple"  # explorer.nets.cnn family
    width: float = 0.5  # channel multiplier (0.5: 16-32-64 channels)
    per_class: int = 2000  # training images per source class (CIFAR-10 has 5,000)
    epochs: int = 4
    lr: float = 2e-3  # Adam's step size
    batch_size: int = 128

    def __post_init__(self) -> None:
        check_choice("source family", self.family, SOURCE_FAMILIES)
        check_range("source width", self.width, 0.125, 2.0)
        check_range("source images per class", self.per_class, 10, 5000, integer=True)
        check_range("source epochs", self.epochs, 1, 30, integer=True)
        check_range("source learning rate", self.lr, 1e-5, 0.1)
        check_range("source batch size", self.batch_size, 8, 1024, integer=True)


@dataclass(frozen=True)
class SourceKey:
    """What a self-trained source depends on: the cache key of kind SOURCE_KIND."""

    dataset: str
    exclude: tuple[str, ...]  # the task's classes: never seen by the source
    source: SourceConfig
    seed: int
    version: int = SOURCE_VERSION


@dataclass
class Source:
    """A source model ready for transfer: a fresh copy of the full network (its classifier still on) per call."""

    kind: str  # "imagenet" or "self"
    label: str  # for the table and the page
    why: str  # why this source was used
    mean: tuple[float, ...]  # normalisation the source was trained with (pixels in [0, 1])
    std: tuple[float, ...]
    image_size: int | None  # inputs are resized to this side first (None: used at their own size)
    info: dict[str, Any]  # what the page shows about it (classes it learned, its accuracy, its training time)
    _build: Any = None  # () -> nn.Module with the source's weights
    _fresh: Any = None  # () -> the same architecture with its own random initialisation

    def network(self) -> nn.Module:
        """A fresh copy of the source network with its weights (its classifier still on)."""
        return self._build()

    def untrained(self) -> nn.Module:
        """The source's architecture, randomly initialised as its builder does it (for training from scratch)."""
        return self._fresh()


def build_source_net(cfg: SourceConfig, in_channels: int, classes: int) -> nn.Module:
    """The self-trained source's architecture (explorer.nets.cnn), untrained."""
    from explorer.nets.cnn import CNNConfig, build_cnn

    return build_cnn(CNNConfig(family=cfg.family, width=cfg.width, in_channels=in_channels, classes=classes))


def source_classes(classes: tuple[str, ...], exclude: tuple[str, ...]) -> tuple[str, ...]:
    """The data set's classes outside the task, in data-set order."""
    return tuple(c for c in classes if c not in exclude)


def restrict(ds: ArrayDataset, keep: tuple[str, ...], per_class: int, seed: int) -> ArrayDataset:
    """A seeded subset of `per_class` images of each class in `keep`, relabelled 0..len(keep)-1 in that order."""
    counts = [per_class if c in keep else 0 for c in ds.classes]
    picked = subset(ds, counts, seed)
    remap = torch.full((ds.num_classes,), -1, dtype=torch.int64)
    for i, c in enumerate(keep):
        remap[ds.classes.index(c)] = i
    return ArrayDataset(ds.name, picked.x, remap[picked.y], keep)


def train_source(key: SourceKey, cache: Cache, report: Reporter = SILENT,
                 device: torch.device | None = None) -> Source:
    """The self-trained source for `key`: from the cache, else trained now with image_fit.fit on the classes
    outside the task (train split only) and stored as safetensors with its normalisation and accuracy."""
    from explorer.train.image_fit import FitConfig, ImageData, evaluate_classifier, fit, predict

    train_ds, _ = load_or_fallback(key.dataset, "train")
    keep = source_classes(train_ds.classes, key.exclude)
    if len(keep) < 2:
        raise ConfigError("the source model needs at least two classes outside the task")
    in_channels = train_ds.x.shape[1]

    def compute() -> ComputeResult:
        test_ds, _ = load_or_fallback(key.dataset, "test")
        tr = restrict(train_ds, keep, key.source.per_class, key.seed)
        te = restrict(test_ds, keep, max(key.source.per_class // 5, 10), key.seed + 1)
        train = ImageData.from_dataset(tr, device)
        test = ImageData.from_dataset(te, device, mean=train.mean, std=train.std)
        with seeded(key.seed):
            model = build_source_net(key.source, in_channels, len(keep))
        s = key.source
        result = fit(model, train, None, FitConfig(optimizer="adam", lr=s.lr, epochs=s.epochs,
                                                   batch_size=s.batch_size, seed=key.seed), report, device)
        logits = predict(result.model, test)
        ev = evaluate_classifier(logits, te.y, keep)
        metrics = {"classes": list(keep), "n_train": len(tr), "n_test": len(te), "epochs": s.epochs,
                   "test_acc": 1.0 - ev["top1_err"], "train_acc": result.history["train_acc"][-1],
                   "mean": [float(v) for v in train.mean], "std": [float(v) for v in train.std],
                   "in_channels": in_channels, "seconds": result.seconds,
                   "params": sum(p.numel() for p in result.model.parameters())}
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        return ComputeResult(metrics, tensors=state, meta={"recompute": "python -m explorer transfer (the source "
                                                                        "is trained on the way)"})

    entry = cache.get_or_compute(SOURCE_KIND, key, compute)
    m = entry.metrics
    tensors = entry.tensors()

    def build() -> nn.Module:
        net = build_source_net(key.source, m["in_channels"], len(m["classes"]))
        net.load_state_dict(tensors)
        return net

    def fresh() -> nn.Module:
        return build_source_net(key.source, m["in_channels"], len(m["classes"]))

    label = (f"self-trained {key.source.family} CNN x{key.source.width:g} on {len(m['classes'])} other "
             f"{key.dataset} classes")
    info = {**m, "cache_key": entry.key, "computed": entry.meta.get("created"), "shipped": entry.shipped}
    return Source("self", label, "", tuple(m["mean"]), tuple(m["std"]), None, info, build, fresh)


def imagenet_source(path: Path, image_size: int, why: str) -> Source:
    """torchvision's ResNet18 with the ImageNet weights in `path` (checked now, loaded per copy)."""
    state = load_resnet18_state(path)

    def build() -> nn.Module:
        import torchvision

        net = torchvision.models.resnet18()
        net.load_state_dict(state, strict=False)
        return net

    def fresh() -> nn.Module:
        import torchvision

        return torchvision.models.resnet18()

    info = {"file": path.name, "sha256": file_sha256(path), "params": 11_689_512, "classes": 1000,
            "image_size": image_size}
    return Source("imagenet", "torchvision ResNet18, ImageNet weights (IMAGENET1K_V1)", why, IMAGENET_MEAN,
                  IMAGENET_STD, image_size, info, build, fresh)


def with_why(source: Source, why: str) -> Source:
    """The same source with the reason it was chosen."""
    return dataclasses.replace(source, why=why)
