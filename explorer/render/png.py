"""Small, fast PNG renderings (PIL + numpy) for live views: a heatmap image is a few KB, not 4,096 marks.

Images are built directly in palette ("P") mode from a fixed colour table, so encoding needs no colour
quantisation: a 320x320 boundary frame renders in a few milliseconds and compresses to 10-20 KB.
"""

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
LEVELS = 64  # diverging palette entries 0..63
CLASS_LEVELS = 16  # confidence levels per class in the categorical palette
WHITE, BLACK, GREY = 250, 251, 252  # fixed palette slots
CLASS_SOLID = 230  # 230..239: solid class colours for points


def _diverging_table(n: int) -> np.ndarray:
    v = np.linspace(-1, 1, n, dtype=np.float32)[:, None]
    return np.where(v < 0, MID + (NEG - MID) * -v, MID + (POS - MID) * v)


def _palette() -> list[int]:
    pal = np.zeros((256, 3), dtype=np.float32)
    pal[:LEVELS] = _diverging_table(LEVELS)
    conf = np.linspace(0, 1, CLASS_LEVELS, dtype=np.float32)[:, None]
    for k, c in enumerate(CLASS_COLOURS):
        pal[LEVELS + k * CLASS_LEVELS:LEVELS + (k + 1) * CLASS_LEVELS] = MID + (c - MID) * conf
    pal[CLASS_SOLID:CLASS_SOLID + len(CLASS_COLOURS)] = CLASS_COLOURS
    pal[WHITE], pal[BLACK], pal[GREY] = (255, 255, 255), (0, 0, 0), (190, 190, 190)
    return pal.astype(np.uint8).reshape(-1).tolist()


PALETTE = _palette()


def diverging_index(v: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] -> palette indices of the orange-grey-blue scale."""
    v = np.clip(np.nan_to_num(v), -1.0, 1.0)
    return np.rint((v + 1) * 0.5 * (LEVELS - 1)).astype(np.uint8)


def _upsample(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2D float array (PIL's float mode, fast)."""
    return np.asarray(Image.fromarray(a.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR))


