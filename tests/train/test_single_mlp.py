"""Engine: gradients equal autograd's, updates equal torch.optim's, loss falls, divergence, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from explorer.core.config import ConfigError
from explorer.data.toy2d import Data2DConfig, make_split
from explorer.nets.mlp import ACTIVATIONS, MLPConfig, init_mlp_params
from explorer.train.evaluate import Diverged
from explorer.train.single_mlp import OPTIMIZER_KINDS, TrainConfig, Trainer, build_engine_optimizer, train

CPU = torch.device("cpu")


def _data(n: int = 60, k: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _reference_grads(model: MLPConfig, cfg: TrainConfig, state, x, y, masks):
    """Autograd on the textbook formulation: nn.Linear layout, F.batch_norm, masks given."""
    p = {k: v.clone().requires_grad_(True) for k, v in state.items() if "running" not in k}
    act = ACTIVATIONS[model.activation].forward
    a = x
    n_layers = len(model.sizes) - 1
    for i in range(n_layers):
        h = a @ p[f"layers.{i}.weight"].t() + p[f"layers.{i}.bias"]
        if i == n_layers - 1:
            z = h
            break
        if model.batch_norm:
            h = F.batch_norm(h, None, None, p[f"bn.{i}.weight"], p[f"bn.{i}.bias"], True, 0.0, 1e-5)
        a = act(h)
        if masks[i] is not None:
            a = a * masks[i]
    if cfg.loss == "cross_entropy":
        loss = F.cross_entropy(z, y)
    else:
        target = F.one_hot(y, model.out_dim).float()
        loss = 0.5 * ((z - target) ** 2).sum() / len(x)
    weights = [p[f"layers.{i}.weight"] for i in range(n_layers)]
    loss = loss + cfg.l2 / 2 * sum((w**2).sum() for w in weights) + cfg.l1 * sum(w.abs().sum() for w in weights)
    loss.backward()
    return {k: v.grad for k, v in p.items()}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("variant", ["plain", "bn", "dropout", "l1l2", "mse"])
def test_gradients_match_autograd(activation: str, variant: str) -> None:
    x, y = _data()
    model = MLPConfig(in_dim=3, out_dim=2, hidden=(5, 4), activation=activation,
                      batch_norm=variant == "bn", dropout=0.3 if variant == "dropout" else 0.0)
    cfg = TrainConfig(lr=1e-5, batch_size=len(x), l1=0.01 if variant == "l1l2" else 0.0,
                      l2=0.02 if variant == "l1l2" else 0.0, loss="mse" if variant == "mse" else "cross_entropy")
    tr = Trainer(model, cfg, x, y)
    state = tr.state_dict()
    # Replay the engine's generator to know the epoch's order (full batch: the gradient is a sum anyway).
    gen = torch.Generator().manual_seed(cfg.seed)
    init_mlp_params(model, gen)
    perm = torch.randperm(len(x), generator=gen)
    tr.run_epoch()
    buf = tr._bufs[len(x)]
    ref = _reference_grads(model, cfg, state, x[perm], y[perm], buf.masks)
    for i, lay in enumerate(tr.layers):
        torch.testing.assert_close(lay.grad_weight.t(), ref[f"layers.{i}.weight"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(lay.grad_bias, ref[f"layers.{i}.bias"], rtol=1e-4, atol=1e-6)
        if lay.bn_weight is not None:
            torch.testing.assert_close(lay.grad_bn_weight, ref[f"bn.{i}.weight"], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(lay.grad_bn_bias, ref[f"bn.{i}.bias"], rtol=1e-4, atol=1e-6)


TORCH_OPTIM = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "nesterov": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
    "adagrad": lambda p, lr: torch.optim.Adagrad(p, lr=lr),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "adamw": lambda p, lr: torch.optim.AdamW(p, lr=lr),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZER_KINDS))
def test_updates_match_torch_optim(name: str) -> None:
    """Five steps of the engine's optimizer equal torch.optim's on the same gradients."""
    assert set(TORCH_OPTIM) == set(OPTIMIZER_KINDS)
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    ref = [p.clone().requires_grad_(True) for p in params]
    grads = [torch.zeros_like(p) for p in params]
    ours = build_engine_optimizer([p.clone() for p in params], grads, TrainConfig(optimizer=name, lr=0.05))
    theirs = TORCH_OPTIM[name](ref, 0.05)
    for _ in range(5):
        new = [torch.randn(p.shape, generator=g) for p in params]
        for buf, n in zip(grads, new):
            buf.copy_(n)
        ours.step(grads)
        for r, n in zip(ref, new):
            r.grad = n.clone()
        theirs.step()
    own_params = ours.params if hasattr(ours, "params") else ours.opt.param_groups[0]["params"]
    for a, b in zip(own_params, ref):
        assert torch.equal(a, b.detach()), name


def test_loss_falls_on_spiral(recorder) -> None:
    split = make_split(Data2DConfig(name="spiral", noise=0, input_features=("x1", "x2", "sin x1", "sin x2")), CPU)
    res = train(MLPConfig(in_dim=4, hidden=(8, 8)), TrainConfig(optimizer="adam", lr=0.03), split.x_train,
                split.y_train, split.x_test, split.y_test, epochs=150, report=recorder)
    assert res.diverged is None
    assert recorder.checkpoints == 150 and recorder.progress[0] == 1 / 150 and recorder.progress[-1] == 1.0
    assert recorder.messages[-1] == "epoch 150 of 150"
    assert res.history.train_loss[-1] < 0.5 * res.history.train_loss[0]
    assert res.history.train_acc[-1] > 0.8


def test_huge_learning_rate_stops_with_divergence_message() -> None:
    split = make_split(Data2DConfig(name="circle", input_features=("x1", "x2", "x1^2", "x2^2")), CPU)
    tr = Trainer(MLPConfig(in_dim=4, out_dim=2, hidden=(8,), activation="relu"), TrainConfig(lr=10.0, loss="mse"),
                 split.x_train, split.y_train)
    with pytest.raises(Diverged) as info:
        for _ in range(50):
            tr.run_epoch()
    msg = str(info.value)
    assert "diverged" in msg and f"step {info.value.step}" in msg and "learning rate 10" in msg
    res = train(MLPConfig(in_dim=4, out_dim=2, hidden=(8,), activation="relu"), TrainConfig(lr=10.0, loss="mse"),
                split.x_train, split.y_train, epochs=50)
    assert res.diverged and res.epochs < 50


def test_same_seed_same_weights_bit_identical() -> None:
    split = make_split(Data2DConfig(name="xor", noise=20), CPU)
    model = MLPConfig(hidden=(6, 6), dropout=0.2, batch_norm=True)
    runs = [train(model, TrainConfig(seed=3, optimizer="momentum", batch_size=7), split.x_train, split.y_train,
                  epochs=5).state for _ in range(2)]
    other = train(model, TrainConfig(seed=4, optimizer="momentum", batch_size=7), split.x_train, split.y_train,
                  epochs=5).state
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k
    assert any(not torch.equal(runs[0][k], other[k]) for k in runs[0])


def test_regression_and_partial_batches() -> None:
    split = make_split(Data2DConfig(name="plane", noise=5), CPU)
    res = train(MLPConfig(in_dim=2, out_dim=1, hidden=(4,)), TrainConfig(loss="mse", batch_size=33, lr=0.01),
                split.x_train, split.y_train, split.x_test, split.y_test, epochs=30, task="regression")
    assert res.history.test_loss[-1] < res.history.test_loss[0]
    assert res.steps == 30 * -(-len(split.x_train) // 33)


def test_config_limits_refused() -> None:
    with pytest.raises(ConfigError, match="learning rate"):
        TrainConfig(lr=100.0)
    with pytest.raises(ConfigError, match="hidden layers"):
        MLPConfig(hidden=(8,) * 9)
    with pytest.raises(ConfigError, match="neurons"):
        MLPConfig(hidden=(300,))
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="regression"):
        Trainer(MLPConfig(out_dim=1), TrainConfig(), torch.zeros(4, 2), torch.zeros(4), task="regression")


def _playground(**settings):
    """A Trainer on the playground's data and network for these page settings (build_config's defaults: the spiral,
    3 x 8 tanh, Adam)."""
    from explorer.labs.boundaries.run import build_config

    cfg = build_config(**settings)
    split = make_split(cfg.data, CPU)
    return Trainer(cfg.model, cfg.train, split.x_train, split.y_train, split.x_test, split.y_test, task=split.task)


def _epochs_until_stopped(tr: Trainer, epochs: int) -> Diverged | None:
    """Train and evaluate up to `epochs`; the Diverged that stopped it, if one did."""
    for _ in range(epochs):
        try:
            tr.run_epoch()
        except Diverged as exc:
            return exc
        tr.evaluate()
    return None


def test_a_dead_network_at_lr_10_stops_within_a_few_epochs_saying_why() -> None:
    """The page's default network at lr 10: tanh layers saturate in the first epoch (no gradient reaches them), the
    loss stays above guessing's; it used to train on for every epoch with no message (0 of 101 weight seeds)."""
    from explorer.train.single_mlp import FROZEN_EPOCHS

    for seed in range(3):
        exc = _epochs_until_stopped(_playground(lr=10.0, seed=seed), 50)
        assert exc is not None and exc.epoch <= FROZEN_EPOCHS + 2
        msg = str(exc)
        assert "dead" in msg and "frozen" in msg and "tanh units are saturated" in msg
        assert "Lower the learning rate (10 probably threw the weights too far; try 1)" in msg
    relu = str(_epochs_until_stopped(_playground(lr=10.0, activation="relu", optimizer="sgd", seed=0), 50))
    assert "ReLU units output 0 on every training point" in relu


