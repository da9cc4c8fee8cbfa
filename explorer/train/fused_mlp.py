"""One hand-written training step for K ReLU MLPs trained as one: in -> h_1 -> ... -> h_L -> classes.

Every layer of the K models is a (K, in, out) weight and a (K, out) bias, given as views of the caller's
storage with any strides (the double-descent sweep keeps all weights in one layer-major flat tensor,
`flat_layers`; the optimizer race keeps nn.Linear's (K, out, in) layout racer-major, row k of a (K, P)
tensor, and passes transposed views). A layer is one batched matmul for all K models, the input batch
is shared by all of them, and the backward is the ATen ops autograd runs for this network (the matmuls
of the layers' backward, ReLU's threshold_backward, the dropout product, the softmax cross-entropy
gradient) without the graph: a few large ops instead of per-op bookkeeping. Activations live in
workspace buffers reused from step to step (allocating them anew cost more than the arithmetic at
these sizes); logits are classes-major (K, C, B), so that the softmax reduces over contiguous rows of B.

Where a layer's bias is stored as the row right after its weight, (K, in + 1, out) with the bias last
(`flat_layers` lays weights out so), the layer runs as ONE matmul of that block with an input that ends
in a constant-1 column, and its gradient (bias row included) as one matmul too: no bias add and no
bias-gradient sum, which at small sizes is a good part of a step's cost. Other layouts (the race's) take
a matmul with the bias added and a sum for the bias gradient.

Gradients are written in place into the caller's gradient views, so the caller updates the weights
either with `FlatOptimizer` (element-wise SGD / momentum / Adam on one flat tensor, torch.optim's
arithmetic) or with torch.optim optimizers on its own storage.
Zero-padded models (a model narrower than the group, its extra units' weights zero) stay exactly
zero-padded: a zero unit's pre-activation is 0, so ReLU's backward gives it and its weights zero gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from explorer.train.optimizers import OptimizerConfig, supported_kinds

Layer = tuple[torch.Tensor, torch.Tensor]  # (weight (K, in, out), bias (K, out)), views of any strides
Masks = Callable[[tuple[int, ...]], torch.Tensor | None]  # (B, h) -> scaled dropout mask shared by all K, or None

_threshold_backward = torch.ops.aten.threshold_backward.grad_input  # ReLU's backward, the op autograd runs


def _bias_row(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """The (K, in + 1, out) view of weight and bias when the bias is stored as the row after the weight."""
    k, n_in, n_out = w.shape
    if (b.dtype != w.dtype or b.device != w.device or b.stride() != (w.stride(0), w.stride(2))
            or b.untyped_storage().data_ptr() != w.untyped_storage().data_ptr()
            or b.storage_offset() != w.storage_offset() + n_in * w.stride(1)):
        return None
    return w.as_strided((k, n_in + 1, n_out), w.stride(), w.storage_offset())


def _bmm_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """out = a @ b (batched), computed as out.mT = b.mT @ a.mT when that writes out's memory row by row."""
    if out.stride(-1) == 1:
        torch.bmm(a, b, out=out)
    else:
        torch.bmm(b.mT, a.mT, out=out.mT)


@dataclass(frozen=True)
class _Layer:
    """One layer's views: weight (K, in, out), bias, the (K, in + 1, out) block when the bias is its last
    row in both the weights and the gradients (None otherwise), and the gradient views."""

    w: torch.Tensor
    b: torch.Tensor
    block: torch.Tensor | None
    gw: torch.Tensor | None
    gb: torch.Tensor | None
    gblock: torch.Tensor | None


@dataclass(frozen=True)
class _Buffers:
    """One batch size's workspace: per hidden layer the pre-activation, the activation (a view of a buffer
    that ends in a constant-1 column when the next layer takes its bias as a row) and its gradient; the
    logits, log-softmax and softmax (K, C, B); the input with a 1-column when the first layer needs one."""

    pre: list[torch.Tensor]
    act: list[torch.Tensor]
    nxt: list[torch.Tensor]  # what the next layer multiplies: act, or act with its 1-column
    dact: list[torch.Tensor]  # training only, like the rest
    z: torch.Tensor | None
    logp: torch.Tensor | None
    e: torch.Tensor | None
    minus_one: torch.Tensor | None  # -1 broadcast to the (K, 1, B) targets, for scatter_add_
    x: torch.Tensor | None