def _png(idx: np.ndarray | Image.Image) -> bytes:
    img = idx if isinstance(idx, Image.Image) else Image.fromarray(idx, "P")
    img.putpalette(PALETTE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def field_index(values: np.ndarray, size: int, discretize: bool = False) -> np.ndarray:
    """Network output on a grid -> (size, size) palette indices.

    values: (G, G) in [-1, 1] (binary classification as 2p-1, or a regression value), or (G, G, K)
    class probabilities; row 0 is the top of the plane.
    """
    if values.ndim == 2:
        v = _upsample(values, (size, size))
        return diverging_index(np.sign(v) if discretize else v)
    k = values.shape[-1]
    probs = np.stack([_upsample(values[..., c], (size, size)) for c in range(k)], -1)
    cls = probs.argmax(-1)
    conf = np.ones(cls.shape) if discretize else (probs.max(-1) - 1.0 / k) / (1.0 - 1.0 / k)
    level = np.rint(np.clip(conf, 0, 1) * (CLASS_LEVELS - 1)).astype(np.int64)
    return (LEVELS + (cls % len(CLASS_COLOURS)) * CLASS_LEVELS + level).astype(np.uint8)


def boundary_png(values: np.ndarray, *, task: str, extent: float, size: int = 320, discretize: bool = False,
                 train: tuple[np.ndarray, np.ndarray] | None = None,
                 test: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
    """The decision-boundary heatmap with train points (white rim) and test points (black rim) on it."""
    img = Image.fromarray(field_index(values, size, discretize), "P")
    draw = ImageDraw.Draw(img)
    r = 3 if size >= 240 else 2
    for pts, rim in ((train, WHITE), (test, BLACK)):
        if pts is None:
            continue
        xy, y = pts
        px = (xy[:, 0] + extent) / (2 * extent) * size
        py = (extent - xy[:, 1]) / (2 * extent) * size
        if task == "classification":
            fill = CLASS_SOLID + y.astype(np.int64) % len(CLASS_COLOURS)
        else:
            fill = diverging_index(y.astype(np.float32))
        for x0, y0, c in zip(px.tolist(), py.tolist(), fill.tolist()):
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=int(c), outline=rim)
    return _png(img)


def tiles_png(tiles: list[list[np.ndarray]], *, tile: int = 36, gap: int = 4) -> bytes:
    """Columns of small heatmaps (one column per layer, one tile per neuron), values in [-1, 1]."""
    cols = max(len(tiles), 1)
    rows = max((len(c) for c in tiles), default=1)
    canvas = np.full((rows * (tile + gap) + gap, cols * (tile + gap) + gap), WHITE, dtype=np.uint8)
    for ci, col in enumerate(tiles):
        for ri, vals in enumerate(col):
            y0, x0 = gap + ri * (tile + gap), gap + ci * (tile + gap)
            canvas[y0:y0 + tile, x0:x0 + tile] = diverging_index(_upsample(vals, (tile, tile)))
    return _png(canvas)


def matrix_png(mats: list[np.ndarray], *, cell: int = 10, gap: int = 8) -> bytes:
    """Weight matrices (out, in) side by side as heatmaps, each scaled to its own largest magnitude."""
    width = sum(m.shape[1] * cell for m in mats) + gap * (len(mats) + 1)
    height = max((m.shape[0] * cell for m in mats), default=1) + 2 * gap
    canvas = np.full((height, max(width, 1)), WHITE, dtype=np.uint8)
    x = gap
    for m in mats:
        scale = float(np.abs(m).max()) or 1.0
        block = np.repeat(np.repeat(diverging_index(m / scale), cell, 0), cell, 1)
        canvas[gap:gap + block.shape[0], x:x + block.shape[1]] = block
        x += block.shape[1] + gap
    return _png(canvas)


def curves_png(series: dict[str, tuple[list[float], list[float]]], *, width: int = 420, height: int = 260,
               y_label: str = "loss") -> bytes:
    """Line plot of a few named series (x, y) with axes, ticks and a legend; fast enough for every frame."""
    img = Image.new("P", (width, height), WHITE)
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 46, 10, 22, 28
    pw, ph = width - left - right, height - top - bottom
    xs_all = [x for xs, _ in series.values() for x in xs]
    ys_all = np.array([y for _, ys in series.values() for y in ys], dtype=np.float64)
    ys_all = ys_all[np.isfinite(ys_all)]
    x_max = max(max(xs_all, default=1), 1)
    y_max = float(np.percentile(ys_all, 99.5)) * 1.05 if len(ys_all) else 1.0
    y_max = y_max if y_max > 0 else 1.0
    draw.rectangle((left, top, left + pw, top + ph), outline=GREY)
    for frac in (0.0, 0.5, 1.0):
        y = top + ph - frac * ph
        draw.line((left - 3, y, left, y), fill=BLACK)
        draw.text((2, y - 6), f"{frac * y_max:.3g}", fill=BLACK)
        x = left + frac * pw
        draw.line((x, top + ph, x, top + ph + 3), fill=BLACK)
        draw.text((x - 10, top + ph + 6), f"{frac * x_max:.0f}", fill=BLACK)
    draw.text((left + pw // 2 - 14, height - 12), "epoch", fill=BLACK)
    draw.text((left, 4), y_label, fill=BLACK)
    colours = [CLASS_SOLID, CLASS_SOLID + 1, CLASS_SOLID + 2, CLASS_SOLID + 3]
    for i, (name, (xs, ys)) in enumerate(series.items()):
        if not xs:
            continue
        step = max(1, len(xs) // pw)
        px = left + np.asarray(xs[::step], dtype=np.float64) / x_max * pw
        py = top + ph - np.clip(np.nan_to_num(np.asarray(ys[::step], dtype=np.float64), nan=y_max), 0, y_max) / y_max * ph
        colour = colours[i % len(colours)]
        draw.line(list(zip(px.tolist(), py.tolist())), fill=colour, width=2)
        draw.text((left + pw - 90, top + 4 + 12 * i), f"-- {name}", fill=colour)
    return _png(img)
