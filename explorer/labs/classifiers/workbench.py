"""One classifier run, start to end: data, training with a validation curve, evaluation on the test split, and the
table that compares every kept run.

`run(cfg, cache)` loads the data set (the embedded digits, with the notice saying how to provide the wanted one,
when it is missing), trains the network with explorer.train.image_fit.fit (whole set on the device, batches by
index slices, augmentation as batched tensor ops), evaluates it on the test split (loss, top-1 and top-5 error,
confusion matrix, per-class accuracy, precision and recall, the most confident mistakes) and keeps the result as
one cache entry of kind "classifier-run": the numbers as JSON, the trained weights and the mistaken images as
safetensors, and the command that recomputes it. Every run is kept, so `runs(cache)` lists them all and
`compare(entries)` puts them side by side like the course report's table of three models.

Data split: the training split is shuffled once with the run's seed; its first n_val images are the validation
set (at most half the split) and the next n_train the training set. Inputs are standardised per channel with the
training images' mean and standard deviation, applied alike to validation and test images.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Collection
from typing import Any, Callable

import torch
from torch import nn

from explorer.core.cache import Cache, ComputeResult, Entry, to_plain
from explorer.core.config import ConfigError
from explorer.core.device import describe_device, get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter, part
from explorer.core.seeding import seeded
from explorer.data.datasets import (NAMES, UPLOAD_PREFIX, ArrayDataset, DatasetUnavailable, load, load_or_fallback,
                                    name_or_fallback, take, title)
from explorer.labs.classifiers import presets as P
from explorer.labs.classifiers.config import ClassifierConfig, flag_args, from_plain
from explorer.nets.cnn import CNNConfig, build_cnn, flops_per_image, param_count
from explorer.train.image_fit import FitConfig, ImageData, evaluate_classifier, fit, predict
from explorer.train.metrics import most_confident_mistakes

KIND = "classifier-run"  # cache kind of one finished run (config, curves, test metrics, checkpoint)
IMAGE_SETS = ("cifar10", "fashion_mnist", "mnist", "digits")  # the registered image sets (MNIST-1D is 1-D)
KNOWN_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {  # (C, H, W), classes: known without reading files
    "cifar10": ((3, 32, 32), 10), "fashion_mnist": ((1, 28, 28), 10), "mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10)}
MIN_SIDE = 8  # pixels: the narrowest input every family accepts (three 2x poolings leave 1x1)
N_MISTAKES = 24  # most confidently misclassified test images kept with a run
TRAIN_SHARE = 0.95  # of a run's progress bar: training; the rest is the test-set evaluation
MODEL_PREFIX = "model."  # tensor names of the checkpoint in an entry (the state_dict's keys after it)
MISTAKES = "mistakes.x"  # tensor name of the mistaken test images, uint8 (N, C, H, W)


# ---------------------------------------------------------------- data


def data_shape(name: str) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) and the class count of a data set: known for the registered sets, read for folders and uploads
    (DatasetUnavailable if they cannot be; ConfigError for a set that is not made of images)."""
    if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
    if name in NAMES:
        raise ConfigError(f"the workbench trains on images; {title(name)} is not an image data set")
    ds = load(name, "train")
    if not ds.is_image:
        raise ConfigError(f"the workbench trains on images; {title(name)} is not an image data set")
    return tuple(ds.input_shape), ds.num_classes  # type: ignore[return-value]


def resolve(cfg: ClassifierConfig, *, fallback: bool = True) -> ClassifierConfig:
    """The config that really runs: the data set replaced by the embedded digits when it is missing (unless
    fallback=False) and the network's input channels and classes set to the data's. ConfigError for images
    smaller than MIN_SIDE."""
    name = cfg.dataset
    if fallback:
        name = name_or_fallback(cfg.dataset, "train")[0]
    try:
        (c, h, w), k = data_shape(name)
    except DatasetUnavailable:
        if not fallback:
            raise
        name = "digits"
        (c, h, w), k = data_shape(name)
    if min(h, w) < MIN_SIDE:
        raise ConfigError(f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels for these networks; "
                          f"{title(name)} has {h}x{w}")
    model = dataclasses.replace(cfg.model, in_channels=c, classes=k)
    return dataclasses.replace(cfg, dataset=name, model=model)


