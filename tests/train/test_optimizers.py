"""The one optimizer registry: every trainer's kinds come from it, and its configs build what trainers ran."""

from __future__ import annotations

import pytest
import torch

from explorer.core.config import ConfigError
from explorer.labs.double_descent.spec import OPTIMIZER_KINDS as SWEEP_KINDS
from explorer.nets.small import NetConfig
from explorer.train import single_mlp, stacked
from explorer.train.optimizers import OPTIMIZERS, config_for, supported_kinds


@pytest.mark.parametrize("kinds", [single_mlp.OPTIMIZER_KINDS, stacked.OPTIMIZER_KINDS, SWEEP_KINDS])
def test_every_trainer_supports_a_subset_of_the_registry(kinds: tuple[str, ...]) -> None:
    assert kinds and set(kinds) <= set(OPTIMIZERS) and len(set(kinds)) == len(kinds)


def test_an_unknown_kind_is_refused_at_declaration_and_a_kind_outside_a_trainer_by_its_config() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        supported_kinds("sgd", "lbfgs")
    with pytest.raises(ConfigError, match="optimizer"):
        stacked.BatchConfig(optimizer="nesterov")  # registered, but not one the batched trainer declares
    with pytest.raises(ConfigError, match="optimizer"):
        single_mlp.TrainConfig(optimizer="radam")


def test_config_for_takes_the_settings_a_kind_has_and_leaves_the_rest_at_defaults() -> None:
    sgd = config_for("sgd", 0.1, momentum=0.5, weight_decay=0.01)
    assert sgd.kwargs() == {"lr": 0.1, "weight_decay": 0.01}  # plain SGD has no momentum
    mom = config_for("momentum", 0.1, momentum=0.5)
    assert mom.kwargs() == {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.0}
    adam = config_for("adam", 1e-3, momentum=0.5, weight_decay=0.01)
    assert adam.kwargs() == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}


def test_the_stacked_trainer_builds_torch_optim_with_its_settings_fused() -> None:
    spec = stacked.ModelSpec(NetConfig("mlp", width=8, depth=1), (4,), 2)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    for kind, cls, extra in [("sgd", torch.optim.SGD, {"momentum": 0}),
                             ("momentum", torch.optim.SGD, {"momentum": 0.8}),
                             ("adam", torch.optim.Adam, {"betas": (0.9, 0.999)})]:
        cfg = stacked.BatchConfig(optimizer=kind, lr=0.01, momentum=0.8, weight_decay=1e-3)
        opt = stacked.BatchedTrainer(spec, cfg, 2, x, y, device=torch.device("cpu")).opt
        group = opt.param_groups[0]
        assert type(opt) is cls and group["fused"] and group["lr"] == 0.01 and group["weight_decay"] == 1e-3
        assert all(group[k] == v for k, v in extra.items()), kind


def test_the_engine_passes_its_momentum_to_the_sgd_family_only() -> None:
    cfg = single_mlp.TrainConfig(optimizer="nesterov", lr=0.1, momentum=0.7)
    assert cfg.optimizer_config.kwargs() == {"lr": 0.1, "nesterov": True, "momentum": 0.7, "weight_decay": 0.0}
    rms = single_mlp.TrainConfig(optimizer="rmsprop", lr=0.1, momentum=0.7).optimizer_config
    assert rms.hp("momentum") == OPTIMIZERS["rmsprop"].hparams[1].default == 0.0
