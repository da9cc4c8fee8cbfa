"""Training engine for in-memory data: an MLP with hand-written backward, index-slice batches.

At playground sizes the cost of a step is per-operation overhead, not arithmetic (see FACTS):
autograd bookkeeping, a DataLoader collate and a `.item()` per step cost more than the maths.
So the engine keeps the whole data set on the device, takes batches as slices of a once-per-epoch
shuffled copy, computes gradients with fused ATen backward ops into preallocated buffers, updates
with `torch._foreach_*` (the same kernels torch.optim uses), and syncs with the host once per
epoch. Gradients are tested against autograd; updates against torch.optim. The optimizer kinds, their
labels and defaults come from explorer.train.optimizers; the SGD family keeps a hand-written foreach
update (fewer Python calls than torch.optim.SGD.step, bit-identical), the others run torch.optim itself.

Each epoch ends with a health check in that same sync (`Diverged` says which failure and what to change):
a non-finite step loss or weight; an exploding loss (EXPLODE_FACTOR times the reference loss for EXPLODE_EPOCHS
epochs); a dead network (a hidden layer frozen for FROZEN_EPOCHS epochs while the loss is far from fitted). The
check's forward over the training set also gives `evaluate` its training loss and accuracy, so it costs no extra
forward. Non-finite data is refused up front as a data error (ConfigError), never blamed on the learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.report import SILENT, Reporter
from explorer.nets.mlp import ACTIVATIONS, MLPConfig, init_mlp_params
from explorer.train.evaluate import SMALL_LR, Diverged, diverged_message
from explorer.train.optimizers import OPTIMIZERS, OptimizerConfig, build_optimizer, config_for, supported_kinds

aten = torch.ops.aten
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


# Divergence thresholds, chosen on 468 random playground runs (every data set, activation and optimizer, with or
# without batch norm, dropout and L1/L2, lr 0.001-10, 120-150 epochs; 123 of them reached 90% training accuracy):
# - Exploding: an epoch's mean training loss above EXPLODE_FACTOR x the reference loss (the larger of the initial
#   loss and the loss of guessing, i.e. always predicting the training labels' mean) for EXPLODE_EPOCHS epochs in a
#   row. Runs recover from shorter or smaller excursions: a linear network with Adam at lr 1 on the circle stayed at
#   40-360x for 15 epochs, then fitted, and 1000x for a single epoch also happened in a run that fitted. At 100x for
#   10 epochs the one run stopped that ended above 90% accuracy had spent 35 epochs at 10^4-10^7 x.
# - Dead: a hidden layer frozen, i.e. every unit's activation derivative exactly 0 (float32) on every training point
#   (ReLUs that output 0; tanh or sigmoid saturated at their limits). No gradient then reaches that layer or any
#   layer before it; only momentum, Adam's running averages or weight decay could still move them. Counted while the
#   training loss is above FROZEN_LOSS x the guessing loss (a network that fits with saturated units is not dead),
#   for FROZEN_EPOCHS epochs in a row. Of 285 of the runs above, 43 had a frozen layer at some epoch end and none of
#   them went on to fit. In 321 other runs, 58 had a hidden layer whose output was the same on every training point
#   at some epoch end; 30 of them changed again later (momentum, weight decay), hence the patience, and none fitted.
#   With batch norm, or behind dropout, a layer's training-time input differs from the evaluation-mode one checked
#   here, so such layers are not checked.
# - No bound on the size of finite weights: a run that fitted (ReLU, SGD at lr 3, the gaussian set) reached
#   |w| = 1.5e8; of the 3 runs above 1e6 that did not fit, 2 were caught as dead anyway.
EXPLODE_FACTOR = 100.0  # x the reference loss
EXPLODE_EPOCHS = 10  # epochs in a row
FROZEN_EPOCHS = 3  # epochs in a row
FROZEN_LOSS = 0.5  # x the guessing loss: "far from fitted"
DEAD_UNITS = {"relu": "its ReLU units output 0 on every training point",  # why a frozen layer is frozen
              "gelu": "its GELU units are stuck near 0 on every training point",
              "tanh": "its tanh units are saturated at -1 or 1 on every training point",
              "sigmoid": "its sigmoid units are saturated at 0 or 1 on every training point"}

LOSSES = ("cross_entropy", "mse")
OPTIMIZER_KINDS = supported_kinds("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, learning rate, batch size, regularisation, loss, seed."""

    optimizer: str = "sgd"
    lr: float = 0.03  # step size, 1e-5..10
    batch_size: int = 10  # examples per step; larger than the train set means full batch
    loss: str = "cross_entropy"  # or "mse" (squared error, also for classification on one-hot targets)
    l1: float = 0.0  # L1 penalty rate on weights (not biases)
    l2: float = 0.0  # L2 penalty rate on weights (not biases)
    momentum: float = 0.9  # for momentum / nesterov (RMSProp keeps the registry's 0)
    seed: int = 0  # initial weights, dropout masks and batch order

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZER_KINDS)
        check_range("learning rate", self.lr, 1e-5, 10.0)
        check_range("batch size", self.batch_size, 1, 1_000_000, integer=True)
        check_choice("loss", self.loss, LOSSES)
        check_range("L1 rate", self.l1, 0.0, 10.0)
        check_range("L2 rate", self.l2, 0.0, 10.0)
        check_range("momentum", self.momentum, 0.0, 0.999)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)

    @property
    def optimizer_config(self) -> OptimizerConfig:
        """This optimizer as the registry's config: the learning rate, the SGD family's momentum, defaults."""
        # The engine's one momentum setting is the SGD family's; RMSProp keeps torch's default of none.
        sgd_family = OPTIMIZERS[self.optimizer].cls is torch.optim.SGD
        return config_for(self.optimizer, self.lr, **({"momentum": self.momentum} if sgd_family else {}))


