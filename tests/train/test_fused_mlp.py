"""The fused K-MLP step: gradients, losses and logits equal autograd's for any depth, in both weight layouts
(the sweep's bias rows, the race's nn.Linear views), padding stays zero, dropout masks are the stacked
forward's, and both update styles equal torch.optim step by step for every optimizer they serve; models of several
depths and with batch norm (per model) equal nn.Sequential + autograd, and per-model learning rates torch.optim."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.nets.small import (NetConfig, _autograd_train_step, _mlp_stacked, eval_logits_fn, flat_stack, flat_views,
                                 init_state, make_masks, stacked_forward, train_step_fn)
from explorer.train.fused_mlp import (FLAT_KINDS, BatchNorm, FlatOptimizer, FusedMLP, flat_layers, flat_size,
                                      init_model, model_index, model_layers, norm_size, norm_views)
from explorer.train.optimizers import OPTIMIZERS, OptimizerConfig, build_shared_optimizers, config_for

CPU = torch.device("cpu")


def _padded(widths: list[int], depth: int, seeds: list[int], in_dim: int = 40, classes: int = 10
            ) -> tuple[torch.Tensor, list[int], list[list[int]]]:
    """A flat tensor of K zero-padded MLPs (model i: `depth` hidden layers of widths[i]), its dims and each model's."""
    dims = [in_dim, *[max(widths)] * depth, classes]
    flat = torch.zeros(flat_size(len(widths), dims))
    own = [[in_dim, *[w] * depth, classes] for w in widths]
    for i, s in enumerate(seeds):
        init_model(flat_layers(flat, len(widths), dims), i, own[i], torch.Generator().manual_seed(s))
    return flat, dims, own


