"""One hand-written training step for K ReLU MLPs trained as one: in -> h_1 -> ... -> h_L -> classes.

Every layer of the K models is a (K, in, out) weight and a (K, out) bias, given as views of the caller's
storage with any strides (the double-descent sweep keeps all weights in one layer-major flat tensor,
`flat_layers`; the optimizer race keeps nn.Linear's (K, out, in) layout racer-major, row k of a (K, P)
tensor, and passes transposed views). A layer is one batched matmul for all K models, the input batch
is shared by all of them, and the backward is the ATen ops autograd runs for this network (the matmuls
of the layers' backward, ReLU's threshold_backward, the dropout product, the softmax cross-entropy
gradient) without the graph: a few large ops instead of per-op bookkeeping. Activations live in
workspace buffers reused from step to step (allocating them anew cost more than the arithmetic at
these sizes); logits are classes-major (K, C, B), so that the softmax reduces over contiguous rows of B. The common
network's step (bias rows, one depth, no batch norm or dropout) takes the views of weights and workspace it needs
from a plan made once per batch size, the general step's ops in its order (the same bits, tested), without the
per-step view ops and bookkeeping.

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

Two options serve K models that differ in more than their weights (the hyperparameter lab's):
- `depths`: model k has depths[k] hidden layers (non-increasing in k), so hidden layer l runs for the prefix of
  models still that deep, and the output layer reads each model's own last hidden layer (one matmul per distinct
  depth); a shallow model's rows of the deeper layers are never read, and their gradients stay zero.
- `norm` (`BatchNorm`): nn.BatchNorm1d before every hidden ReLU of a contiguous run of the models, per model and
  unit (batch statistics and running averages in training steps, running statistics in `logits`), its backward
  the closed form of autograd's.
A per-model learning rate is FlatOptimizer's: a learning-rate tensor laid out as the flat parameters
(`model_index` says which model an element belongs to).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

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
class BatchNorm:
    """nn.BatchNorm1d between every hidden layer's Linear and its ReLU, for the models flagged in `models` (a
    contiguous run of them): per hidden layer the scales (gamma (K, h), beta (K, h)), their gradient views (None:
    logits only) and the running mean and variance (K, h), which training steps update in place. The rows of
    models without batch norm are not read (their gradients are zeroed once, when FusedMLP is built)."""

    scales: Sequence[Layer]
    grads: Sequence[Layer] | None
    running: Sequence[tuple[torch.Tensor, torch.Tensor]]
    models: Sequence[bool]
    momentum: float = 0.1  # nn.BatchNorm1d's defaults
    eps: float = 1e-5


class _HiddenViews(NamedTuple):
    """One hidden layer's views in a step of the common network (_Plan)."""

    block: torch.Tensor  # its weights with the bias row, (K, in + 1, h)
    pre: torch.Tensor  # pre-activation (K, B, h)
    act: torch.Tensor  # ReLU output (pre itself, or the first h columns of nxt)
    nxt: torch.Tensor  # what the next layer multiplies: act with its 1-column
    nxt_t: torch.Tensor  # nxt transposed, for the next layer's weight gradient and the logits
    dact: torch.Tensor  # d(activation), then d(pre-activation) in place
    gblock: torch.Tensor  # its gradient block
    w_next_t: torch.Tensor  # the next layer's weight (no bias row) transposed, for d(activation)


@dataclass(frozen=True)
class _Plan:
    """The views a training step of the common network (every layer a bias-row block, one depth, no batch norm) reads
    and writes, made once per batch size instead of in every step (a view is an op: at widths of tens a step's
    matmuls are about a third of its time)."""

    hidden: list[_HiddenViews]
    out_block_t: torch.Tensor  # the output layer's block transposed (C, h + 1), per model
    out_gblock: torch.Tensor
    z: torch.Tensor  # logits (K, C, B), log-softmax, softmax and its transpose, -1 at the targets
    logp: torch.Tensor
    e: torch.Tensor
    e_t: torch.Tensor
    minus_one: torch.Tensor