class _ForeachSGD:
    """SGD / momentum / Nesterov with the exact foreach kernel sequence of torch.optim.SGD."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float = 0.0, nesterov: bool = False):
        self.params, self.lr, self.momentum, self.nesterov = params, lr, momentum, nesterov
        self.bufs: list[torch.Tensor] | None = None

    def step(self, grads: list[torch.Tensor]) -> None:
        if self.momentum:
            if self.bufs is None:
                self.bufs = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(self.bufs, self.momentum)
                torch._foreach_add_(self.bufs, grads)
            grads = torch._foreach_add(grads, self.bufs, alpha=self.momentum) if self.nesterov else self.bufs
        torch._foreach_add_(self.params, grads, alpha=-self.lr)

    def set_lr(self, lr: float) -> None:
        self.lr = lr


class _TorchOptim:
    """Any torch.optim optimizer driven with our gradient buffers as .grad."""

    def __init__(self, opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor]):
        self.opt = opt
        for p, g in zip(params, grads):
            p.grad = g

    def step(self, grads: list[torch.Tensor]) -> None:
        self.opt.step()

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr


def build_engine_optimizer(params: list[torch.Tensor], grads: list[torch.Tensor],
                           cfg: TrainConfig) -> _ForeachSGD | _TorchOptim:
    """The engine's optimizer for cfg over params, whose gradients live in grads."""
    opt = cfg.optimizer_config
    if opt.spec.cls is torch.optim.SGD:  # weight decay stays at the registry's 0: the engine has its own L2
        kw = opt.kwargs()
        return _ForeachSGD(params, opt.lr, kw.get("momentum", 0.0), kw.get("nesterov", False))
    return _TorchOptim(build_optimizer(opt, params, foreach=True), params, grads)


@dataclass
class _Layer:
    """Tensors of one linear layer (+ optional batch norm) and its gradient buffers."""

    weight: torch.Tensor  # (in, out): nn.Linear's weight transposed, so the forward needs no transpose
    bias: torch.Tensor  # (out,)
    weight_t: torch.Tensor  # (out, in) view of weight, updated in place with it
    grad_weight: torch.Tensor
    grad_bias: torch.Tensor
    bn_weight: torch.Tensor | None = None
    bn_bias: torch.Tensor | None = None
    grad_bn_weight: torch.Tensor | None = None
    grad_bn_bias: torch.Tensor | None = None
    running_mean: torch.Tensor | None = None
    running_var: torch.Tensor | None = None


