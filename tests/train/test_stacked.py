"""Batched training: K stacked models match K independent torch.optim loops, divergence, shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from explorer.core.config import ConfigError
from explorer.nets.small import NetConfig
from explorer.train.stacked import BatchConfig, BatchedTrainer, ModelSpec, train_batched

CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared machine: one torch thread avoids oversubscribed OpenMP waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cnn(channels: int, depth: int) -> NetConfig:
    """The memorisation lab's small CNN: conv stages straight into the output layer."""
    return NetConfig("small_cnn", channels=channels, depth=depth, hidden_fc=False)


def _independent(spec: ModelSpec, cfg: BatchConfig, k: int, x, y, epochs: int) -> list[dict]:
    """Reference: K separate nn.Modules, each with its own torch.optim optimizer, same batch order."""
    states = []
    for i in range(k):
        torch.manual_seed(cfg.init_seed + (0 if cfg.same_init else i))
        net = spec.build()
        opt = {"sgd": lambda p: torch.optim.SGD(p, lr=cfg.lr, weight_decay=cfg.weight_decay),
               "momentum": lambda p: torch.optim.SGD(p, lr=cfg.lr, momentum=cfg.momentum,
                                                     weight_decay=cfg.weight_decay),
               "adam": lambda p: torch.optim.Adam(p, lr=cfg.lr, weight_decay=cfg.weight_decay)}[cfg.optimizer](
            net.parameters())
        gen = torch.Generator().manual_seed(cfg.seed)
        xi = x if x.dim() == len(spec.input_shape) + 1 else x[i]
        for _ in range(epochs):
            perm = torch.randperm(len(y[i]), generator=gen)
            for s in range(0, len(perm), cfg.batch_size):
                idx = perm[s:s + cfg.batch_size]
                opt.zero_grad()
                F.cross_entropy(net(xi[idx]), y[i][idx]).backward()
                opt.step()
        states.append({n: t.detach() for n, t in net.state_dict().items()})
    return states


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("same_init", [True, False])
def test_mlp_matches_independent_optimizers(optimizer, same_init):
    torch.manual_seed(1)
    k, n = 3, 96
    spec = ModelSpec(NetConfig("mlp", width=16, depth=2), (12,), 4)
    cfg = BatchConfig(optimizer=optimizer, lr=0.05 if optimizer != "adam" else 0.01, batch_size=20,
                      epochs=3, same_init=same_init, weight_decay=1e-3, seed=5, init_seed=7)
    x = torch.randn(n, 12)
    y = torch.randint(0, 4, (k, n))
    res = train_batched(spec, cfg, k, x, y, device=CPU)
    ref = _independent(spec, cfg, k, x, y, 3)
    assert res.trainer.fast
    for i in range(k):
        state = res.trainer.state(i)
        for name, t in ref[i].items():
            torch.testing.assert_close(state[name], t, rtol=1e-4, atol=1e-5)


