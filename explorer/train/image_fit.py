"""The image-classifier workbench's training loop: the fast path for one network on one image set.

It follows airbench (Keller Jordan's CIFAR-10 speed runs) where that is what makes a small network fast:
- the whole set lives on the device as uint8 (N, C, H, W): 4x smaller than float32, and converting a batch is
  one cheap kernel ("it's faster to load+process uint8 data than to load preprocessed fp16 data");
- a batch is an index slice of a seeded permutation (`x[perm[i:i + B]]`), no DataLoader, no per-image Python;
- normalisation and augmentation (explorer.data.augment) run on the device, per batch, as whole-batch ops;
- evaluation runs in chunks (explorer.train.evaluate), a chunk that runs out of memory retried in halves, so a set
  of any size can be evaluated; the loss is checked for non-finite values once per checkpoint, not per step,
  so the device is not synchronised every step.

Everything else is torch's own: the optimizer from explorer.train.optimizers' registry (torch.optim SGD with
momentum / Nesterov, Adam, AdamW, fused where torch has a fused kernel), the schedule per step (LambdaLR over
explorer.core.schedules' factors, torch's OneCycleLR) or per epoch (ReduceLROnPlateau on the validation loss, or
on the training loss without a validation set), F.cross_entropy's label smoothing, clip_grad_norm_, torch.autocast
(bf16 / fp16, CUDA; bf16 on the CPU only when asked, so CPU numbers stay fp32 by default) and channels_last.

Seeding: the batch order comes from a CPU generator seeded with cfg.seed, the augmentation draws from one seeded
with cfg.seed + 1, dropout masks (explorer.nets.cnn.Dropout) from one on the device seeded with cfg.seed + 2. The
same config and the same initial weights give the same trained weights on the CPU, whatever other threads do.
Only parameters with requires_grad are trained (a frozen backbone gives a linear probe).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.report import SILENT, Reporter, hms
from explorer.core.schedules import SCHEDULES as EPOCH_FACTORS
from explorer.core.status import free_memory, is_out_of_memory
from explorer.data.augment import AugmentConfig, augment
from explorer.data.datasets import ArrayDataset
from explorer.train.evaluate import Diverged, diverged_message, evaluate, first_nonfinite
from explorer.train.metrics import confusion_matrix, per_class, topk_correct
from explorer.train.optimizers import LR_RANGE, build_optimizer, config_for, fast_kwargs

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
AMP = ("off", "bf16", "fp16")
STEP_MILESTONES = (0.5, 0.75)  # "step" schedule: the learning rate x STEP_GAMMA at these fractions of the steps
STEP_GAMMA = 0.1
PLATEAU_FACTOR = 0.1  # ReduceLROnPlateau: learning rate x this ...
PLATEAU_PATIENCE = 2  # ... after this many epochs without a better monitored loss
CHECK_S = 0.25  # seconds between checkpoints (Stop, divergence check, progress) inside an epoch
EVAL_CHUNK = 512  # images per forward pass when evaluating
MAX_EPOCHS = 1000
MAX_BATCH = 8192
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class FitConfig:
    """A training recipe: optimizer, schedule, regularisation, augmentation, precision and seed."""

    optimizer: str = "adam"  # "sgd" (with momentum / nesterov below), "adam" or "adamw"
    lr: float = 1e-3  # base (for onecycle: peak) learning rate
    momentum: float = 0.9  # SGD only; 0 = plain SGD
    nesterov: bool = False  # SGD only; needs momentum > 0
    weight_decay: float = 0.0  # L2 (SGD, Adam) or decoupled (AdamW)
    schedule: str = "constant"  # "constant", "step" (x0.1 at 50% and 75%), "cosine", "onecycle", "plateau"
    epochs: int = 10
    batch_size: int = 128
    label_smoothing: float = 0.0  # F.cross_entropy's label_smoothing, 0..0.5
    clip: float = 0.0  # max gradient norm (clip_grad_norm_), 0 = off
    patience: int = 0  # early stopping: epochs without a better validation loss before stopping (0 = off)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0  # batch order, augmentation draws, dropout masks (not the initial weights: build those seeded)
    amp: str = "off"  # autocast "bf16" / "fp16" (CUDA; bf16 also on the CPU when asked; fp16 refused there)
    channels_last: bool = False  # NHWC model and batches: faster convs on GPUs, and ~1.5x on the CPU for narrow nets

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("learning rate", self.lr, *LR_RANGE)
        check_range("momentum", self.momentum, 0.0, 0.999)
        if not isinstance(self.nesterov, bool) or not isinstance(self.channels_last, bool):
            raise ConfigError("nesterov and channels_last must be true or false")
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise ConfigError("Nesterov momentum needs momentum > 0")
        check_range("weight decay", self.weight_decay, 0.0, 1.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_range("epochs", self.epochs, 1, MAX_EPOCHS, integer=True)
        check_range("batch size", self.batch_size, 1, MAX_BATCH, integer=True)
        check_range("label smoothing", self.label_smoothing, 0.0, 0.5)
        check_range("gradient clipping norm", self.clip, 0.0, 1000.0)
        check_range("early-stopping patience", self.patience, 0, MAX_EPOCHS, integer=True)
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_choice("mixed precision", self.amp, AMP)


def _floats(v: Any) -> tuple[float, ...]:
    return tuple(float(a) for a in torch.as_tensor(v, dtype=torch.float64).flatten().tolist())


@dataclass(eq=False)
class ImageData:
    """A whole image set on the device: uint8 pixels, labels, and the per-channel mean and standard deviation
    (pixels scaled to [0, 1]) that a batch is normalised with."""

    x: torch.Tensor  # uint8 (N, C, H, W) on the device
    y: torch.Tensor  # int64 (N,) on the device
    mean: tuple[float, ...]  # (C,)
    std: tuple[float, ...]  # (C,)
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ConfigError(f"ImageData needs uint8 (N, C, H, W) images, got {self.x.dtype} {tuple(self.x.shape)}")
        if len(self.y) != len(self.x):
            raise ConfigError(f"{len(self.x)} images but {len(self.y)} labels")
        self.mean, self.std = _floats(self.mean), _floats(self.std)
        c = self.x.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ConfigError(f"mean and std need one value per channel ({c})")
        if min(self.std) <= 0:
            raise ConfigError("every channel's standard deviation must be positive")
        # normalised = x * scale + shift, one fused multiply-add per pixel
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], device=self.x.device).view(1, c, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], device=self.x.device).view(1, c, 1, 1)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 standardised per channel."""
        return torch.addcmul(self._shift, xb.float(), self._scale)

    @staticmethod
    def stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Exact per-channel mean and standard deviation of uint8 images (in [0, 1] units), from a 256-bin
        histogram per channel: no float copy of the set. A constant channel gets std 1."""
        means, stds = [], []
        values = torch.arange(256, dtype=torch.float64) / 255.0
        for c in range(x.shape[1]):
            hist = torch.bincount(x[:, c].flatten(), minlength=256).double().cpu()
            n = hist.sum()
            m = (hist * values).sum() / n
            var = (hist * (values - m) ** 2).sum() / n
            means.append(float(m))
            stds.append(float(var.sqrt()) if var > 0 else 1.0)
        return tuple(means), tuple(stds)

    @classmethod
    def from_dataset(cls, ds: ArrayDataset, device: torch.device | str | None = None,
                     mean: Sequence[float] | torch.Tensor | None = None,
                     std: Sequence[float] | torch.Tensor | None = None) -> ImageData:
        """The set on `device` (default: get_device()); mean / std from this set's pixels where not given (pass
        the training set's to a validation or test set)."""
        if not ds.is_image or ds.x.dtype != torch.uint8:
            raise ConfigError(f"{ds.name} is not a uint8 image set")
        if len(ds) == 0:
            raise ConfigError(f"{ds.name} has no images")
        device = torch.device(device) if device is not None else get_device()
        x = ds.x.to(device)
        if mean is None or std is None:
            m, s = cls.stats(x)
            mean = m if mean is None else mean
            std = s if std is None else std
        return cls(x, ds.y.to(device, torch.int64), mean, std, tuple(ds.classes))