def _reference(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> nn.Sequential:
    """One model as nn.Linear + ReLU layers holding copies of (weight (in, out), bias (out,)) views."""
    mods: list[nn.Module] = []
    for i, (w, b) in enumerate(layers):
        lin = nn.Linear(*w.shape)
        with torch.no_grad():
            lin.weight.copy_(w.T)
            lin.bias.copy_(b)
        mods += [lin] if i == len(layers) - 1 else [lin, nn.ReLU()]
    return nn.Sequential(*mods)


def _torch_optim(kind: str, params, lr: float) -> torch.optim.Optimizer:
    """The torch.optim call a user would write for the sweep's settings, by hand."""
    return {"sgd": lambda: torch.optim.SGD(params, lr=lr, weight_decay=0.01),
            "momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=0.01),
            "adam": lambda: torch.optim.Adam(params, lr=lr, weight_decay=0.01)}[kind]()


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_step_equals_autograd_for_any_depth_with_per_model_and_shared_labels(depth: int) -> None:
    flat, dims, own = _padded([3, 5, 5], depth, [0, 1, 2])
    flat.add_(torch.randn(flat.shape, generator=torch.Generator().manual_seed(9)) * 0.3)  # padding too: any weights
    x = torch.randn(13, 40, generator=torch.Generator().manual_seed(1))
    for y in (torch.randint(0, 10, (3, 13), generator=torch.Generator().manual_seed(2)),
              torch.randint(0, 10, (13,), generator=torch.Generator().manual_seed(3))):
        grad = torch.full_like(flat, float("nan"))  # every entry must be written
        net = FusedMLP(flat_layers(flat, 3, dims), flat_layers(grad, 3, dims))
        loss, witness = torch.empty(3), torch.empty(3)
        net.step(x, y, loss=loss, witness=witness)
        leaf = flat.clone().requires_grad_()
        z = x.expand(3, -1, -1)
        for i, (w, b) in enumerate(flat_layers(leaf, 3, dims)):
            z = torch.baddbmm(b.unsqueeze(1), z, w)
            z = z.relu() if i < depth else z
        ref = torch.stack([F.cross_entropy(z[k], y.expand(3, -1)[k]) for k in range(3)])
        (ref_grad,) = torch.autograd.grad(ref.sum(), leaf)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(witness, z.detach().sum((1, 2)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.logits(x), z.detach().mT, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(net.logits(net.prepare(x), classes_last=True), z.detach(), rtol=1e-6, atol=1e-6)


def test_bias_rows_and_separate_biases_give_the_same_step() -> None:
    flat, dims, _ = _padded([6, 6], 2, [0, 1])
    grad = torch.zeros_like(flat)
    rows = FusedMLP(flat_layers(flat, 2, dims), flat_layers(grad, 2, dims))
    # the same weights as separate tensors, weights stored (K, out, in) as nn.Linear does: the general path
    sep = [(w.mT.contiguous().mT, b.clone()) for w, b in flat_layers(flat, 2, dims)]
    sep_grad = [(torch.zeros_like(w.mT).mT, torch.zeros_like(b)) for w, b in sep]
    general = FusedMLP(sep, sep_grad)
    assert all(lay.block is not None for lay in rows.layers) and all(lay.block is None for lay in general.layers)
    assert rows.input_width == 41 and general.input_width == 40
    x, y = torch.randn(9, 4, 10), torch.randint(0, 10, (9,))  # inputs are flattened
    loss_rows, loss_general = torch.empty(2), torch.empty(2)
    rows.step(x, y, loss=loss_rows)
    general.step(x, y, loss=loss_general)
    torch.testing.assert_close(loss_rows, loss_general)
    for (gw, gb), (sw, sb) in zip(flat_layers(grad, 2, dims), sep_grad):
        torch.testing.assert_close(gw, sw, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gb, sb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows.logits(x), general.logits(x))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_plain_step_gives_the_general_steps_bits(depth: int) -> None:
    """The common network's step (its views made once per batch size) runs the general step's ops in its order:
    the same gradients, losses and witnesses to the last bit, step after step, with shared and per-model labels."""
    flat, dims, _ = _padded([5, 9, 9], depth, [0, 1, 2])
    grads = [torch.zeros_like(flat) for _ in range(2)]
    flats = [flat.clone() for _ in range(2)]
    nets = [FusedMLP(flat_layers(f, 3, dims), flat_layers(g, 3, dims)) for f, g in zip(flats, grads)]
    assert nets[0]._plain
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        x = nets[0].prepare(torch.randn(16 if step % 2 else 12, 40, generator=gen))
        y = torch.randint(0, 10, (12 if step % 2 == 0 else 16,) if step < 2 else (3, x.shape[0]), generator=gen)
        out = [(torch.empty(3), torch.empty(3)) for _ in range(2)]
        nets[0].step(x, y, loss=out[0][0], witness=out[0][1])
        nets[1]._plain = False  # the general step
        nets[1].step(x, y, loss=out[1][0], witness=out[1][1])
        assert torch.equal(grads[0], grads[1]) and torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
        for f, g in zip(flats, grads):
            f.sub_(0.1 * g)
    assert len(nets[0]._plans) == 2


@pytest.mark.parametrize("kind", FLAT_KINDS)
def test_flat_optimizer_equals_torch_optim_and_padding_stays_zero(kind: str) -> None:
    widths, depth = [3, 5], 2
    flat, dims, own = _padded(widths, depth, [0, 1])
    grad = torch.zeros_like(flat)
    layers = flat_layers(flat, 2, dims)
    net = FusedMLP(layers, flat_layers(grad, 2, dims))
    opt = FlatOptimizer(config_for(kind, 0.05, momentum=0.9, weight_decay=0.01), flat)
    models = [_reference([(w.clone(), b.clone()) for w, b in model_layers(layers, i, own[i])]) for i in range(2)]
    opts = [_torch_optim(kind, m.parameters(), 0.05) for m in models]
    gen = torch.Generator().manual_seed(5)
    for step in range(4):
        lr = 0.05 / (1 + step)  # a schedule: the lr is the step's, not the config's
        x, y = torch.randn(20, 40, generator=gen), torch.randint(0, 10, (2, 20), generator=gen)
        net.step(net.prepare(x), y)
        opt.step(grad, lr)
        for k, (m, o) in enumerate(zip(models, opts)):
            for group in o.param_groups:
                group["lr"] = lr
            o.zero_grad()
            F.cross_entropy(m(x), y[k]).backward()
            o.step()
    for i, m in enumerate(models):
        ours = model_layers(layers, i, own[i])
        for (w, b), lin in zip(ours, [mod for mod in m if isinstance(mod, nn.Linear)]):
            torch.testing.assert_close(w, lin.weight.detach().T, rtol=1e-4, atol=1e-5, msg=f"{kind} model {i}")
            torch.testing.assert_close(b, lin.bias.detach(), rtol=1e-4, atol=1e-5)
    w1, b1 = layers[0]
    w2, b2 = layers[1]
    assert w1[0, :, 3:].abs().max() == 0 and b1[0, 3:].abs().max() == 0  # model 0 is 3 wide in a group of 5
    assert w2[0, 3:].abs().max() == 0 and w2[0, :, 3:].abs().max() == 0 and layers[2][0][0, 3:].abs().max() == 0


def test_flat_optimizer_refuses_kinds_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="implements sgd, momentum, adam"):
        FlatOptimizer(OptimizerConfig("rmsprop"), torch.zeros(3))


@pytest.mark.parametrize("dropout,batch,depth", [(0.0, 32, 2), (0.3, 32, 2), (0.5, 7, 2), (0.3, 16, 1), (0.2, 16, 3)])
def test_race_layout_step_equals_autograd_and_masks_are_the_stacked_forwards(dropout: float, batch: int,
                                                                              depth: int) -> None:
    net_cfg = NetConfig("mlp", width=24, dropout=dropout, depth=depth)
    k = 3
    flat, params = flat_stack(init_state(net_cfg, (40,), 10, 0), k, CPU)
    flat.add_(torch.randn(flat.shape, generator=torch.Generator().manual_seed(1)) * 0.1)  # copies differ
    shapes = {name: t.shape[1:] for name, t in params.items()}
    x = torch.randn(batch, 40, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(3))
    results = []
    for make in (train_step_fn, lambda cfg, p, g: functools.partial(_autograd_train_step, _mlp_stacked, p, g)):
        grad_flat = torch.full_like(flat, float("nan"))  # every entry must be written
        step = make(net_cfg, params, flat_views(grad_flat, shapes))
        per = step(x, y, make_masks(dropout, torch.Generator().manual_seed(4), x.device, x.dtype))
        results.append((per, grad_flat))
    (per, grad), (per_ref, grad_ref) = results
    torch.testing.assert_close(per, per_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-6)
    # the same generator gives the stacked forward's training-mode logits, masks and all
    z = stacked_forward(net_cfg, params, x, generator=torch.Generator().manual_seed(4), train=True)
    torch.testing.assert_close(per, torch.stack([F.cross_entropy(z[i], y) for i in range(k)]), rtol=1e-6, atol=1e-6)
    logits = eval_logits_fn(net_cfg, params)(x)
    torch.testing.assert_close(logits, stacked_forward(net_cfg, params, x).transpose(1, 2), rtol=1e-6, atol=1e-6)


def test_race_layout_with_shared_torch_optim_equals_one_loop_per_optimizer() -> None:
    """Gradients into racer-major views, every registered optimizer as a param group: each racer's weights
    equal its own textbook autograd + torch.optim loop."""
    racers = tuple(OptimizerConfig(kind, 0.01) for kind in OPTIMIZERS)
    net_cfg = NetConfig("mlp", width=16)
    init = init_state(net_cfg, (40,), 10, 0)
    flat, params = flat_stack(init, len(racers), CPU)
    grad_flat = torch.zeros_like(flat)
    mine = [[flat[i]] for i in range(len(racers))]
    for i, row in enumerate(mine):
        row[0].grad = grad_flat[i]
    opts = build_shared_optimizers(racers, mine, CPU)
    step = train_step_fn(net_cfg, params, flat_views(grad_flat, {n: t.shape for n, t in init.items()}))
    nets = []
    for r in racers:
        m = nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10))
        m.load_state_dict({f"{i}.{p}": init[f"{n}.{p}"] for i, n in ((1, "fc1"), (3, "fc2"), (5, "out"))
                           for p in ("weight", "bias")})
        nets.append((m, r.spec.cls(m.parameters(), **r.kwargs())))
    gen = torch.Generator().manual_seed(6)
    for _ in range(3):
        x, y = torch.randn(24, 40, generator=gen), torch.randint(0, 10, (24,), generator=gen)
        step(x, y, make_masks(0.0, None, CPU, x.dtype))
        opts.step()
        for m, o in nets:
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
    for i, ((m, _), r) in enumerate(zip(nets, racers)):
        ref = torch.cat([p.detach().flatten() for p in m.parameters()])
        torch.testing.assert_close(flat[i], ref, rtol=2e-5, atol=1e-6, msg=r.kind)


