"""Double-descent model families, built "grouped": K independent models of one shape as one module.

K models that share an input become one network whose every layer holds K blocks of weights:
a linear layer is a batched matmul over (K, in, out) weights, a convolution is a grouped
convolution (groups=K) over K*C channels, a batch norm over K*C channels normalises each model's
channels separately. The loss is the sum of the K per-model mean losses, so each model's gradient
is exactly its own, and element-wise optimizers (SGD, momentum, Adam) applied to the stacked
tensors equal K independent optimizers. `unstack(state, K, k)` gives model k's weights under the
names and shapes of the K=1 module, so a checkpoint loads into `build(family, width, 1, ...)`.

Families: the MNIST-1D MLP (in-h-h-out, ReLU), Nakkiran et al.'s 5-layer CNN with widths
[k, 2k, 4k, 8k], and the pre-activation ResNet18 of width k ([k, 2k, 4k, 8k] per stage).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class GroupedLinear(nn.Module):
    """K independent linear layers: (K, B, in) -> (K, B, out), nn.Linear's default init per model."""

    def __init__(self, k_models: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(k_models, in_dim, out_dim).uniform_(-bound, bound))  # (K, in, out)
        self.bias = nn.Parameter(torch.empty(k_models, 1, out_dim).uniform_(-bound, bound))  # (K, 1, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, B, in) or shared (B, in) -> (K, B, out)."""
        if x.dim() == 2:
            x = x.expand(self.weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)


class GroupedMLP(nn.Module):
    """K MNIST-1D-style MLPs in -> width -> width -> out with ReLU; logits (K, B, out)."""

    def __init__(self, width: int, k_models: int, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        in_dim = math.prod(in_shape)
        self.k = k_models
        self.layers = nn.ModuleList([GroupedLinear(k_models, in_dim, width), GroupedLinear(k_models, width, width),
                                     GroupedLinear(k_models, width, num_classes)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) shared by all models -> logits (K, B, classes)."""
        a = x.reshape(len(x), -1)
        for i, lay in enumerate(self.layers):
            a = lay(a)
            if i < len(self.layers) - 1:
                a = F.relu(a)
        return a


def _gconv(k: int, cin: int, cout: int, kernel: int = 3, stride: int = 1, shared_in: bool = False) -> nn.Conv2d:
    """K convolutions cin->cout as one grouped conv; `shared_in`: all K read the same cin channels."""
    pad = kernel // 2
    if shared_in:
        return nn.Conv2d(cin, k * cout, kernel, stride, pad, bias=True)
    return nn.Conv2d(k * cin, k * cout, kernel, stride, pad, bias=True, groups=k)


class GroupedCNN5(nn.Module):
    """K copies of Nakkiran et al.'s 5-layer CNN: conv widths [c, 2c, 4c, 8c], BN, ReLU, max-pools, linear."""

    def __init__(self, width: int, k_models: int, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        c, k = width, k_models
        self.k, self.num_classes = k, num_classes
        chans = [c, 2 * c, 4 * c, 8 * c]
        layers: list[nn.Module] = []
        cin = in_shape[0]
        for i, cout in enumerate(chans):
            layers += [_gconv(k, cin, cout, shared_in=i == 0), nn.BatchNorm2d(k * cout), nn.ReLU()]
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        # Nakkiran's MaxPool2d(4) on the 4x4 map of a 32x32 input; adaptive so 28x28 inputs work too.
        layers.append(nn.AdaptiveMaxPool2d(1))
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(k * cin, k * num_classes, 1, groups=k)  # K linear layers 8c -> classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) shared -> logits (K, B, classes)."""
        z = self.head(self.features(x))  # (B, K*classes, 1, 1)
        return z.reshape(len(x), self.k, self.num_classes).transpose(0, 1)


class _GroupedPreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016) for K models: BN-ReLU-conv-BN-ReLU-conv + shortcut."""

    def __init__(self, k: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(k * cin)
        self.conv1 = nn.Conv2d(k * cin, k * cout, 3, stride, 1, bias=False, groups=k)
        self.bn2 = nn.BatchNorm2d(k * cout)
        self.conv2 = nn.Conv2d(k * cout, k * cout, 3, 1, 1, bias=False, groups=k)
        self.shortcut = (nn.Conv2d(k * cin, k * cout, 1, stride, bias=False, groups=k)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K*cin, H, W) -> (B, K*cout, H/stride, W/stride)."""
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class GroupedPreActResNet18(nn.Module):
    """K pre-activation ResNet18s of width k (stages [k, 2k, 4k, 8k]; k=64 is the standard ResNet18)."""

    def __init__(self, width: int, k_models: int, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        k, c = k_models, width
        self.k, self.num_classes = k, num_classes
        self.stem = nn.Conv2d(in_shape[0], k * c, 3, 1, 1, bias=False)  # shared input, K*c filters
        blocks, cin = [], c
        for stage, cout in enumerate([c, 2 * c, 4 * c, 8 * c]):
            for b in range(2):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(_GroupedPreActBlock(k, cin, cout, stride))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(k * cin)
        self.head = nn.Conv2d(k * cin, k * num_classes, 1, groups=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) shared -> logits (K, B, classes)."""
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        z = self.head(F.adaptive_avg_pool2d(out, 1))  # (B, K*classes, 1, 1)
        return z.reshape(len(x), self.k, self.num_classes).transpose(0, 1)


Builder = Callable[[int, int, tuple[int, ...], int], nn.Module]
# family -> (builder(width, k_models, in_shape, num_classes), parameter count of ONE model)
MODELS: dict[str, Builder] = {
    "mlp": GroupedMLP,
    "cnn5": GroupedCNN5,
    "resnet18": GroupedPreActResNet18,
}


def build(family: str, width: int, k_models: int, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A grouped model of K copies; K=1 is the ordinary single model."""
    return MODELS[family](width, k_models, tuple(in_shape), num_classes)


@functools.lru_cache(maxsize=1024)
def param_count(family: str, width: int, in_shape: tuple[int, ...], num_classes: int) -> int:
    """Trainable parameters of ONE model of this family and width (built on the meta device, once)."""
    with torch.device("meta"):
        model = build(family, width, 1, in_shape, num_classes)
    return sum(p.numel() for p in model.parameters())


def he_uniform_(model: nn.Module) -> nn.Module:
    """He/Kaiming-uniform weights, U(+-sqrt(6 / fan_in)), and zero biases for every convolution and linear layer
    of a K=1 model (the MNIST-1D notebook's init); batch norms keep theirs. Draws from torch's global generator."""
    for m in model.modules():
        if isinstance(m, GroupedLinear):  # (K, in, out): fan_in is dim 1
            bound = math.sqrt(6.0 / m.weight.shape[1])
            nn.init.uniform_(m.weight, -bound, bound)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):  # fan_in = in / groups x kernel area
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


def unstack(state: dict[str, torch.Tensor], k_models: int, k: int) -> dict[str, torch.Tensor]:
    """Model k's tensors from a grouped state dict: every stacked tensor's first dim is K blocks."""
    out = {}
    for name, t in state.items():
        out[name] = t.clone() if t.dim() == 0 else t.chunk(k_models, 0)[k].clone()
    return out


def restack(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Inverse of unstack: K single-model state dicts -> one grouped state dict."""
    out = {}
    for name in states[0]:
        ts = [s[name] for s in states]
        out[name] = ts[0].clone() if ts[0].dim() == 0 else torch.cat(ts, 0)
    return out
