"""Uploaded zips of images: real archives through the checks and the loader; bombs, traversal, links and limits refused
by name before anything is unpacked or decoded; nothing written to disk."""

from __future__ import annotations

import io
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explorer.core.cache import Cache
from explorer.data import datasets as D
from explorer.data import uploads as U

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own data folder, no downloads, default limits, an empty memo and upload store."""
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    for key in ("MAX_UPLOAD_MB", "MAX_ARCHIVE_MB", "MAX_ARCHIVE_FILES", "DATA_ROOTS"):
        monkeypatch.delenv(f"EXPLORER_{key}", raising=False)
    D.forget_loaded()
    D._uploads.clear()


def _png(size: tuple[int, int] = (6, 6), seed: int = 0, mode: str = "RGB") -> bytes:
    """A small real PNG."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(out, format="PNG")
    return out.getvalue()


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of (name, data) entries."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return out.getvalue()


def _pets(prefix: str = "", per_class: int = 5) -> list[tuple[str, bytes]]:
    """<prefix>cat/*.png and <prefix>dog/*.png."""
    return [(f"{prefix}{cls}/{i:02d}.png", _png(seed=10 * k + i)) for k, cls in enumerate(("cat", "dog"))
            for i in range(per_class)]


def _png_declaring(width: int, height: int) -> bytes:
    """A real black RGB PNG of width x height, made row block by row block (12000 x 12000 is a ~0.5 MB file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp, row, parts = zlib.compressobj(9), b"\x00" * (1 + 3 * width), []
    for start in range(0, height, 100):
        parts.append(comp.compress(row * min(100, height - start)))
    parts.append(comp.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def test_an_upload_loads_in_memory_and_touches_no_disk(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    data = _zip(_pets("my pets/"))  # one wrapping folder, as "compress this folder" makes
    name = U.register(data, "pets.zip")
    assert name.startswith(D.UPLOAD_PREFIX) and len(name) == len(D.UPLOAD_PREFIX) + 64
    assert U.register(data, "again.zip") == name  # the same bytes: the same set, checked once
    train, test = D.load(name, "train", cache=cache), D.load(name, "test", cache=cache)
    assert train.classes == ("cat", "dog") and train.input_shape == (3, 6, 6)
    assert D.class_counts(train) == [4, 4] and D.class_counts(test) == [1, 1]
    assert "pets.zip" in D.title(name) and "10 images" in D.title(name)
    assert not (tmp_path / "data").exists() and not cache.entries(D.CACHE_KIND)  # never on disk
    D.check_name("dataset", name)


def test_train_and_test_folders_and_one_image_mode_for_both_splits() -> None:
    grey = [("train/cat/00.png", _png(mode="L"))]  # the set's first image is grey: both splits are grey
    entries = grey + [(f"{s}/{c}/{i:02d}.png", _png(seed=i)) for s in ("train", "test") for c in ("cat", "dog")
                      for i in range(1, 3)]
    name = U.register(_zip(entries))
    train, test = D.load(name, "train"), D.load(name, "test")
    assert train.input_shape == test.input_shape == (1, 6, 6)
    assert len(train) == 5 and len(test) == 4


@pytest.mark.parametrize("entries, expected", [
    ([("../evil.png", b"x")], r"'\.\./evil\.png' climbs out"),
    ([("cat/../../evil.png", b"x")], "climbs out"),
    ([("/etc/evil.png", b"x")], "absolute path"),
    ([("C:\\evil.png", b"x")], "absolute path"),
    ([("cat/inner.zip", b"PK")], r"'cat/inner\.zip' is not an image file \(archives inside"),
    ([("cat/notes.txt", b"hi")], "notes.txt' is not an image"),
    ([("top.png", _png())], "'top.png' is not inside a class folder"),
    ([("extra/cat/x.png", _png()), ("train/cat/x.png", _png())], "outside train/ and test/"),
])
def test_bad_entries_are_refused_by_name(entries: list, expected: str) -> None:
    with pytest.raises(U.UploadRefused, match=expected):
        U.register(_zip(_pets() + entries))


def test_links_encryption_and_unknown_compression_are_refused() -> None:
    link = zipfile.ZipInfo("cat/link.png")
    link.external_attr = 0o120777 << 16
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for n, d in _pets():
            zf.writestr(n, d)
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(U.UploadRefused, match="'cat/link.png' is a symbolic link"):
        U.register(out.getvalue())
    stored = bytearray(_zip(_pets(), zipfile.ZIP_STORED))
    central = stored.find(b"PK\x01\x02")
    flagged = bytearray(stored)
    struct.pack_into("<H", flagged, central + 8, 0x1)  # encrypted
    with pytest.raises(U.UploadRefused, match="encrypted"):
        U.register(bytes(flagged))
    struct.pack_into("<H", stored, central + 10, 99)  # an unknown compression method
    with pytest.raises(U.UploadRefused, match="compression method"):
        U.register(bytes(stored))


def test_layout_mistakes_are_explained() -> None:
    with pytest.raises(U.UploadRefused, match="at least 2 class folders.*'cat'"):
        U.register(_zip([(n, d) for n, d in _pets() if n.startswith("cat/")]))
    with pytest.raises(U.UploadRefused, match="train/ but no test/"):
        U.register(_zip(_pets("train/")))
    with pytest.raises(U.UploadRefused, match="train/ has the classes cat, dog but test/ has cat, fox"):
        U.register(_zip(_pets("train/") + [(n.replace("dog", "fox"), d) for n, d in _pets("test/")]))
    for bad, why in ((b"", "empty"), (b"not a zip at all", "not a zip"), (_zip(_pets())[:200], "not a zip"),
                     (_zip([]), "holds no images"), (_zip([("__MACOSX/cat/._x.png", b"")]), "holds no images")):
        with pytest.raises(U.UploadRefused, match=why):
            U.register(bad)
    one = U.register(_zip([("cat/only.png", _png()), *_pets()[5:]]))  # registered: checked when split
    with pytest.raises(D.DatasetUnavailable, match=r"cat \(1\) in the archive hold fewer than 2 images"):
        D.load(one, "train")


def test_limits_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _zip(_pets())
    monkeypatch.setenv("EXPLORER_MAX_UPLOAD_MB", str(len(data) / 2 / 2**20))
    with pytest.raises(U.UploadRefused, match="at most .* MB is accepted"):
        U.register(data)
    monkeypatch.delenv("EXPLORER_MAX_UPLOAD_MB")
    monkeypatch.setenv("EXPLORER_MAX_ARCHIVE_FILES", "9")
    with pytest.raises(U.UploadRefused, match="holds 10 entries; at most 9"):
        U.register(data)
    monkeypatch.delenv("EXPLORER_MAX_ARCHIVE_FILES")
    monkeypatch.setenv("EXPLORER_MAX_ARCHIVE_MB", "1")
    with pytest.raises(U.UploadRefused, match="unpacks to more than 1 MB"):
        U.register(_zip(_pets() + [("cat/zeros.png", bytes(2 << 20))]))  # 2 MB of zeros: a 2 kB entry


def test_a_lying_entry_count_is_seen_before_the_directory_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORER_MAX_ARCHIVE_FILES", "50")
    data = bytearray(_zip([(f"cat/{i}.png", b"") for i in range(200)], zipfile.ZIP_STORED))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 5, 5)  # the end record claims 5 entries
    with pytest.raises(U.UploadRefused, match="holds 200 entries; at most 50"):
        U.register(bytes(data))


def test_a_bomb_that_lies_about_its_size_stops_at_what_it_declared() -> None:
    """Headers declaring 1 kB for 64 MB of zeros: the checks pass (1 kB), the read stops at 1 kB and refuses."""
    data = bytearray(_zip(_pets() + [("cat/000.png", bytes(64 << 20))]))
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig)
        while i >= 0:
            name_len = struct.unpack_from("<H", data, i + (26 if sig == b"PK\x03\x04" else 28))[0]
            start = i + (30 if sig == b"PK\x03\x04" else 46)
            if data[start:start + name_len] == b"cat/000.png":
                struct.pack_into("<I", data, i + offset, 1024)
            i = data.find(sig, i + 4)
    name = U.register(bytes(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(D.DatasetUnavailable, match="'cat/000.png' is damaged"):
        D.load(name, "train")
        D.load(name, "test")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 60_000  # kB: never the 64 MB


def test_a_huge_png_is_refused_from_its_header_inside_a_zip() -> None:
    name = U.register(_zip(_pets() + [("cat/000_big.png", _png_declaring(12000, 12000))]))
    with pytest.raises(D.DatasetUnavailable, match="000_big.png declares more than .* pixels.*resized first"):
        D.load(name, "train")
        D.load(name, "test")


def test_a_huge_png_costs_no_memory_to_refuse(tmp_path: Path) -> None:
    """In a fresh process (so its peak resident memory is this load's): a 12000x12000 PNG (432 MB of pixels) in a
    folder is refused without decoding it; decoding first, as the loader once did, grows the peak by 400+ MB."""
    folder = tmp_path / "pics"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(2):
            (folder / cls / f"{i + 1}.png").write_bytes(_png(seed=i))
    (folder / "a" / "0.png").write_bytes(_png_declaring(12000, 12000))
    script = (
        "import resource, sys\n"
        "from explorer.data import datasets as D\n"
        "D.load('digits', 'test')\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    D.load('folder:{folder}', 'train')\n"
        "except D.DatasetUnavailable as err:\n"
        "    print(err)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "EXPLORER_OFFLINE": "1",
           "EXPLORER_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 2, out.stderr[-2000:]
    assert "0.png" in lines[0] and "resized first" in lines[0]
    assert int(lines[1]) < 100  # MB of peak resident memory added by the refused load