def test_an_exploding_loss_stops_the_run_saying_why() -> None:
    tr = _playground(dataset="circle", activation="linear", lr=3.0, batch_size=1000, hidden=(6, 6),
                     input_features=("x1", "x2", "x1^2", "x2^2"))
    exc = _epochs_until_stopped(tr, 40)
    assert exc is not None and "the training loss exploded" in str(exc) and "learning rate 3" in str(exc)
    assert tr.history.epoch[-1] == tr.epoch - 1  # the stopping epoch finished; callers evaluate it if they draw it


def test_runs_that_learn_are_not_stopped() -> None:
    """Runs that fit despite a loss spike or saturated units (from the survey that set the thresholds)."""
    for settings in (dict(dataset="xor", optimizer="sgd", lr=3.0, seed=0),  # loss 4x its start, then fits
                     dict(dataset="xor", lr=0.3),  # Adam; 50-75% of the tanh units saturated, still fits
                     dict(dataset="circle", activation="relu", optimizer="sgd", lr=0.3)):
        tr = _playground(**settings)
        assert _epochs_until_stopped(tr, 80) is None, settings
        assert tr.history.train_acc[-1] >= 0.9, settings


def test_non_finite_data_is_refused_as_a_data_error_not_blamed_on_the_learning_rate() -> None:
    x = torch.randn(20, 2)
    y = torch.randn(20)
    y[3] = float("inf")
    with pytest.raises(ConfigError, match="training labels hold 1 value.*not finite.*error in the data"):
        Trainer(MLPConfig(out_dim=1), TrainConfig(loss="mse"), x, y, task="regression")
    x[0, 1] = float("nan")
    with pytest.raises(ConfigError, match="training inputs"):
        Trainer(MLPConfig(out_dim=1), TrainConfig(loss="mse"), x, torch.zeros(20), task="regression")


def test_evaluate_reuses_the_health_check_forward_and_gives_the_same_numbers() -> None:
    tr = _playground(hidden=(4, 3), dropout=0.2)
    tr.run_epoch()
    got = tr.evaluate()
    want = {"train_loss": tr.loss(tr.x_train, tr.y_train_t), "test_loss": tr.loss(tr.x_test, tr.y_test_t),
            "train_acc": tr.accuracy(tr.x_train, tr.y_train), "test_acc": tr.accuracy(tr.x_test, tr.y_test)}
    assert got == pytest.approx({k: float(v) for k, v in want.items()}, abs=1e-6)
    tr.load_state_dict({k: v * 0.5 for k, v in tr.state_dict().items()})  # new weights: no stale reuse
    assert tr.evaluate()["train_loss"] == pytest.approx(float(tr.loss(tr.x_train, tr.y_train_t)), abs=1e-6)
