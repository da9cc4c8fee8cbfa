"""Grouped training of a sweep's points: points of one width (all noise levels and seeds) train together
as ONE grouped model (explorer.nets.grouped): one forward/backward per step for all of them, one shared
batch order, one host sync per epoch. MLP points of different small widths share a group too: they are
zero-padded to the group's widest model, and zero-padded units get exactly zero gradient, so they stay
zero and change nothing.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from explorer.core.schedules import SCHEDULES
from explorer.data.noise import noise_seed, noisy_labels
from explorer.labs.double_descent.spec import EVAL_CHUNK, METRICS, Point, PointResult, SweepData, SweepSpec
from explorer.nets import grouped as ddmodels

aten = torch.ops.aten

def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random 4-pixel crop of a padded copy, as whole-batch tensor ops."""
    b, c, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    pad = F.pad(x, (4, 4, 4, 4))  # (B, C, H+8, W+8)
    dy, dx = torch.randint(0, 9, (2, b), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    return pad[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
               rows, cols]


# ---------------------------------------------------------------- grouped training

class _MLPFast:
    """K zero-padded MLPs in -> h -> h -> out with a hand-written batched backward (tested vs autograd).

    Built for the per-step overhead of small models: each layer's bias is the last row of its weight
    matrix, fed by a constant-1 column appended to its input (prepare() appends it to the data, the ReLU
    outputs are written next to a fixed column of ones), so a step is 3 + 2 + 3 batched matmuls with no
    bias adds or bias-gradient sums. All weights live in one flat tensor and all gradients in another,
    so the optimizer update is 2-3 element-wise ops instead of a loop over parameter tensors.
    """

    def __init__(self, widths: list[int], seeds: list[int], in_dim: int, classes: int, spec: SweepSpec,
                 device: torch.device) -> None:
        k, h = len(widths), max(widths)
        self.shapes = [(k, in_dim + 1, h), (k, h + 1, h), (k, h + 1, classes)]  # weights with the bias row last
        sizes = [math.prod(s) for s in self.shapes]
        self.flat = torch.zeros(sum(sizes))
        self.weights = [v.view(s) for v, s in zip(self.flat.split(sizes), self.shapes)]
        for i, (w, s) in enumerate(zip(widths, seeds)):
            g = torch.Generator().manual_seed(s * 7_777 + w)
            for layer, (fan_in, rows, cols) in zip(self.weights, [(in_dim, in_dim, w), (w, w, w), (w, w, classes)]):
                bound = 1.0 / math.sqrt(fan_in)
                layer[i, :rows, :cols] = torch.empty(rows, cols).uniform_(-bound, bound, generator=g)
                layer[i, -1, :cols] = torch.empty(cols).uniform_(-bound, bound, generator=g)
        self.flat = self.flat.to(device)
        self.weights = [v.view(s) for v, s in zip(self.flat.split(sizes), self.shapes)]
        self.grad = torch.zeros_like(self.flat)
        self.grads = [v.view(s) for v, s in zip(self.grad.split(sizes), self.shapes)]
        self.spec, self.widths, self.classes, self.h = spec, widths, classes, h
        self.buf = self.adam_m = self.adam_v = None
        self.t = 0
        self._acts: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        """Views [w1, b1, w2, b2, w3, b3] of the weights: w (K, in, out), b (K, 1, out)."""
        return [t for w in self.weights for t in (w[:, :-1], w[:, -1:])]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (N, ...) -> (N, in + 1) with the constant-1 column the first layer's bias row multiplies."""
        x = x.reshape(len(x), -1)
        return torch.cat([x, torch.ones(len(x), 1, device=x.device, dtype=x.dtype)], 1)

    def _act_buffers(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (K, b, h + 1) buffers for the ReLU outputs (views of the largest batch's); the last column is 1."""
        if self._acts is None or self._acts[0].shape[1] < b:
            k = self.shapes[0][0]
            self._acts = (torch.ones(k, b, self.h + 1, device=self.flat.device),
                          torch.ones(k, b, self.h + 1, device=self.flat.device))
        return self._acts[0][:, :b], self._acts[1][:, :b]

    def _forward(self, xk: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """xk (K, B, in + 1) -> pre-activations h1, h2, ReLU outputs a1, a2 (with the 1-column), logits z."""
        w1, w2, w3 = self.weights
        a1, a2 = self._act_buffers(xk.shape[1])
        h1 = torch.bmm(xk, w1)
        torch.clamp_min(h1, 0, out=a1[..., :-1])
        h2 = torch.bmm(a1, w2)
        torch.clamp_min(h2, 0, out=a2[..., :-1])
        return h1, h2, a1, a2, torch.bmm(a2, w3)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared x (B, in + 1), shared -> (K, B, C)."""
        return self._forward(x.expand(self.shapes[0][0], *x.shape))[-1]

    def step(self, x: torch.Tensor, y1h: torch.Tensor, lr: float, witness: torch.Tensor | None = None) -> None:
        """One step on prepared x (B, in + 1) with one-hot targets (K, B, C).

        witness (K,), if given, receives the sum of each model's logits: it is non-finite when a logit is inf
        or NaN, which is exactly when the stably computed cross-entropy is (short of logits near 1e35, where
        the sum itself overflows: a diverged model in any case).
        """
        w1, w2, w3 = self.weights
        bsz = x.shape[0]
        xk = x.expand(w1.shape[0], *x.shape)  # (K, B, in + 1)
        h1, h2, a1, a2, z = self._forward(xk)
        if witness is not None:
            torch.sum(z, (1, 2), out=witness)
        e = (z - z.amax(-1, keepdim=True)).exp_()
        s = e.sum(-1, keepdim=True)
        g3 = e.div_(s).sub_(y1h).mul_(1.0 / bsz)  # dL/dz of the mean cross-entropy: softmax - onehot, / B
        g2 = aten.threshold_backward(torch.bmm(g3, w3[:, :-1].transpose(1, 2)), h2, 0)  # (K, B, h); ReLU'
        g1 = aten.threshold_backward(torch.bmm(g2, w2[:, :-1].transpose(1, 2)), h1, 0)
        gw1, gw2, gw3 = self.grads
        torch.bmm(a2.transpose(1, 2), g3, out=gw3)
        torch.bmm(a1.transpose(1, 2), g2, out=gw2)
        torch.bmm(xk.transpose(1, 2), g1, out=gw1)
        self._update(lr)

    def _update(self, lr: float) -> None:
        """torch.optim's SGD / momentum / Adam arithmetic on the flat weights (element-wise)."""
        spec, p, g = self.spec, self.flat, self.grad
        if spec.weight_decay:
            g.add_(p, alpha=spec.weight_decay)
        if spec.optimizer == "adam":
            self.t += 1
            if self.adam_m is None:
                self.adam_m, self.adam_v = torch.zeros_like(p), torch.zeros_like(p)
            b1, b2, eps = 0.9, 0.999, 1e-8
            self.adam_m.lerp_(g, 1 - b1)
            self.adam_v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.adam_v.sqrt() / math.sqrt(1 - b2 ** self.t)).add_(eps)
            p.addcdiv_(self.adam_m, denom, value=-lr / (1 - b1 ** self.t))
            return
        if spec.optimizer == "momentum":
            if self.buf is None:
                self.buf = g.clone()
            else:
                self.buf.mul_(spec.momentum).add_(g)
            g = self.buf
        p.add_(g, alpha=-lr)

    def train(self, mode: bool) -> None:
        """No batch norm or dropout: nothing to switch."""

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights un-padded, under the names of ddmodels.GroupedMLP with K=1."""
        w = self.widths[k]
        w1, b1, w2, b2, w3, b3 = (p[k:k + 1] for p in self.params)
        return {"layers.0.weight": w1[:, :, :w].clone(), "layers.0.bias": b1[:, :, :w].clone(),
                "layers.1.weight": w2[:, :w, :w].clone(), "layers.1.bias": b2[:, :, :w].clone(),
                "layers.2.weight": w3[:, :w, :].clone(), "layers.2.bias": b3.clone()}


class _AutogradGroup:
    """K same-width models of a ddmodels family as one grouped module, trained with torch.optim."""

    def __init__(self, family: str, width: int, seeds: list[int], data: SweepData, spec: SweepSpec,
                 device: torch.device) -> None:
        singles = []
        for s in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s * 7_777 + width)
                singles.append(ddmodels.build(family, width, 1, data.in_shape, data.num_classes).state_dict())
        self.k = len(seeds)
        self.model = ddmodels.build(family, width, self.k, data.in_shape, data.num_classes).to(device)
        self.model.load_state_dict(ddmodels.restack(singles))
        params = list(self.model.parameters())
        wd = spec.weight_decay
        self.opt = {"sgd": lambda: torch.optim.SGD(params, lr=spec.lr, weight_decay=wd),
                    "momentum": lambda: torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=wd),
                    "adam": lambda: torch.optim.Adam(params, lr=spec.lr, weight_decay=wd)}[spec.optimizer]()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) -> (K, B, C)."""
        return self.model(x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the module takes them."""
        return x

    def step(self, x: torch.Tensor, y1h: torch.Tensor, lr: float, witness: torch.Tensor | None = None) -> None:
        """One step; the loss is the SUM of the K mean losses, so each model gets its own gradient.

        witness (K,), if given, receives each model's loss (finite exactly when the loss is)."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        lp = torch.log_softmax(self.model(x), -1)  # (K, B, C)
        loss = -(lp * y1h).sum((1, 2)) / x.shape[0]  # (K,)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        if witness is not None:
            witness.copy_(loss.detach())

    def train(self, mode: bool) -> None:
        """Switch batch norm between batch statistics and running statistics."""
        self.model.train(mode)

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights under the names of the K=1 module."""
        return ddmodels.unstack(self.model.state_dict(), self.k, k)


@torch.no_grad()
def _evaluate(net: Any, x: torch.Tensor, label_sets: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-model mean loss and error (device tensors (K,)) against each (K, N) label set, in chunks."""
    k, n = label_sets[0].shape
    sums = [(torch.zeros(k, device=x.device), torch.zeros(k, device=x.device)) for _ in label_sets]
    for i in range(0, n, EVAL_CHUNK):
        z = net.logits(x[i:i + EVAL_CHUNK]).float()  # (K, b, C)
        m = z.amax(-1, keepdim=True)
        lse = (z - m).exp_().sum(-1, keepdim=True).log_().add_(m).sum((1, 2))  # (K,): the loss is lse - z[y]
        pred = z.argmax(-1)  # (K, b)
        for (loss, wrong), ys in zip(sums, label_sets):
            y = ys[:, i:i + EVAL_CHUNK]
            loss += lse - z.gather(-1, y.unsqueeze(-1)).sum((1, 2))
            wrong += (pred != y).sum(1)
    return [(loss / n, wrong / n) for loss, wrong in sums]


def train_group(spec: SweepSpec, points: list[Point], data: SweepData, *,
                on_epoch: Callable[[int], None] | None = None,
                checkpoint: Callable[[], None] | None = None) -> list[PointResult]:
    """Train the points together (one forward/backward per step for all); per-epoch metrics for each."""
    if not spec.trained:
        raise ValueError(f"{spec.family} points are solved in closed form (random_features.sweep_point), not trained")
    device = data.x_train.device
    k, c = len(points), data.num_classes
    if spec.family != "mlp" and len({p.width for p in points}) != 1:
        raise ValueError("only MLP points of different widths can share a group")
    start = time.perf_counter()
    if spec.family == "mlp":
        net: Any = _MLPFast([p.width for p in points], [p.seed for p in points], math.prod(data.in_shape), c,
                            spec, device)
    else:
        net = _AutogradGroup(spec.family, points[0].width, [p.seed for p in points], data, spec, device)
    y_tr = torch.stack([noisy_labels(data.y_train, p.noise, c, noise_seed(p.seed, p.noise)) for p in points])  # (K, N)
    y_te_noisy = torch.stack([noisy_labels(data.y_test, p.noise, c, noise_seed(p.seed, p.noise, 1)) for p in points])
    y_te = data.y_test.expand(k, -1)
    y1h = F.one_hot(y_tr, c).float()  # (K, N, C)
    x_tr, x_te = net.prepare(data.x_train), net.prepare(data.x_test)
    order = torch.Generator().manual_seed(spec.data_seed)
    aug = torch.Generator().manual_seed(spec.data_seed + 1)
    n, bs = len(x_tr), min(spec.batch_size, len(x_tr))
    record = set(spec.recorded_epochs())
    keep = set(spec.checkpoint_epochs)
    hist = {m: [[] for _ in points] for m in METRICS}
    epochs: list[int] = []
    diverged: list[str | None] = [None] * k
    ckpts: list[dict[str, torch.Tensor]] = [{} for _ in points]
    steps_per_epoch = math.ceil(n / bs)
    for epoch in range(spec.epochs):
        if checkpoint is not None:
            checkpoint()
        lr = spec.lr * SCHEDULES[spec.schedule](epoch, spec.epochs)
        perm = torch.randperm(n, generator=order).to(device)
        xs, ys = x_tr[perm], y1h[:, perm]  # one shuffled copy per epoch; batches are views of it
        losses = torch.empty(steps_per_epoch, k, device=device)  # per step: finite exactly when the loss is
        net.train(True)
        for s in range(steps_per_epoch):
            xb = xs[s * bs:(s + 1) * bs]
            if spec.augment == "flip_crop" and xb.dim() == 4:
                xb = _augment(xb, aug)
            net.step(xb, ys[:, s * bs:(s + 1) * bs], lr, losses[s])
        finite = torch.isfinite(losses).all(0).tolist()  # the one host sync of the epoch
        for i, ok in enumerate(finite):
            if not ok and diverged[i] is None:
                bad = int((~torch.isfinite(losses[:, i])).nonzero()[0, 0])
                diverged[i] = (f"loss became non-finite at step {epoch * steps_per_epoch + bad + 1} "
                               f"(epoch {epoch + 1}); lr {spec.lr:g} is probably too high")
        e = epoch + 1
        if e in record:
            net.train(False)
            [(tr_l, tr_e)] = _evaluate(net, x_tr, [y_tr])
            (te_l, te_e), (tn_l, tn_e) = _evaluate(net, x_te, [y_te, y_te_noisy])
            vals = torch.stack([tr_e, tr_l, te_e, te_l, tn_e, tn_l]).tolist()  # (6, K)
            epochs.append(e)
            for m, row in zip(METRICS, vals):
                for i, v in enumerate(row):
                    hist[m][i].append(float("nan") if diverged[i] else round(v, 6))
        if e in keep:
            for i in range(k):
                ckpts[i].update({f"epoch{e}/{name}": t.cpu() for name, t in net.state(i).items()})
        if on_epoch is not None:
            on_epoch(e)
    wall = time.perf_counter() - start
    return [PointResult(p, epochs, {m: hist[m][i] for m in METRICS},
                        ddmodels.param_count(spec.family, p.width, data.in_shape, data.num_classes),
                        wall / k, diverged[i], ckpts[i]) for i, p in enumerate(points)]
