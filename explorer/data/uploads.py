"""Visitors' own images: an uploaded zip, checked before anything in it is decompressed or decoded.

Layout: <class>/<image> (split 80/20 by a fixed seed, as a folder is) or <train|test>/<class>/<image>; one wrapping
folder around either is allowed (what "compress this folder" makes); hidden files and macOS's __MACOSX/ are
ignored. `read_archive` checks what the zip's central directory says, without decompressing anything: the upload's
size (settings.max_upload_mb), the number of entries (max_archive_files), the total declared uncompressed size
(max_archive_mb), and every name (no absolute path, no `..`, no symbolic link, no encryption, image suffixes only).
Decoding then streams each entry with a byte budget that stops at the limit whatever the headers claim (zip bombs
lie about their sizes), checks each image's pixel size from its header before decoding it (datasets), and keeps the
decoded pixels of one split within max_archive_mb too.

`register` keeps the archive's bytes in this process's memory under the data-set name upload:<sha256>
(explorer.data.datasets loads it like any other set); nothing is written to disk. Messages name only entries of
the archive, as the visitor's zip names them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import stat
import struct
import threading
import zipfile
from collections.abc import Callable
from pathlib import PurePosixPath

import torch

from explorer.core import settings as S
from explorer.data import datasets as D

MB = 1 << 20  # bytes in a megabyte, as Streamlit counts server.maxUploadSize
READ_CHUNK = 1 << 16  # bytes decompressed at a time
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
               zipfile.ZIP_LZMA: "lzma"}  # what the standard library decompresses
IGNORED_FOLDERS = ("__MACOSX",)  # macOS's resource forks
IGNORED_FILES = ("Thumbs.db", "desktop.ini")  # Windows' folder files
HOW = ("Upload a zip of <class>/<image> folders, or of <train|test>/<class>/<image>; every image of the same size, "
       f"at most {D.MAX_IMAGE_SIDE} pixels on a side.")


class UploadRefused(D.DatasetUnavailable):
    """An uploaded archive that is refused; the message names the entry or the limit."""


@dataclasses.dataclass(frozen=True, eq=False)
class Archive:
    """A checked upload: its bytes, and per split the (entry name, class) of every image, in name order."""

    sha256: str
    data: bytes = dataclasses.field(repr=False)
    name: str  # the file name the visitor gave, for menus
    classes: tuple[str, ...]
    members: dict[str, tuple[tuple[str, str], ...]]  # "train"/"test" -> images; "" -> all (the set is split by us)
    declared_bytes: int  # total uncompressed size the headers declare

    @property
    def images(self) -> int:
        """How many images the archive holds."""
        return sum(len(m) for m in self.members.values())


def limits_text(s: S.Settings | None = None) -> str:
    """The upload limits in one sentence, for the upload widget's help."""
    s = s or S.current()
    return (f"At most {s.max_upload_mb:g} MB, {s.max_archive_files:,} files and {s.max_archive_mb:g} MB unpacked; "
            f"images of one size, at most {D.MAX_IMAGE_SIDE} pixels on a side (PNG, JPEG, BMP, GIF, WebP, TIFF).")


def _quoted(name: str) -> str:
    """An entry name for a message, quoted and cut (names come from the visitor's archive)."""
    return repr(D.shorten(name))


