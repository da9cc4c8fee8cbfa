"""Small, fast PNG renderings (PIL + numpy) for live views: a heatmap image is a few KB, not 4,096 marks.

Images are built directly in palette ("P") mode from a fixed colour table, so encoding needs no colour
quantisation: a 320x320 boundary frame renders in a few milliseconds and compresses to 10-20 KB.
"""

from __future__ import annotations

import base64
import functools
import io
from html import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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
NO_DOT = 255  # unused palette slot: "no point here" in a layer of data points


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


@functools.lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font at `px` pixels (no system font needed)."""
    return ImageFont.load_default(size=px)


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
                 test: tuple[np.ndarray, np.ndarray] | None = None, axes: bool = False,
                 font_px: int = 13) -> bytes:
    """The decision-boundary heatmap with train points (white rim) and test points (black rim) on it.

    With `axes`, the plot (still `size` pixels square) gets x1 and x2 axes with tick values and a colour bar.
    """
    idx = field_index(values, size, discretize)
    for pts, rim in ((train, WHITE), (test, BLACK)):
        if pts is not None:
            where, colours = _dots(np.ascontiguousarray(pts[0], dtype=np.float64).tobytes(),
                                   np.ascontiguousarray(pts[1]).astype(np.float64).tobytes(), task, extent, size, rim)
            idx.flat[where] = colours
    plot = Image.fromarray(idx, "P")
    if not axes:
        return _png(plot)
    return _png(_with_axes(plot, values, extent, font_px))


@functools.lru_cache(maxsize=16)
def _dots(xy: bytes, labels: bytes, task: str, extent: float, size: int, rim: int) -> tuple[np.ndarray, np.ndarray]:
    """The data points as (flat pixel indices, palette indices), drawn once per point set and size: the points do
    not move while a network trains, so a live frame only pastes them (arrays passed as bytes to be hashable)."""
    pts = np.frombuffer(xy, dtype=np.float64).reshape(-1, 2)
    y = np.frombuffer(labels, dtype=np.float64)
    layer = Image.new("P", (size, size), NO_DOT)
    draw = ImageDraw.Draw(layer)
    r = 3 if size >= 240 else 2
    px = (pts[:, 0] + extent) / (2 * extent) * size
    py = (extent - pts[:, 1]) / (2 * extent) * size
    if task == "classification":
        fill = CLASS_SOLID + y.astype(np.int64) % len(CLASS_COLOURS)
    else:
        fill = diverging_index(y.astype(np.float32))
    for x0, y0, c in zip(px.tolist(), py.tolist(), fill.tolist()):
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=int(c), outline=rim)
    arr = np.asarray(layer).reshape(-1)
    where = np.flatnonzero(arr != NO_DOT)
    return where, arr[where]


def _with_axes(plot: Image.Image, values: np.ndarray, extent: float, font_px: int) -> Image.Image:
    """Frame a square heatmap with x1/x2 ticks and a colour bar (diverging scale, or one swatch per class)."""
    size, font = plot.width, _font(font_px)
    left, bottom, top = int(font_px * 3.2), int(font_px * 2.9), font_px
    bar_w, bar_gap = max(font_px, 12), font_px
    right = bar_gap + bar_w + int(font_px * 5.5)
    img = Image.new("P", (left + size + right, top + size + bottom), WHITE)
    img.paste(plot, (left, top))
    draw = ImageDraw.Draw(img)
    draw.rectangle((left - 1, top - 1, left + size, top + size), outline=GREY)
    ticks = np.linspace(-extent, extent, 5)
    for t in ticks.tolist():
        x = left + (t + extent) / (2 * extent) * size
        y = top + (extent - t) / (2 * extent) * size
        label = f"{t:g}"
        draw.line((x, top + size, x, top + size + 4), fill=BLACK)
        draw.text((x, top + size + 5), label, fill=BLACK, font=font, anchor="ma")
        draw.line((left - 6, y, left - 2, y), fill=BLACK)
        draw.text((left - 7, y), label, fill=BLACK, font=font, anchor="rm")
    draw.text((left + size / 2, top + size + 5 + font_px * 1.2), "x1", fill=BLACK, font=font, anchor="ma")
    draw.text((font_px * 0.2, top + size / 2), "x2", fill=BLACK, font=font, anchor="lm")
    bx = left + size + bar_gap
    if values.ndim == 2:
        bar = diverging_index(np.linspace(1, -1, size, dtype=np.float32))[:, None].repeat(bar_w, 1)
        img.paste(Image.fromarray(bar, "P"), (bx, top))
        for v in (1.0, 0.5, 0.0, -0.5, -1.0):
            y = top + (1 - v) / 2 * (size - 1)
            draw.line((bx + bar_w, y, bx + bar_w + 4, y), fill=BLACK)
            draw.text((bx + bar_w + 6, y), f"{v:g}", fill=BLACK, font=font, anchor="lm")
    else:
        k = values.shape[-1]
        cell = min(size // max(k, 1), font_px * 2)
        for c in range(k):
            y0 = top + c * cell
            draw.rectangle((bx, y0, bx + bar_w, y0 + cell - 3), fill=CLASS_SOLID + c % len(CLASS_COLOURS))
            draw.text((bx + bar_w + 6, y0 + cell / 2 - 1), f"class {c}", fill=BLACK, font=font, anchor="lm")
    return img


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
               y_label: str = "loss", font_px: int = 13) -> bytes:
    """Line plot of a few named series (x, y) with axes, ticks and a legend; fast enough for every frame."""
    img = Image.new("P", (width, height), WHITE)
    draw = ImageDraw.Draw(img)
    font = _font(font_px)
    left, right, top, bottom = int(font_px * 4), font_px, int(font_px * 2.6), int(font_px * 3)
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
        draw.line((left - 4, y, left, y), fill=BLACK)
        draw.text((left - 6, y), f"{frac * y_max:.3g}", fill=BLACK, font=font, anchor="rm")
        x = left + frac * pw
        draw.line((x, top + ph, x, top + ph + 4), fill=BLACK)
        anchor = "la" if frac == 0 else "ra" if frac == 1 else "ma"
        draw.text((x, top + ph + 5), f"{frac * x_max:.0f}", fill=BLACK, font=font, anchor=anchor)
    draw.text((left + pw / 2, height - 2), "epoch", fill=BLACK, font=font, anchor="md")
    draw.text((2, top - font_px * 0.9), y_label, fill=BLACK, font=font, anchor="ld")
    colours = [CLASS_SOLID, CLASS_SOLID + 1, CLASS_SOLID + 2, CLASS_SOLID + 3]
    for i, (name, (xs, ys)) in enumerate(series.items()):
        if not xs:
            continue
        step = max(1, len(xs) // pw)
        px = left + np.asarray(xs[::step], dtype=np.float64) / x_max * pw
        py = top + ph - np.clip(np.nan_to_num(np.asarray(ys[::step], dtype=np.float64), nan=y_max), 0, y_max) / y_max * ph
        colour = colours[i % len(colours)]
        draw.line(list(zip(px.tolist(), py.tolist())), fill=colour, width=max(2, font_px // 6))
    # the legend above the plot, right-aligned, so no curve runs under its text
    lx = left + pw
    for i, name in reversed(list(enumerate(series))):
        colour = colours[i % len(colours)]
        lx -= draw.textlength(name, font=font)
        draw.text((lx, top - font_px * 0.9), name, fill=BLACK, font=font, anchor="ld")
        ly = top - font_px * 1.3
        draw.line((lx - font_px * 2, ly, lx - font_px * 0.4, ly), fill=colour, width=3)
        lx -= font_px * 3.5
    return _png(img)


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def _svg_text(text: str) -> str:
    """Text for an SVG shown through Markdown: HTML-escaped, and "*" or "_" never read as emphasis."""
    return escape(text).replace("*", "&#42;").replace("_", "&#95;")


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI, which travels inside the message that shows it (no separate request to fail)."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _tile_uri(vals: np.ndarray, tile: int) -> str:
    """A heatmap tile as a data URI, with only the diverging scale's palette entries (a fraction of the bytes)."""
    img = Image.fromarray(diverging_index(_upsample(vals, (tile, tile))), "P")
    img.putpalette(PALETTE[:LEVELS * 3])
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return data_uri(buf.getvalue())


