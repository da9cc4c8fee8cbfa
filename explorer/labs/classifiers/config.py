"""The workbench's frozen settings and the command-line flag of every one of them.

A `ClassifierConfig` is one training run: the data set and how much of it, the network (explorer.nets.cnn's
CNNConfig) and the recipe (explorer.train.image_fit's FitConfig, with its AugmentConfig). It keys the run's cache
entry, so two identical settings share one result. `FLAGS` names each setting's flag once: the CLI builds its
parser from it and `flag_args` writes the flags that turn one config into another (how a run's recompute command
is spelled).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from explorer.core.config import ConfigError, check_range
from explorer.data.augment import AugmentConfig
from explorer.data.datasets import check_name
from explorer.nets.cnn import FAMILIES, CNNConfig
from explorer.train.image_fit import FitConfig

FAMILY_TITLES = {"simple": "Simple CNN", "resnet9": "ResNet9", "resnet20": "ResNet20"}
MIN_TRAIN = 50  # images: fewer cannot fill a batch of every class of a 10-class set
MAX_TRAIN = 60_000  # images: the largest training split of the registered sets
MAX_VAL = 10_000
MAX_TEST = 10_000  # the test splits of CIFAR-10, MNIST and Fashion-MNIST
MIN_TEST = 50


@dataclass(frozen=True)
class ClassifierConfig:
    """One training run: data, network and recipe. in_channels and classes of `model` are the data's (resolved
    by workbench.resolve before a run); `fit.seed` always equals `seed`, so one number seeds everything."""

    dataset: str = "cifar10"  # a registered set, folder:<path> or upload:<sha256> (explorer.data.datasets)
    n_train: int = 20_000  # training images: a seeded subset of the training split (after the validation images)
    n_val: int = 2_000  # images of the training split held out for the validation curve and early stopping
    n_test: int = 10_000  # images of the test split evaluated at the end (all of them if the split is smaller)
    model: CNNConfig = CNNConfig(family="simple", width=0.5)
    fit: FitConfig = FitConfig(optimizer="adam", lr=1e-3, epochs=15, batch_size=32, patience=3, channels_last=True)
    seed: int = 0  # the subsets, the initial weights, the minibatch order and the augmentation draws

    def __post_init__(self) -> None:
        check_name("dataset", self.dataset)
        check_range("training images", self.n_train, MIN_TRAIN, MAX_TRAIN, integer=True)
        check_range("validation images", self.n_val, 0, MAX_VAL, integer=True)
        check_range("test images", self.n_test, MIN_TEST, MAX_TEST, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        if not isinstance(self.model, CNNConfig):
            raise ConfigError(f"model must be a CNNConfig, got {type(self.model).__name__}")
        if not isinstance(self.fit, FitConfig):
            raise ConfigError(f"fit must be a FitConfig, got {type(self.fit).__name__}")
        if self.n_val == 0 and self.fit.patience > 0:
            raise ConfigError("early stopping watches the validation loss: hold out validation images "
                              "(validation images > 0) or set patience to 0")
        if self.fit.seed != self.seed:
            object.__setattr__(self, "fit", dataclasses.replace(self.fit, seed=self.seed))

    @property
    def title(self) -> str:
        """'ResNet9 x0.25' : the network as the tables name it."""
        return model_title(self.model)


def model_title(model: CNNConfig) -> str:
    """'Simple CNN x0.5' (the width multiplier after the family)."""
    return f"{FAMILY_TITLES.get(model.family, model.family)} x{model.width:g}"


def from_plain(d: dict[str, Any]) -> ClassifierConfig:
    """A config back from its JSON form (a cache entry's config.json); ConfigError if it does not fit."""
    try:
        fit = dict(d["fit"])
        fit["augment"] = AugmentConfig(**fit["augment"])
        return ClassifierConfig(dataset=d["dataset"], n_train=d["n_train"], n_val=d["n_val"], n_test=d["n_test"],
                                model=CNNConfig(**d["model"]), fit=FitConfig(**fit), seed=d["seed"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"not a classifier run's config: {err}") from err


# ---------------------------------------------------------------- flags


@dataclass(frozen=True)
class Flag:
    """One setting on the command line: its flag, where it lives in the config, its type and help."""

    flag: str
    path: str  # "n_train", "model.width", "fit.augment.flip"
    kind: Callable[[str], Any]  # int, float, str or bool (bool flags take --x / --no-x)
    help: str = ""
    choices: tuple[str, ...] | None = None


FLAGS: tuple[Flag, ...] = (
    Flag("--dataset", "dataset", str, "cifar10, fashion_mnist, mnist, digits or folder:<path>"),
    Flag("--n-train", "n_train", int, "training images (a seeded subset)"),
    Flag("--n-val", "n_val", int, "validation images held out from the training split (0: none)"),
    Flag("--n-test", "n_test", int, "test images evaluated at the end"),
    Flag("--model", "model.family", str, "network family", FAMILIES),
    Flag("--width", "model.width", float, "channel multiplier (0.125 to 4)"),
    Flag("--dropout", "model.dropout", float, "dropout of the simple CNN's blocks"),
    Flag("--optimizer", "fit.optimizer", str, "sgd, adam or adamw"),
    Flag("--lr", "fit.lr", float, "learning rate (the peak of a one-cycle schedule)"),
    Flag("--momentum", "fit.momentum", float, "SGD momentum"),
    Flag("--nesterov", "fit.nesterov", bool, "Nesterov momentum (SGD)"),
    Flag("--wd", "fit.weight_decay", float, "weight decay"),
    Flag("--schedule", "fit.schedule", str, "constant, step, cosine, onecycle or plateau"),
    Flag("--epochs", "fit.epochs", int, "passes over the training images"),
    Flag("--batch-size", "fit.batch_size", int, "images per step"),
    Flag("--label-smoothing", "fit.label_smoothing", float, "label smoothing of the cross-entropy"),
    Flag("--clip", "fit.clip", float, "max gradient norm (0: off)"),
    Flag("--patience", "fit.patience", int, "early stopping after this many epochs without a better validation "
                                            "loss (0: off)"),
    Flag("--flip", "fit.augment.flip", bool, "random horizontal flips"),
    Flag("--translate", "fit.augment.translate", int, "random translations by up to this many pixels"),
    Flag("--rotate", "fit.augment.rotate", float, "random rotations by up to this many degrees"),
    Flag("--zoom", "fit.augment.zoom", float, "random zoom by up to this fraction"),
    Flag("--cutout", "fit.augment.cutout", int, "a random square of this side (pixels) blanked (0: off)"),
    Flag("--pad", "fit.augment.pad", str, "how a translation fills the pixels it shifts in: reflect or zeros"),
    Flag("--amp", "fit.amp", str, "off, bf16 or fp16 autocast (CUDA only)"),
    Flag("--channels-last", "fit.channels_last", bool, "channels_last memory format (faster for convolutions on CUDA and on this CPU)"),
    Flag("--seed", "seed", int, "subsets, initial weights, batch order and augmentation"),
)


def get_path(cfg: Any, path: str) -> Any:
    """The value at a dotted path of nested dataclasses ("fit.augment.flip")."""
    for name in path.split("."):
        cfg = getattr(cfg, name)
    return cfg


def with_values(cfg: ClassifierConfig, values: dict[str, Any]) -> ClassifierConfig:
    """cfg with the settings of `values` (dotted paths -> values) replaced; a bad combination raises ConfigError
    only at the end (the values are applied to plain data and the config built once)."""
    from explorer.core.cache import to_plain

    d = to_plain(cfg)
    for path, value in values.items():
        node = d
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return from_plain(d)


def _spelled(value: Any) -> str:
    """A flag's value as a shell word."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if text and all(c.isalnum() or c in "._-:/+" for c in text) else "'" + text.replace("'", "'\\''") + "'"


def flag_args(cfg: ClassifierConfig, base: ClassifierConfig) -> list[str]:
    """The flags that turn `base` into `cfg` (settings that differ only), in FLAGS order."""
    out: list[str] = []
    for f in FLAGS:
        v = get_path(cfg, f.path)
        if v == get_path(base, f.path):
            continue
        if f.kind is bool:
            out.append(f.flag if v else "--no-" + f.flag[2:])
        else:
            out += [f.flag, _spelled(v)]
    return out
