"""The image-classifier workbench's CNN families: a simple 3-block CNN, Page's ResNet9 and He et al.'s ResNet20.

Every family takes a width multiplier (channels x width, rounded, at least MIN_CHANNELS), so a CPU can train a
narrow copy of the network a GPU trains at full width, and every family accepts any input of at least 8x8 pixels
(the embedded digits) as well as 28x28 and 32x32, because each ends in a global pooling layer:

- "simple": 3 blocks of [conv3x3-BN-ReLU, conv3x3-BN-ReLU, 2x max-pool, dropout] with 32-64-128 channels, then a
  global average pool and one linear layer. Global average (not flatten) keeps the head independent of the image
  size, so one network serves 8x8 digits and 32x32 CIFAR-10, and keeps its parameter count small (~0.29M at width 1).
- "resnet9": the Myrtle.ai / David Page DAWNBench ResNet9: prep conv 64, layer1 conv 128 + max-pool + a residual
  of two conv-BN-ReLU, layer2 conv 256 + max-pool, layer3 conv 512 + max-pool + residual, global max pool,
  a bias-free linear layer, logits scaled by 0.125 (Page's trick: keeps the initial softmax soft). ~6.6M at width 1.
- "resnet20": He et al. (2016), section 4.2: a conv 16, three stages of three basic blocks (16-32-64 channels,
  stride 2 at each new stage), option-A shortcuts (stride-2 subsampling and zero-padded channels: no parameters),
  global average pool, linear. 0.27M parameters at width 1 (the paper's figure; tested).

`param_count` counts parameters; `flops_per_image` counts one forward pass with forward hooks on Conv2d and
Linear layers (multiply-adds x 2 on one dummy image; BN, ReLU, pooling and additions are not counted, as papers do).
Dropout is this module's `Dropout`, which draws its masks from a generator the trainer hands it
(explorer.train.image_fit), so a run's dropout draws do not depend on other threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.config import check_choice, check_range

FAMILIES = ("simple", "resnet9", "resnet20")
MIN_CHANNELS = 4  # a layer never gets fewer channels than this, however small the width multiplier
WIDTH_RANGE = (0.125, 4.0)  # channel multiplier limits (4x ResNet9 is ~100M parameters: memory, not sense)
MIN_SIDE = 8  # pixels: three 2x poolings of 8x8 leave 1x1
RESNET9_SCALE = 0.125  # Page's output scaling of the ResNet9 logits
SIMPLE_CHANNELS = (32, 64, 128)
RESNET9_CHANNELS = (64, 128, 256, 512)  # prep, layer1, layer2, layer3
RESNET20_CHANNELS = (16, 32, 64)
RESNET20_BLOCKS = 3  # basic blocks per stage: depth 6 * 3 + 2 = 20


@dataclass(frozen=True)
class CNNConfig:
    """One network of a family: its width multiplier, input channels, classes and (simple only) dropout."""

    family: str = "simple"  # one of FAMILIES
    width: float = 1.0  # channel multiplier, 0.125..4 (channels rounded, at least MIN_CHANNELS)
    in_channels: int = 3  # 1 for grey images, 3 for colour
    classes: int = 10
    dropout: float = 0.25  # probability of dropping an activation after each block of the simple CNN; 0..0.9

    def __post_init__(self) -> None:
        check_choice("model family", self.family, FAMILIES)
        check_range("width multiplier", self.width, *WIDTH_RANGE)
        check_range("input channels", self.in_channels, 1, 16, integer=True)
        check_range("classes", self.classes, 2, 1000, integer=True)
        check_range("dropout", self.dropout, 0.0, 0.9)


def channels(base: int, width: float) -> int:
    """base x width, rounded, at least MIN_CHANNELS."""
    return max(MIN_CHANNELS, int(round(base * width)))


class Dropout(nn.Dropout):
    """nn.Dropout whose masks come from `self.generator` (on the activations' device) when a trainer sets one,
    so a run's draws are its own; without one it is nn.Dropout (torch's global generator)."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        # drawn in the logical (contiguous) order, so a channels_last activation gets the same mask
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep.div_(1.0 - self.p)


class Scale(nn.Module):
    """Multiply by a constant (ResNet9's logit scaling)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """conv3x3 (no bias: BN has one) - BN - ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _simple(cfg: CNNConfig) -> nn.Module:
    layers: list[nn.Module] = []
    c_in = cfg.in_channels
    for base in SIMPLE_CHANNELS:
        c = channels(base, cfg.width)
        layers += [conv_bn(c_in, c), conv_bn(c, c), nn.MaxPool2d(2), Dropout(cfg.dropout)]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, cfg.classes)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + f(x)."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


def _resnet9(cfg: CNNConfig) -> nn.Module:
    prep, c1, c2, c3 = (channels(c, cfg.width) for c in RESNET9_CHANNELS)
    return nn.Sequential(
        conv_bn(cfg.in_channels, prep),
        conv_bn(prep, c1), nn.MaxPool2d(2), Residual(nn.Sequential(conv_bn(c1, c1), conv_bn(c1, c1))),
        conv_bn(c1, c2), nn.MaxPool2d(2),
        conv_bn(c2, c3), nn.MaxPool2d(2), Residual(nn.Sequential(conv_bn(c3, c3), conv_bn(c3, c3))),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c3, cfg.classes, bias=False), Scale(RESNET9_SCALE))


class BasicBlock(nn.Module):
    """He et al.'s CIFAR basic block with an option-A shortcut: subsample by the stride, zero-pad the new channels."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))  # zeros on the channel dim
        return F.relu(out + short)


def _resnet20(cfg: CNNConfig) -> nn.Module:
    widths = [channels(c, cfg.width) for c in RESNET20_CHANNELS]
    layers: list[nn.Module] = [conv_bn(cfg.in_channels, widths[0])]
    c_in = widths[0]
    for stage, c in enumerate(widths):
        for block in range(RESNET20_BLOCKS):
            layers.append(BasicBlock(c_in, c, 2 if stage > 0 and block == 0 else 1))
            c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, cfg.classes)]
    net = nn.Sequential(*layers)
    for m in net.modules():  # He init, as the paper (and torchvision's ResNets) use
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


BUILDERS = {"simple": _simple, "resnet9": _resnet9, "resnet20": _resnet20}


def build_cnn(cfg: CNNConfig) -> nn.Module:
    """The network of cfg, (N, in_channels, H, W) float with H, W >= 8 -> (N, classes) logits. Seed around it
    (explorer.core.seeding.seeded) for reproducible initial weights."""
    return BUILDERS[cfg.family](cfg)


def param_count(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_image(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """FLOPs of one forward pass on one (C, H, W) image: multiply-adds x 2 of every Conv2d and Linear layer,
    counted with forward hooks on a zero image (other layers are not counted). The model's mode is restored."""
    total = 0

    def conv_hook(m: nn.Conv2d, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * (out[0].numel() // m.out_features) * m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    p = next(model.parameters(), None)
    x = torch.zeros((1, *image_shape), device=p.device if p is not None else None,
                    dtype=p.dtype if p is not None else torch.float32)
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)