class FusedMLP:
    """K ReLU MLPs with one shared input batch: forward, hand-written backward into gradient views, logits."""

    def __init__(self, params: Sequence[Layer], grads: Sequence[Layer] | None = None) -> None:
        self.k = params[0][0].shape[0]
        self.dims = [params[0][0].shape[1], *(w.shape[2] for w, _ in params)]
        if grads is not None and len(grads) != len(params):
            raise ValueError(f"{len(params)} layers but {len(grads)} gradient layers")
        self.layers: list[_Layer] = []
        for i, (w, b) in enumerate(params):
            shapes = ((self.k, self.dims[i], self.dims[i + 1]), (self.k, self.dims[i + 1]))
            if (w.shape, b.shape) != shapes:
                raise ValueError(f"layer {i}: weight {tuple(w.shape)} and bias {tuple(b.shape)} do not chain")
            gw, gb = (None, None) if grads is None else grads[i]
            if gw is not None and (gw.shape, gb.shape) != shapes:
                raise ValueError(f"layer {i}: gradient views {tuple(gw.shape)}, {tuple(gb.shape)} do not match")
            block, gblock = _bias_row(w, b), None if gw is None else _bias_row(gw, gb)
            if grads is not None and (block is None or gblock is None):
                block = gblock = None  # one form for both, so a step is either one matmul or matmul + sum
            self.layers.append(_Layer(w, b, block, gw, gb, gblock))
        self.trainable = grads is not None
        self._work: dict[tuple[bool, int], _Buffers] = {}

    @property
    def input_width(self) -> int:
        """Columns of a `prepare`d input: the input size, plus the constant-1 column if the first layer needs it."""
        return self.dims[0] + (self.layers[0].block is not None)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (N, ...) -> the (N, input_width) rows step and logits take without a copy."""
        x = x.reshape(len(x), -1)
        if self.layers[0].block is None:
            return x
        return torch.cat([x, torch.ones(len(x), 1, device=x.device, dtype=x.dtype)], 1)

    def _buffers(self, train: bool, bsz: int, like: torch.Tensor) -> _Buffers:
        """The workspace of one batch size, allocated on first use."""
        buf = self._work.get((train, bsz))
        if buf is not None:
            return buf
        opts = {"device": like.device, "dtype": like.dtype}
        k, hidden, classes = self.k, self.dims[1:-1], self.dims[-1]
        pre = [torch.empty(k, bsz, h, **opts) for h in hidden]
        nxt = [torch.ones(k, bsz, h + 1, **opts) if lay.block is not None else p  # else: ReLU in place
               for h, p, lay in zip(hidden, pre, self.layers[1:])]
        act = [p if n is p else n[..., :h] for h, p, n in zip(hidden, pre, nxt)]
        z, logp, e = (torch.empty(k, classes, bsz, **opts) if train else None for _ in range(3))
        minus_one = torch.full((1, 1, 1), -1.0, **opts).expand(k, 1, bsz) if train else None
        x = torch.ones(bsz, self.dims[0] + 1, **opts) if self.layers[0].block is not None else None
        buf = self._work[(train, bsz)] = _Buffers(pre, act, nxt, [torch.empty_like(p) for p in pre] if train else [],
                                                  z, logp, e, minus_one, x)
        return buf

    def _forward(self, x: torch.Tensor, buf: _Buffers, masks: Masks | None, z: torch.Tensor | None,
                 classes_last: bool = False) -> tuple[torch.Tensor, list[torch.Tensor | None], torch.Tensor]:
        """All layers: the hidden ones into the workspace (ReLU, then the dropout mask), the logits (K, C, B),
        or (K, B, C) with classes_last, into z (a new tensor if z is None). Returns the (K, B, F) input, the
        masks used and the logits."""
        bsz = x.shape[0]
        x = x.reshape(bsz, -1)
        if x.shape[1] != self.input_width:  # not prepared: copy it next to the workspace's 1-column
            if x.shape[1] != self.dims[0]:
                raise ValueError(f"inputs of {x.shape[1]} features for an MLP that takes {self.dims[0]}")
            buf.x[:, :-1].copy_(x)
            x = buf.x
        a = x.expand(self.k, -1, -1)  # (K, B, F): one input for every model, no copy made
        xe, used = a, []
        for lay, pre, act, nxt in zip(self.layers, buf.pre, buf.act, buf.nxt):
            m = None if masks is None else masks(tuple(act.shape[1:]))  # drawn layer by layer, as the stacked forward
            if lay.block is not None:
                torch.bmm(a, lay.block, out=pre)
            else:
                torch.baddbmm(lay.b.unsqueeze(1), a, lay.w, out=pre)
            if act is pre:
                pre.relu_()
            else:
                torch.clamp_min(pre, 0, out=act)
            if m is not None:
                act.mul_(m)
            used.append(m)
            a = nxt
        out = self.layers[-1]
        if classes_last:
            if out.block is not None:
                return xe, used, torch.bmm(a, out.block, out=z)
            return xe, used, torch.baddbmm(out.b.unsqueeze(1), a, out.w, out=z)
        if out.block is not None:
            return xe, used, torch.bmm(out.block.mT, a.mT, out=z)
        return xe, used, torch.baddbmm(out.b.unsqueeze(2), out.w.mT, a.mT, out=z)

    def logits(self, x: torch.Tensor, *, classes_last: bool = False) -> torch.Tensor:
        """Eval-mode logits of all K for x (B, ...) or prepared rows, a new tensor: (K, C, B), or (K, B, C)
        with classes_last; no graph."""
        with torch.no_grad():
            return self._forward(x, self._buffers(False, x.shape[0], x), None, None, classes_last)[2]

    def step(self, x: torch.Tensor, y: torch.Tensor, masks: Masks | None = None, *, loss: torch.Tensor | None = None,
             witness: torch.Tensor | None = None) -> None:
        """Forward and backward on x (B, ...) or prepared rows with labels y, shared (B,) or per model (K, B):
        writes the gradient of the sum of the K mean cross-entropies into the gradient views.

        loss (K,), if given, receives each model's mean cross-entropy. witness (K,), if given, receives the
        sum of each model's logits, a cheaper finiteness check: it is non-finite when a logit is inf or NaN,
        which is exactly when the stably computed cross-entropy is (short of logits near 1e35, where the
        sum itself overflows: a diverged model in any case)."""
        if not self.trainable:
            raise ValueError("this FusedMLP was built without gradient views: it can only compute logits")
        with torch.no_grad():
            k, bsz = self.k, x.shape[0]
            buf = self._buffers(True, bsz, x)
            xe, used, z = self._forward(x, buf, masks, buf.z)
            if witness is not None:
                torch.sum(z, (1, 2), out=witness)
            target = y.view(1, 1, bsz).expand(k, 1, bsz) if y.dim() == 1 else y.unsqueeze(1)  # (K, 1, B)
            logp = torch._log_softmax(z, 1, False, out=buf.logp)
            if loss is not None:
                torch.mean(logp.gather(1, target), (1, 2), out=loss).neg_()
            # d(sum of the mean losses)/d(logits) = (softmax - one-hot) / B; the 1 is subtracted by scatter
            g = torch.exp(logp, out=buf.e).scatter_add_(1, target, buf.minus_one).mul_(1.0 / bsz)  # (K, C, B)
            last = len(self.layers) - 1
            for i in range(last, -1, -1):
                lay = self.layers[i]
                a_in = buf.nxt[i - 1] if i else xe
                gt = g.mT if i == last else g  # (K, B, out)
                if lay.block is not None:
                    _bmm_into(a_in.mT, gt, lay.gblock)
                else:
                    _bmm_into(a_in.mT, gt, lay.gw)
                    torch.sum(gt, 1, out=lay.gb)
                if i:
                    g = torch.bmm(gt, lay.w.mT, out=buf.dact[i - 1])  # (K, B, h)
                    if used[i - 1] is not None:
                        g.mul_(used[i - 1])
                    _threshold_backward(g, buf.pre[i - 1], 0, grad_input=g)


def flat_size(k: int, dims: Sequence[int]) -> int:
    """Elements of the flat tensor that holds K MLPs of layer sizes `dims` (`flat_layers`)."""
    return sum(k * (i + 1) * o for i, o in zip(dims[:-1], dims[1:]))


def flat_layers(flat: torch.Tensor, k: int, dims: Sequence[int]) -> list[Layer]:
    """(weight (K, in, out), bias (K, out)) views of a flat tensor: layer by layer one (K, in + 1, out) block
    with the bias as its last row (so FusedMLP runs each layer as one matmul), all K models' weights in one
    tensor for an element-wise optimizer."""
    if flat.shape != (flat_size(k, dims),):
        raise ValueError(f"a flat tensor of shape {tuple(flat.shape)} does not hold K={k} MLPs {list(dims)}")
    layers, start = [], 0
    for i, o in zip(dims[:-1], dims[1:]):
        block = flat[start:start + k * (i + 1) * o].view(k, i + 1, o)
        layers.append((block[:, :i], block[:, i]))
        start += k * (i + 1) * o
    return layers


def init_model(params: Sequence[Layer], index: int, dims: Sequence[int], generator: torch.Generator) -> None:
    """Model `index`'s weights for layer sizes `dims` (at most the padded sizes) with nn.Linear's default init,
    U(+-1/sqrt(fan_in)), drawn layer by layer, weight then bias, into the top-left corner of each layer; the
    padding, left as it is, should be zero."""
    for (w, b), fan_in, out in zip(params, dims[:-1], dims[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        w[index, :fan_in, :out] = torch.empty(fan_in, out).uniform_(-bound, bound, generator=generator)
        b[index, :out] = torch.empty(out).uniform_(-bound, bound, generator=generator)


def model_layers(params: Sequence[Layer], index: int, dims: Sequence[int]) -> list[Layer]:
    """Model `index`'s un-padded (weight (in, out), bias (out,)) views for its layer sizes `dims`."""
    return [(w[index, :i, :o], b[index, :o]) for (w, b), i, o in zip(params, dims[:-1], dims[1:])]


