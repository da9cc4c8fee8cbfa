"""The live decision-boundary playground: a run (trainer + live controls) driven by a background job."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.data.toy2d import DOMAIN, Data2DConfig, Points, input_features, make_split, task_of
from explorer.nets.mlp import MLPConfig
from explorer.train.evaluate import Diverged
from explorer.train.single_mlp import RunHistory, TrainConfig, Trainer

CACHE_KIND = "playground"
GRID = 64  # boundary resolution (GRID x GRID network evaluations per frame)
THUMB = 24  # resolution of the per-neuron thumbnails
MAX_THUMBS = 12  # neurons shown per hidden layer
PUBLISH_EVERY_S = 0.04  # at most 25 snapshots per second
SPEEDS = (1, 3, 10, 30, 100, 300, 0)  # epochs per second; 0 = as fast as the machine goes


@dataclass(frozen=True)
class PlaygroundConfig:
    """Everything that determines a run's result: data, network, training, and where it stops."""

    data: Data2DConfig = Data2DConfig()
    model: MLPConfig = MLPConfig()
    train: TrainConfig = TrainConfig()
    epochs: int = 1000  # the run stops (and is cached) here

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1, 100_000, integer=True)
        if self.model.in_dim != len(self.data.input_features):
            raise ConfigError(f"the network has {self.model.in_dim} inputs for "
                              f"{len(self.data.input_features)} input features")


def describe(cfg: PlaygroundConfig) -> str:
    """The settings in use as one line of plain text (for a lecture hall, where the controls are hidden)."""
    d, m, t = cfg.data, cfg.model, cfg.train
    net = "-".join(str(w) for w in m.hidden) or "no hidden layer"
    parts = [f"{d.name}, noise {d.noise}%, {d.n_points} points ({d.train_ratio}% train)",
             "features " + ", ".join(d.input_features), f"hidden {net} {m.activation}"]
    if m.batch_norm:
        parts.append("batch norm")
    if m.dropout:
        parts.append(f"dropout {m.dropout:g}")
    parts.append(f"{t.optimizer} lr {t.lr:g}, batch {t.batch_size}, {t.loss}")
    if t.l1 or t.l2:
        parts.append(f"L1 {t.l1:g}" if t.l1 else f"L2 {t.l2:g}")
    parts.append(f"weight seed {t.seed}, stop at epoch {cfg.epochs:,}")
    return " · ".join(parts)


def build_config(*, dataset: str = "spiral", noise: int = 0, train_ratio: int = 50, n_points: int = 500,
                 data_seed: int = 0, input_features: tuple[str, ...] = ("x1", "x2"), hidden: tuple[int, ...] = (8, 8, 8),
                 activation: str = "tanh", batch_norm: bool = False, dropout: float = 0.0,
                 regularization: str = "none", reg_rate: float = 0.0, loss: str = "cross_entropy",
                 optimizer: str = "adam", lr: float = 0.01, batch_size: int = 10, seed: int = 0,
                 epochs: int = 1000, upload: Points | None = None, upload_sha: str = "") -> PlaygroundConfig:
    """Flat settings (as on screen or in a URL) -> a validated PlaygroundConfig."""
    if regularization not in ("none", "L1", "L2"):
        raise ConfigError(f"regularization must be none, L1 or L2; got {regularization!r}")
    data = Data2DConfig(name=dataset, noise=noise, train_ratio=train_ratio, n_points=n_points, seed=data_seed,
                        input_features=tuple(input_features), upload_sha=upload_sha)
    if dataset == "upload":
        if upload is None:
            raise ConfigError("upload a CSV file first")
        task, classes = upload.task, upload.num_classes
    else:
        task = task_of(dataset)
        classes = 2 if task == "classification" else 1
    if task == "regression":
        loss = "mse"
    out_dim = classes if task == "classification" else 1
    model = MLPConfig(in_dim=len(input_features), out_dim=out_dim, hidden=tuple(hidden), activation=activation,
                      batch_norm=batch_norm, dropout=dropout)
    tr = TrainConfig(optimizer=optimizer, lr=lr, batch_size=batch_size, loss=loss,
                     l1=reg_rate if regularization == "L1" else 0.0, l2=reg_rate if regularization == "L2" else 0.0,
                     seed=seed)
    return PlaygroundConfig(data=data, model=model, train=tr, epochs=epochs)