def test_cnn_vmap_path_per_model_inputs_matches_independent():
    torch.manual_seed(2)
    k, n = 2, 24
    spec = ModelSpec(_cnn(4, 2), (1, 8, 8), 3)
    cfg = BatchConfig(optimizer="momentum", lr=0.05, batch_size=8, epochs=2, same_init=False)
    x = torch.rand(k, n, 1, 8, 8)
    y = torch.randint(0, 3, (k, n))
    res = train_batched(spec, cfg, k, x, y, device=CPU)
    assert not res.trainer.fast
    ref = _independent(spec, cfg, k, x, y, 2)
    for i in range(k):
        for name, t in ref[i].items():
            torch.testing.assert_close(res.trainer.state(i)[name], t, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hidden_fc", [False, True])
def test_cnn_grouped_path_shared_inputs_matches_independent(hidden_fc):
    """Shared inputs go through explorer.nets.small's grouped, channels-last forward (not vmap)."""
    torch.manual_seed(3)
    k, n = 3, 24
    spec = ModelSpec(NetConfig("small_cnn", channels=4, depth=2, hidden_fc=hidden_fc, width=8), (1, 8, 8), 3)
    cfg = BatchConfig(optimizer="adam", lr=0.01, batch_size=8, epochs=2, same_init=False)
    x, y = torch.rand(n, 1, 8, 8), torch.randint(0, 3, (k, n))
    res = train_batched(spec, cfg, k, x, y, device=CPU)
    assert res.trainer.grouped and not res.trainer.fast
    ref = _independent(spec, cfg, k, x, y, 2)
    for i in range(k):
        for name, t in ref[i].items():
            torch.testing.assert_close(res.trainer.state(i)[name], t, rtol=1e-4, atol=1e-5)


def test_metrics_shapes_and_uint8_images(recorder):
    k = 2
    spec = ModelSpec(_cnn(4, 1), (3, 8, 8), 10)
    x = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 10, (30,))
    xt = torch.randint(0, 256, (k, 10, 3, 8, 8), dtype=torch.uint8)
    yt = torch.randint(0, 10, (k, 10))
    seen = []
    res = train_batched(spec, BatchConfig(epochs=2, eval_chunk=7), k, x, y, xt, yt,
                        on_epoch=lambda e, m: seen.append((e, m)), report=recorder, device=CPU)
    assert [e for e, _ in seen] == [1, 2] and res.history.epoch == [1, 2]
    assert recorder.checkpoints == 2 and recorder.progress == [0.5, 1.0]
    assert recorder.messages == ["epoch 1 of at most 2", "epoch 2 of at most 2"]
    for name in ("train_loss", "train_err", "test_loss", "test_err"):
        assert len(getattr(res.history, name)) == k and len(getattr(res.history, name)[0]) == 2
        assert all(0 <= v < 100 for v in seen[-1][1][name])


def test_chunked_evaluation_is_exact():
    spec = ModelSpec(NetConfig("mlp", width=8, depth=1), (5,), 3)
    x, y = torch.randn(50, 5), torch.randint(0, 3, (2, 50))
    a = BatchedTrainer(spec, BatchConfig(eval_chunk=7), 2, x, y, device=CPU)
    b = BatchedTrainer(spec, BatchConfig(eval_chunk=1000), 2, x, y, device=CPU)
    for u, v in zip(a._evaluate_set(a.x, True, a.y), b._evaluate_set(b.x, True, b.y)):
        torch.testing.assert_close(u, v)
    ref = spec.build()
    ref.load_state_dict(a.state(0))
    loss, err = a._evaluate_set(a.x, True, a.y)
    torch.testing.assert_close(loss[0], F.cross_entropy(ref(x), y[0]))
    torch.testing.assert_close(err[0], (ref(x).argmax(1) != y[0]).float().mean())


def test_one_diverging_model_leaves_the_others():
    spec = ModelSpec(NetConfig("mlp", width=8, depth=1), (4,), 2)
    x = torch.randn(40, 4)
    y = torch.randint(0, 2, (3, 40))
    x_per = x.expand(3, -1, -1).clone()
    x_per[1, 5, 0] = math.inf  # model 1 sees a poisoned input: its loss is non-finite at once
    res = train_batched(spec, BatchConfig(optimizer="sgd", lr=0.1, batch_size=40, epochs=3), 3, x_per, y,
                        device=CPU)
    assert res.diverged[0] is None and res.diverged[2] is None
    assert "step 1" in res.diverged[1] and "non-finite" in res.diverged[1]
    assert all(math.isnan(v) for v in res.history.train_loss[1])
    assert all(math.isfinite(v) for v in res.history.train_loss[0] + res.history.train_loss[2])
    assert res.epochs == 3


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="learning rate"):
        BatchConfig(lr=100.0)
    with pytest.raises(ConfigError, match="optimizer"):
        BatchConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="network"):
        NetConfig(arch="transformer")
    with pytest.raises(ConfigError, match="dropout"):
        ModelSpec(NetConfig(dropout=0.5))
    spec = ModelSpec(NetConfig("mlp", width=8), (4,), 2)
    with pytest.raises(ConfigError, match="shape"):
        BatchedTrainer(spec, BatchConfig(), 2, torch.randn(10, 5), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ConfigError, match="examples"):
        BatchedTrainer(spec, BatchConfig(), 2, torch.randn(10, 4), torch.zeros(9, dtype=torch.long))


def test_param_count_and_cnn_shapes():
    spec = ModelSpec(NetConfig("mlp", width=32, depth=2), (40,), 10)
    assert spec.num_params == 40 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    cnn = ModelSpec(_cnn(8, 3), (3, 32, 32), 10)
    assert cnn.build()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