def test_the_witness_is_non_finite_exactly_when_the_loss_is() -> None:
    x, y = torch.randn(6, 40), torch.randint(0, 10, (3, 6))
    for bad in (float("inf"), float("-inf"), float("nan")):
        flat, dims, _ = _padded([4, 4, 4], 2, [0, 1, 2])
        layers = flat_layers(flat, 3, dims)
        layers[-1][1][1, y[1, 0]] = bad  # model 1's bias of the first example's label: one logit non-finite
        z = FusedMLP(layers).logits(x, classes_last=True)
        loss = torch.stack([F.cross_entropy(z[k], y[k]) for k in range(3)])
        net = FusedMLP(layers, flat_layers(torch.zeros_like(flat), 3, dims))
        witness, ours = torch.empty(3), torch.empty(3)
        net.step(x, y, witness=witness, loss=ours)
        assert torch.equal(torch.isfinite(witness), torch.isfinite(loss)), bad
        assert torch.isfinite(witness).tolist() == [True, False, True]
        assert torch.equal(torch.isfinite(ours), torch.isfinite(loss)), bad


def test_bad_layers_and_a_step_without_gradients_are_refused() -> None:
    flat, dims, _ = _padded([4, 4], 2, [0, 1])
    layers = flat_layers(flat, 2, dims)
    with pytest.raises(ValueError, match="do not chain"):
        FusedMLP([layers[1], layers[0]])
    with pytest.raises(ValueError, match="does not hold"):
        flat_layers(flat[:-1], 2, dims)
    with pytest.raises(ValueError, match="without gradient views"):
        FusedMLP(layers).step(torch.randn(2, 40), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="takes 40"):
        FusedMLP(layers).logits(torch.randn(2, 39))


