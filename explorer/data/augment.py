"""Data augmentation as batched tensor ops on the device: flips, translations, rotations + zooms, cutout.

A per-image Python transform (torchvision's PIL pipeline) costs more than a small network's whole step; these ops
treat the batch as one tensor (airbench's way): a flip is one `where`, a translation one reflect-pad and two
gathers, rotation and zoom together one `affine_grid` + `grid_sample` for the whole batch, cutout one mask.

`augment(x, cfg, generator)` takes float images (B, C, H, W) on any device, usually already normalised, and returns
a tensor of the same shape, dtype and device; labels are untouched (the caller keeps them). Every random draw (B
numbers per op) comes from `generator`, drawn on the generator's own device and moved to x's: a CPU generator
(what explorer.train.image_fit uses) gives the same augmentations on every device for one seed. Padding and the
corners a rotation uncovers are filled with 0, which for normalised inputs is the mean pixel; cutout writes 0 too.
Ops run in a fixed order: flip, translate, rotate + zoom, cutout; an op whose setting is 0 is skipped, so
translate 0 and rotate 0 are exactly the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from explorer.core.config import ConfigError, check_choice, check_range, shown

PAD_MODES = ("reflect", "zeros")  # how a translation fills the pixels it shifts in
MAX_TRANSLATE = 16  # pixels
MAX_ROTATE = 180.0  # degrees
MAX_ZOOM = 0.5  # fraction: scale in [1 - zoom, 1 + zoom]
MAX_CUTOUT = 64  # pixels (side of the square)


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations a training run draws per image, and how strong; all off by default."""

    flip: bool = False  # random horizontal flip with probability 1/2
    translate: int = 0  # max shift in pixels, each axis (pad by this much, then a random crop of the original size)
    rotate: float = 0.0  # max rotation in degrees, uniform in [-rotate, rotate]
    zoom: float = 0.0  # max zoom as a fraction: scale uniform in [1 - zoom, 1 + zoom]
    cutout: int = 0  # side in pixels of a square zeroed at a random place in each image (0: off)
    pad: str = "reflect"  # translation padding: "reflect" (falls back to zeros when the shift >= the image side)

    def __post_init__(self) -> None:
        if not isinstance(self.flip, bool):
            raise ConfigError(f"flip must be true or false, got {shown(self.flip)}")
        check_range("translation (pixels)", self.translate, 0, MAX_TRANSLATE, integer=True)
        check_range("rotation (degrees)", self.rotate, 0.0, MAX_ROTATE)
        check_range("zoom (fraction)", self.zoom, 0.0, MAX_ZOOM)
        check_range("cutout side (pixels)", self.cutout, 0, MAX_CUTOUT, integer=True)
        check_choice("translation padding", self.pad, PAD_MODES)

    @property
    def active(self) -> bool:
        """True when any augmentation is on."""
        return bool(self.flip or self.translate or self.rotate or self.zoom or self.cutout)

    @property
    def label(self) -> str:
        """'flip + translate 4 px + cutout 8', or 'none'."""
        parts = []
        if self.flip:
            parts.append("flip")
        if self.translate:
            parts.append(f"translate {self.translate} px")
        if self.rotate:
            parts.append(f"rotate {self.rotate:g}°")
        if self.zoom:
            parts.append(f"zoom {self.zoom:g}")
        if self.cutout:
            parts.append(f"cutout {self.cutout}")
        return " + ".join(parts) or "none"


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n float32 draws in [lo, hi) from `generator` (on its own device), moved to `device`."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return (u * (hi - lo) + lo).to(device, non_blocking=True)


def _ints(n: int, high: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n int64 draws in [0, high) from `generator`, moved to `device`."""
    return torch.randint(high, (n,), generator=generator, device=generator.device).to(device, non_blocking=True)


def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    mask = _ints(len(x), 2, generator, x.device).bool().view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(-1), x)


def translate(x: torch.Tensor, pixels: int, generator: torch.Generator, pad: str = "reflect") -> torch.Tensor:
    """Each image shifted by a random whole number of pixels in [-pixels, pixels] on each axis: pad by `pixels`,
    then crop the original size at a random offset (two gathers for the batch)."""
    b, c, h, w = x.shape
    mode = "reflect" if pad == "reflect" and pixels < min(h, w) else "constant"  # reflect needs pad < side
    padded = F.pad(x, (pixels,) * 4, mode=mode)  # (B, C, H + 2p, W + 2p)
    dy = _ints(b, 2 * pixels + 1, generator, x.device)
    dx = _ints(b, 2 * pixels + 1, generator, x.device)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pixels)
    out = padded.gather(2, rows)  # (B, C, H, W + 2p)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return out.gather(3, cols)


def rotate_zoom(x: torch.Tensor, degrees: float, zoom: float, generator: torch.Generator) -> torch.Tensor:
    """Each image rotated by an angle uniform in [-degrees, degrees] and scaled by a factor uniform in
    [1 - zoom, 1 + zoom] about its centre: one affine grid and one bilinear grid_sample for the batch."""
    b = len(x)
    angle = _uniform(b, -degrees, degrees, generator, x.device) * (math.pi / 180.0)
    scale = _uniform(b, 1.0 - zoom, 1.0 + zoom, generator, x.device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # the grid maps output to input: inverse scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """A side x side square (cut to the image size) set to 0 in each image, wholly inside it, at a random place."""
    b, _, h, w = x.shape
    sh, sw = min(side, h), min(side, w)
    top = _ints(b, h - sh + 1, generator, x.device).view(b, 1)
    left = _ints(b, w - sw + 1, generator, x.device).view(b, 1)
    r = torch.arange(h, device=x.device).view(1, h)
    col = torch.arange(w, device=x.device).view(1, w)
    in_rows = (r >= top) & (r < top + sh)  # (B, H)
    in_cols = (col >= left) & (col < left + sw)  # (B, W)
    mask = (in_rows.view(b, 1, h, 1) & in_cols.view(b, 1, 1, w))
    return x.masked_fill(mask, 0.0)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """cfg's augmentations of a float batch (B, C, H, W): same shape, dtype and device; x itself is not changed.
    Draws come from `generator` (cpu or x's device; see the module docstring)."""
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"augment takes a float (B, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
    if cfg.flip:
        x = flip(x, generator)
    if cfg.translate:
        x = translate(x, cfg.translate, generator, cfg.pad)
    if cfg.rotate or cfg.zoom:
        x = rotate_zoom(x, cfg.rotate, cfg.zoom, generator)
    if cfg.cutout:
        x = cutout(x, cfg.cutout, generator)
    return x