@dataclass
class Snapshot:
    """What the page draws: arrays only, no rendering."""

    epoch: int
    steps: int
    lr: float
    status: str  # "ready" | "running" | "paused" | "finished" | "diverged"
    message: str
    field: np.ndarray  # (GRID, GRID) in [-1, 1] or (GRID, GRID, K) class probabilities; row 0 at the top
    neurons: list[list[np.ndarray]]  # per hidden layer, per shown neuron: (THUMB, THUMB) in [-1, 1]
    weights: list[np.ndarray]  # per layer (out, in)
    history: dict[str, list[float]]
    inputs: list[tuple[str, np.ndarray]] = field(default_factory=list)  # per input feature: (THUMB, THUMB)
    from_cache: bool = False
    cache_meta: dict = field(default_factory=dict)

    def last(self, name: str) -> float | None:
        vals = self.history.get(name) or []
        return vals[-1] if vals else None


def _grid_points(n: int) -> torch.Tensor:
    """(n*n, 2) points: row 0 at x2 = +DOMAIN, column 0 at x1 = -DOMAIN."""
    ticks = torch.linspace(-DOMAIN, DOMAIN, n)
    x2, x1 = torch.meshgrid(ticks.flip(0), ticks, indexing="ij")
    return torch.stack([x1.reshape(-1), x2.reshape(-1)], 1)


