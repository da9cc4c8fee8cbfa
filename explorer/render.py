"""Small, fast PNG renderings (PIL + numpy) for live views: a heatmap image is a few KB, not 4,096 marks."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

# TensorFlow Playground's colours: orange for negative / class 0, blue for positive / class 1.
NEG = np.array([245, 147, 34], dtype=np.float32)
POS = np.array([8, 119, 189], dtype=np.float32)
MID = np.array([232, 234, 235], dtype=np.float32)
CLASS_COLOURS = np.array([[245, 147, 34], [8, 119, 189], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                          [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
                         dtype=np.float32)


def diverging(v: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] -> RGB uint8 (..., 3): orange through light grey to blue."""
    v = np.clip(np.nan_to_num(v), -1.0, 1.0)[..., None]
    rgb = np.where(v < 0, MID + (NEG - MID) * -v, MID + (POS - MID) * v)
    return rgb.astype(np.uint8)


def categorical(cls: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """Class index + confidence in [0, 1] -> RGB uint8, paler where the network is unsure."""
    base = CLASS_COLOURS[cls % len(CLASS_COLOURS)]
    return (MID + (base - MID) * np.clip(conf, 0, 1)[..., None]).astype(np.uint8)


def png_bytes(img: Image.Image, colours: int | None = 64) -> bytes:
    """Encode as PNG; a palette of `colours` keeps smooth heatmaps small (a few KB)."""
    if colours:
        img = img.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def field_rgb(values: np.ndarray, *, task: str, discretize: bool = False) -> np.ndarray:
    """Network output on the grid -> colours. values: (G, G) in [-1, 1], or (G, G, K) class probabilities."""
    if values.ndim == 3:
        cls = values.argmax(-1)
        conf = values.max(-1)
        k = values.shape[-1]
        conf = (conf - 1.0 / k) / (1.0 - 1.0 / k)
        return categorical(cls, np.ones_like(conf) if discretize else conf)
    v = np.sign(values) if discretize else values
    return diverging(v)


def boundary_png(values: np.ndarray, *, task: str, extent: float, size: int = 320, discretize: bool = False,
                 train: tuple[np.ndarray, np.ndarray] | None = None,
                 test: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
    """The decision-boundary heatmap with train points (white rim) and test points (black rim) on it.

    values is indexed [row, col] with row 0 at the top (x2 = +extent) and col 0 at x1 = -extent.
    """
    rgb = field_rgb(values, task=task, discretize=discretize)
    img = Image.fromarray(rgb, "RGB").resize((size, size), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for pts, rim in ((train, (255, 255, 255)), (test, (0, 0, 0))):
        if pts is None:
            continue
        xy, y = pts
        px = (xy[:, 0] + extent) / (2 * extent) * size
        py = (extent - xy[:, 1]) / (2 * extent) * size
        if task == "classification":
            fill = CLASS_COLOURS[y.astype(int) % len(CLASS_COLOURS)].astype(int)
        else:
            fill = diverging(y.astype(np.float32)).astype(int)
        r = 3 if size >= 240 else 2
        for x0, y0, c in zip(px, py, fill):
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(c), outline=rim)
    return png_bytes(img)


def tiles_png(tiles: list[list[np.ndarray]], *, tile: int = 36, gap: int = 4, labels: bool = True) -> bytes:
    """Columns of small heatmaps (one column per layer, one tile per neuron), values in [-1, 1]."""
    cols = len(tiles)
    rows = max((len(c) for c in tiles), default=1)
    w = cols * (tile + gap) + gap
    h = rows * (tile + gap) + gap
    canvas = Image.new("RGB", (max(w, 1), max(h, 1)), (255, 255, 255))
    for ci, col in enumerate(tiles):
        for ri, vals in enumerate(col):
            t = Image.fromarray(diverging(vals), "RGB").resize((tile, tile), Image.Resampling.BILINEAR)
            canvas.paste(t, (gap + ci * (tile + gap), gap + ri * (tile + gap)))
    return png_bytes(canvas)


def matrix_png(mats: list[np.ndarray], *, cell: int = 6, gap: int = 8) -> bytes:
    """Weight matrices side by side as heatmaps (blue positive, orange negative), each scaled to its max."""
    sizes = [(m.shape[1] * cell, m.shape[0] * cell) for m in mats]
    w = sum(s[0] for s in sizes) + gap * (len(mats) + 1)
    h = max((s[1] for s in sizes), default=1) + 2 * gap
    canvas = Image.new("RGB", (max(w, 1), max(h, 1)), (255, 255, 255))
    x = gap
    for m, (mw, mh) in zip(mats, sizes):
        scale = float(np.abs(m).max()) or 1.0
        t = Image.fromarray(diverging(m / scale), "RGB").resize((mw, mh), Image.Resampling.NEAREST)
        canvas.paste(t, (x, gap))
        x += mw + gap
    return png_bytes(canvas)
