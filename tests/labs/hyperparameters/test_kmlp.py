"""The lab's K models on fused_mlp: one batched step equals K separate nn.Sequential models under torch.optim
(per-model learning rates, batch norm, padded widths, skipped depths, width groups); divergence marking; linear
regions (the bound and the counter on hand-built nets)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from explorer.labs.hyperparameters import kmlp

CPU = torch.device("cpu")


def _data(n: int = 64, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.randint(0, classes, (n,), generator=g)


def _separate_losses(shapes, lrs, optimizer, x, y, steps, batch, seed=0):
    """K plain models trained one by one with torch.optim on the same batches: their per-step losses (steps, K)."""
    models = kmlp.init_models(shapes, 2, 3, seed)
    out = []
    for m, lr in zip(models, lrs):
        opt = kmlp.TORCH_OPTIMIZERS[optimizer](m.parameters(), lr)
        m.train()
        row = []
        for s in range(steps):
            idx = torch.arange(s * batch, (s + 1) * batch) % len(x)
            loss = nn.functional.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            row.append(loss.item())
        out.append(row)
    return torch.tensor(out).T, models


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "momentum"])
def test_batched_step_equals_separate_models_for_per_model_lr_and_bn(optimizer):
    x, y = _data()
    shapes = [kmlp.Shape(6, 16, bn) for bn in (False, True) for _ in range(3)]
    lrs = [1e-2, 1e-3, 1e-4] * 2
    steps, batch = 12, 16
    want, models = _separate_losses(shapes, lrs, optimizer, x, y, steps, batch)
    stack = kmlp.KModels(shapes, 2, 3, lrs, optimizer, 0, CPU)
    xp = stack.prepare(x)
    got = torch.stack([stack.step(xp[torch.arange(s * batch, (s + 1) * batch) % len(x)],
                                  y[torch.arange(s * batch, (s + 1) * batch) % len(x)]) for s in range(steps)])
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    for i, m in enumerate(models):  # the weights too (not the Linear biases before BN, see below)
        lins = [mod for mod in m if isinstance(mod, nn.Linear)]
        for l, ((w, b), lin) in enumerate(zip(stack.model_layers(i), lins)):
            assert torch.allclose(w, lin.weight.detach().T, atol=1e-4), (i, l)
            if not shapes[i].bn or l == len(lins) - 1:
                assert torch.allclose(b, lin.bias.detach(), atol=1e-4), (i, l)
    if optimizer != "adam":
        # eval mode uses each model's own running statistics: the same logits as the plain models in eval().
        # (Not under Adam: the Linear bias before a BN layer gets a gradient of rounding noise only, which Adam
        # normalises into lr-sized steps in a direction that differs between two implementations; batch-norm
        # output in training mode does not see the bias, its running mean does.)
        for m in models:
            m.eval()
        with torch.no_grad():
            assert torch.allclose(stack.logits(xp), torch.stack([m(x) for m in models]), atol=1e-5)


def test_padded_widths_and_skipped_depths_equal_separate_models():
    x, y = _data(seed=1)
    shapes = [kmlp.Shape(d, w, bn) for d, w, bn in ((1, 16, False), (2, 8, False), (4, 16, True), (4, 5, False))]
    lrs = [3e-3] * 4
    want, _ = _separate_losses(shapes, lrs, "adam", x, y, 10, 16)
    stack = kmlp.KModels(shapes, 2, 3, lrs, "adam", 0, CPU, ratio=4.0)  # one width group: 5 padded to 16
    # mixed depths and mixed batch norm: split into a stack without BN and one with it
    assert [s.net.depths for s in stack.stacks] == [[4, 2, 1], [4]] and stack.order == [3, 1, 0, 2]
    xp = stack.prepare(x)
    got = torch.stack([stack.step(xp[s * 16 % 64:s * 16 % 64 + 16], y[s * 16 % 64:s * 16 % 64 + 16])
                       for s in range(10)])
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    # the padded units stay exactly zero, and the layers a shallow model skips stay zero
    st = stack.stacks[0]
    (w0, _), (w1, _), (w2, _), (w3, _), (wo, _) = st.layers
    j = stack.place[1][1]  # depth 2, width 8
    assert w0[j, :, 8:].abs().max() == 0 and w1[j, 8:].abs().max() == 0 and w1[j, :, 8:].abs().max() == 0
    assert wo[j, 8:].abs().max() == 0 and w2[j].abs().max() == 0 and w3[j].abs().max() == 0
    j = stack.place[3][1]  # depth 4, width 5
    assert wo[j, 5:].abs().max() == 0 and w3[j, 5:].abs().max() == 0


def test_a_diverging_model_is_marked_with_its_step_and_the_others_go_on():
    x, y = _data()
    shapes = [kmlp.Shape(6, 16)] * 2
    stack = kmlp.KModels(shapes, 2, 3, [100.0, 1e-3], "sgd", 0, CPU)
    xp = stack.prepare(x)
    losses = torch.stack([stack.step(xp[:16], y[:16]) for _ in range(20)])
    stack.check(losses, 1, 4, ["fast", "slow"])
    assert not stack.alive[0] and stack.alive[1]
    step = stack.diverged_step[0]
    assert step is not None and 1 <= step <= 20
    bad = losses[step - 1, 0]
    assert not math.isfinite(bad) or bad > kmlp.DIVERGE_LOSS
    assert stack.diverged[0].startswith(f"fast diverged at step {step}") and "learning rate 100" in stack.diverged[0]
    before = [w.clone() for w, _ in stack.model_layers(1)]
    for _ in range(3):
        stack.step(xp[:16], y[:16])
    assert all((w == 0).all() and (b == 0).all() for w, b in stack.model_layers(0))  # zeroed and frozen
    assert any(not torch.equal(w, b) for (w, _), b in zip(stack.model_layers(1), before))  # the other trains on
    loss, acc = stack.evaluate(xp, y)
    assert math.isnan(loss[0]) and math.isfinite(loss[1])


def test_region_bound_known_values():
    assert kmlp.region_bound(3) == 7  # three lines in general position cut the plane into 7 pieces
    assert [kmlp.region_bound(n) for n in (0, 1, 2, 16)] == [1, 2, 4, 137]
    assert kmlp.region_bound(3, d=1) == 4


def _grid(g: int = 201) -> torch.Tensor:
    t = torch.linspace(-3, 3, g)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def test_region_counter_on_hand_built_nets():
    pts = _grid()
    axes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert kmlp.count_regions_1layer(axes, torch.zeros(2), pts) == 4  # the two axes: four quadrants
    three = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # x1 = 0, x2 = 0, x1 + x2 = 1: general position
    assert kmlp.count_regions_1layer(three, torch.tensor([0.0, 0.0, -1.0]), pts) == 7 == kmlp.region_bound(3)
    parallel = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # x1 = -1, 0, 1: only 4 pieces
    assert kmlp.count_regions_1layer(parallel, torch.tensor([1.0, 0.0, -1.0]), pts) == 4
    # the stack's counter agrees on the same 3-unit net built into a 1-hidden-layer model
    stack = kmlp.KModels([kmlp.Shape(1, 3), kmlp.Shape(2, 3)], 2, 3, [1e-3] * 2, "sgd", 0, CPU)
    with torch.no_grad():
        w, b = stack.model_layers(0)[0]
        w.copy_(three.T)
        b.copy_(torch.tensor([0.0, 0.0, -1.0]))
    assert stack.region_counts(pts)[0] == 7


def test_width_groups_and_the_grouped_stacks_equal_separate_models():
    grid = [kmlp.Shape(d, w) for d, w in ((1, 16), (2, 16), (6, 16), (10, 16), (6, 8), (6, 32), (6, 64))]
    assert kmlp.width_groups(grid) == [[4, 0, 1, 2, 3], [5, 6]]
    x, y = _data(seed=2)
    shapes = [kmlp.Shape(1, 4), kmlp.Shape(3, 32), kmlp.Shape(2, 6)]
    want, _ = _separate_losses(shapes, [1e-2] * 3, "adam", x, y, 8, 16)
    group = kmlp.KModels(shapes, 2, 3, [1e-2] * 3, "adam", 0, CPU)
    assert group.groups == [[0, 2], [1]]
    xp = group.prepare(x)
    got = torch.stack([group.step(xp[s * 16 % 64:s * 16 % 64 + 16], y[s * 16 % 64:s * 16 % 64 + 16])
                       for s in range(8)])
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    probs = group.probabilities(x)
    assert probs.shape == (3, 64, 3) and len(group.region_counts(x)) == 3
    # the caller's order: model 1 (the second stack) is row 1
    with torch.no_grad():
        assert torch.allclose(probs[1], group.stacks[1].net.logits(xp, classes_last=True)[0].softmax(-1))
