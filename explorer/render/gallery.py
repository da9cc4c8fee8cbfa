"""Pictures of examples: image grids, 1-D signals drawn as small line images, data-URI thumbnails."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

SIGNAL_HEIGHT = 24  # pixels of a 1-D signal's picture


def signal_image(signal: torch.Tensor, height: int = SIGNAL_HEIGHT) -> np.ndarray:
    """A 1-D signal (L,) drawn as a dark line on white: uint8 (height, 2L)."""
    v = signal.float().repeat_interleave(2).numpy()
    lo, hi = float(v.min()), float(v.max())
    rows = np.rint((hi - v) / max(hi - lo, 1e-9) * (height - 1)).astype(int)  # row 0 is the top
    img = np.full((height, len(v)), 255, np.uint8)
    for col in range(len(v)):
        a, b = sorted((rows[col], rows[col - 1] if col else rows[col]))
        img[a:b + 1, col] = 40
    return img


def to_hwc(x: torch.Tensor) -> np.ndarray:
    """One example as a uint8 picture: (H, W) grey or (H, W, 3) colour."""
    if x.dim() == 1:
        return signal_image(x)
    arr = x.permute(1, 2, 0).numpy()  # (H, W, C)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def grid(x: torch.Tensor, ncols: int, scale: int = 1, gap: int = 2) -> np.ndarray:
    """Examples (N, ...) tiled row by row into one uint8 RGB picture."""
    tiles = [to_hwc(e) for e in x]
    h, w = tiles[0].shape[:2]
    nrows = max(1, -(-len(tiles) // ncols))
    out = np.full((nrows * (h + gap) - gap, ncols * (w + gap) - gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = t[..., None] if t.ndim == 2 else t
    if scale > 1:
        out = out.repeat(scale, 0).repeat(scale, 1)
    return out


def png(arr: np.ndarray) -> bytes:
    """PNG bytes of a uint8 picture."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def data_uri(x: torch.Tensor, size: int = 64) -> str:
    """A small thumbnail of one example as a data: URI (for chart tooltips), enlarged nearest-neighbour."""
    img = Image.fromarray(to_hwc(x))
    scale = max(1, size // max(img.size))
    img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    if img.mode == "RGB":  # colour photos (CIFAR-10): JPEG is about 40% smaller than PNG, so every point fits
        img.save(buf, format="JPEG", quality=90)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    img.save(buf, format="PNG")  # grey images and signal lines: exact, and small as PNG
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