class PlaygroundRun:
    """One run of the playground: owns the trainer; the page talks to it through thread-safe setters."""

    def __init__(self, cfg: PlaygroundConfig, upload: Points | None = None, *, cache: Cache,
                 device: torch.device | None = None, use_cache: bool = True):
        self.cfg = cfg
        self.device = device or get_device()
        self.cache = cache
        self.split = make_split(cfg.data, self.device, upload)
        self.trainer = Trainer(cfg.model, cfg.train, self.split.x_train, self.split.y_train, self.split.x_test,
                               self.split.y_test, task=self.split.task)
        self._grid = input_features(_grid_points(GRID), cfg.data.input_features).to(self.device)
        self._thumb_grid = input_features(_grid_points(THUMB), cfg.data.input_features).to(self.device)
        scale = self._thumb_grid.abs().amax(0).clamp_min(1e-6)
        self._input_tiles = [(name, t.reshape(THUMB, THUMB).cpu().numpy()) for name, t in
                             zip(cfg.data.input_features, (self._thumb_grid / scale).T)]
        self._lock = threading.Lock()
        self._pending_lr: float | None = None
        self.speed = 30.0
        self.lr_changed = False
        self.status, self.message = "ready", ""
        self.from_cache, self.cache_meta = False, {}
        if use_cache:
            entry = self.cache.get(CACHE_KIND, cfg)
            if entry is not None:
                self.trainer.load_state_dict(entry.tensors())
                self.trainer.history = _history_from(entry.metrics)
                self.trainer.epoch = int(entry.metrics.get("epochs", cfg.epochs))
                self.trainer.step_count = int(entry.metrics.get("steps", 0))
                self.status, self.from_cache, self.cache_meta = "finished", True, dict(entry.meta)
                self.message = "Loaded a finished run with these settings from the cache."
        if not self.trainer.history.epoch:
            self.trainer.evaluate()  # epoch 0: the curves start at the initial weights
        self.start_state = self.snapshot()  # drawn at once, before (and whatever) the job publishes

    def restart(self) -> None:
        """Before a new job continues this run (its last one was reaped while the page sat idle): the state to
        draw at once is where training stopped. Call only while no job trains the run."""
        self.start_state = self.snapshot()

    # --- controls (any thread) -----------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        """Apply a new learning rate from the next epoch on (refused if out of range)."""
        check_range("learning rate", lr, 1e-5, 10.0)
        with self._lock:
            self._pending_lr = lr

    def set_speed(self, epochs_per_s: float) -> None:
        """Cap the pace (epochs per second) so a lecture hall can watch; 0 means no cap."""
        check_range("speed (epochs per second)", epochs_per_s, 0, 10_000)
        self.speed = float(epochs_per_s)

    @property
    def finished(self) -> bool:
        return self.trainer.epoch >= self.cfg.epochs or self.status == "diverged"

    # --- the job --------------------------------------------------------------------------------
    def job(self, ctx: JobContext) -> dict:
        """Train until cfg.epochs, publishing snapshots at most every PUBLISH_EVERY_S and before pausing."""
        tr = self.trainer
        ctx.publish(self.snapshot("paused" if ctx.pausing else "running"), progress=self._progress())
        last_pub = time.perf_counter()
        while not self.finished:
            if ctx.pausing:
                ctx.publish(self.snapshot("paused"), progress=self._progress())
            ctx.checkpoint()
            start = time.perf_counter()
            self._apply_controls()
            try:
                tr.run_epoch()
            except Diverged as exc:
                if tr.history.epoch and tr.history.epoch[-1] < tr.epoch:  # stopped after a finite epoch: draw it
                    tr.evaluate()
                self.status, self.message = "diverged", str(exc)
                ctx.publish(self.snapshot("diverged"), message=self.message)
                return {"diverged": str(exc)}
            tr.evaluate()
            now = time.perf_counter()
            if now - last_pub >= PUBLISH_EVERY_S or ctx.pausing or self.finished:
                ctx.publish(self.snapshot("running"), progress=self._progress())
                last_pub = now
            if self.speed > 0:
                self._pace(ctx, start + 1.0 / self.speed)
        self.status = "finished"
        self.message = f"Finished {tr.epoch} epochs."
        self._store()
        ctx.publish(self.snapshot("finished"), progress=1.0, message=self.message)
        return {"epochs": tr.epoch}

    def _pace(self, ctx: JobContext, until: float) -> None:
        """Wait until `until` (perf_counter) without holding a compute slot; back early when paused or cancelled."""
        left = until - time.perf_counter()
        if left > 0:
            ctx.sleep(left)

    def _apply_controls(self) -> None:
        with self._lock:
            lr, self._pending_lr = self._pending_lr, None
        if lr is not None and lr != self.trainer.lr:
            self.trainer.set_lr(lr)
            self.lr_changed = True

    def _progress(self) -> float:
        return self.trainer.epoch / self.cfg.epochs

    def _store(self) -> None:
        """Cache a run that went from start to end with the settings of its config (no live changes)."""
        if self.lr_changed or self.from_cache:
            return
        h = self.trainer.history
        metrics = {"epochs": self.trainer.epoch, "steps": self.trainer.step_count, **dataclasses.asdict(h)}
        self.cache.put(CACHE_KIND, self.cfg, metrics, self.trainer.state_dict())

    # --- snapshot ------------------------------------------------------------------------------
    @torch.no_grad()
    def snapshot(self, status: str | None = None) -> Snapshot:
        """The current state as plain arrays (computed on the device, copied once)."""
        tr = self.trainer
        z = tr.forward(self._grid)
        if tr.task == "classification":
            probs = torch.softmax(z, 1)
            fieldv = (probs[:, 1] * 2 - 1) if probs.shape[1] == 2 else probs
        else:
            fieldv = z[:, 0].clamp(-1, 1)
        hidden, _ = tr.hidden_outputs(self._thumb_grid)
        thumbs = []
        for h in hidden:
            h = h[:, :MAX_THUMBS]
            scale = h.abs().amax(0).clamp_min(1e-6)
            thumbs.append((h / scale).T.reshape(-1, THUMB, THUMB).cpu().numpy())
        fieldv = fieldv.reshape(GRID, GRID, -1).squeeze(-1).cpu().numpy()
        hist = {f.name: list(getattr(tr.history, f.name)) for f in dataclasses.fields(tr.history)}  # no deep copy
        return Snapshot(epoch=tr.epoch, steps=tr.step_count, lr=tr.lr, status=status or self.status,
                        message=self.message, field=fieldv, neurons=[list(t) for t in thumbs],
                        weights=[lay.weight_t.cpu().numpy().copy() for lay in tr.layers], history=hist,
                        inputs=self._input_tiles, from_cache=self.from_cache, cache_meta=self.cache_meta)


def _history_from(metrics: dict) -> RunHistory:
    return RunHistory(**{k: list(metrics.get(k, [])) for k in ("epoch", "train_loss", "test_loss", "train_acc",
                                                             "test_acc")})
