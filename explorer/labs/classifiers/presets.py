"""The course report's three CIFAR-10 recipes, and the engine's fastest one, each at two scales.

`full` is the recipe as the report ran it (all 50,000 training images: 45,000 to train on and 5,000 held out for
validation, the full-width network, as many epochs as it needs): minutes on a GPU, hours on a CPU. `cpu` is what
this app ships and opens on: the same optimizer, schedule, batch size and augmentation on a narrower network,
fewer images (20,000) and fewer epochs, so a 2-core server trains it in about ten minutes. The page says which
scale it shows; a CPU-scale error is higher than the report's and is not meant to match it.

Report numbers (top-1 test error on CIFAR-10): Simple CNN 17.3% (Adam, batch 32, no augmentation), ResNet9 11.1%
(AdamW, gradient clipping, flips and translations, batch 400), ResNet20 12.7% (AdamW with reduce-on-plateau,
extensive augmentation, batch 128).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from explorer.data.augment import AugmentConfig
from explorer.labs.classifiers.config import ClassifierConfig
from explorer.nets.cnn import CNNConfig
from explorer.train.image_fit import FitConfig

FULL_TRAIN, FULL_VAL = 45_000, 5_000  # CIFAR-10's 50,000 training images: trained on / held out for validation


@dataclass(frozen=True)
class Preset:
    """A named recipe at the report's scale (`full`, for a GPU) and at the scale this app ships (`cpu`)."""

    title: str
    full: ClassifierConfig
    cpu: ClassifierConfig
    report_top1_err: float | None  # the course report's top-1 test error at full scale (None: not in the report)
    about: str  # one sentence: what the recipe is
    scaled: str  # what the CPU scale changes

    def at(self, scale: str) -> ClassifierConfig:
        """The config at "cpu" or "full" scale."""
        return self.full if scale == "full" else self.cpu


def _cpu(full: ClassifierConfig, width: float, n_train: int, n_val: int, epochs: int,
         **fit: object) -> ClassifierConfig:
    """The CPU scale of a full recipe: narrower, fewer images and epochs, channels_last (1.5x faster for narrow
    convolutions on this CPU, measured by benchmarks/bench_classifiers.py), everything else as it was."""
    return dataclasses.replace(full, n_train=n_train, n_val=n_val,
                               model=dataclasses.replace(full.model, width=width),
                               fit=dataclasses.replace(full.fit, epochs=epochs, channels_last=True, **fit))


_SIMPLE = ClassifierConfig(
    dataset="cifar10", n_train=FULL_TRAIN, n_val=FULL_VAL,
    model=CNNConfig(family="simple", width=1.0, dropout=0.25),
    fit=FitConfig(optimizer="adam", lr=1e-3, schedule="constant", epochs=30, batch_size=32, patience=5))
_RESNET9 = ClassifierConfig(
    dataset="cifar10", n_train=FULL_TRAIN, n_val=FULL_VAL,
    model=CNNConfig(family="resnet9", width=1.0),
    fit=FitConfig(optimizer="adamw", lr=1e-2, weight_decay=1e-4, schedule="onecycle", epochs=24, batch_size=400,
                  clip=0.1, augment=AugmentConfig(flip=True, translate=4)))
_RESNET20 = ClassifierConfig(
    dataset="cifar10", n_train=FULL_TRAIN, n_val=FULL_VAL,
    model=CNNConfig(family="resnet20", width=1.0),
    fit=FitConfig(optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="plateau", epochs=50, batch_size=128,
                  patience=10, augment=AugmentConfig(flip=True, translate=4, rotate=10.0, zoom=0.1, cutout=8)))
_FAST = ClassifierConfig(  # benchmarks/bench_classifiers.py's engine recipe (b), on all 50,000 training images
    dataset="cifar10", n_train=50_000, n_val=0,
    model=CNNConfig(family="resnet9", width=0.25),
    fit=FitConfig(optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle",
                  epochs=2, batch_size=256, label_smoothing=0.2, augment=AugmentConfig(flip=True, translate=2)))

PRESETS: dict[str, Preset] = {
    "simple": Preset(
        "Simple CNN (report)", _SIMPLE, _cpu(_SIMPLE, width=0.5, n_train=20_000, n_val=2_000, epochs=15, patience=3),
        0.173, "3 blocks of two conv3x3-BN-ReLU, max-pool and dropout (32-64-128 channels); Adam 1e-3, batch 32, "
               "no augmentation, early stopping on the validation loss.",
        "width 0.5 (16-32-64 channels), 20,000 training images, at most 15 epochs (patience 3)"),
    "resnet9": Preset(
        "ResNet9 (report)", _RESNET9, _cpu(_RESNET9, width=0.25, n_train=20_000, n_val=2_000, epochs=10),
        0.111, "Myrtle / Page ResNet9; AdamW with a one-cycle schedule (peak 0.01), weight decay 1e-4, gradient "
               "clipping at norm 0.1, random flips and 4-pixel translations, batch 400.",
        "width 0.25 (16-32-64-128 channels), 20,000 training images, 10 epochs"),
    "resnet20": Preset(
        "ResNet20 (report)", _RESNET20, _cpu(_RESNET20, width=0.5, n_train=20_000, n_val=2_000, epochs=15,
                                             patience=4),
        0.127, "He et al.'s CIFAR ResNet-20 (0.27M parameters); AdamW 1e-3 with reduce-on-plateau, flips, "
               "translations, rotations, zooms and cutout, batch 128, early stopping.",
        "width 0.5 (8-16-32 channels), 20,000 training images, at most 15 epochs (patience 4)"),
    "fast": Preset(
        "Fast (this engine)", _FAST, _cpu(_FAST, width=0.25, n_train=20_000, n_val=2_000, epochs=5),
        None, "The engine's fastest CPU recipe (benchmarks/bench_classifiers.py): a quarter-width ResNet9, SGD with "
              "Nesterov momentum 0.9 and a one-cycle schedule (peak 0.2) over 2 epochs, weight decay 5e-4, label "
              "smoothing 0.2, flips and 2-pixel translations, batch 256; no validation set at full scale.",
        "20,000 training images (2,000 held out for validation) instead of all 50,000, 5 epochs instead of 2"),
}
DEFAULT = "simple"  # the page opens on this preset at CPU scale (the shipped run)
SCALES = {"cpu": "CPU scale (what this app ships)", "full": "Full scale (the report's run, for a GPU)"}


def by_name(name: str) -> Preset | None:
    """A preset by its key ("simple") or its title ("Simple CNN (report)")."""
    return PRESETS.get(name) or next((p for p in PRESETS.values() if p.title == name), None)


def which(cfg: ClassifierConfig) -> tuple[str, str] | None:
    """(preset key, scale) when cfg is exactly one of the presets, else None."""
    for key, p in PRESETS.items():
        for scale in SCALES:
            if p.at(scale) == cfg:
                return key, scale
    return None
