"""Bad input, generated: malformed CSVs, images, zip archives and URL parameters against the app's parsers and pages.

Every case must be answered with a specific message: a refusal (ConfigError / DatasetUnavailable naming the line, the
file or the limit), or, for odd but valid input, what was understood (a CSV's summary, a decoded image's shape); never
an uncaught exception, and on a page never an exception element, a "Traceback", a server path or Markdown/HTML
built from the visitor's text. Memory per case: the peak of Python allocations (tracemalloc) and the growth of the
process's resident high-water mark (VmHWM, reset before each case), so memory that Pillow or zlib allocate counts.

CSV, image and zip cases call the core (explorer.data.toy2d, datasets, uploads) as the pages do; URL cases run each
page (views/<slug>.py) under streamlit.testing.v1.AppTest with bad values for every parameter of its SCHEMA (read
from the file, so new parameters are covered), cancelling the jobs a page starts.

    python -m benchmarks.bad_input                      # every case (the URL cases take a minute or two)
    python -m benchmarks.bad_input --only csv,zip       # some categories
    python -m benchmarks.bad_input --only url --pages data_maps,boundaries   # the URL cases of some pages
    python -m benchmarks.bad_input --sample 5           # every 5th case of each category (CI runs a sample)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ("csv", "image", "zip", "url")
JOB_STOP_S = 30.0  # seconds to wait for a cancelled job of a URL case to stop
MAX_CASE_MB = 300  # a case whose memory grows past this fails: a decoded bomb would take gigabytes
MAX_MESSAGE_CHARS = 700  # a longer message quotes too much of the input: noted ("long"), not failed
EVIL_LINK = "https://evil.example/login"
CLASS_A, CLASS_B = "a", "b"


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: its category, a short name, how to make it (not measured) and what takes it (measured: returns
    the message the visitor gets)."""

    category: str
    name: str
    make: Callable[[], Any]
    run: Callable[[Any], str]
    needle: str = ""  # a refusal's message must contain this (the line, the entry, the limit), when given


def _lazy(data: Any) -> Callable[[], Any]:
    """A maker: the data itself, or a function that builds it (the costly cases are built only when run)."""
    return data if callable(data) else (lambda: data)


@dataclasses.dataclass
class Result:
    """What a case gave: the message, or the failure, and its cost."""

    case: Case
    ok: bool
    message: str
    peak_mb: float  # largest of the Python peak and the resident high-water growth
    seconds: float

    @property
    def long(self) -> bool:
        """The message quotes more than MAX_MESSAGE_CHARS: specific, but it echoes too much of the input."""
        return len(self.message) > MAX_MESSAGE_CHARS


# ---------------------------------------------------------------- memory


def _status_mb(key: str) -> float:
    """A VmRSS/VmHWM figure of this process in MB (0 where /proc is not there)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _reset_high_water() -> None:
    """Reset the resident high-water mark (Linux: writing 5 to clear_refs), so each case measures its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


# ---------------------------------------------------------------- CSV cases


def _csv_body(n: int = 40, labels: Callable[[int], str] = lambda i: str(i % 2), sep: str = ",",
              end: str = "\n") -> str:
    """n lines of x1, x2, label."""
    return end.join(f"{i * 0.37 - 3:.3f}{sep}{(i * 7 % 11) - 5:.2f}{sep}{labels(i)}" for i in range(n)) + end