# ---------------------------------------------------------------- depths, batch norm, per-model learning rates

WIDTHS, DEPTHS, BN = [5, 3, 5, 4], [3, 3, 2, 1], [False, True, True, False]  # deepest first, BN models contiguous


def _bn_stack(k: int = 4, in_dim: int = 6, classes: int = 3, seed: int = 0):
    """K padded MLPs of WIDTHS and DEPTHS in one flat tensor (layers, then batch-norm scales) with random weights,
    and per model an nn.Sequential (Linear [BatchNorm1d] ReLU ..., Linear) holding copies of its un-padded part."""
    w_max, depth = max(WIDTHS), max(DEPTHS)
    dims = [in_dim, *[w_max] * depth, classes]
    n_lin = flat_size(k, dims)
    flat = torch.zeros(n_lin + norm_size(k, dims))
    layers, scales = flat_layers(flat[:n_lin], k, dims), norm_views(flat[n_lin:], k, dims)
    gen = torch.Generator().manual_seed(seed)
    models = []
    for i, (w, d, bn) in enumerate(zip(WIDTHS, DEPTHS, BN)):
        own = [in_dim, *[w] * d, classes]
        mods: list[nn.Module] = []
        for l, (a, o) in enumerate(zip(own[:-1], own[1:])):
            wl, bl = layers[l if l < d else -1]
            lin = nn.Linear(a, o)
            with torch.no_grad():
                wl[i, :a, :o] = torch.randn(a, o, generator=gen) * 0.6
                bl[i, :o] = torch.randn(o, generator=gen) * 0.3
                lin.weight.copy_(wl[i, :a, :o].T)
                lin.bias.copy_(bl[i, :o])
            mods.append(lin)
            if l < d:
                if bn:
                    norm = nn.BatchNorm1d(o)
                    with torch.no_grad():
                        scales[l][0][i, :o] = torch.rand(o, generator=gen) + 0.5
                        scales[l][1][i, :o] = torch.randn(o, generator=gen) * 0.2
                        norm.weight.copy_(scales[l][0][i, :o])
                        norm.bias.copy_(scales[l][1][i, :o])
                    mods.append(norm)
                mods.append(nn.ReLU())
        models.append(nn.Sequential(*mods))
    return flat, dims, n_lin, models