def _subset(ds: ArrayDataset, index: torch.Tensor) -> ArrayDataset:
    """The examples at `index`, in that order."""
    return ArrayDataset(ds.name, ds.x[index], ds.y[index], ds.classes)


def split_data(cfg: ClassifierConfig) -> tuple[ArrayDataset, ArrayDataset | None, ArrayDataset, str | None]:
    """Training, validation (None when n_val is 0) and test images for cfg, and the fallback notice if the
    wanted set is missing (then the embedded digits are used)."""
    train_split, notice = load_or_fallback(cfg.dataset, "train")
    test_split, test_notice = load_or_fallback(train_split.name, "test")
    order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = min(cfg.n_val, len(train_split) // 2)
    val = _subset(train_split, order[:n_val]) if n_val else None
    train = _subset(train_split, order[n_val:n_val + cfg.n_train])
    return train, val, take(test_split, cfg.n_test, cfg.seed + 1), notice or test_notice


# ---------------------------------------------------------------- one run


def describe_fit(fit_cfg: FitConfig) -> str:
    """'adamw lr 0.01 · onecycle · wd 0.0001 · clip 0.1 · batch 400 · smoothing 0.1' for the tables."""
    parts = [f"{fit_cfg.optimizer}{' nesterov' if fit_cfg.optimizer == 'sgd' and fit_cfg.nesterov else ''} "
             f"lr {fit_cfg.lr:g}", fit_cfg.schedule]
    if fit_cfg.weight_decay:
        parts.append(f"wd {fit_cfg.weight_decay:g}")
    if fit_cfg.clip:
        parts.append(f"clip {fit_cfg.clip:g}")
    if fit_cfg.label_smoothing:
        parts.append(f"smoothing {fit_cfg.label_smoothing:g}")
    parts.append(f"batch {fit_cfg.batch_size}")
    if fit_cfg.patience:
        parts.append(f"patience {fit_cfg.patience}")
    return " · ".join(parts)


def model_cost(model_cfg: CNNConfig, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """Parameters and FLOPs per image (forward multiply-adds x 2) of a network, built on the cpu."""
    with seeded(0):
        model = build_cnn(model_cfg)
    return param_count(model), flops_per_image(model, tuple(image_shape))


def work(cfg: ClassifierConfig, flops: int) -> float:
    """FLOPs of the whole training (forward and backward, about 3x the forward pass, over every epoch)."""
    return 3.0 * flops * cfg.n_train * cfg.fit.epochs


HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def _history(source: Any) -> dict[str, list] | None:
    """The per-epoch history lists out of what the engine publishes or hands to on_epoch (a history dict, a
    FitResult-like object with .history, or a dict holding one), else None."""
    h = getattr(source, "history", None)
    if h is None and isinstance(source, dict):
        h = source.get("history", source)
    if isinstance(h, dict) and isinstance(h.get("epoch"), list):
        return {k: list(h.get(k, [])) for k in HISTORY_KEYS}
    return None


def train_and_evaluate(cfg: ClassifierConfig, report: Reporter = SILENT,
                       device: torch.device | None = None) -> ComputeResult:
    """Train cfg's network and evaluate it on the test split: the entry's metrics, checkpoint and mistakes.
    Publishes a live snapshot (the per-epoch history) after every epoch; Diverged when the loss is non-finite."""
    device = device or get_device()
    cfg = resolve(cfg)  # run() hands it resolved already; a direct call gets the data's channels and classes
    train_ds, val_ds, test_ds, notice = split_data(cfg)
    shape = tuple(train_ds.input_shape)
    params, flops = model_cost(cfg.model, shape)
    with seeded(cfg.seed):
        model = build_cnn(cfg.model)
    train = ImageData.from_dataset(train_ds, device)
    val = ImageData.from_dataset(val_ds, device, train.mean, train.std) if val_ds is not None else None
    live: dict[str, Any] = {"title": cfg.title, "dataset": train_ds.name, "epochs": cfg.fit.epochs,
                            "history": {k: [] for k in HISTORY_KEYS}, "n_train": len(train_ds),
                            "n_val": len(val_ds) if val_ds is not None else 0}

    def copy() -> dict[str, Any]:  # what a page reads while this thread goes on appending
        return {**live, "history": {k: list(v) for k, v in live["history"].items()}}

    def snapshot(published: Any) -> dict[str, Any]:
        h = _history(published)
        if h is not None:
            live["history"] = h
        return copy()

    def on_epoch(row: dict) -> None:
        h = _history(row)
        if h is not None:
            live["history"] = h
        else:  # one epoch's numbers
            for k in HISTORY_KEYS:
                live["history"][k].append(row.get(k))
        report.publish(copy())

    report.publish(copy(), progress=0.0, message="training")
    result = fit(model.to(device), train, val, cfg.fit, report=part(report, 0.0, TRAIN_SHARE, snapshot=snapshot),
                 device=device, on_epoch=on_epoch)
    report.checkpoint()
    report.publish(None, progress=TRAIN_SHARE, message="evaluating on the test images")
    trained = result.model
    test = ImageData.from_dataset(test_ds, device, train.mean, train.std)
    logits = predict(trained, test)  # (N, classes) float32 on the cpu
    y = test_ds.y.cpu()
    ev = evaluate_classifier(logits, y, tuple(test_ds.classes))
    probs = logits.softmax(1)
    wrong = most_confident_mistakes(probs, y, N_MISTAKES)
    pred = probs.argmax(1)
    mistakes = [{"index": int(i), "true": int(y[i]), "pred": int(pred[i]), "confidence": float(probs[i, pred[i]])}
                for i in wrong.tolist()]
    history = _history(result) or live["history"]
    metrics = {
        "title": cfg.title, "dataset": train_ds.name, "dataset_title": title(train_ds.name), "notice": notice,
        "classes": list(test_ds.classes), "image_shape": list(shape), "n_train": len(train_ds),
        "n_val": len(val_ds) if val_ds is not None else 0, "n_test": len(test_ds), "params": params,
        "flops_per_image": flops, "optimizer": describe_fit(cfg.fit), "augmentation": cfg.fit.augment.label,
        "history": history, "epochs_run": len(history["epoch"]), "best_epoch": result.best_epoch,
        "stopped_epoch": result.stopped_epoch, "train_seconds": float(result.seconds),
        "images_per_s": float(result.images_per_s), "test": to_plain(ev), "mistakes": mistakes,
    }
    tensors = {MODEL_PREFIX + k: v for k, v in trained.state_dict().items()}
    if mistakes:  # the images with what the network said about them (also in the metrics, as JSON)
        tensors[MISTAKES] = test_ds.x[wrong].contiguous()
        tensors["mistakes.pred"], tensors["mistakes.true"] = pred[wrong].contiguous(), y[wrong].contiguous()
        tensors["mistakes.confidence"] = probs[wrong, pred[wrong]].contiguous()
    report.publish(None, progress=1.0, message="done")
    return ComputeResult(metrics, tensors=tensors,
                         meta={"recompute": cli_command(cfg), "device": describe_device(device),
                               "finished_unix": time.time()})  # orders runs kept within the same second


def cached(cfg: ClassifierConfig, cache: Cache) -> Entry | None:
    """The kept run for cfg (runtime first, then shipped), also when cfg's data set is missing here (a shipped
    CIFAR-10 run still shows without the files), else that of the data set that would really run."""
    try:
        entry = cache.get(KIND, resolve(cfg, fallback=False))
    except DatasetUnavailable:
        entry = None
    return entry or cache.get(KIND, resolve(cfg))


def run(cfg: ClassifierConfig, cache: Cache, report: Reporter = SILENT, device: torch.device | None = None) -> Entry:
    """The run for cfg: from the cache, else trained now and kept with the command that recomputes it."""
    cfg = resolve(cfg)
    return cache.get_or_compute(KIND, cfg, lambda: train_and_evaluate(cfg, report, device))


def job(cfg: ClassifierConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job: publishes the history after every epoch."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn


# ---------------------------------------------------------------- kept runs


def config_of(entry: Entry) -> ClassifierConfig:
    """The config a kept run was computed with."""
    return from_plain(entry.config)


def load_model(entry: Entry, device: torch.device | str | None = None) -> nn.Module:
    """A kept run's trained network, rebuilt from its config and checkpoint, in eval mode."""
    cfg = config_of(entry)
    with seeded(cfg.seed):
        model = build_cnn(cfg.model)
    tensors = entry.tensors(device)
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    model.load_state_dict(state)
    return model.to(device or "cpu").eval()


def mistake_images(entry: Entry) -> torch.Tensor | None:
    """The run's most confidently mistaken test images, uint8 (N, C, H, W), in the order of metrics["mistakes"]."""
    return entry.tensors().get(MISTAKES)


def runs(cache: Cache, uploads: Collection[str] = (), only: Collection[ClassifierConfig] | None = None) -> list[Entry]:
    """The kept runs a visitor may see (runtime and shipped), newest first. A run on uploaded images holds some of
    them (its mistakes gallery), so it is listed only to a visitor who uploaded that zip (`uploads`: the upload:<sha256>
    names of this visitor's zips); `only` keeps just the runs of those settings (a visitor's own runs)."""
    allowed = set(uploads)
    if only is not None:
        only = {resolve(c) for c in only}  # as kept: the data set that really ran, the network fitted to it
    kept = []
    for e in cache.entries(KIND):
        dataset = str(e.config.get("dataset", "")) if isinstance(e.config, dict) else ""
        if dataset.startswith(UPLOAD_PREFIX) and dataset not in allowed:
            continue
        if only is not None and config_of(e) not in only:
            continue
        kept.append(e)
    return sorted(kept, key=lambda e: (str(e.meta.get("created", "")), float(e.meta.get("finished_unix", 0.0))),
                  reverse=True)


def run_label(entry: Entry) -> str:
    """'ResNet9 x0.25 · CIFAR-10 10,000 · 8 ep · 23.4% err · 2026-12-02 19:40' : a run in a menu."""
    m = entry.metrics
    created = str(entry.meta.get("created", ""))[:16].replace("T", " ")
    ship = " · shipped" if entry.shipped else ""
    return (f"{m['title']} · {m['dataset']} {m['n_train']:,} · {m['epochs_run']} ep · "
            f"{m['test']['top1_err']:.1%} err · {created}{ship}")


def compare(entries: list[Entry]) -> list[dict[str, Any]]:
    """The comparison table: one row per run, as the course report's table of models."""
    rows = []
    for e in entries:
        m, cfg = e.metrics, config_of(e)
        preset = P.which(cfg)
        rows.append({
            "run": run_label(e), "preset": f"{P.PRESETS[preset[0]].title}, {preset[1]}" if preset else "",
            "model": m["title"], "params": m["params"], "FLOPs/image": m["flops_per_image"],
            "data": f"{m['dataset']} {m['n_train']:,} train / {m['n_test']:,} test", "epochs": m["epochs_run"],
            "optimizer": m["optimizer"], "augmentation": m["augmentation"],
            "top-1 err": m["test"]["top1_err"], "top-5 err": m["test"]["top5_err"], "loss": m["test"]["loss"],
            "time (s)": round(float(e.meta.get("wall_time_s", m["train_seconds"])), 1),
            "images/s": round(m["images_per_s"]), "shipped": e.shipped, "key": e.key})
    return rows


def curve_rows(entries: list[Entry]) -> list[dict[str, Any]]:
    """Long rows (run, epoch, split, loss, accuracy) of the runs' train and validation curves, for overlays."""
    rows = []
    for e in entries:
        h, label = e.metrics["history"], run_label(e)
        rows += history_rows(h, label)
    return rows


def history_rows(h: dict[str, list], label: str = "") -> list[dict[str, Any]]:
    """Long rows of one history: train and (where there is one) validation loss and accuracy per epoch."""
    rows = []
    for j, epoch in enumerate(h.get("epoch", [])):
        for split in ("train", "val"):
            loss, acc = h.get(f"{split}_loss", []), h.get(f"{split}_acc", [])
            if j < len(loss) and loss[j] is not None and math.isfinite(loss[j]):
                rows.append({"run": label, "epoch": epoch, "split": split, "loss": loss[j],
                             "accuracy": acc[j] if j < len(acc) else None})
    return rows


# ---------------------------------------------------------------- command line


def cli_command(cfg: ClassifierConfig) -> str:
    """The terminal command that recomputes cfg: the nearest preset and the flags that differ from it."""
    best: tuple[int, str, str, list[str]] | None = None
    for key, p in P.PRESETS.items():
        for scale in P.SCALES:
            args = flag_args(cfg, p.at(scale))
            if best is None or len(args) < best[0]:
                best = (len(args), key, scale, args)
    assert best is not None
    _, key, scale, args = best
    return " ".join(["python -m explorer classify", "--preset", key, *(["--full"] if scale == "full" else []),
                     *args])