def csv_cases() -> Iterator[tuple[str, bytes, str]]:
    """(name, bytes, needle) of bad or odd CSVs."""
    from explorer.core import settings

    s = settings.current()
    body, header = _csv_body(), "x1,x2,label\n"
    for enc in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252",
                "shift_jis", "gb18030", "koi8-r", "mac-roman"):
        for head in ("", "größe,höhe,klasse\n", "x1,x2,“label”\n"):
            try:
                yield f"encoding {enc} {head[:5]!r}", (head + body).encode(enc), ""
            except UnicodeEncodeError:
                continue
    yield "utf-8 with a bad byte", header.encode() + b"1,2,\xff\n" + body.encode(), "UTF-8"
    for name, end in (("LF", "\n"), ("CRLF", "\r\n"), ("CR only", "\r"), ("LF CR", "\n\r"), ("form feed", "\f"),
                      ("vertical tab", "\v"), ("unicode line sep", "\u2028"), ("NEL", "\x85")):
        yield f"line ending {name}", (header + _csv_body(end=end)).encode(), ""
    mixed = header + "".join(ln + ("\r\n", "\r", "\n")[i % 3] for i, ln in enumerate(body.splitlines()))
    yield "mixed line endings", mixed.encode(), ""
    yield "no final newline", (header + body.rstrip("\n")).encode(), ""
    yield "blank and space lines", (header + "\n  \n,,\n" + body.replace("\n", "\n\n")).encode(), ""
    for n in (131_073, 200_000, 1_000_000):
        yield f"field of {n:,} characters", (header + "1,2," + "9" * n + "\n" + body).encode(), "characters"
    yield "field of 131,072 digits", (header + "1," + "1" * 131_064 + ",0\n" + body).encode(), "finite"
    yield "file over the upload limit", lambda: (header + "1,2,0\n" * int(s.max_upload_mb * 2**20 / 6 + 10)).encode(), \
        "MB"
    yield "one row over max_csv_rows", lambda: (header + _csv_body(s.max_csv_rows + 1)).encode(), "points"
    yield "200,000 rows", lambda: (header + "1,2,0\n" * 200_000).encode(), "lines"
    yield "9 rows", (header + _csv_body(9)).encode(), "at least 10"
    yield "header only", header.encode(), "at least 10"
    yield "empty file", b"", "at least 10"
    for cols in (1, 2, 4, 10, 1000):
        yield f"{cols} columns", (header + "\n".join(",".join(["1"] * cols) for _ in range(20))).encode(), "columns"
    yield "ragged rows", (header + body + "1,2\n" + "1,2,3,4\n").encode(), "columns"
    for bad, where in (("nan", "x1"), ("NaN", "x2"), ("inf", "x1"), ("-inf", "x2"), ("Infinity", "x1"),
                       ("1e309", "x2"), ("nan", "label"), ("inf", "label"), ("-inf", "label"), ("1e39", "label"),
                       ("-3.5e38", "label"), ("1e400", "label")):
        row = {"x1": f"{bad},1,0", "x2": f"1,{bad},0", "label": f"1,2,{bad}"}[where]
        yield f"{bad} as {where}", (header + body + row + "\n").encode(), "line 42"
    yield "tiny label 1e-400 (underflows to 0)", (header + _csv_body(labels=lambda i: "1e-400" if i == 3 else
                                                                    str(i % 2))).encode(), ""
    rng = np.random.default_rng(0)
    for seed in range(6):
        yield f"random bytes {seed}", np.random.default_rng(seed).integers(0, 256, 4000, np.uint8).tobytes(), ""
    yield "NUL bytes", (header + "1,2,0\x00\n" + body).encode(), "binary"
    yield "PNG bytes", b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 500, np.uint8).tobytes(), ""
    yield "zip bytes", _zip([("a.csv", (header + body).encode())]), ""
    yield "gzip bytes", zlib.compress((header + body).encode()), ""
    for name, sep in (("semicolon", ";"), ("tab", "\t"), ("space", " "), ("pipe", "|")):
        yield f"{name} separated", (header.replace(",", sep) + _csv_body(sep=sep)).encode(), "columns"
    yield "decimal commas", (header + "\n".join(f"1,5;2,5;{i % 2}" for i in range(20))).encode(), ""
    label_sets = {"-1/1": lambda i: str((-1) ** i), "0..10 (11 classes)": lambda i: str(i % 11),
                  "11 classes as decimals": lambda i: f"{i % 11}.0", "1..10": lambda i: str(i % 10 + 1),
                  "0.5 steps": lambda i: str(i % 4 * 0.5), "all the same": lambda i: "1",
                  "true/false": lambda i: ("true", "false")[i % 2], "cat/dog": lambda i: ("cat", "dog")[i % 2],
                  "1e20 and 2e20": lambda i: ("1e20", "2e20")[i % 2], "-5 and 7": lambda i: ("-5", "7")[i % 2],
                  "0..39 integers": lambda i: str(i), "hex": lambda i: ("0x1", "0x2")[i % 2],
                  "underscores": lambda i: ("1_0", "2_0")[i % 2], "spaces around": lambda i: f"  {i % 2}  ",
                  "quoted": lambda i: f'"{i % 2}"', "unicode digits": lambda i: "١٢"[i % 2]}
    for name, fn in label_sets.items():
        yield f"labels {name}", (header + _csv_body(labels=fn)).encode(), ""
    for name, head in (("numeric 0,1,2", "0,1,2\n"), ("numeric 1,2,3", "1,2,3\n"), ("two headers", header * 2),
                       ("quoted", '"x1","x2","label"\n'), ("markdown", f"[click]({EVIL_LINK}),**b**,<b>l</b>\n"),
                       ("html", "<script>alert(1)</script>,x2,label\n"), ("half numeric", "1,x2,label\n"),
                       ("long header", "x" * 100_000 + ",x2,label\n")):
        yield f"header {name}", (head + body).encode(), ""
    yield "unbalanced quote", (header + '"1,2,0\n' + body).encode(), ""
    yield "markdown in a field", (header + body + f"[re-enter your password]({EVIL_LINK}),2,0\n").encode(), "line 42"
    yield "html in a field", (header + body + "<img src=x onerror=alert(1)>,2,0\n").encode(), "line 42"
    yield "BOM in the middle", (header + body + "\ufeff1,2,0\n").encode(), "line 42"
    yield "20,000 x 100 cells", lambda: ("1," * 99 + "1\n").encode() * 20_000, "columns"


def _run_csv(data: bytes) -> str:
    """The playground's parse of an uploaded CSV: a refusal, or what was understood."""
    from explorer.core.config import ConfigError
    from explorer.data import toy2d

    try:
        pts, _ = toy2d.parse_points_csv(data)
    except ConfigError as err:
        return f"refused: {err}"
    if not pts.summary:
        raise ValueError("accepted without saying what was understood")
    return f"accepted: {pts.summary}"