@dataclass
class FitResult:
    """What fit returns: the per-epoch history, the trained model (eval mode) and how fast it trained."""

    history: dict[str, list]  # HISTORY_KEYS -> one value per epoch (val_* None without a validation set); train_*
    # are the running means over the epoch's augmented batches in train mode; lr the last step's; seconds the
    # wall time since fit started, at the end of the epoch (validation included)
    best_epoch: int  # 1-based epoch of the lowest monitored loss (validation, else training)
    stopped_epoch: int  # the last epoch trained (cfg.epochs unless early stopping ended the run sooner)
    seconds: float  # wall time of the whole fit, evaluation included
    images_per_s: float  # training images per second of the training steps alone
    model: nn.Module


# ---------------------------------------------------------------- pieces


def check_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`, or None for fp32. fp16 needs CUDA; bf16 runs on CUDA and, when
    asked for explicitly, on the CPU; MPS trains in fp32 only."""
    check_choice("mixed precision", amp, AMP)
    if amp == "off":
        return None
    if device.type == "cuda" or (device.type == "cpu" and amp == "bf16"):
        return AMP_DTYPES[amp]
    raise ConfigError(f"{amp} autocast needs a CUDA device; this run is on {device.type} (use amp='off'"
                      + (" or 'bf16'" if device.type == "cpu" else "") + ")")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def make_optimizer(params: list[torch.Tensor], cfg: FitConfig, device: torch.device) -> torch.optim.Optimizer:
    """cfg's optimizer from the registry (explorer.train.optimizers), torch.optim's fused kernel where it has one."""
    if cfg.optimizer == "sgd":
        kind = "sgd" if cfg.momentum == 0 else ("nesterov" if cfg.nesterov else "momentum")
    else:
        kind = cfg.optimizer
    opt_cfg = config_for(kind, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return build_optimizer(opt_cfg, params, **fast_kwargs(opt_cfg.spec.cls, device))


def step_factor(step: int, steps: int) -> float:
    """The "step" schedule: 1, then x0.1 from 50% of the steps, x0.01 from 75%."""
    return STEP_GAMMA ** sum(step >= round(f * steps) for f in STEP_MILESTONES)


STEP_FACTORS: dict[str, Callable[[int, int], float]] = {  # per-step factors on the base learning rate
    "constant": EPOCH_FACTORS["constant"], "cosine": EPOCH_FACTORS["cosine"], "step": step_factor}


def make_scheduler(opt: torch.optim.Optimizer, cfg: FitConfig, steps: int) -> Any:
    """cfg's schedule over `steps` optimizer steps: stepped after every step, except plateau (after every epoch)."""
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=PLATEAU_FACTOR,
                                                          patience=PLATEAU_PATIENCE)
    if cfg.schedule == "onecycle":
        # cycling momentum changes plain SGD into momentum SGD: only where the optimizer has momentum
        cycle = cfg.optimizer != "sgd" or cfg.momentum > 0
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 2),
                                                   cycle_momentum=cycle)
    factor = STEP_FACTORS[cfg.schedule]
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(s, steps))


def batch_bounds(n: int, batch: int) -> list[int]:
    """Start offsets of each batch and n at the end; a last batch of one image joins the one before (batch norm
    cannot train on a single image)."""
    bounds = list(range(0, n, batch)) + [n]
    if len(bounds) > 2 and n - bounds[-2] == 1:
        del bounds[-2]
    return bounds


def same_device(a: torch.device, b: torch.device) -> bool:
    """True when a and b name the same device ("cuda" and "cuda:0" do, when 0 is the current device)."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def _set_dropout_generator(model: nn.Module, gen: torch.Generator | None) -> None:
    for m in model.modules():
        if hasattr(type(m), "generator") and isinstance(m, nn.Dropout):  # explorer.nets.cnn.Dropout
            m.generator = gen


# ---------------------------------------------------------------- evaluation


def _logits_chunks(model: nn.Module, data: ImageData, chunk: int, amp: torch.dtype | None,
                   channels_last: bool, flip: bool = False) -> torch.Tensor:
    """Logits (N, K) float32 on the cpu, `chunk` images per forward; a chunk that runs out of memory is retried
    in halves (down to one image). flip: the mean of the logits of each image and of its mirror image."""
    n, out, i = len(data), [], 0
    device = data.device
    while i < n:
        b = min(chunk, n - i)
        try:
            xb = data.normalise(data.x[i:i + b])
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp):
                z = model(xb)
                if flip:
                    z = (z.float() + model(xb.flip(-1)).float()) / 2
            out.append(z.float().cpu())
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if chunk == 1 or not is_out_of_memory(exc):
                raise
            chunk = max(1, b // 2)
        else:
            i += b
            continue
        free_memory()  # out of the except block: its traceback no longer holds the failed chunk's activations
    return torch.cat(out)


@torch.no_grad()
def predict(model: nn.Module, data: ImageData, chunk: int = EVAL_CHUNK, *, amp: str = "off",
            channels_last: bool = False, flip_tta: bool = False) -> torch.Tensor:
    """The model's outputs (N, K) float32 on the cpu for every image of `data`, in eval mode and in chunks (out of
    memory: retried in halves). flip_tta: test-time augmentation by horizontal flips (airbench's), the mean of the
    logits of each image and its mirror image. The model's train/eval mode is restored afterwards."""
    was = model.training
    model.eval()
    try:
        return _logits_chunks(model, data, chunk, check_amp(amp, data.device), channels_last, flip_tta)
    finally:
        model.train(was)


def evaluate_classifier(logits: torch.Tensor, y: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Test numbers of logits (N, C) against labels y (N,): mean cross-entropy, top-1 and top-5 error, confusion
    matrix (rows true, lists), per-class metrics (explorer.train.metrics.per_class), n and the class names."""
    logits, y = logits.float().cpu(), torch.as_tensor(y).long().cpu()
    n, c = logits.shape
    top = topk_correct(logits, y, (1, 5))
    conf = confusion_matrix(y, logits.argmax(1), c)
    return {"loss": float(F.cross_entropy(logits, y)), "top1_err": 1.0 - top[1] / n, "top5_err": 1.0 - top[5] / n,
            "confusion": conf.tolist(), "per_class": per_class(conf), "n": int(n), "classes": list(classes)}


def _val_numbers(model: nn.Module, val: ImageData, amp: torch.dtype | None, channels_last: bool,
                 report: Reporter) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on a validation set (eval mode, chunked, explorer.train.evaluate); a
    checkpoint before every chunk, so Stop also works while a large set is evaluated."""
    def logits_fn(xb: torch.Tensor) -> torch.Tensor:
        report.checkpoint()
        xb = val.normalise(xb)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(val.device, amp):
            return model(xb).float().unsqueeze(0)  # (1, b, C): one model

    model.eval()
    with torch.no_grad():
        ((loss, err),) = evaluate(logits_fn, val.x, [val.y], EVAL_CHUNK)
    model.train()
    return float(loss), 1.0 - float(err)


# ---------------------------------------------------------------- training


def fit(model: nn.Module, train: ImageData, val: ImageData | None, cfg: FitConfig, report: Reporter = SILENT,
        device: torch.device | None = None, on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train `model` (its parameters with requires_grad) on `train` with cfg's recipe, evaluating on `val` after
    every epoch; returns the history and the trained model in eval mode.

    Publishes {"history", "epoch", "epochs"} with progress and an ETA message after every epoch, and calls
    on_epoch with that epoch's row (HISTORY_KEYS). Checkpoints every CHECK_S seconds (Stop works within a second).
    Early stopping (cfg.patience) restores the best epoch's weights. Raises Diverged on a non-finite loss and
    ConfigError for a recipe this device cannot run.
    """
    t_start = time.perf_counter()
    device = torch.device(device) if device is not None else train.device
    if not same_device(train.device, device) or (val is not None and not same_device(val.device, device)):
        raise ConfigError(f"the data must be on the training device {device}")
    amp = check_amp(cfg.amp, device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters (every parameter has requires_grad=False)")
    n = len(train)
    bounds = batch_bounds(n, cfg.batch_size)
    steps_per_epoch = len(bounds) - 1
    total_steps = steps_per_epoch * cfg.epochs
    opt = make_optimizer(params, cfg, device)
    sched = make_scheduler(opt, cfg, total_steps)
    per_step = cfg.schedule != "plateau"
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    drop_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)

    history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
    best_loss, best_epoch, best_state, bad_epochs = math.inf, 0, None, 0
    train_s, images, epoch = 0.0, 0, 0
    _set_dropout_generator(model, drop_gen)
    try:
        model.train()
        for epoch in range(1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            perm = torch.randperm(n, generator=order_gen).to(device)
            losses = torch.zeros(steps_per_epoch, device=device)  # per-step summed loss: one sync per check
            correct = torch.zeros((), device=device, dtype=torch.int64)
            checked, last_check = 0, time.perf_counter()
            lr_used = opt.param_groups[0]["lr"]
            for s in range(steps_per_epoch):
                idx = perm[bounds[s]:bounds[s + 1]]
                xb = train.normalise(train.x[idx])
                yb = train.y[idx]
                if cfg.augment.active:
                    xb = augment(xb, cfg.augment, aug_gen)
                if cfg.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with _autocast(device, amp):
                    out = model(xb)
                    loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                lr_used = opt.param_groups[0]["lr"]
                scaler.step(opt)
                scaler.update()
                if per_step:
                    sched.step()
                losses[s] = loss.detach() * len(idx)
                correct += (out.detach().argmax(1) == yb).sum()
                if time.perf_counter() - last_check > CHECK_S or s == steps_per_epoch - 1:
                    _check_finite(losses[checked:s + 1], checked, epoch, steps_per_epoch, lr_used)
                    checked = s + 1
                    report.checkpoint()
                    done = (epoch - 1 + (s + 1) / steps_per_epoch) / cfg.epochs
                    report.publish(progress=done, message=_message(epoch, cfg.epochs, s + 1, steps_per_epoch,
                                                                   history, time.perf_counter() - t_start, done))
                    last_check = time.perf_counter()
            train_loss = float(losses.sum()) / n
            train_acc = int(correct) / n
            train_s += time.perf_counter() - t_epoch
            images += n
            val_loss = val_acc = None
            if val is not None:
                val_loss, val_acc = _val_numbers(model, val, amp, cfg.channels_last, report)
            monitored = val_loss if val_loss is not None else train_loss
            if not per_step:
                sched.step(monitored)
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc, "lr": float(lr_used), "seconds": time.perf_counter() - t_start}
            for k in HISTORY_KEYS:
                history[k].append(row[k])
            stop = False
            if monitored < best_loss:
                best_loss, best_epoch, bad_epochs = monitored, epoch, 0
                if cfg.patience:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
                stop = bool(cfg.patience) and bad_epochs >= cfg.patience
            if on_epoch is not None:
                on_epoch(dict(row))
            done = epoch / cfg.epochs
            report.publish({"history": {k: list(v) for k, v in history.items()}, "epoch": epoch,
                            "epochs": cfg.epochs}, progress=1.0 if stop else done,
                           message=_message(epoch, cfg.epochs, None, None, history,
                                            time.perf_counter() - t_start, done))
            report.checkpoint()
            if stop:
                break
    finally:
        _set_dropout_generator(model, None)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(history=history, best_epoch=best_epoch or epoch, stopped_epoch=epoch,
                     seconds=time.perf_counter() - t_start, images_per_s=images / max(train_s, 1e-9), model=model)


def _check_finite(summed: torch.Tensor, first_step: int, epoch: int, steps_per_epoch: int, lr: float) -> None:
    """Raise Diverged at the first non-finite step loss of the slice (one host sync)."""
    (bad,) = first_nonfinite(summed)
    if bad is not None:
        step = (epoch - 1) * steps_per_epoch + first_step + bad + 1
        raise Diverged(diverged_message("training", step, epoch, lr), step, epoch)


def _message(epoch: int, epochs: int, step: int | None, steps: int | None, history: dict[str, list],
             elapsed: float, done: float) -> str:
    """'epoch 3/10 · val acc 71.2% · ETA 1m20s' (inside an epoch: 'epoch 3/10 · step 40/98 · ...')."""
    parts = [f"epoch {epoch}/{epochs}"]
    if step is not None:
        parts.append(f"step {step}/{steps}")
    if history["val_acc"] and history["val_acc"][-1] is not None:
        parts.append(f"val acc {100 * history['val_acc'][-1]:.1f}%")
    elif history["train_acc"]:
        parts.append(f"train acc {100 * history['train_acc'][-1]:.1f}%")
    eta = elapsed * (1 - done) / done if done > 0 else math.inf
    parts.append(f"ETA {hms(eta)}")
    return " · ".join(parts)