@dataclass(frozen=True)
class _Buffers:
    """One batch size's workspace: per hidden layer (n_l models) the pre-activation, the activation (a view of a
    buffer that ends in a constant-1 column when the next layer takes its bias as a row) and its gradient, and
    with batch norm the normalised pre-activations and 1 / std; the logits, log-softmax and softmax (K, C, B);
    the input with a 1-column when the first layer needs one."""

    pre: list[torch.Tensor]
    act: list[torch.Tensor]
    nxt: list[torch.Tensor]  # what the next layer multiplies: act, or act with its 1-column
    dact: list[torch.Tensor]  # training only, like the rest
    xhat: list[torch.Tensor | None]
    invstd: list[torch.Tensor | None]
    z: torch.Tensor | None
    logp: torch.Tensor | None
    e: torch.Tensor | None
    minus_one: torch.Tensor | None  # -1 broadcast to the (K, 1, B) targets, for scatter_add_
    x: torch.Tensor | None


def _loss_gradient(z: torch.Tensor, y: torch.Tensor, logp: torch.Tensor, e: torch.Tensor, minus_one: torch.Tensor,
                   loss: torch.Tensor | None, witness: torch.Tensor | None) -> torch.Tensor:
    """From logits z (K, C, B) and labels y ((B,) shared or (K, B)): the witness and mean losses if asked for, and
    d(sum of the mean losses)/d(logits) = (softmax - one-hot) / B into e (the 1 subtracted by scatter)."""
    k, bsz = z.shape[0], z.shape[2]
    if witness is not None:
        torch.sum(z, (1, 2), out=witness)
    target = y.view(1, 1, bsz).expand(k, 1, bsz) if y.dim() == 1 else y.unsqueeze(1)  # (K, 1, B)
    torch._log_softmax(z, 1, False, out=logp)
    if loss is not None:
        torch.mean(logp.gather(1, target), (1, 2), out=loss).neg_()
    return torch.exp(logp, out=e).scatter_add_(1, target, minus_one).mul_(1.0 / bsz)