# ---------------------------------------------------------------- image cases


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, rows: int | None = None, extra: bytes = b"") -> bytes:
    """A real RGB PNG of width x height black pixels (the first `rows` rows of data, all by default), built row by
    row so that a 12000 x 12000 one (432 MB of pixels) is a 1 MB file made in a second without that memory."""
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    comp, row, parts, left = zlib.compressobj(9), b"\x00" * (1 + 3 * width), [], height if rows is None else rows
    block = max(1, 4_000_000 // len(row))
    while left > 0:
        k = min(block, left)
        parts.append(comp.compress(row * k))
        left -= k
    parts.append(comp.flush())
    return head + extra + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b"")


def _pil_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (8, 8), seed: int = 0, **kw) -> bytes:
    """A small real image file written by Pillow."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    if mode in ("I;16", "I", "F"):
        arr = rng.integers(0, 65535, size[::-1]).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
        img = Image.fromarray(arr, mode=mode if mode != "I;16" else None)
    elif mode == "1":
        img = Image.fromarray(rng.integers(0, 2, size[::-1]).astype(bool))
    else:
        arr = rng.integers(0, 256, (*size[::-1], bands), np.uint8)
        img = Image.fromarray(arr[..., 0] if bands == 1 else arr, "L" if bands == 1 else None)
        img = img.convert(mode) if img.mode != mode else img
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def _animated(fmt: str) -> bytes:
    """A three-frame animation (GIF, APNG, WebP) or a three-page TIFF of 8x8 frames."""
    from PIL import Image

    frames = [Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:])
    return out.getvalue()


def _patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    """Bytes with a struct-packed value written over them at offset."""
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) declares width x height."""
    data = _pil_bytes("JPEG")
    sof = data.index(b"\xff\xc0")
    return _patched(data, sof + 5, ">HH", height, width)


def image_cases() -> Iterator[tuple[str, str, bytes, str]]:
    """(name, file suffix, bytes, needle) of bad or odd image files; refusals must name the file."""
    png = _pil_bytes("PNG")
    for cut in (8, 16, 33, 40, 60, len(png) // 2, len(png) - 12, len(png) - 1):
        yield f"PNG cut at {cut} bytes", ".png", png[:cut], "000_test"
    jpg = _pil_bytes("JPEG")
    for cut in (2, 20, 100, len(jpg) // 2, len(jpg) - 2):
        yield f"JPEG cut at {cut} bytes", ".jpg", jpg[:cut], "000_test"
    yield "PNG with a bad CRC", ".png", png[:30] + bytes([png[30] ^ 0xFF]) + png[31:], "000_test"
    yield "empty file", ".png", b"", "000_test"
    for seed in range(4):
        yield f"random bytes {seed}", ".png", np.random.default_rng(seed).integers(0, 256, 600, np.uint8).tobytes(), \
            "000_test"
    yield "12000x12000 PNG of 1 MB", ".png", lambda: png_declaring(12000, 12000), "000_test"
    yield "12000x12000 PNG header, 1 row", ".png", png_declaring(12000, 12000, rows=1), "000_test"
    yield "100000x1 PNG", ".png", png_declaring(100000, 1), "000_test"
    yield "1x100000 PNG", ".png", png_declaring(1, 100000), "000_test"
    yield "513x513 PNG", ".png", png_declaring(513, 513), "000_test"
    yield "600x4 PNG", ".png", png_declaring(600, 4), "000_test"
    yield "0x0 PNG", ".png", png_declaring(0, 0), "000_test"
    yield "65000x65000 JPEG header", ".jpg", _jpeg_declaring(65000, 65000), "000_test"
    yield "30000x30000 JPEG header", ".jpg", _jpeg_declaring(30000, 30000), "000_test"
    gif = _pil_bytes("GIF")
    yield "65535x65535 GIF screen", ".gif", _patched(gif, 6, "<HH", 65535, 65535), "000_test"
    bmp = _pil_bytes("BMP")
    yield "50000x50000 BMP header", ".bmp", _patched(bmp, 18, "<ii", 50000, 50000), "000_test"
    yield "negative-height BMP", ".bmp", _patched(bmp, 22, "<i", -8), ""
    big_text = zlib.compress(bytes(50_000_000), 9)  # a 50 KB zTXt chunk that inflates to 50 MB
    yield "PNG with a zTXt bomb", ".png", png_declaring(8, 8, extra=_png_chunk(b"zTXt", b"c\x00\x00" + big_text)), ""
    yield "PNG with an iCCP bomb", ".png", png_declaring(8, 8, extra=_png_chunk(b"iCCP", b"p\x00\x00" + big_text)), ""
    yield "PNG named .jpg", ".jpg", png, ""
    yield "JPEG named .gif", ".gif", jpg, ""
    yield "upper-case .PNG", ".PNG", png, ""
    yield "text named .png", ".png", b"just some text\n", "000_test"
    yield "zip named .png", ".png", _zip([("x.txt", b"hi")]), "000_test"
    yield "HTML named .png", ".png", b"<html><script>alert(1)</script></html>", "000_test"
    yield "SVG named .png", ".png", b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>', "000_test"
    yield "EPS named .png (no Ghostscript)", ".png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", \
        "000_test"
    yield "ICO named .png", ".png", _pil_bytes("ICO", size=(16, 16)), "000_test"
    yield "PDF named .png", ".png", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "000_test"
    yield "no suffix", "", png, "000_test"
    yield ".png.exe", ".png.exe", png, "000_test"
    yield ".svg file", ".svg", b"<svg/>", "000_test"
    yield "other size 9x7", ".png", _pil_bytes("PNG", size=(9, 7)), "000_test"
    for mode, fmt in (("CMYK", "JPEG"), ("CMYK", "TIFF"), ("I;16", "PNG"), ("I;16", "TIFF"), ("I", "TIFF"),
                      ("F", "TIFF"), ("P", "PNG"), ("P", "GIF"), ("RGBA", "PNG"), ("LA", "PNG"), ("L", "PNG"),
                      ("1", "PNG"), ("1", "BMP"), ("RGBA", "WEBP"), ("L", "JPEG"), ("RGB", "TIFF"),
                      ("YCbCr", "JPEG"), ("PA", "PNG"), ("LAB", "TIFF")):
        suffix = {"JPEG": ".jpg", "TIFF": ".tif", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}[fmt]
        try:
            data = _pil_bytes(fmt, mode)
        except (OSError, ValueError, KeyError):
            continue  # a mode this Pillow cannot write in that format
        yield f"{mode} {fmt}", suffix, data, ""
    yield "16-bit RGB PNG", ".png", _png16_rgb(), ""
    for fmt, suffix in (("GIF", ".gif"), ("PNG", ".png"), ("WEBP", ".webp"), ("TIFF", ".tif")):
        yield f"animated {fmt}", suffix, _animated(fmt), ""


def _png16_rgb() -> bytes:
    """An 8x8 48-bit (16 bits per channel) RGB PNG, written by hand (Pillow cannot write one)."""
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 16, 2, 0, 0, 0))
    rows = b"".join(b"\x00" + np.full(24, 40000, ">u2").tobytes() for _ in range(8))
    return head + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b"")