# ---------------------------------------------------------------- the flat element-wise update

FLAT_KINDS = supported_kinds("sgd", "momentum", "adam")  # the optimizer kinds FlatOptimizer implements


class FlatOptimizer:
    """An optimizer of the registry (explorer.train.optimizers) on one flat tensor, element-wise, with
    torch.optim's single-tensor arithmetic op for op: SGD (weight decay added to the gradient), SGD with
    momentum (dampening 0, no Nesterov), Adam (L2 weight decay, no amsgrad)."""

    def __init__(self, cfg: OptimizerConfig, param: torch.Tensor) -> None:
        if cfg.kind not in FLAT_KINDS:
            raise ValueError(f"FlatOptimizer implements {', '.join(FLAT_KINDS)}, not {cfg.kind}")
        self.cfg, self.param = cfg, param
        self.hp = dict(cfg.hparams)
        self.state: dict[str, torch.Tensor] = {}
        self.t = 0

    def step(self, grad: torch.Tensor, lr: float | None = None) -> None:
        """One update with `grad` (modified in place when there is weight decay) at lr (default: the config's)."""
        lr = self.cfg.lr if lr is None else lr
        if self.hp["weight_decay"]:
            grad.add_(self.param, alpha=self.hp["weight_decay"])
        self.t += 1
        if self.cfg.kind == "adam":
            self._adam(grad, lr)
            return
        if self.cfg.kind == "momentum":
            buf = self.state.get("momentum_buffer")
            if buf is None:
                buf = self.state["momentum_buffer"] = grad.clone()
            else:
                buf.mul_(self.hp["momentum"]).add_(grad)
            grad = buf
        self.param.add_(grad, alpha=-lr)

    def _adam(self, g: torch.Tensor, lr: float) -> None:
        b1, b2, eps = self.hp["beta1"], self.hp["beta2"], self.hp["eps"]
        if not self.state:
            self.state["exp_avg"], self.state["exp_avg_sq"] = torch.zeros_like(g), torch.zeros_like(g)
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(1 - b2 ** self.t)).add_(eps)
        self.param.addcdiv_(m, denom, value=-lr / (1 - b1 ** self.t))