def _rows(t: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Models lo..hi-1 of a (K, ...) tensor: the tensor itself when that is all of it."""
    return t if lo == 0 and hi == t.shape[0] else t[lo:hi]


def _contiguous_run(flags: Sequence[bool]) -> tuple[int, int]:
    """(lo, hi) of the one run of True flags ((0, 0) if none); ValueError if they are not contiguous."""
    on = [i for i, f in enumerate(flags) if f]
    if not on:
        return 0, 0
    if on != list(range(on[0], on[-1] + 1)):
        raise ValueError(f"the models with batch norm must be contiguous, got {list(flags)}")
    return on[0], on[-1] + 1


class FusedMLP:
    """K ReLU MLPs with one shared input batch: forward, hand-written backward into gradient views, logits."""

    def __init__(self, params: Sequence[Layer], grads: Sequence[Layer] | None = None, *,
                 depths: Sequence[int] | None = None, norm: BatchNorm | None = None) -> None:
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
        hidden = len(params) - 1
        self.depths = [hidden] * self.k if depths is None else list(depths)
        if (len(self.depths) != self.k or any(not (0 < d <= hidden or d == hidden) for d in self.depths)
                or any(a < b for a, b in zip(self.depths, self.depths[1:]))):
            raise ValueError(f"depths must be {self.k} hidden-layer counts from 1 to {hidden}, deepest first; "
                             f"got {self.depths}")
        self.active = [sum(d > l for d in self.depths) for l in range(hidden)]  # models computing hidden layer l
        # the output layer: one matmul per run of models (lo, hi) of equal depth
        self.runs = [(self.depths.index(d), len(self.depths) - self.depths[::-1].index(d), d)
                     for d in sorted(set(self.depths), reverse=True)]
        self.norm = norm
        self.bn = (0, 0) if norm is None else _contiguous_run(norm.models)
        if norm is not None and (len(norm.models) != self.k or len(norm.scales) != hidden
                                 or (self.trainable and norm.grads is None)):
            raise ValueError(f"batch norm needs {self.k} model flags and scales for {hidden} hidden layers"
                             + (", and gradient views to train" if self.trainable else ""))
        if self.trainable:
            with torch.no_grad():  # rows that no step writes: gradients of skipped layers and of unused scales
                for lay, n in zip(self.layers[:-1], self.active):
                    lay.gw[n:].zero_()
                    lay.gb[n:].zero_()
                if norm is not None:
                    for l, (gg, gbeta) in enumerate(norm.grads):
                        lo, hi = self._bn_rows(l)
                        for t in (gg, gbeta):
                            t[:lo].zero_()
                            t[hi:].zero_()
        self._work: dict[tuple[bool, int], _Buffers] = {}
        self._plans: dict[int, _Plan] = {}
        self._plain = (self.trainable and norm is None and hidden > 0 and self.depths == [hidden] * self.k
                       and all(lay.block is not None for lay in self.layers))  # step may take _plain_step

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

    def _bn_rows(self, l: int) -> tuple[int, int]:
        """The models that batch-normalise hidden layer l: (lo, hi), empty when lo == hi."""
        lo, hi = self.bn
        return lo, max(lo, min(hi, self.active[l]))

    def _buffers(self, train: bool, bsz: int, like: torch.Tensor) -> _Buffers:
        """The workspace of one batch size, allocated on first use."""
        buf = self._work.get((train, bsz))
        if buf is not None:
            return buf
        opts = {"device": like.device, "dtype": like.dtype}
        k, hidden, classes = self.k, self.dims[1:-1], self.dims[-1]
        pre = [torch.empty(n, bsz, h, **opts) for n, h in zip(self.active, hidden)]
        nxt = [torch.ones(n, bsz, h + 1, **opts) if lay.block is not None else p  # else: ReLU in place
               for n, h, p, lay in zip(self.active, hidden, pre, self.layers[1:])]
        act = [p if n is p else n[..., :h] for h, p, n in zip(hidden, pre, nxt)]
        xhat, invstd = [], []
        for l, h in enumerate(hidden):
            lo, hi = self._bn_rows(l)
            on = train and hi > lo
            xhat.append(torch.empty(hi - lo, bsz, h, **opts) if on else None)
            invstd.append(torch.empty(hi - lo, 1, h, **opts) if on else None)
        z, logp, e = (torch.empty(k, classes, bsz, **opts) if train else None for _ in range(3))
        minus_one = torch.full((1, 1, 1), -1.0, **opts).expand(k, 1, bsz) if train else None
        x = torch.ones(bsz, self.dims[0] + 1, **opts) if self.layers[0].block is not None else None
        buf = self._work[(train, bsz)] = _Buffers(pre, act, nxt, [torch.empty_like(p) for p in pre] if train else [],
                                                  xhat, invstd, z, logp, e, minus_one, x)
        return buf

    def _normalise(self, l: int, pre: torch.Tensor, buf: _Buffers, train: bool) -> None:
        """Batch norm of hidden layer l's pre-activations (n_l, B, h) in place, for the models that have it."""
        lo, hi = self._bn_rows(l)
        if hi == lo:
            return
        nm = self.norm
        p = _rows(pre, lo, hi)
        gamma, beta = (t[lo:hi].unsqueeze(1) for t in nm.scales[l])  # (n, 1, h)
        rm, rv = (t[lo:hi].unsqueeze(1) for t in nm.running[l])
        if not train:  # running statistics: (z - mean) / sqrt(var + eps) * gamma + beta
            p.sub_(rm).mul_(torch.add(rv, nm.eps).rsqrt_().mul_(gamma)).add_(beta)
            return
        bsz = p.shape[1]
        xh, invstd = buf.xhat[l], buf.invstd[l]
        mean = torch.sum(p, 1, keepdim=True).mul_(1.0 / bsz)
        torch.sub(p, mean, out=xh)
        var = torch.sum(torch.mul(xh, xh, out=p), 1, keepdim=True).mul_(1.0 / bsz)  # biased, as normalised
        torch.add(var, nm.eps, out=invstd).rsqrt_()
        xh.mul_(invstd)
        torch.addcmul(beta, xh, gamma, out=p)
        rm.mul_(1 - nm.momentum).add_(mean, alpha=nm.momentum)  # the running variance is the unbiased one
        rv.mul_(1 - nm.momentum).add_(var, alpha=nm.momentum * bsz / (bsz - 1))

    def _normalise_backward(self, l: int, g: torch.Tensor, buf: _Buffers) -> None:
        """Batch norm's backward for hidden layer l: g (n_l, B, h) from d(output) to d(pre-activation) in place;
        d(gamma) = sum_b g xhat, d(beta) = sum_b g, d(z) = gamma / std (g - (d(beta) + xhat d(gamma)) / B)."""
        lo, hi = self._bn_rows(l)
        if hi == lo:
            return
        gr = _rows(g, lo, hi)
        bsz = gr.shape[1]
        xh, scratch = buf.xhat[l], _rows(buf.pre[l], lo, hi)  # the pre-activations are not needed any more
        ggamma, gbeta = (t[lo:hi] for t in self.norm.grads[l])
        torch.sum(gr, 1, out=gbeta)
        torch.sum(torch.mul(gr, xh, out=scratch), 1, out=ggamma)
        torch.addcmul(gbeta.unsqueeze(1), xh, ggamma.unsqueeze(1), out=scratch)
        gamma = self.norm.scales[l][0][lo:hi].unsqueeze(1)
        gr.sub_(scratch, alpha=1.0 / bsz).mul_(gamma * buf.invstd[l])

    def _forward(self, x: torch.Tensor, buf: _Buffers, masks: Masks | None, z: torch.Tensor | None,
                 classes_last: bool = False, train: bool = False
                 ) -> tuple[torch.Tensor, list[torch.Tensor | None], torch.Tensor]:
        """All layers: the hidden ones into the workspace (batch norm, ReLU, then the dropout mask), the logits
        (K, C, B), or (K, B, C) with classes_last, into z (a new tensor if z is None). Returns the (K, B, F)
        input, the masks used and the logits."""
        bsz = x.shape[0]
        x = x.reshape(bsz, -1)
        if x.shape[1] != self.input_width:  # not prepared: copy it next to the workspace's 1-column
            if x.shape[1] != self.dims[0]:
                raise ValueError(f"inputs of {x.shape[1]} features for an MLP that takes {self.dims[0]}")
            buf.x[:, :-1].copy_(x)
            x = buf.x
        a = x.expand(self.k, -1, -1)  # (K, B, F): one input for every model, no copy made
        xe, used = a, []
        for l, (lay, pre, act, nxt) in enumerate(zip(self.layers, buf.pre, buf.act, buf.nxt)):
            m = None if masks is None else masks(tuple(act.shape[1:]))  # drawn layer by layer, as the stacked forward
            n = len(pre)
            a = _rows(a, 0, n)
            if lay.block is not None:
                torch.bmm(a, _rows(lay.block, 0, n), out=pre)
            else:
                torch.baddbmm(_rows(lay.b, 0, n).unsqueeze(1), a, _rows(lay.w, 0, n), out=pre)
            if self.norm is not None:
                self._normalise(l, pre, buf, train)
            if act is pre:
                pre.relu_()
            else:
                torch.clamp_min(pre, 0, out=act)
            if m is not None:
                act.mul_(m)
            used.append(m)
            a = nxt
        out = self.layers[-1]
        if len(self.runs) > 1:  # models of several depths: the output layer reads each one's last hidden layer
            if z is None:
                z = torch.empty((self.k, bsz, self.dims[-1]) if classes_last else (self.k, self.dims[-1], bsz),
                                device=x.device, dtype=x.dtype)
            for lo, hi, d in self.runs:
                self._output(buf.nxt[d - 1][lo:hi], out, lo, hi, classes_last, z[lo:hi])
            return xe, used, z
        return xe, used, self._output(a, out, 0, self.k, classes_last, z)

    @staticmethod
    def _output(a: torch.Tensor, out: _Layer, lo: int, hi: int, classes_last: bool,
                z: torch.Tensor | None) -> torch.Tensor:
        """Models lo..hi-1's logits from their last hidden activations a (n, B, h) into z (a new tensor if None)."""
        block = None if out.block is None else _rows(out.block, lo, hi)
        w, b = _rows(out.w, lo, hi), _rows(out.b, lo, hi)
        if classes_last:
            if block is not None:
                return torch.bmm(a, block, out=z)
            return torch.baddbmm(b.unsqueeze(1), a, w, out=z)
        if block is not None:
            return torch.bmm(block.mT, a.mT, out=z)
        return torch.baddbmm(b.unsqueeze(2), w.mT, a.mT, out=z)

    def logits(self, x: torch.Tensor, *, classes_last: bool = False) -> torch.Tensor:
        """Eval-mode logits of all K for x (B, ...) or prepared rows, a new tensor: (K, C, B), or (K, B, C)
        with classes_last; no graph."""
        with torch.no_grad():
            return self._forward(x, self._buffers(False, x.shape[0], x), None, None, classes_last)[2]

    def patterns(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Eval-mode ReLU on/off patterns (n_l, B, h) of every hidden layer for x: the linear region each input
        falls in (padded units are always off)."""
        with torch.no_grad():
            buf = self._buffers(False, x.shape[0], x)
            self._forward(x, buf, None, None)
            return [act > 0 for act in buf.act]

    def step(self, x: torch.Tensor, y: torch.Tensor, masks: Masks | None = None, *, loss: torch.Tensor | None = None,
             witness: torch.Tensor | None = None) -> None:
        """Forward and backward on x (B, ...) or prepared rows with labels y, shared (B,) or per model (K, B):
        writes the gradient of the sum of the K mean cross-entropies into the gradient views (and, with batch
        norm, updates its running statistics).

        loss (K,), if given, receives each model's mean cross-entropy. witness (K,), if given, receives the
        sum of each model's logits, a cheaper finiteness check: it is non-finite when a logit is inf or NaN,
        which is exactly when the stably computed cross-entropy is (short of logits near 1e35, where the
        sum itself overflows: a diverged model in any case)."""
        if not self.trainable:
            raise ValueError("this FusedMLP was built without gradient views: it can only compute logits")
        if self._plain and masks is None and x.dim() == 2 and x.shape[1] == self.input_width:
            with torch.no_grad():
                self._plain_step(x, y, loss, witness)
            return
        with torch.no_grad():
            bsz = x.shape[0]
            buf = self._buffers(True, bsz, x)
            xe, used, z = self._forward(x, buf, masks, buf.z, train=True)
            g = _loss_gradient(z, y, buf.logp, buf.e, buf.minus_one, loss, witness)
            last = len(self.layers) - 1
            out = self.layers[-1]
            for lo, hi, d in self.runs:  # the output layer, per run of equal depth: its gradient and d(input)
                a_in = buf.nxt[d - 1] if d else xe
                gt = _rows(g, lo, hi).mT  # (n, B, C)
                if out.block is not None:
                    _bmm_into(_rows(a_in, lo, hi).mT, gt, _rows(out.gblock, lo, hi))
                else:
                    _bmm_into(_rows(a_in, lo, hi).mT, gt, _rows(out.gw, lo, hi))
                    torch.sum(gt, 1, out=_rows(out.gb, lo, hi))
                if d:
                    torch.bmm(gt, _rows(out.w, lo, hi).mT, out=_rows(buf.dact[d - 1], lo, hi))  # (n, B, h)
            for i in range(last - 1, -1, -1):  # hidden layer i: d(act) is complete (the layer above, the output)
                lay = self.layers[i]
                g = buf.dact[i]
                n = len(g)
                if used[i] is not None:
                    g.mul_(used[i])
                _threshold_backward(g, buf.pre[i], 0, grad_input=g)
                if self.norm is not None:
                    self._normalise_backward(i, g, buf)
                a_in = _rows(buf.nxt[i - 1] if i else xe, 0, n)
                if lay.block is not None:
                    _bmm_into(a_in.mT, g, _rows(lay.gblock, 0, n))
                else:
                    _bmm_into(a_in.mT, g, _rows(lay.gw, 0, n))
                    torch.sum(g, 1, out=_rows(lay.gb, 0, n))
                if i:
                    torch.bmm(g, _rows(lay.w, 0, n).mT, out=_rows(buf.dact[i - 1], 0, n))

    def _plan(self, bsz: int, like: torch.Tensor) -> _Plan:
        """The common network's step views for one batch size (its workspace's), made on first use."""
        plan = self._plans.get(bsz)
        if plan is not None:
            return plan
        buf = self._buffers(True, bsz, like)
        hidden = [_HiddenViews(lay.block, buf.pre[i], buf.act[i], buf.nxt[i], buf.nxt[i].mT, buf.dact[i], lay.gblock,
                               self.layers[i + 1].w.mT) for i, lay in enumerate(self.layers[:-1])]
        out = self.layers[-1]
        plan = self._plans[bsz] = _Plan(hidden, out.block.mT, out.gblock, buf.z, buf.logp, buf.e, buf.e.mT,
                                        buf.minus_one)
        return plan

    def _plain_step(self, x: torch.Tensor, y: torch.Tensor, loss: torch.Tensor | None,
                    witness: torch.Tensor | None) -> None:
        """step for the common network (no dropout, batch norm or depths, prepared rows): the general step's ops in
        its order on the same views, made once (_plan), so the same bits."""
        k, bsz = self.k, x.shape[0]
        plan = self._plan(bsz, x)
        xe = x.expand(k, -1, -1)  # (K, B, F): one input for every model, no copy made
        a = xe
        for h in plan.hidden:
            torch.bmm(a, h.block, out=h.pre)
            if h.act is h.pre:
                h.pre.relu_()
            else:
                torch.clamp_min(h.pre, 0, out=h.act)
            a = h.nxt
        last = plan.hidden[-1]
        z = torch.bmm(plan.out_block_t, last.nxt_t, out=plan.z)
        _loss_gradient(z, y, plan.logp, plan.e, plan.minus_one, loss, witness)
        _bmm_into(last.nxt_t, plan.e_t, plan.out_gblock)
        torch.bmm(plan.e_t, last.w_next_t, out=last.dact)
        for i in range(len(plan.hidden) - 1, -1, -1):
            h = plan.hidden[i]
            _threshold_backward(h.dact, h.pre, 0, grad_input=h.dact)
            below = plan.hidden[i - 1] if i else None
            _bmm_into(below.nxt_t if below else xe.mT, h.dact, h.gblock)
            if below:
                torch.bmm(h.dact, below.w_next_t, out=below.dact)


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


def norm_size(k: int, dims: Sequence[int]) -> int:
    """Elements of the flat tensor that holds the batch-norm scales of K MLPs of layer sizes `dims` (`norm_views`)."""
    return sum(2 * k * h for h in dims[1:-1])


def norm_views(flat: torch.Tensor, k: int, dims: Sequence[int]) -> list[Layer]:
    """(gamma (K, h), beta (K, h)) views of a flat tensor, per hidden layer one (K, 2, h) block: for BatchNorm's
    scales (or their gradients) beside `flat_layers`' weights, to be updated by the same element-wise optimizer."""
    if flat.shape != (norm_size(k, dims),):
        raise ValueError(f"a flat tensor of shape {tuple(flat.shape)} does not hold K={k} scales for {list(dims)}")
    views, start = [], 0
    for h in dims[1:-1]:
        block = flat[start:start + 2 * k * h].view(k, 2, h)
        views.append((block[:, 0], block[:, 1]))
        start += 2 * k * h
    return views


def model_index(k: int, dims: Sequence[int], norm: bool = False) -> torch.Tensor:
    """The model (0..K-1) of every element of `flat_layers`' flat tensor (followed by `norm_views`' with norm):
    per-model learning rates are lrs[model_index(...)], one model's weights flat[model_index(...) == i]."""
    blocks = [(i + 1) * o for i, o in zip(dims[:-1], dims[1:])] + ([2 * h for h in dims[1:-1]] if norm else [])
    return torch.cat([torch.arange(k).repeat_interleave(n) for n in blocks])


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
    momentum (dampening 0, no Nesterov), Adam (L2 weight decay, no amsgrad). The learning rate is one number
    (torch.optim's arithmetic exactly) or a tensor laid out as the parameters, one rate per element (per model,
    `model_index`; 0 freezes an element), the same arithmetic with the rate multiplied in last."""

    def __init__(self, cfg: OptimizerConfig, param: torch.Tensor) -> None:
        if cfg.kind not in FLAT_KINDS:
            raise ValueError(f"FlatOptimizer implements {', '.join(FLAT_KINDS)}, not {cfg.kind}")
        self.cfg, self.param = cfg, param
        self.hp = dict(cfg.hparams)
        self.state: dict[str, torch.Tensor] = {}
        self.t = 0

    def step(self, grad: torch.Tensor, lr: float | torch.Tensor | None = None) -> None:
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
        if isinstance(lr, torch.Tensor):
            self.param.addcmul_(grad, lr, value=-1)
        else:
            self.param.add_(grad, alpha=-lr)

    def _adam(self, g: torch.Tensor, lr: float | torch.Tensor) -> None:
        b1, b2, eps = self.hp["beta1"], self.hp["beta2"], self.hp["eps"]
        if not self.state:
            self.state["exp_avg"], self.state["exp_avg_sq"] = torch.zeros_like(g), torch.zeros_like(g)
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(1 - b2 ** self.t)).add_(eps)
        if isinstance(lr, torch.Tensor):
            self.param.addcmul_(torch.div(m, denom, out=denom), lr, value=-1 / (1 - b1 ** self.t))
        else:
            self.param.addcdiv_(m, denom, value=-lr / (1 - b1 ** self.t))