def _bn_net(flat: torch.Tensor, grad: torch.Tensor, dims: list[int], n_lin: int) -> tuple[FusedMLP, BatchNorm]:
    k = len(WIDTHS)
    running = [(torch.zeros(k, h), torch.ones(k, h)) for h in dims[1:-1]]
    norm = BatchNorm(norm_views(flat[n_lin:], k, dims), norm_views(grad[n_lin:], k, dims), running, BN)
    return FusedMLP(flat_layers(flat[:n_lin], k, dims), flat_layers(grad[:n_lin], k, dims), depths=DEPTHS,
                    norm=norm), norm


def _ours(flat: torch.Tensor, dims: list[int], n_lin: int, i: int) -> list[torch.Tensor]:
    """Model i's un-padded parameters in nn.Sequential's order (weights (out, in))."""
    k, w, d = len(WIDTHS), WIDTHS[i], DEPTHS[i]
    layers, scales = flat_layers(flat[:n_lin], k, dims), norm_views(flat[n_lin:], k, dims)
    own = [dims[0], *[w] * d, dims[-1]]
    out = []
    for l, (a, o) in enumerate(zip(own[:-1], own[1:])):
        wl, bl = layers[l if l < d else -1]
        out += [wl[i, :a, :o].T, bl[i, :o]]
        if l < d and BN[i]:
            out += [scales[l][0][i, :o], scales[l][1][i, :o]]
    return out


