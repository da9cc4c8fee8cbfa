"""Races: trajectories equal torch.optim's, convex minima are reached, divergence stops one racer only,
and the task race equals K separate torch.optim loops on the same weights and batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.core.jobs import JobRunner, JobState
from explorer.data import datasets
from explorer.labs.optimizer_race.race import (DIVERGE_BOUND, SurfaceRaceConfig, TaskData, TaskRaceConfig, race_surface,
                                               task_race_job, train_race)
from explorer.labs.optimizer_race.surfaces import DTYPE, SURFACES
from explorer.nets.small import NetConfig, build_net, init_state
from explorer.train.optimizers import (OPTIMIZERS, OptimizerConfig, build_optimizer, build_shared_optimizers,
                                       fast_kwargs, step_family)

# Non-default settings for every kind, and the torch.optim call a user would write for them, by hand:
# the test checks our registry's keyword mapping as well as the update rule.
SETTINGS = {
    "sgd": ({"weight_decay": 0.01}, lambda p: torch.optim.SGD(p, lr=2e-3, weight_decay=0.01)),
    "momentum": ({"momentum": 0.8}, lambda p: torch.optim.SGD(p, lr=2e-3, momentum=0.8)),
    "nesterov": ({"momentum": 0.7}, lambda p: torch.optim.SGD(p, lr=2e-3, momentum=0.7, nesterov=True)),
    "adagrad": ({"eps": 1e-8}, lambda p: torch.optim.Adagrad(p, lr=2e-3, eps=1e-8)),
    "rmsprop": ({"alpha": 0.9, "momentum": 0.5}, lambda p: torch.optim.RMSprop(p, lr=2e-3, alpha=0.9, momentum=0.5)),
    "adadelta": ({"rho": 0.8}, lambda p: torch.optim.Adadelta(p, lr=2e-3, rho=0.8)),
    "adam": ({"beta1": 0.8, "beta2": 0.99}, lambda p: torch.optim.Adam(p, lr=2e-3, betas=(0.8, 0.99))),
    "adamw": ({"weight_decay": 0.1}, lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=0.1)),
    "nadam": ({"momentum_decay": 0.01}, lambda p: torch.optim.NAdam(p, lr=2e-3, momentum_decay=0.01)),
    "radam": ({"eps": 1e-6}, lambda p: torch.optim.RAdam(p, lr=2e-3, eps=1e-6)),
}


def test_every_registered_optimizer_is_covered() -> None:
    assert set(SETTINGS) == set(OPTIMIZERS)


@pytest.mark.parametrize("surface", ["rosenbrock", "himmelblau", "rastrigin"])
def test_every_trajectory_equals_torch_optim_step_by_step(surface: str) -> None:
    s = SURFACES[surface]
    racers = tuple(OptimizerConfig(k, 2e-3, tuple(hp.items())) for k, (hp, _) in SETTINGS.items())
    steps = 60
    race = race_surface(SurfaceRaceConfig(surface, s.start, steps, racers))
    for track, (hp, make) in zip(race.tracks, SETTINGS.values()):
        p = torch.tensor(s.start, dtype=DTYPE, requires_grad=True)
        opt = make([p])
        for t in range(steps + 1):
            loss = s.fn(p[0], p[1])
            if t == len(track.path):  # the racer stopped here: torch.optim must have blown up too
                assert track.diverged_at == t
                assert not math.isfinite(loss.item()) or p.detach().abs().max() > DIVERGE_BOUND
                break
            assert torch.allclose(track.path[t], p.detach(), rtol=1e-12, atol=1e-12), (track.label, t)
            assert torch.allclose(track.loss[t], loss.detach(), rtol=1e-12, atol=1e-12)
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            assert track.diverged_at is None and len(track.path) == steps + 1


def test_gradient_noise_is_the_same_draw_for_every_racer() -> None:
    racers = (OptimizerConfig("sgd", 0.01), OptimizerConfig("sgd", 0.01))
    race = race_surface(SurfaceRaceConfig("quadratic", (-2.0, 1.0), 30, racers, grad_noise=1.0, seed=3))
    a, b = race.tracks
    assert torch.equal(a.path, b.path) and b.label.endswith("#2")
    clean = race_surface(SurfaceRaceConfig("quadratic", (-2.0, 1.0), 30, racers[:1]))
    assert not torch.equal(a.path, clean.tracks[0].path)


@pytest.mark.parametrize("kind,lr,hp", [
    ("sgd", 0.03, ()), ("momentum", 0.01, ()), ("nesterov", 0.01, ()), ("adagrad", 0.5, ()), ("rmsprop", 0.01, ()),
    ("adadelta", 1.0, (("eps", 1e-4), ("rho", 0.99))), ("adam", 0.05, ()), ("adamw", 0.05, (("weight_decay", 0.0),)),
    ("nadam", 0.05, ()), ("radam", 0.05, ()),
])
def test_convex_quadratic_minimum_is_reached(kind: str, lr: float, hp: tuple) -> None:
    cfg = SurfaceRaceConfig("quadratic", (-2.8, 1.5), 600, (OptimizerConfig(kind, lr, hp),))
    (track,) = race_surface(cfg).tracks
    assert track.diverged_at is None
    assert float(track.distance[-1]) < 1e-2, (kind, track.path[-1])
    assert float(track.loss[-1]) < 1e-4 * float(track.loss[0])


def test_custom_convex_formula_minimum_is_reached() -> None:
    cfg = SurfaceRaceConfig("custom", (-2.0, 2.0), 400, (OptimizerConfig("adam", 0.05),),
                            formula="(x - 1)^2 + 3*(y + 2)^2")
    (track,) = race_surface(cfg).tracks
    assert math.dist(track.path[-1].tolist(), (1.0, -2.0)) < 1e-2


def test_a_diverging_racer_stops_and_the_others_go_on() -> None:
    racers = (OptimizerConfig("sgd", 1.0), OptimizerConfig("adam", 0.05))
    race = race_surface(SurfaceRaceConfig("quadratic", (-2.8, 1.5), 300, racers))
    bad, good = race.tracks
    assert bad.diverged_at is not None and 0 < bad.diverged_at < 300
    assert bad.message.startswith(f"diverged at step {bad.diverged_at}")
    assert len(bad.path) == bad.diverged_at and torch.isfinite(bad.loss).all()
    assert good.diverged_at is None and len(good.path) == 301


@pytest.mark.parametrize("bad", [
    dict(start=(9.0, 0.0)), dict(steps=0), dict(racers=()), dict(surface="volcano"),
    dict(surface="custom", formula="__import__('os')"), dict(grad_noise=float("nan")),
    dict(racers=tuple(OptimizerConfig() for _ in range(11))),
])
def test_surface_config_refuses_bad_settings(bad: dict) -> None:
    with pytest.raises(ConfigError):
        SurfaceRaceConfig(**bad)


def test_optimizer_config_refuses_bad_settings_and_normalises() -> None:
    for bad in [dict(kind="lion"), dict(kind="adam", lr=1e3), dict(kind="adam", hparams=(("beta1", 1.5),)),
                dict(kind="sgd", hparams=(("beta1", 0.5),)), dict(kind="adam", lr=float("inf"))]:
        with pytest.raises(ConfigError):
            OptimizerConfig(**bad)
    assert OptimizerConfig("adam") == OptimizerConfig("adam", 1e-3, (("eps", 1e-8),))


# --- task race ----------------------------------------------------------------------------------------
def _digits_data(n_train: int = 256, n_val: int = 120) -> TaskData:
    """Real embedded data (sklearn's 8x8 digits), small enough for a fast exact comparison."""
    tr = datasets.take(datasets.load("digits", "train"), n_train, 0)
    va = datasets.take(datasets.load("digits", "test"), n_val, 0)
    return TaskData("digits", tr.to_float(), tr.y, va.to_float(), va.y, tr.classes)


# Every family that shares one torch.optim optimizer in the task race (SGD / momentum / Nesterov; Adam / AdamW)
# with more than one member, a fused one alone (Adagrad), and the unfused ones (RMSprop, Adadelta).
RACERS = (OptimizerConfig("sgd", 0.1), OptimizerConfig("nesterov", 0.05), OptimizerConfig("rmsprop", 1e-3),
          OptimizerConfig("adam", 3e-3, (("weight_decay", 1e-3),)), OptimizerConfig("adadelta"),
          OptimizerConfig("momentum", 0.02, (("weight_decay", 1e-3),)), OptimizerConfig("adamw", 2e-3),
          OptimizerConfig("adagrad", 0.05), OptimizerConfig("sgd", 0.03))


def _torch_optim_run(racer: OptimizerConfig, net_cfg: NetConfig, data: TaskData, seed: int, orders: torch.Tensor,
                     batch_size: int) -> tuple[list[float], float, float]:
    """The textbook loop with torch.optim's default implementation: step losses, final val accuracy and loss."""
    net = build_net(net_cfg, data.input_shape, 10)
    net.load_state_dict(init_state(net_cfg, data.input_shape, 10, seed))
    opt = racer.spec.cls(net.parameters(), **racer.kwargs())
    losses = []
    for order in orders:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            loss = F.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        logits = net(data.x_val)
    return losses, (logits.argmax(1) == data.y_val).float().mean().item(), F.cross_entropy(logits, data.y_val).item()


@pytest.mark.parametrize("arch", ["mlp", "small_cnn"])
def test_task_race_equals_separate_torch_optim_loops(arch: str) -> None:
    data = _digits_data(200, 120)
    net_cfg = NetConfig(arch, width=32, channels=4)
    # batch 45: the last batch of every epoch is short (20)
    cfg = TaskRaceConfig(net=net_cfg, racers=RACERS, n_train=200, n_val=120, epochs=2, batch_size=45, seed=5)
    metrics, tensors = train_race(cfg, data)
    orders = tensors["batch_order"].long()
    for i, racer in enumerate(RACERS):
        losses, acc, vloss = _torch_optim_run(racer, net_cfg, data, cfg.seed, orders, cfg.batch_size)
        torch.testing.assert_close(tensors["step_loss"][:, i], torch.tensor(losses), rtol=2e-5, atol=2e-6)
        assert metrics["val_acc"][i][-1] == pytest.approx(acc, abs=1.5 / len(data.y_val))
        assert metrics["val_loss"][i][-1] == pytest.approx(vloss, rel=1e-4, abs=1e-5)
    assert len(metrics["epoch"]) == 3 and all(len(a) == 3 for a in metrics["val_acc"])
    assert len(metrics["fairness"]["initial_weights_sha256"]) == 64


def test_a_diverging_racer_leaves_its_shared_optimizer_and_the_others_stay_exact() -> None:
    # SGD (diverges), momentum and Nesterov are groups of one torch.optim.SGD in the race
    data = _digits_data(200, 120)
    racers = (OptimizerConfig("sgd", 100.0), OptimizerConfig("momentum", 0.02), OptimizerConfig("nesterov", 0.02),
              OptimizerConfig("adam", 3e-3))
    net_cfg = NetConfig("mlp", width=32)
    cfg = TaskRaceConfig(net=net_cfg, racers=racers, n_train=200, n_val=120, epochs=3, batch_size=25, seed=2)
    metrics, tensors = train_race(cfg, data)
    assert metrics["diverged_at"][0] is not None and metrics["diverged_at"][1:] == [None, None, None]
    orders = tensors["batch_order"].long()
    for i, racer in enumerate(racers[1:], start=1):
        losses, _, vloss = _torch_optim_run(racer, net_cfg, data, cfg.seed, orders, cfg.batch_size)
        torch.testing.assert_close(tensors["step_loss"][:, i], torch.tensor(losses), rtol=2e-5, atol=2e-6)
        assert metrics["val_loss"][i][-1] == pytest.approx(vloss, rel=1e-4, abs=1e-5)


def test_shared_optimizers_equal_one_optimizer_per_racer() -> None:
    assert step_family(torch.optim.AdamW) is torch.optim.Adam and step_family(torch.optim.SGD) is torch.optim.SGD
    racers = tuple(OptimizerConfig(kind, 0.01, tuple(hp.items())) for kind, (hp, _) in SETTINGS.items())
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(len(racers), 50, generator=gen)
    grads = [torch.randn(len(racers), 50, generator=gen) for _ in range(4)]
    shared_w, alone_w = start.clone(), start.clone()
    cpu = torch.device("cpu")
    shared = build_shared_optimizers(racers, [[shared_w[i]] for i in range(len(racers))], cpu)
    assert len(shared.optimizers) == len({step_family(r.spec.cls) for r in racers}) < len(racers)
    alone = [build_optimizer(r, [alone_w[i]], **fast_kwargs(step_family(r.spec.cls), cpu))
             for i, r in enumerate(racers)]
    for t, g in enumerate(grads):
        if t == 2:
            shared.drop(0)  # the first racer leaves the race: its weights stop, the others go on
        for i in range(len(racers)):
            shared_w[i].grad, alone_w[i].grad = g[i], g[i]
        shared.step()
        for i, opt in enumerate(alone):
            if t < 2 or i > 0:
                opt.step()
        assert torch.equal(shared_w, alone_w), t  # bit for bit: same kernels, same hyperparameters


def test_task_race_divergence_stops_one_racer_and_dropout_is_reproducible() -> None:
    data = _digits_data()
    racers = (OptimizerConfig("sgd", 100.0), OptimizerConfig("adam", 1e-2))
    cfg = TaskRaceConfig(net=NetConfig("mlp", width=32, dropout=0.3), racers=racers, n_train=256, n_val=120,
                         epochs=3, batch_size=32)
    metrics, tensors = train_race(cfg, data)
    assert metrics["diverged_at"][0] is not None and metrics["messages"][0].startswith("diverged at step")
    assert metrics["diverged_at"][1] is None and metrics["val_acc"][1][-1] > metrics["val_acc"][1][0] + 0.2
    assert len(metrics["val_acc"][1]) == 4 and len(metrics["val_acc"][0]) < 4
    again, tensors2 = train_race(cfg, data)
    assert torch.equal(tensors["step_loss"][:, 1], tensors2["step_loss"][:, 1])


def test_task_race_job_publishes_caches_and_refuses_bad_configs(tmp_path, monkeypatch) -> None:
    data = _digits_data(200, 100)
    monkeypatch.setattr("explorer.labs.optimizer_race.race.load_task_data", lambda cfg: data)
    cache = Cache(tmp_path / "runtime", tmp_path / "shipped")
    cfg = TaskRaceConfig(net=NetConfig("mlp", width=16), racers=RACERS[:2], n_train=200, n_val=100, epochs=1,
                         batch_size=40)
    runner = JobRunner(max_running=1)
    try:
        job = runner.submit(task_race_job(cfg, cache))
        assert job.wait(60) and job.state is JobState.DONE, job.error
        assert job.result.entry is not None and job.snapshot["labels"] == [r.label for r in RACERS[:2]]
        assert cache.get("optimizer_race", cfg) is not None
    finally:
        runner.shutdown()
    for bad in [dict(dataset="imagenet"), dict(epochs=0), dict(n_train=60_000, epochs=200), dict(batch_size=-1)]:
        with pytest.raises(ConfigError):
            TaskRaceConfig(**bad)