class _Buffers:
    """Preallocated activations for one batch size, with the transposed views backward needs."""

    def __init__(self, b: int, sizes: list[int], device: torch.device, alias_post: bool, dropout: bool):
        hidden = sizes[1:-1]
        self.pre = [torch.empty(b, n, device=device) for n in hidden]  # (b, n) linear outputs
        self.post = [p if alias_post else torch.empty_like(p) for p in self.pre]  # after the activation
        self.out = [torch.empty_like(p) for p in self.post] if dropout else self.post  # after dropout
        self.out_t = [o.t() for o in self.out]  # (n, b) views: the next layer's weight gradient
        k = sizes[-1]
        self.z = torch.empty(b, k, device=device)  # network output
        self.lp = torch.empty(b, k, device=device)  # log-softmax of z, or z - y for squared error
        self.lp_flat = self.lp.view(-1)
        self.p = torch.empty(b, k, device=device)
        self.masks: list[torch.Tensor | None] = [None] * len(hidden)
        self.bn_in: list[tuple | None] = [None] * len(hidden)


@dataclass
class EpochStats:
    """What one epoch produced (host values, after the epoch's single sync)."""

    epoch: int
    steps: int
    train_loss: float  # mean of the step losses of the epoch


@dataclass
class RunHistory:
    """Per-epoch curves of one Trainer run, plain lists ready to plot."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)


def _check_finite(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor | None,
                  y_test: torch.Tensor | None) -> None:
    """Refuse inf or NaN in the data as a data error (ConfigError): training on it would 'diverge' at once, and the
    message would wrongly blame the learning rate."""
    for name, t in (("training inputs", x_train), ("training labels", y_train), ("test inputs", x_test),
                    ("test labels", y_test)):
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ConfigError(f"the {name} hold {bad} value(s) that are not finite numbers (inf or NaN): this is an "
                              "error in the data, not in the training settings; fix or remove those rows")


class Trainer:
    """Trains an MLP on in-memory tensors; deterministic for a seed on the CPU."""

    def __init__(self, model: MLPConfig, train: TrainConfig, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None, *,
                 task: str = "classification"):
        if x_train.shape[1] != model.in_dim:
            raise ConfigError(f"the data has {x_train.shape[1]} inputs but the network expects {model.in_dim}")
        if task == "classification" and train.loss == "cross_entropy" and model.out_dim < 2:
            raise ConfigError("cross-entropy needs at least 2 outputs")
        if task == "regression" and train.loss != "mse":
            raise ConfigError("regression data needs the squared-error loss")
        self.model, self.cfg, self.task = model, train, task
        self.device = x_train.device
        self.x_train, self.y_train = x_train, y_train
        self.x_test, self.y_test = x_test, y_test
        self.n = len(x_train)
        self.batch_size = min(train.batch_size, self.n)
        self.act = ACTIVATIONS[model.activation]
        _check_finite(x_train, y_train, x_test, y_test)
        self.y_train_t = self._targets(y_train)
        self.y_test_t = self._targets(y_test) if y_test is not None else None
        self.gen = torch.Generator(device="cpu").manual_seed(train.seed)
        self.dev_gen = self.gen if self.device.type == "cpu" else torch.Generator(self.device).manual_seed(train.seed)
        self._build(init_mlp_params(model, self.gen))
        alias_post = self.act.forward_out is None and not model.batch_norm  # linear: post is pre
        self._bufs = {b: _Buffers(b, model.sizes, self.device, alias_post, model.dropout > 0)
                      for b in {self.batch_size, self.n % self.batch_size} if b}
        self.epoch = 0
        self.step_count = 0
        self.history = RunHistory()
        # hidden layers whose evaluation-mode derivative is what training sees (see FROZEN_EPOCHS)
        self._checked = [lay.bn_weight is None and (i == 0 or model.dropout == 0) and model.activation != "linear"
                         for i, lay in enumerate(self.layers[:-1])]
        self.guess_loss = self._guess_loss()
        self.reference_loss = max(float(self.loss(self.x_train, self.y_train_t)), self.guess_loss)
        self._exploding = self._frozen = 0  # epochs in a row
        self._train_eval: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (step_count, logits, loss)

    # --- parameters -------------------------------------------------------------------------
    def _build(self, init: dict[str, torch.Tensor]) -> None:
        dev = self.device
        self.layers: list[_Layer] = []
        for i in range(len(self.model.sizes) - 1):
            w = init[f"layers.{i}.weight"].to(dev).t().contiguous()  # (in, out)
            b = init[f"layers.{i}.bias"].to(dev).clone()
            lay = _Layer(w, b, w.t(), torch.zeros_like(w), torch.zeros_like(b))
            if f"bn.{i}.weight" in init:
                lay.bn_weight = init[f"bn.{i}.weight"].to(dev).clone()
                lay.bn_bias = init[f"bn.{i}.bias"].to(dev).clone()
                lay.grad_bn_weight = torch.zeros_like(lay.bn_weight)
                lay.grad_bn_bias = torch.zeros_like(lay.bn_bias)
                rm = init.get(f"bn.{i}.running_mean")
                rv = init.get(f"bn.{i}.running_var")
                lay.running_mean = rm.to(dev).clone() if rm is not None else torch.zeros_like(lay.bn_weight)
                lay.running_var = rv.to(dev).clone() if rv is not None else torch.ones_like(lay.bn_weight)
            self.layers.append(lay)
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        for lay in self.layers:
            self.params += [lay.weight, lay.bias]
            self.grads += [lay.grad_weight, lay.grad_bias]
            if lay.bn_weight is not None:
                self.params += [lay.bn_weight, lay.bn_bias]
                self.grads += [lay.grad_bn_weight, lay.grad_bn_bias]
        self.weights = [lay.weight for lay in self.layers]
        self.grad_weights = [lay.grad_weight for lay in self.layers]
        self.opt = build_engine_optimizer(self.params, self.grads, self.cfg)
        self.lr = self.cfg.lr

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Current weights (and batch-norm statistics) with nn.Module names and layout, on the CPU."""
        out: dict[str, torch.Tensor] = {}
        for i, lay in enumerate(self.layers):
            out[f"layers.{i}.weight"] = lay.weight_t.detach().cpu().contiguous()
            out[f"layers.{i}.bias"] = lay.bias.detach().cpu().clone()
            if lay.bn_weight is not None:
                out[f"bn.{i}.weight"] = lay.bn_weight.detach().cpu().clone()
                out[f"bn.{i}.bias"] = lay.bn_bias.detach().cpu().clone()
                out[f"bn.{i}.running_mean"] = lay.running_mean.detach().cpu().clone()
                out[f"bn.{i}.running_var"] = lay.running_var.detach().cpu().clone()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace weights in place (optimizer state is kept)."""
        self._train_eval = None
        with torch.no_grad():
            for i, lay in enumerate(self.layers):
                lay.weight_t.copy_(state[f"layers.{i}.weight"])
                lay.bias.copy_(state[f"layers.{i}.bias"])
                if lay.bn_weight is not None:
                    lay.bn_weight.copy_(state[f"bn.{i}.weight"])
                    lay.bn_bias.copy_(state[f"bn.{i}.bias"])
                    lay.running_mean.copy_(state[f"bn.{i}.running_mean"])
                    lay.running_var.copy_(state[f"bn.{i}.running_var"])

    def set_lr(self, lr: float) -> None:
        """Change the learning rate from the next step on (validated like the config)."""
        check_range("learning rate", lr, 1e-5, 10.0)
        self.lr = lr
        self.opt.set_lr(lr)

    def _guess_loss(self) -> float:
        """The training loss of always predicting the training labels' mean: the class frequencies' entropy
        (cross-entropy) or half the targets' summed variance (squared error)."""
        y = self.y_train_t  # (n, k)
        mean = y.mean(0)
        if self.cfg.loss == "cross_entropy":
            return float(-(mean * mean.clamp_min(1e-12).log()).sum())
        return float(0.5 * ((y - mean) ** 2).sum(1).mean())

    def _targets(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if y is None:
            return None
        if self.task == "classification":
            return F.one_hot(y, self.model.out_dim).to(torch.float32)
        return y.reshape(-1, 1).to(torch.float32)

    # --- evaluation (allocating, eval mode) -----------------------------------------------------
    def forward(self, x: torch.Tensor, hidden: list[torch.Tensor] | None = None,
                frozen: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Eval-mode network output (logits or value); `hidden` collects each hidden layer's output, `frozen` a
        device bool per checked hidden layer: every unit's derivative is 0 on every row of x."""
        a = x
        for i, lay in enumerate(self.layers[:-1]):
            h = torch.addmm(lay.bias, a, lay.weight)
            if lay.bn_weight is not None:
                h = F.batch_norm(h, lay.running_mean, lay.running_var, lay.bn_weight, lay.bn_bias, False, 0.0, BN_EPS)
            a = self.act.forward(h)
            if frozen is not None and self._checked[i]:
                frozen.append(self.act.backward(torch.ones_like(h), h, a).eq(0).all())
            if hidden is not None:
                hidden.append(a)
        last = self.layers[-1]
        return torch.addmm(last.bias, a, last.weight)

    def _loss_of(self, z: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        """Mean data loss of logits (or values) z against targets, as a device scalar."""
        if self.cfg.loss == "cross_entropy":
            return -(torch.log_softmax(z, 1) * y_t).sum() / len(z)
        return 0.5 * ((z - y_t) ** 2).sum() / len(z)

    def loss(self, x: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        """Mean data loss (no penalty) in eval mode, as a device scalar."""
        return self._loss_of(self.forward(x), y_t)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Fraction correct (classification) as a device scalar."""
        return (self.forward(x).argmax(1) == y).to(torch.float32).mean()

    # --- training -------------------------------------------------------------------------------
    def _train_forward(self, x: torch.Tensor, buf: _Buffers) -> torch.Tensor:
        """Training-mode forward into the buffers (batch statistics, dropout masks)."""
        a = x
        act, p = self.act, self.model.dropout
        for i, lay in enumerate(self.layers[:-1]):
            h = torch.addmm(lay.bias, a, lay.weight, out=buf.pre[i])
            if lay.bn_weight is not None:
                h, mean, invstd = aten.native_batch_norm(buf.pre[i], lay.bn_weight, lay.bn_bias, lay.running_mean,
                                                         lay.running_var, True, BN_MOMENTUM, BN_EPS)
                buf.bn_in[i] = (h, mean, invstd)
                if act.forward_out is None:
                    buf.post[i].copy_(h)
            if act.forward_out is not None:
                act.forward_out(h, buf.post[i])
            if p > 0:
                mask = torch.rand(buf.post[i].shape, generator=self.dev_gen, device=self.device).ge_(p)
                mask = mask.to(torch.float32).mul_(1.0 / (1.0 - p))
                buf.masks[i] = mask
                torch.mul(buf.post[i], mask, out=buf.out[i])
            a = buf.out[i]
        last = self.layers[-1]
        return torch.addmm(last.bias, a, last.weight, out=buf.z)

    def _backward(self, g: torch.Tensor, x_t: torch.Tensor, buf: _Buffers) -> None:
        """Fill the gradient buffers from dL/dz (already divided by the batch size); x_t is the (in, b) input."""
        act = self.act
        for i in range(len(self.layers) - 1, -1, -1):
            lay = self.layers[i]
            torch.mm(buf.out_t[i - 1] if i else x_t, g, out=lay.grad_weight)
            torch.sum(g, 0, out=lay.grad_bias)
            if i == 0:
                break
            g = g.mm(lay.weight_t)
            j = i - 1
            if buf.masks[j] is not None:
                g.mul_(buf.masks[j])
            prev = self.layers[j]
            pre = buf.bn_in[j][0] if prev.bn_weight is not None else buf.pre[j]
            g = act.backward(g, pre, buf.post[j])
            if prev.bn_weight is not None:
                _, mean, invstd = buf.bn_in[j]
                g, gw, gb = aten.native_batch_norm_backward(g, buf.pre[j], prev.bn_weight, prev.running_mean,
                                                            prev.running_var, mean, invstd, True, BN_EPS,
                                                            [True, True, True])
                prev.grad_bn_weight.copy_(gw)
                prev.grad_bn_bias.copy_(gb)
        if self.cfg.l2:
            torch._foreach_add_(self.grad_weights, self.weights, alpha=self.cfg.l2)
        if self.cfg.l1:
            torch._foreach_add_(self.grad_weights, torch._foreach_sign(self.weights), alpha=self.cfg.l1)

    @torch.no_grad()
    def run_epoch(self) -> EpochStats:
        """One pass over the training set in a fresh seeded order, then the health check (module docstring);
        raises Diverged on a non-finite loss or weight, an exploding loss or a dead network."""
        n, bs = self.n, self.batch_size
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        xs = self.x_train[perm]  # (n, in)
        ys = self.y_train_t[perm]  # (n, k) one-hot or regression target
        k = ys.shape[1]
        ce = self.cfg.loss == "cross_entropy"
        x_list, xt_list, y_list = xs.split(bs), xs.t().split(bs, 1), ys.split(bs)
        yflat_list = ys.view(-1).split(bs * k)
        yneg_list = (ys * (-1.0 / bs)).split(bs) if ce else y_list
        n_steps = len(x_list)
        raw = torch.empty(n_steps, device=self.device)  # per-step loss sums; one host sync at the end
        views = raw.unbind()
        bufs, opt, grads = self._bufs, self.opt, self.grads
        for s in range(n_steps):
            b = len(x_list[s])
            buf = bufs[b]
            z = self._train_forward(x_list[s], buf)
            if ce:
                torch._log_softmax(z, 1, False, out=buf.lp)
                torch.dot(buf.lp_flat, yflat_list[s], out=views[s])
                torch.exp(buf.lp, out=buf.p)
                if b == bs:
                    g = torch.add(yneg_list[s], buf.p, alpha=1.0 / b)
                else:
                    g = (buf.p - y_list[s]).mul_(1.0 / b)
            else:
                torch.sub(z, y_list[s], out=buf.lp)
                torch.dot(buf.lp_flat, buf.lp_flat, out=views[s])
                g = buf.lp * (1.0 / b)
            self._backward(g, xt_list[s], buf)
            opt.step(grads)
        sizes = torch.tensor([len(xb) for xb in x_list], dtype=torch.float32, device=self.device)
        losses = raw / sizes * (-1.0 if ce else 0.5)
        frozen: list[torch.Tensor] = []
        z = self.forward(self.x_train, frozen=frozen)  # evaluate() takes its training loss and accuracy from it
        train_loss = self._loss_of(z, self.y_train_t)
        norms = torch._foreach_norm(self.params, float("inf"))  # max |w| per tensor: NaN or inf if any entry is
        parts = [losses, train_loss.view(1), torch.stack(norms)] + ([torch.stack(frozen).float()] if frozen else [])
        host = torch.cat(parts).tolist()  # the epoch's one host sync
        w_end = n_steps + 1 + len(norms)
        step_losses, weight_max, layers_frozen = host[:n_steps], host[n_steps + 1:w_end], host[w_end:]
        bad = next((i for i, v in enumerate(step_losses) if not math.isfinite(v)), None)
        if bad is not None:
            step, epoch = self.step_count + bad + 1, self.epoch + 1
            raise Diverged(diverged_message("Training", step, epoch, self.lr), step, epoch)
        self.step_count += n_steps
        self.epoch += 1
        self._train_eval = (self.step_count, z, train_loss)
        mean_loss = sum(step_losses) / n_steps
        self._check_health(mean_loss, host[n_steps], weight_max, layers_frozen)
        return EpochStats(self.epoch, n_steps, mean_loss)

    def _check_health(self, mean_loss: float, train_loss: float, weight_max: list[float],
                      layers_frozen: list[float]) -> None:
        """After a finite epoch: raise Diverged on a non-finite weight, an exploding loss or a dead network."""
        step, epoch, lr = self.step_count, self.epoch, self.lr
        if not all(math.isfinite(w) for w in weight_max) or not math.isfinite(train_loss):
            raise Diverged(diverged_message("Training", step, epoch, lr, cause="the weights became non-finite"),
                           step, epoch)
        self._exploding = self._exploding + 1 if mean_loss > EXPLODE_FACTOR * self.reference_loss else 0
        if self._exploding >= EXPLODE_EPOCHS:
            cause = (f"the training loss exploded: above {EXPLODE_FACTOR:g} x {self.reference_loss:.3g} (the untrained "
                     f"network's loss, or guessing's if larger) for {EXPLODE_EPOCHS} epochs in a row, now "
                     f"{mean_loss:.3g}")
            raise Diverged(diverged_message("Training", step, epoch, lr, cause=cause), step, epoch)
        checked = [i for i, c in enumerate(self._checked) if c]  # layers_frozen has one flag per checked layer
        frozen = [checked[j] for j, flag in enumerate(layers_frozen) if flag]
        far = train_loss > FROZEN_LOSS * self.guess_loss
        self._frozen = self._frozen + 1 if frozen and far else 0
        if self._frozen >= FROZEN_EPOCHS:
            layer = frozen[-1] + 1  # the last frozen layer: it blocks the gradient to everything before it
            units = DEAD_UNITS.get(self.model.activation, "its units give no gradient on any training point")
            hint = (f"Lower the learning rate ({lr:g} probably threw the weights too far; try {lr / 10:g}) and start "
                    "again" if lr > SMALL_LR else
                    "Re-initialise (a new weight seed), or use fewer layers or another activation")
            raise Diverged(f"Training stopped at epoch {epoch}: the network is dead. Hidden layer {layer} is frozen "
                           f"({units}), so no gradient reaches it or any layer before it and the network can no longer "
                           f"learn (training loss {train_loss:.3g}, {train_loss / self.guess_loss:.1f}x that of "
                           f"guessing). {hint}.", step, epoch)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Full-set train/test loss (and accuracy) in eval mode; appends them to the history."""
        stash = self._train_eval
        if stash is not None and stash[0] == self.step_count:  # run_epoch's check forwarded these weights already
            z, train_loss = stash[1], stash[2]
        else:
            z = self.forward(self.x_train)
            train_loss = self._loss_of(z, self.y_train_t)
        out = {"train_loss": train_loss}
        has_test = self.x_test is not None and len(self.x_test) > 0
        z_test = self.forward(self.x_test) if has_test else None
        if has_test:
            out["test_loss"] = self._loss_of(z_test, self.y_test_t)
        if self.task == "classification":
            out["train_acc"] = (z.argmax(1) == self.y_train).to(torch.float32).mean()
            if has_test:
                out["test_acc"] = (z_test.argmax(1) == self.y_test).to(torch.float32).mean()
        vals = dict(zip(out, torch.stack(list(out.values())).tolist()))
        h = self.history
        h.epoch.append(self.epoch)
        for name, v in vals.items():
            getattr(h, name).append(v)
        return vals

    @torch.no_grad()
    def hidden_outputs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Eval-mode outputs of each hidden layer, and the network output."""
        hidden: list[torch.Tensor] = []
        z = self.forward(x, hidden)
        return hidden, z


@dataclass
class RunResult:
    """What `train` returns: the curves, the final weights, and why it stopped."""

    history: RunHistory
    state: dict[str, torch.Tensor]
    epochs: int
    steps: int
    diverged: str | None = None


def train(model: MLPConfig, cfg: TrainConfig, x_train: torch.Tensor, y_train: torch.Tensor,
          x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None, *, epochs: int = 100,
          task: str = "classification", report: Reporter = SILENT) -> RunResult:
    """Train for `epochs`, evaluating after each; a divergence ends the run with its message.

    `report` gets a checkpoint before each epoch and the epoch count after it.
    """
    check_range("epochs", epochs, 1, 1_000_000, integer=True)
    tr = Trainer(model, cfg, x_train, y_train, x_test, y_test, task=task)
    diverged = None
    for _ in range(epochs):
        report.checkpoint()
        try:
            tr.run_epoch()
        except Diverged as exc:
            diverged = str(exc)
            if tr.history.epoch and tr.history.epoch[-1] < tr.epoch:  # stopped after a finite epoch: record it
                tr.evaluate()
            break
        tr.evaluate()
        report.publish(progress=tr.epoch / epochs, message=f"epoch {tr.epoch} of {epochs}")
    return RunResult(tr.history, tr.state_dict(), tr.epoch, tr.step_count, diverged)
