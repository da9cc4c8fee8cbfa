"""The workbench's CNN families: output shapes on 8x8, 28x28 and 32x32 inputs, the parameter counts the papers
give (ResNet20: 0.27M, He et al. 2016), the width multiplier, FLOPs counted by hooks, and seeded dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explorer.core.config import ConfigError
from explorer.core.seeding import seeded
from explorer.nets.cnn import FAMILIES, CNNConfig, Dropout, build_cnn, channels, flops_per_image, param_count


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 9, 13)])
def test_shapes(family: str, shape: tuple[int, int, int]) -> None:
    net = build_cnn(CNNConfig(family=family, width=0.25, in_channels=shape[0], classes=7))
    assert net(torch.randn(3, *shape)).shape == (3, 7)


def test_resnet20_has_the_papers_parameter_count() -> None:
    n = param_count(build_cnn(CNNConfig(family="resnet20")))
    assert abs(n - 0.27e6) / 0.27e6 < 0.01, n
    assert n == 269_722  # 16-32-64 channels, option-A shortcuts, BN, a biased linear layer


def test_known_parameter_counts() -> None:
    # Page's ResNet9 is 6.57M parameters; the simple CNN (global-average head) 0.29M on colour images
    assert param_count(build_cnn(CNNConfig(family="resnet9"))) == 6_573_120
    assert param_count(build_cnn(CNNConfig(family="simple"))) == 288_746


def test_resnet20_shortcuts_have_no_parameters() -> None:
    net = build_cnn(CNNConfig(family="resnet20"))
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # 1 + 3 stages x 3 blocks x 2, plus the linear layer = 20 weighted layers


@pytest.mark.parametrize("family", FAMILIES)
def test_width_multiplier_scales_channels(family: str) -> None:
    counts = [param_count(build_cnn(CNNConfig(family=family, width=w))) for w in (0.25, 0.5, 1.0, 2.0)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    # conv weights dominate, so doubling the width roughly quadruples the parameters
    assert 3.0 < counts[3] / counts[2] < 4.1
    widths = {m.out_channels for m in build_cnn(CNNConfig(family=family, width=0.125)).modules()
              if isinstance(m, nn.Conv2d)}
    assert min(widths) >= 4  # MIN_CHANNELS
    assert channels(64, 0.5) == 32 and channels(16, 0.1) == 4


def test_flops_by_hooks_match_a_hand_count() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 4))
    expected = 2 * (8 * 5 * 5 * 3 * 3 * 3) + 2 * (8 * 5 * 5 * 4)
    assert flops_per_image(net, (3, 5, 5)) == expected
    # ResNet20 on 32x32: about 41M multiply-adds (He et al.'s figure) -> ~81 MFLOPs
    assert 80e6 < flops_per_image(build_cnn(CNNConfig(family="resnet20")), (3, 32, 32)) < 83e6


def test_flops_leave_the_model_as_it_was() -> None:
    net = build_cnn(CNNConfig(family="simple", width=0.25))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flops_per_image(net, (3, 32, 32))
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN running stats untouched
    assert not net._forward_hooks and all(not m._forward_hooks for m in net.modules())


def test_seeded_builds_are_identical() -> None:
    with seeded(3):
        a = build_cnn(CNNConfig(family="resnet9", width=0.125))
    with seeded(3):
        b = build_cnn(CNNConfig(family="resnet9", width=0.125))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_dropout_uses_the_generator_it_is_given() -> None:
    d = Dropout(0.5).train()
    x = torch.ones(1000)
    d.generator = torch.Generator().manual_seed(1)
    a = d(x)
    d.generator = torch.Generator().manual_seed(1)
    assert torch.equal(a, d(x))
    assert set(a.unique().tolist()) == {0.0, 2.0}  # inverted dropout: kept values scaled by 1 / (1 - p)
    assert torch.equal(d.eval()(x), x)


@pytest.mark.parametrize("bad", [dict(family="vgg"), dict(width=0.1), dict(width=5.0), dict(dropout=0.95),
                                 dict(classes=1), dict(in_channels=0)])
def test_bad_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigError):
        CNNConfig(**bad)