def network_svg(inputs: list[tuple[str, np.ndarray]], neurons: list[list[np.ndarray]], weights: list[np.ndarray],
                output: np.ndarray, *, tile: int = 40, width: int = 720, font_px: int = 13) -> str:
    """TensorFlow Playground's network view as SVG: a thumbnail per input feature, hidden neuron and the output
    (what each computes over the plane), and a line per weight coloured by sign and sized by magnitude; hovering a
    line shows its value (an SVG <title>).

    inputs: (name, (T, T) in [-1, 1]) per input feature; neurons: per hidden layer the shown neurons' tiles;
    weights: per layer (out, in); output: the network's output over the plane, (G, G) (one tile; with two logits
    the lines into it show their weights' difference) or (G, G, K) class probabilities (a tile per class).
    """
    out_tiles = [output] if output.ndim == 2 else [output[..., k] * 2 - 1 for k in range(output.shape[-1])]
    weights = list(weights)
    if output.ndim == 2 and weights and weights[-1].shape[0] == 2:
        # two classes drawn as one output (2p - 1): only the difference of the two logits' weights matters
        weights[-1] = weights[-1][1:] - weights[-1][:1]
    columns = [[vals for _, vals in inputs], *neurons, out_tiles]
    n_rows = max(len(c) for c in columns)
    gap_y = tile // 3
    label_w = font_px * 4
    height = n_rows * (tile + gap_y) + gap_y + font_px * 2
    step_x = (width - label_w - tile) / max(len(columns) - 1, 1)

    def pos(ci: int, ri: int) -> tuple[float, float]:
        col_h = len(columns[ci]) * (tile + gap_y) - gap_y
        y0 = font_px * 2 + (n_rows * (tile + gap_y) - gap_y - col_h) / 2
        return label_w + ci * step_x, y0 + ri * (tile + gap_y)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{font_px}" '
             f'style="max-width:100%;height:auto">']
    heads = ["inputs", *[f"layer {i + 1}" for i in range(len(neurons))], "output"]
    for ci, head in enumerate(heads):
        x, _ = pos(ci, 0)
        parts.append(f'<text x="{x + tile / 2:.1f}" y="{font_px * 1.2:.1f}" text-anchor="middle">'
                     f'{_svg_text(head)}</text>')
    biggest = max((float(np.abs(w).max()) for w in weights if w.size), default=1.0) or 1.0
    for li, w in enumerate(weights):
        shown_out, shown_in = len(columns[li + 1]), len(columns[li])
        for o in range(min(shown_out, w.shape[0])):
            x1, y1 = pos(li + 1, o)
            for i in range(min(shown_in, w.shape[1])):
                x0, y0 = pos(li, i)
                v = float(w[o, i])
                colour = _hex(POS if v >= 0 else NEG)
                stroke = 0.5 + 5.5 * min(abs(v) / biggest, 1.0)
                parts.append(f'<line x1="{x0 + tile:.1f}" y1="{y0 + tile / 2:.1f}" x2="{x1:.1f}" '
                             f'y2="{y1 + tile / 2:.1f}" stroke="{colour}" stroke-width="{stroke:.2f}" '
                             f'stroke-opacity="0.75"><title>weight {v:+.4f} (layer {li + 1}, '
                             f'from {i + 1} to {o + 1})</title></line>')
    for ci, col in enumerate(columns):
        for ri, vals in enumerate(col):
            x, y = pos(ci, ri)
            parts.append(f'<image x="{x:.1f}" y="{y:.1f}" width="{tile}" height="{tile}" '
                         f'href="{_tile_uri(vals, tile)}"/>')
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{tile}" height="{tile}" fill="none" '
                         f'stroke="#888"/>')
            if ci == 0:
                parts.append(f'<text x="{x - 4:.1f}" y="{y + tile / 2 + font_px / 3:.1f}" '
                             f'text-anchor="end">{_svg_text(inputs[ri][0])}</text>')
    parts.append("</svg>")
    return "".join(parts)