def _parts(info: zipfile.ZipInfo) -> list[str] | None:
    """The path parts of a file entry, None for entries that are ignored (folders, hidden files, __MACOSX);
    refuses absolute paths, `..`, links, encryption and unknown compression, naming the entry."""
    raw = info.filename
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise UploadRefused(f"the archive's entry {_quoted(raw)} has an absolute path; entries must be relative "
                            "(<class>/<image>).")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UploadRefused(f"the archive's entry {_quoted(raw)} climbs out of the archive with '..'; refused.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadRefused(f"the archive's entry {_quoted(raw)} is a symbolic link; links are not accepted.")
    if info.flag_bits & 0x1:
        raise UploadRefused(f"the archive's entry {_quoted(raw)} is encrypted; upload an archive without a password.")
    if info.compress_type not in ZIP_METHODS:
        raise UploadRefused(f"the archive's entry {_quoted(raw)} uses a compression method this server cannot unpack "
                            f"(use {', '.join(ZIP_METHODS.values())}, e.g. the ordinary 'deflate').")
    if info.is_dir() or not parts:
        return None
    if any(p.startswith(".") for p in parts) or parts[0] in IGNORED_FOLDERS or parts[-1] in IGNORED_FILES:
        return None
    return parts


def _entries_bound(data: bytes) -> int:
    """At least how many entries the zip's central directory holds, read before zipfile parses it (parsing a
    central directory of 200,000 tiny entries takes seconds and tens of MB): the larger of the count its end record
    declares and the number of entry signatures in the directory (a lying count does not hide entries). 0 when the
    end record cannot be found (zipfile then refuses the file)."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535))
    if end < 0 or end + 22 > len(data):
        return 0
    count, size, offset = struct.unpack_from("<HII", data, end + 10)
    locator = end - 20
    if (count == 0xFFFF or size == 0xFFFFFFFF or offset == 0xFFFFFFFF) and locator >= 0 \
            and data[locator:locator + 4] == b"PK\x06\x07":
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        if record + 56 <= len(data) and data[record:record + 4] == b"PK\x06\x06":
            count, size, offset = struct.unpack_from("<QQQ", data, record + 32)
    start, stop = (offset, offset + size) if offset < len(data) else (0, end)
    return max(count, data.count(b"PK\x01\x02", start, stop))


def read_archive(data: bytes, name: str = "upload.zip", s: S.Settings | None = None) -> Archive:
    """Check an uploaded zip from its central directory alone (nothing is decompressed); UploadRefused if not."""
    s = s or S.current()
    if len(data) > s.max_upload_mb * MB:
        raise UploadRefused(f"the upload is {len(data) / MB:.1f} MB; at most {s.max_upload_mb:g} MB is accepted.")
    if not data:
        raise UploadRefused(f"the upload is empty. {HOW}")
    bound = _entries_bound(data)
    if bound > s.max_archive_files:
        raise UploadRefused(f"the archive holds {bound:,} entries; at most {s.max_archive_files:,} are accepted.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except Exception as err:  # BadZipFile, and what a damaged central directory makes zipfile raise
        raise UploadRefused(f"the upload is not a zip archive (or a damaged one). {HOW}") from err
    if len(infos) > s.max_archive_files:
        raise UploadRefused(f"the archive holds {len(infos):,} entries; at most {s.max_archive_files:,} are accepted.")
    files: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    declared = 0
    for info in infos:
        parts = _parts(info)
        declared += max(info.file_size, 0)
        if declared > s.max_archive_mb * MB:
            raise UploadRefused(f"the archive unpacks to more than {s.max_archive_mb:g} MB (its headers say "
                                f"{sum(i.file_size for i in infos) / MB:,.0f} MB); at most {s.max_archive_mb:g} MB "
                                "unpacked is accepted.")
        if parts is None:
            continue
        key = "/".join(parts)
        if key in seen:
            raise UploadRefused(f"the archive holds {_quoted(info.filename)} twice; each entry may appear once.")
        seen.add(key)
        suffix = PurePosixPath(parts[-1]).suffix.lower()
        if suffix not in D.IMAGE_SUFFIXES:
            nested = " (archives inside the archive are not opened)" if suffix in (".zip", ".tar", ".gz", ".7z") else ""
            raise UploadRefused(f"the archive's entry {_quoted(info.filename)} is not an image file{nested}; allowed: "
                                f"{' '.join(D.IMAGE_SUFFIXES)}.")
        files.append((info.filename, parts))
    if not files:
        raise UploadRefused(f"the archive holds no images. {HOW}")
    tops = {p[0] for _, p in files}
    if len(tops) == 1 and not tops & set(D.SPLITS) and all(len(p) >= 3 for _, p in files):
        files = [(n, p[1:]) for n, p in files]  # one wrapping folder: <folder>/<class>/<image>
    return _layout(data, name, files, declared)


def _layout(data: bytes, name: str, files: list[tuple[str, list[str]]], declared: int) -> Archive:
    """Classes and splits of the checked file entries: <class>/<image> or <train|test>/<class>/<image>."""
    split_layout = any(p[0] in D.SPLITS for _, p in files)
    members: dict[str, list[tuple[str, str]]] = {}
    for entry, parts in files:
        if split_layout:
            if parts[0] not in D.SPLITS:
                raise UploadRefused(f"the archive's entry {_quoted(entry)} is outside train/ and test/; with those "
                                    "folders every image goes in train/<class>/ or test/<class>/.")
            if len(parts) < 3:
                raise UploadRefused(f"the archive's entry {_quoted(entry)} is not inside a class folder "
                                    f"({parts[0]}/<class>/<image>).")
            members.setdefault(parts[0], []).append((entry, parts[1]))
        else:
            if len(parts) < 2:
                raise UploadRefused(f"the archive's entry {_quoted(entry)} is not inside a class folder "
                                    "(<class>/<image>).")
            members.setdefault("", []).append((entry, parts[0]))
    if split_layout:
        missing = [s for s in D.SPLITS if s not in members]
        if missing:
            raise UploadRefused(f"the archive has {[s for s in D.SPLITS if s in members][0]}/ but no {missing[0]}/; "
                                "give both, or neither (then 20% of each class is held out for testing).")
    class_sets = {split: sorted({c for _, c in m}) for split, m in members.items()}
    for split, classes in class_sets.items():
        where = f"{split}/ of the archive" if split else "the archive"
        if len(classes) < 2:
            only = f"only {_quoted(classes[0])}" if classes else "none"
            raise UploadRefused(f"{where} needs at least 2 class folders (<class>/<image>); found {only}.")
    if split_layout and class_sets["train"] != class_sets["test"]:
        raise UploadRefused(f"train/ has the classes {D.shorten(', '.join(class_sets['train']))} but test/ has "
                            f"{D.shorten(', '.join(class_sets['test']))}; both need the same class folders.")
    classes = tuple(next(iter(class_sets.values())))
    ordered = {split: tuple(sorted(m, key=lambda e: (e[1], e[0]))) for split, m in members.items()}
    return Archive(hashlib.sha256(data).hexdigest(), data, D.shorten(name), classes, ordered, declared)


class _Budget:
    """Bytes that may still be decompressed from one archive; shared by the decoding threads."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.lock = threading.Lock()

    def take(self, n: int, limit_mb: float) -> None:
        """Count n more bytes; refuse once the archive has unpacked past its limit."""
        with self.lock:
            self.left -= n
            if self.left < 0:
                raise UploadRefused(f"the archive unpacks to more than {limit_mb:g} MB (more than its headers "
                                    "declare); refused.")


def _reader(archive: Archive, s: S.Settings) -> tuple[zipfile.ZipFile, Callable[[str], bytes]]:
    """An open zip of the archive and a read(entry) -> bytes that streams within the budget and the declared size."""
    zf = zipfile.ZipFile(io.BytesIO(archive.data))
    infos = {i.filename: i for i in zf.infolist()}
    budget = _Budget(int(s.max_archive_mb * MB))
    lock = threading.Lock()  # one entry is decompressed at a time (ZipFile is not meant for parallel reads)

    def read(entry: str) -> bytes:
        info = infos[entry]
        cap = min(info.file_size, D.MAX_IMAGE_FILE_BYTES)
        if info.file_size > D.MAX_IMAGE_FILE_BYTES:
            raise UploadRefused(f"the archive's entry {_quoted(entry)} is {info.file_size / MB:.0f} MB unpacked, too "
                                f"big for an image of at most {D.MAX_IMAGE_SIDE}x{D.MAX_IMAGE_SIDE} pixels.")
        out = bytearray()
        with lock:
            try:
                with zf.open(info) as f:
                    while True:
                        chunk = f.read(min(READ_CHUNK, cap + 1 - len(out)))
                        if not chunk:
                            break
                        budget.take(len(chunk), s.max_archive_mb)
                        out += chunk
                        if len(out) > cap:
                            raise UploadRefused(f"the archive's entry {_quoted(entry)} holds more data than its "
                                                "header declares; refused.")
            except UploadRefused:
                raise
            except Exception as err:  # BadZipFile (bad CRC), zlib.error, EOFError, lzma errors: a damaged entry
                raise UploadRefused(f"the archive's entry {_quoted(entry)} is damaged and cannot be unpacked.") from err
        return bytes(out)

    return zf, read


def decode(archive: Archive, split: str, s: S.Settings | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """One split of a checked archive as uint8 tensors (N, C, H, W), labels and classes; UploadRefused or
    DatasetUnavailable naming the entry otherwise."""
    s = s or S.current()
    labels = {c: i for i, c in enumerate(archive.classes)}
    if "" in archive.members:
        everything = [(entry, labels[c]) for entry, c in archive.members[""]]
        items = D.seeded_split(everything, archive.classes, split, "the archive")
    else:
        everything = [(entry, labels[c]) for entry, c in archive.members["train"]]
        items = [(entry, labels[c]) for entry, c in archive.members[split]]
    zf, read = _reader(archive, s)
    with zf:  # the set's first image fixes size and channels of both splits
        return D.decode_images(items, read, archive.classes, max_bytes=int(s.max_archive_mb * MB),
                               reference=(everything[0][0], read))


def _source(archive: Archive) -> D.Source:
    """The datasets Source of a checked archive (decoded on load, in memory)."""

    def resolve(split: str, root: object) -> D.Found:
        return D.Found({"source": "upload", "sha256": archive.sha256, "split": split},
                       lambda: decode(archive, split))

    return D.Source(f"Your images: {archive.name} ({archive.images:,} images)", False, resolve)


def register(data: bytes, name: str = "upload.zip") -> str:
    """Check an uploaded zip and keep it in memory; its data-set name upload:<sha256> (checked once per content:
    the same bytes again cost a hash). UploadRefused says why an archive is refused."""
    s = S.current()
    if len(data) > s.max_upload_mb * MB:  # before hashing: a huge upload costs nothing more
        raise UploadRefused(f"the upload is {len(data) / MB:.1f} MB; at most {s.max_upload_mb:g} MB is accepted.")
    sha = hashlib.sha256(data).hexdigest()
    known = D.UPLOAD_PREFIX + sha
    if D.has_upload(known):
        return known
    return D.register_upload(sha, _source(read_archive(data, name, s)))