def _good_images() -> dict[str, bytes]:
    """Six good 8x8 RGB PNGs, three per class, as <class>/<name>."""
    return {f"{c}/{i:03d}_ok.png": _pil_bytes("PNG", seed=10 * k + i) for k, c in enumerate((CLASS_A, CLASS_B))
            for i in (1, 2, 3)}


def _run_folder(work: Path, suffix: str, data: bytes) -> str:
    """The image as a file of a server folder (the operator's path), both splits loaded."""
    from explorer.data import datasets as D

    folder = Path(tempfile.mkdtemp(dir=work))
    try:
        for rel, good in {**_good_images(), f"{CLASS_A}/000_test{suffix}": data}.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(good)
        return _loaded(D.FOLDER_PREFIX + str(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_zip_image(suffix: str, data: bytes) -> str:
    """The image as an entry of an uploaded zip, both splits loaded."""
    from explorer.data import datasets as D
    from explorer.data import uploads as U

    try:
        name = U.register(_zip([*_good_images().items(), (f"{CLASS_A}/000_test{suffix}", data)]), "bad.zip")
    except D.DatasetUnavailable as err:
        return f"refused: {err}"
    return _loaded(name)


def _loaded(name: str) -> str:
    """Both splits of a set: refused with its message, or what was decoded."""
    from explorer.data import datasets as D

    try:
        train, test = D.load(name, "train"), D.load(name, "test")
    except D.DatasetUnavailable as err:
        return f"refused: {err}"
    return f"accepted: train {tuple(train.x.shape)}, test {tuple(test.x.shape)}, classes {train.classes}"


# ---------------------------------------------------------------- zip cases


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of (name, data) entries."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return out.getvalue()


def _zip_info(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    """A zip of entries with hand-set headers (links, flags, methods)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return out.getvalue()


def _zeros_entry(name: str, size: int) -> bytes:
    """A one-entry zip of `size` zero bytes, deflated in blocks (1 GB of zeros is a 1 MB zip)."""
    out = io.BytesIO()
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w") as zf:
        with zf.open(info, "w", force_zip64=size > 2**31) as f:
            block = b"\x00" * (1 << 22)
            for _ in range(size // len(block)):
                f.write(block)
    return out.getvalue()


def _lying(data: bytes, size: int) -> bytes:
    """A zip whose every header (local and central) declares `size` uncompressed bytes, whatever the data holds."""
    b = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = b.find(sig)
        while i >= 0:
            struct.pack_into("<I", b, i + offset, size)
            i = b.find(sig, i + 4)
    return bytes(b)


def zip_cases() -> Iterator[tuple[str, bytes, str]]:
    """(name, bytes, needle) of bad or odd zip uploads."""
    from explorer.core import settings

    s = settings.current()
    good = list(_good_images().items())
    yield "valid flat", _zip(good), ""
    yield "valid with a wrapping folder", _zip([(f"pets/{n}", d) for n, d in good]), ""
    yield "valid train/test", _zip([(f"{sp}/{n}", d) for sp in ("train", "test") for n, d in good]), ""
    yield "valid bzip2", _zip(good, zipfile.ZIP_BZIP2), ""
    yield "valid lzma", _zip(good, zipfile.ZIP_LZMA), ""
    yield "valid stored", _zip(good, zipfile.ZIP_STORED), ""
    yield "macOS extras", _zip([*good, ("__MACOSX/a/._001_ok.png", b"junk"), ("a/.DS_Store", b"junk"),
                                ("Thumbs.db", b"junk")]), ""
    yield "class names with Markdown", _zip([(n.replace("a/", f"[x]({EVIL_LINK})/"), d) for n, d in good]), ""
    yield "cp437 names", _zip([(n.replace("a/", "caf\u00e9/"), d) for n, d in good]), ""
    yield "zip comment of 64 KB", _with_comment(_zip(good)), ""
    yield "zip64", _zip64(good), ""
    size = int(s.max_archive_mb * 2**20) + 2**22
    yield f"bomb: one entry of {size >> 20} MB", lambda: _zeros_entry("a/000.png", size), "unpacks"
    yield "bomb: 1 GB of zeros", lambda: _zeros_entry("a/000.png", 1 << 30), "unpacks"
    zeros = bytes(8 << 20)
    yield "bomb: 40 entries of 8 MB", lambda: _zip([(f"{c}/{i}.png", zeros) for c in "ab" for i in range(20)]), \
        "unpacks"
    yield "bomb: header says 1 KB, holds 64 MB", lambda: _lying(_zip([*good, ("a/000.png", bytes(64 << 20))]), 1024), \
        "000.png"
    yield "bomb: header says 100 bytes, holds 1 MB each", \
        lambda: _lying(_zip([(f"{c}/{i}.png", bytes(1 << 20)) for c in "ab" for i in range(4)]), 100), ".png"
    yield "nested zip", _zip([*good, ("a/inner.zip", _zip(good))]), "inner.zip"
    yield "42.zip style nesting", _zip([("a/l1.zip", _zip([("l2.zip", _zip(good))]))]), "l1.zip"
    for name in ("../evil.png", "a/../../evil.png", "/etc/evil.png", "C:\\evil.png", "a\\..\\..\\evil.png",
                 "./../evil.png", "a/b/../../../evil.png", "//server/share/evil.png"):
        yield f"traversal {name}", _zip([*good, (name, good[0][1])]), "evil"
    link = zipfile.ZipInfo("a/link.png")
    link.external_attr = (0o120777 << 16)
    yield "symlink entry", _zip_info([*[(zipfile.ZipInfo(n), d) for n, d in good], (link, b"/etc/passwd")]), "link.png"
    dlink = zipfile.ZipInfo("b/")
    dlink.external_attr = (0o120777 << 16)
    yield "symlinked folder entry", _zip_info([(dlink, b"/etc"), *[(zipfile.ZipInfo(n), d) for n, d in good]]), "b"
    yield "encrypted entries", _flags(_zip(good), 0x1), "encrypted"
    yield "unknown compression method", _method(_zip(good, zipfile.ZIP_STORED), 99), "compression"
    yield f"{s.max_archive_files + 1:,} entries", \
        lambda: _zip([(f"a/{i}.png", b"") for i in range(s.max_archive_files + 1)], zipfile.ZIP_STORED), "entries"
    yield "110,000 entries, lying count", \
        lambda: _count_lie(_zip([(str(i), b"") for i in range(110_000)], zipfile.ZIP_STORED)), "entries"
    yield "empty zip", _zip([]), "no images"
    yield "folders only", _zip([("a/", b""), ("b/", b"")]), "no images"
    yield "only __MACOSX", _zip([("__MACOSX/a/x.png", b"")]), "no images"
    yield "zero bytes", b"", "empty"
    yield "not a zip", b"hello, this is not a zip", "not a zip"
    yield "random bytes", np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes(), "not a zip"
    yield "truncated zip", _zip(good)[:300], "zip"
    yield "end record only", b"PK\x05\x06" + b"\x00" * 18, "no images"
    yield "bad CRC", _crc_broken(_zip(good, zipfile.ZIP_STORED)), ".png"
    yield "duplicate names", _duplicated(good), "twice"
    yield "one class", _zip([(n, d) for n, d in good if n.startswith("a/")]), "2 class"
    yield "a class of one image", _zip([*good[:1], *good[3:]]), "fewer than 2"
    yield "images at the top", _zip([*good, ("top.png", good[0][1])]), "top.png"
    yield "train/ without test/", _zip([(f"train/{n}", d) for n, d in good]), "test"
    yield "train and test classes differ", _zip([*[(f"train/{n}", d) for n, d in good],
                                                 *[(f"test/{n.replace('b/', 'c/')}", d) for n, d in good]]), "classes"
    yield "train/test and a stray folder", _zip([*[(f"{sp}/{n}", d) for sp in ("train", "test") for n, d in good],
                                                 ("extra/a/x.png", good[0][1])]), "extra"
    yield "text file among images", _zip([*good, ("a/notes.txt", b"hi")]), "notes.txt"
    yield "upload over max_upload_mb", \
        lambda: _zip([*good, ("a/noise.png", os.urandom(int(s.max_upload_mb * 2**20) + 1000))], zipfile.ZIP_STORED), \
        "MB"
    yield "a 12000x12000 PNG inside", lambda: _zip([*good, ("a/000_big.png", png_declaring(12000, 12000))]), "000_big"
    yield "images of two sizes", _zip([*good, ("b/000_other.png", _pil_bytes("PNG", size=(9, 7)))]), "000_other"
    yield "long entry name", _zip([*good, ("a/" + "x" * 5000 + ".png", good[0][1])]), ""
    yield "name with NUL", _zip([*good, ("a/nul\x00.png", good[0][1])]), ""


def _duplicated(entries: list[tuple[str, bytes]]) -> bytes:
    """A zip holding its first entry twice (zipfile warns when writing one; the warning is not the case's)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _zip([*entries, entries[0]])


def _with_comment(data: bytes) -> bytes:
    """The zip with a 65,535-byte comment."""
    out = io.BytesIO(data)
    with zipfile.ZipFile(out, "a") as zf:
        zf.comment = b"c" * 65535
    return out.getvalue()


def _zip64(entries: list[tuple[str, bytes]]) -> bytes:
    """A zip with zip64 headers on every entry."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            with zf.open(name, "w", force_zip64=True) as f:
                f.write(data)
    return out.getvalue()


def _method(data: bytes, method: int) -> bytes:
    """The zip with every entry's compression method set to `method` (in both headers)."""
    b = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = b.find(sig)
        while i >= 0:
            struct.pack_into("<H", b, i + offset, method)
            i = b.find(sig, i + 4)
    return bytes(b)


def _flags(data: bytes, bits: int) -> bytes:
    """The zip with `bits` set in every entry's general-purpose flags (0x1: encrypted), in both headers."""
    b = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = b.find(sig)
        while i >= 0:
            struct.pack_into("<H", b, i + offset, struct.unpack_from("<H", b, i + offset)[0] | bits)
            i = b.find(sig, i + 4)
    return bytes(b)


def _count_lie(data: bytes) -> bytes:
    """The zip with its end record declaring 5 entries, whatever the directory holds."""
    end = data.rfind(b"PK\x05\x06")
    return _patched(data, end + 8, "<HH", 5, 5)


def _crc_broken(data: bytes) -> bytes:
    """A stored zip with one data byte of its first entry flipped (the CRC no longer matches)."""
    b = bytearray(data)
    (name_len, extra_len) = struct.unpack_from("<HH", b, 26)
    b[30 + name_len + extra_len + 20] ^= 0xFF
    return bytes(b)


def _run_zip(data: bytes) -> str:
    """An uploaded zip as the page takes it: checked, registered, both splits loaded."""
    from explorer.data import datasets as D
    from explorer.data import uploads as U

    try:
        name = U.register(data, "upload.zip")
    except D.DatasetUnavailable as err:
        return f"refused: {err}"
    return _loaded(name)


# ---------------------------------------------------------------- URL cases


def page_schemas() -> dict[str, dict[str, str]]:
    """Each page's URL parameters and their kinds (int, float, str, bool, tuple), read from its SCHEMA."""
    from views.registry import LABS

    out = {}
    for lab in LABS:
        tree = ast.parse((ROOT / lab.path).read_text())
        schema: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SCHEMA" for t in node.targets) \
                    and isinstance(node.value, ast.Dict):
                for key, value in zip(node.value.keys, node.value.values):
                    if isinstance(key, ast.Constant) and isinstance(value, ast.Call) and value.args:
                        schema[key.value] = getattr(value.args[0], "id", "str")
        out[lab.slug] = schema
    return out


BAD_VALUES = {
    "int": ["abc", "1e999", "-1", "99999999999999999999999", "1.5", "", "0x10", "\u0663", " 7 ", "-0"],
    "float": ["nan", "inf", "-inf", "abc", "1e309", "-1e-320", "", "1,5", "0x1p3"],
    "bool": ["maybe", "2", "", "TRUE", "yes please"],
    "tuple": ["a,b,c", ",,,", "1," * 5000, "-1,-2", "<b>x</b>"],
    "str": ["<script>alert(1)</script>", f"[re-enter your password]({EVIL_LINK})", "A" * 20_000, "\x00",
            "../../etc/passwd", ":red[hi] **bold** $x^2$", "folder:/etc", "upload:" + "0" * 64, "/proc/self"],
}
EXTRA_PARAMS = [("zzz", "1"), ("lecture", f"[x]({EVIL_LINK})"), ("sweep", "<script>x</script>"),
                ("sweep", "../../../etc/passwd"), ("sweep", f"x` [re-enter your password]({EVIL_LINK}) `"),
                (f"[x]({EVIL_LINK})", "1")]


UNSAFE = [(re.compile("Traceback"), "a traceback"), (re.compile(re.escape(str(ROOT))), "the server's repository path"),
          (re.compile(r"(?<!\\)\]\(" + re.escape(EVIL_LINK)), "a Markdown link built from the URL"),
          (re.compile(r"(?<!\\)<script"), "raw HTML from the URL")]  # a backslash before it: escaped by plain()
CODE_SPAN = re.compile(r"(?<!\\)`[^`]*`")  # Markdown shows a code span's text as it is


def url_cases(pages: tuple[str, ...] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """(page, params) of bad URL parameters: every parameter of every page, values cycling through its kind's list."""
    for slug, schema in page_schemas().items():
        if pages and slug not in pages:
            continue
        for k, (param, kind) in enumerate(sorted(schema.items())):
            values = BAD_VALUES.get(kind, BAD_VALUES["str"])
            for v in (values[(k + j) % len(values)] for j in range(3)):
                yield slug, {param: v}
        for param, v in EXTRA_PARAMS:
            yield slug, {param: v}


def _texts(at) -> list[str]:
    """Every text the page shows (markdown, captions, alerts, metrics, widget labels and help)."""
    out = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader",
                 "text", "code", "latex", "exception"):
        for el in getattr(at, kind, []):
            out.append(str(getattr(el, "value", "")))
            out.append(str(getattr(el, "message", "")))
    for el in getattr(at, "metric", []):
        out.append(f"{el.label} {el.value}")
    return out


def _run_url(slug: str, params: dict[str, str]) -> str:
    """A page opened with the params: no exception, no traceback, no server path, no Markdown made of the input."""
    from streamlit.testing.v1 import AppTest

    from explorer.core.jobs import default_runner

    before = {j.id for j in default_runner().jobs()}
    at = AppTest.from_file(str(ROOT / "views" / f"{slug}.py"), default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    try:
        at.run()
    finally:
        started = [job for job in default_runner().jobs() if job.id not in before]
        for job in started:
            job.cancel()
        for job in started:  # a page's default run stops at its next checkpoint: its memory is not the next case's
            job.wait(JOB_STOP_S)
    if at.exception:
        raise AssertionError(f"exception on the page: {at.exception[0].message[:200]}")
    texts = _texts(at)
    for t in texts:
        for bad, why in UNSAFE:
            if bad.search(CODE_SPAN.sub("", t)):
                raise AssertionError(f"the page shows {why}: {t[:200]!r}")
    said = [str(el.value) for kind in ("error", "warning") for el in getattr(at, kind, [])]
    return "refused: " + said[0] if said else f"accepted ({len(texts)} texts drawn)"


# ---------------------------------------------------------------- the run


def all_cases(work: Path, only: tuple[str, ...] = CATEGORIES, pages: tuple[str, ...] | None = None) -> list[Case]:
    """Every case of the chosen categories (images twice: in a server folder and in an uploaded zip)."""
    cases: list[Case] = []
    if "csv" in only:
        cases += [Case("csv", n, _lazy(d), _run_csv, needle) for n, d, needle in csv_cases()]
    if "image" in only:
        for n, suffix, data, needle in image_cases():
            cases.append(Case("image", f"folder: {n}", _lazy(data), lambda d, s=suffix: _run_folder(work, s, d),
                              needle))
            cases.append(Case("image", f"zip: {n}", _lazy(data), lambda d, s=suffix: _run_zip_image(s, d), needle))
    if "zip" in only:
        cases += [Case("zip", n, _lazy(d), _run_zip, needle) for n, d, needle in zip_cases()]
    if "url" in only:
        cases += [Case("url", f"{slug} {params}"[:120], _lazy((slug, params)), lambda sp: _run_url(*sp))
                  for slug, params in url_cases(pages)]
    return cases


def run_case(case: Case) -> Result:
    """Run one case, measuring time and memory; any exception (or a refusal without its needle) fails it."""
    traced = case.category != "url"  # tracemalloc would slow whole Streamlit runs several times over
    try:
        data = case.make()
    except BaseException as err:  # noqa: BLE001 - a generator bug is reported as the case's failure
        return Result(case, False, f"could not build the case: {type(err).__name__}: {err}", 0.0, 0.0)
    rss0 = _status_mb("VmRSS")
    _reset_high_water()
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    try:
        message = case.run(data)
        ok = bool(message)
        if message.startswith("refused") and case.needle and case.needle not in message:
            ok, message = False, f"refusal does not name {case.needle!r}: {message}"
    except AssertionError as err:  # a page drew something unsafe (the check says what)
        ok, message = False, f"unsafe: {str(err)[:300]}"
    except BaseException as err:  # noqa: BLE001 - a case must never raise: report it instead
        ok, message = False, f"uncaught {type(err).__name__}: {str(err)[:300]}"
    seconds = time.perf_counter() - t0
    peak = 0.0
    if traced:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    peak = max(peak, _status_mb("VmHWM") - rss0)
    if peak > MAX_CASE_MB:
        ok, message = False, f"peak memory {peak:.0f} MB: {message}"
    return Result(case, ok, message, peak, seconds)


def summary(results: list[Result]) -> str:
    """The table: per category the cases, refusals, acceptances, failures, overlong messages, peak memory, time."""
    lines = [f"{'category':<10}{'cases':>7}{'refused':>9}{'accepted':>10}{'failed':>8}{'long':>6}{'peak MB':>9}"
             f"{'max s':>8}{'total s':>9}"]
    for cat in [c for c in CATEGORIES if any(r.case.category == c for r in results)] + ["all"]:
        rs = [r for r in results if cat in ("all", r.case.category)]
        lines.append(f"{cat:<10}{len(rs):>7}{sum(r.ok and r.message.startswith('refused') for r in rs):>9}"
                     f"{sum(r.ok and not r.message.startswith('refused') for r in rs):>10}"
                     f"{sum(not r.ok for r in rs):>8}{sum(r.long for r in rs):>6}"
                     f"{max((r.peak_mb for r in rs), default=0):>9.1f}"
                     f"{max((r.seconds for r in rs), default=0):>8.2f}{sum(r.seconds for r in rs):>9.1f}")
    return "\n".join(lines)


def _warm_up(work: Path, only: tuple[str, ...], pages: tuple[str, ...] | None) -> None:
    """Import and exercise what the cases use once, so that no case is charged for loading libraries."""
    from explorer.data import datasets as D

    D.load("digits", "test")
    _run_csv((("x1,x2,label\n" + _csv_body())).encode())
    _run_folder(work, ".png", _pil_bytes("PNG"))
    _run_zip(_zip(list(_good_images().items())))
    if "url" in only:
        # An accepted setting may start a page's training job, whose data set is decoded once per process (then
        # read from the server's cache) whoever asks first: paid here, as the imports are, and read through once
        # (its pages made resident), so that no case is charged for it (CIFAR-10's first decode: 610 MB). Only the
        # sets already in the data folder: the warm-up downloads nothing.
        with mock.patch.dict(os.environ, {"EXPLORER_OFFLINE": "1"}):
            for name, source in D.NAMES.items():
                for split in () if source.embedded else ("train", "test"):
                    try:
                        D.load(name, split).x.sum()
                    except D.DatasetUnavailable:
                        pass
        for slug in page_schemas():
            if not pages or slug in pages:
                _run_url(slug, {})


def run(only: tuple[str, ...] = CATEGORIES, sample: int = 1, verbose: bool = False,
        pages: tuple[str, ...] | None = None) -> list[Result]:
    """Run every `sample`-th case of each chosen category (URL cases: of the chosen pages) in a private work folder."""
    work = Path(tempfile.mkdtemp(prefix="explorer-bad-input-"))
    try:
        _warm_up(work, only, pages)
        by_cat: dict[str, int] = {}
        results = []
        for case in all_cases(work, only, pages):
            k = by_cat.get(case.category, 0)
            by_cat[case.category] = k + 1
            if k % sample:
                continue
            result = run_case(case)
            results.append(result)
            if verbose or not result.ok or result.long:
                mark = "FAIL" if not result.ok else "long" if result.long else "ok  "
                print(f"{mark} {case.category:<6}{result.peak_mb:7.1f} MB {result.seconds:6.2f} s  "
                      f"{case.name[:60]:<60} {result.message[:150]!r}", flush=True)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    """Command line: run, print failures and the summary table; exit status 1 if any case failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CATEGORIES), help="comma-separated categories: csv,image,zip,url")
    ap.add_argument("--sample", type=int, default=1, help="run every n-th case of each category")
    ap.add_argument("--pages", default="", help="comma-separated page slugs for the URL cases (default: all)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case, not only failures")
    args = ap.parse_args()
    only = tuple(c.strip() for c in args.only.split(",") if c.strip())
    unknown = set(only) - set(CATEGORIES)
    if unknown:
        ap.error(f"unknown categories {', '.join(sorted(unknown))}; choose from {', '.join(CATEGORIES)}")
    own_cache = "EXPLORER_CACHE_DIR" not in os.environ
    if own_cache:
        os.environ["EXPLORER_CACHE_DIR"] = tempfile.mkdtemp(prefix="explorer-bad-input-cache-")
    os.environ.setdefault("EXPLORER_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    try:
        pages = tuple(p.strip() for p in args.pages.split(",") if p.strip()) or None
        results = run(only, max(1, args.sample), args.verbose, pages)
    finally:
        if own_cache:
            shutil.rmtree(os.environ["EXPLORER_CACHE_DIR"], ignore_errors=True)
    print(summary(results))
    print(f"{len(results)} cases in {time.perf_counter() - t0:.0f} s; resident memory now {_status_mb('VmRSS'):.0f} MB")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