def test_depths_and_batch_norm_step_equals_autograd() -> None:
    flat, dims, n_lin, models = _bn_stack()
    grad = torch.full_like(flat, float("nan"))
    net, norm = _bn_net(flat, grad, dims, n_lin)
    assert net.active == [4, 3, 2] and net.runs == [(0, 2, 3), (2, 3, 2), (3, 4, 1)]
    x = torch.randn(11, dims[0], generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (11,), generator=torch.Generator().manual_seed(2))
    loss = torch.empty(4)
    net.step(x, y, loss=loss)
    assert not grad.isnan().any()  # rows no step writes (skipped layers, scales of models without BN) are zeros
    ref = [F.cross_entropy(m(x), y) for m in models]
    torch.testing.assert_close(loss, torch.stack(ref).detach(), rtol=1e-6, atol=1e-6)
    for i, (m, r) in enumerate(zip(models, ref)):
        r.backward()
        for ours, p in zip(_ours(grad, dims, n_lin, i), m.parameters()):
            torch.testing.assert_close(ours, p.grad, rtol=1e-4, atol=1e-5, msg=f"model {i}")
        bns = [mod for mod in m if isinstance(mod, nn.BatchNorm1d)]
        for (rm, rv), bn in zip(norm.running, bns):  # the running statistics, updated as nn.BatchNorm1d's
            torch.testing.assert_close(rm[i, :WIDTHS[i]], bn.running_mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(rv[i, :WIDTHS[i]], bn.running_var, rtol=1e-5, atol=1e-6)
    # the padding's gradients are exactly zero: model 1 is 3 wide in a stack of 5, model 3 skips layers 1 and 2
    gl = flat_layers(grad[:n_lin], 4, dims)
    assert gl[0][0][1, :, 3:].abs().max() == 0 and gl[1][0][1, 3:].abs().max() == 0
    assert gl[-1][0][1, 3:].abs().max() == 0
    assert gl[1][0][3].abs().max() == 0 and gl[2][0][2:].abs().max() == 0
    assert norm_views(grad[n_lin:], 4, dims)[0][0][[0, 3]].abs().max() == 0
    for m in models:
        m.eval()
    with torch.no_grad():  # eval mode: each model's running statistics
        want = torch.stack([m(x) for m in models])
    torch.testing.assert_close(net.logits(x, classes_last=True), want, rtol=1e-5, atol=1e-5)
    pats = net.patterns(x)
    assert [tuple(p.shape) for p in pats] == [(4, 11, 5), (3, 11, 5), (2, 11, 5)] and not pats[0][1, :, 3:].any()


@pytest.mark.parametrize("kind", FLAT_KINDS)
def test_per_model_learning_rates_with_batch_norm_equal_torch_optim(kind: str) -> None:
    """Four steps of the depths + batch-norm stack under FlatOptimizer with one learning rate per model (one of
    them 0: frozen) equal each model's own nn.Sequential under torch.optim at its rate."""
    lrs = [0.05, 0.02, 0.0, 0.1]
    flat, dims, n_lin, models = _bn_stack(seed=3)
    start = flat.clone()
    grad = torch.zeros_like(flat)
    net, _ = _bn_net(flat, grad, dims, n_lin)
    opt = FlatOptimizer(config_for(kind, 0.05, momentum=0.9, weight_decay=0.01), flat)
    lr = torch.tensor(lrs)[model_index(4, dims, norm=True)]
    assert lr.shape == flat.shape
    opts = [_torch_optim(kind, m.parameters(), v) for m, v in zip(models, lrs)]
    gen = torch.Generator().manual_seed(4)
    for _ in range(4):
        x, y = torch.randn(16, dims[0], generator=gen), torch.randint(0, 3, (16,), generator=gen)
        net.step(x, y)
        opt.step(grad, lr)
        for m, o in zip(models, opts):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
    for i, m in enumerate(models):
        before_bn = {4 * l + 1 for l in range(DEPTHS[i])} if BN[i] else set()  # Linear biases: (W, b, gamma, beta)
        for j, (ours, p) in enumerate(zip(_ours(flat, dims, n_lin, i), m.parameters())):
            if kind == "adam" and j in before_bn:
                continue  # its gradient is rounding noise (BN removes the mean), which Adam scales up to lr-steps
            torch.testing.assert_close(ours, p.detach(), rtol=1e-4, atol=1e-5, msg=f"{kind} model {i} param {j}")
    assert torch.equal(flat[model_index(4, dims, norm=True) == 2], start[model_index(4, dims, norm=True) == 2])


def test_depths_and_batch_norm_are_checked() -> None:
    flat, dims, n_lin, _ = _bn_stack()
    layers = flat_layers(flat[:n_lin], 4, dims)
    with pytest.raises(ValueError, match="deepest first"):
        FusedMLP(layers, depths=[1, 3, 3, 2])
    with pytest.raises(ValueError, match="from 1 to 3"):
        FusedMLP(layers, depths=[4, 3, 3, 2])
    running = [(torch.zeros(4, h), torch.ones(4, h)) for h in dims[1:-1]]
    scales = norm_views(flat[n_lin:], 4, dims)
    with pytest.raises(ValueError, match="must be contiguous"):
        FusedMLP(layers, norm=BatchNorm(scales, None, running, [True, False, True, False]))
    with pytest.raises(ValueError, match="gradient views to train"):
        FusedMLP(layers, flat_layers(torch.zeros_like(flat[:n_lin]), 4, dims),
                 norm=BatchNorm(scales, None, running, BN))
    assert model_index(2, [3, 4, 2]).tolist() == [0] * 16 + [1] * 16 + [0] * 10 + [1] * 10
