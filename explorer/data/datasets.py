"""Real data sets as uint8 tensors: torchvision sets, image folders and embedded data, decoded once.

Every loader returns an `ArrayDataset` (the whole split as tensors, ready to live on the device).
The first load decodes the source files; the result goes into the disk cache (explorer.core.cache,
safetensors) keyed by the data set, the split and a signature of the source files (path, size,
mtime), so the second load is a file read and a changed folder is decoded again.

What a visitor may open: the registered sets, an uploaded zip (explorer.data.uploads registers it here as
upload:<sha256>, kept in this process's memory, never written to disk, not even to the cache) and, only where the
operator lists data roots (settings.data_roots), a server folder inside one of them (`visitor_folder`). A
folder:<path> name itself is the operator's (the command line): any path. Messages name files relative to the data
root that holds them, so a visitor sees only what they typed and what lies inside it, never other server paths.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import os
import re
import shutil
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from explorer.core import settings
from explorer.core.cache import Cache, ComputeResult, default_cache, key_for
from explorer.core.config import ConfigError, check_choice
from explorer.core.provenance import REPO_DIR

log = logging.getLogger(__name__)

DECODE_VERSION = 2  # bump when decoding changes; cached tensors of older versions then miss
CACHE_KIND = "dataset"
SPLITS = ("train", "test")
FOLDER_PREFIX = "folder:"
UPLOAD_PREFIX = "upload:"  # upload:<sha256 of the zip>, registered by explorer.data.uploads
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PIL_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "DIB", "GIF", "WEBP", "TIFF")  # decoders tried: those of the suffixes only
MAX_FOLDER_IMAGES = 100_000  # per split; an enormous folder is refused before anything is decoded
MAX_FOLDER_ENTRIES = 200_000  # files and folders looked at in one folder before it is refused as too big to scan
MAX_FOLDER_BYTES = 2_000_000_000  # decoded uint8 size of one split
MAX_IMAGE_SIDE = 512  # pixels; larger images must be resized before use (checked from the header, before decoding)
MAX_IMAGE_FILE_BYTES = 16 * 2**20  # one image file; a 512x512 image, even 16-bit RGBA uncompressed, is far smaller
BOMB_PIXELS = 64 * MAX_IMAGE_SIDE**2  # Pillow's decompression-bomb limit in this process (it refuses twice this)
FOLDER_TEST_FRACTION = 0.2  # held out as "test" when a folder has no train/ and test/ subfolders
MIN_CLASS_IMAGES = 2  # per class when a folder is split by us: one to train on and one to test
MEMO_SIZE = 6  # folder and upload sets kept in memory by this process (registered sets: one each, kept)
MAX_UPLOADS_KEPT = 16  # uploaded archives kept in memory (each at most settings.max_upload_mb); older ones forgotten
DECODE_THREADS = 2  # Pillow releases the GIL while decoding
MAX_SHOWN_NAME = 200  # characters of a file or folder name quoted in a message


class DatasetUnavailable(Exception):
    """A data set that cannot be loaded here; the message says exactly how to provide it.

    The message is safe to show a visitor (no server paths outside what they gave); `detail` holds what only the
    server's log should see (the data folder's path, a download's error).
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """One split of a data set as tensors; treat the tensors as read-only (they may be shared)."""

    name: str
    x: torch.Tensor  # uint8 (N, C, H, W) for images; float32 (N, L) for 1-D data
    y: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """How many classes the data set defines (some may be empty in a subset)."""
        return len(self.classes)

    @property
    def is_image(self) -> bool:
        """True for (N, C, H, W) image tensors."""
        return self.x.dim() == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: (C, H, W) or (L,)."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to_float(self) -> torch.Tensor:
        """float32 inputs; images scaled to [0, 1]."""
        return self.x.float().div_(255.0) if self.x.dtype == torch.uint8 else self.x.float()


@dataclasses.dataclass(frozen=True)
class Source:
    """How to find one registered data set: a title for menus and a resolver for a split."""

    title: str
    embedded: bool  # always available, no files needed
    resolve: Callable[[str, Path], "Found"]


@dataclasses.dataclass(frozen=True)
class Found:
    """A located source: what identifies its files (the cache key) and how to decode them."""

    signature: dict[str, Any]
    decode: Callable[[], tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]]


def data_dir() -> Path:
    """The data folder: $EXPLORER_DATA_DIR, else <repo>/data (read at call time)."""
    env = os.environ.get("EXPLORER_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else REPO_DIR / "data"


def _root(override: Path | None) -> Path:
    """The folder to read from: an explicit override, else data_dir()."""
    return Path(override).expanduser() if override is not None else data_dir()


def _downloads_allowed() -> bool:
    """False when EXPLORER_OFFLINE=1: then missing sets fail at once instead of trying the net."""
    return os.environ.get("EXPLORER_OFFLINE", "").strip() not in ("1", "true", "yes")


def _download_or_clean(download: Callable[[], Any], root: Path, made: Sequence[str]) -> None:
    """Run a torchvision download; if it fails, remove what it created (`made` under root, then root if new)."""
    fresh = [root / name for name in made if not (root / name).exists()]
    root_is_new = not root.exists()
    try:
        download()
    except BaseException:
        # A failed download must not leave empty or partial folders that later look like a data set.
        for path in fresh:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink(missing_ok=True)
        if root_is_new and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        raise


def _files_signature(paths: Sequence[Path]) -> dict[str, Any]:
    """Path, size and mtime of each file: a changed file changes the cache key."""
    rows = []
    for p in paths:
        try:
            st = p.stat()
            rows.append(f"{p.resolve().as_posix()}|{st.st_size}|{st.st_mtime_ns}")
        except (OSError, RuntimeError) as err:  # vanished since it was listed, a link loop
            raise DatasetUnavailable(f"{shorten(p.name)} cannot be read; it changed while being listed.",
                                     detail=f"{p}: {err}") from err
    return {"files": len(rows), "digest": hashlib.sha256("\n".join(rows).encode()).hexdigest()}


# ---------------------------------------------------------------- embedded data


def _digits(split: str, root: Path) -> Found:
    """scikit-learn's 8x8 digits (1,797 images), split 80/20 by a fixed stratified shuffle."""

    def decode() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
        idx_train, idx_test = train_test_split(
            np.arange(len(d.target)), test_size=0.2, random_state=0, stratify=d.target
        )
        idx = np.sort(idx_train if split == "train" else idx_test)
        classes = tuple(str(c) for c in range(10))
        return torch.from_numpy(images[idx]), torch.from_numpy(d.target[idx].astype(np.int64)), classes

    return Found({"source": "sklearn.load_digits", "split_seed": 0}, decode)


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(num_samples: int, train_split: float) -> dict[str, Any]:
    """Both splits of MNIST-1D, generated once per process (the generator makes them together)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split = num_samples, train_split
    state = np.random.get_state()  # make_dataset seeds numpy's global generator
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(state)


def _mnist1d_variant(num_samples: int, train_split: float) -> Callable[[str, Path], Found]:
    """MNIST-1D from the mnist1d package's generator, its default arguments but for the sample count and split."""

    def found(split: str, root: Path) -> Found:
        def decode() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
            d = _mnist1d_arrays(num_samples, train_split)
            x, y = (d["x"], d["y"]) if split == "train" else (d["x_test"], d["y_test"])
            classes = tuple(str(c) for c in range(10))
            return (torch.from_numpy(np.asarray(x, np.float32)),
                    torch.from_numpy(np.asarray(y, np.int64)), classes)

        import mnist1d

        made = {"source": "mnist1d.make_dataset", "version": getattr(mnist1d, "__version__", "?")}
        if (num_samples, train_split) != MNIST1D_DEFAULT:  # the default's key stays as it was: its caches stay valid
            made.update(num_samples=num_samples, train_split=train_split)
        return Found(made, decode)

    return found


MNIST1D_DEFAULT = (5000, 0.8)  # the package's default: 4,000 train / 1,000 test
MNIST1D_NOTEBOOK = (16000, 0.25)  # greydanus/mnist1d's double-descent notebook: 4,000 train / 12,000 test


# ---------------------------------------------------------------- torchvision sets


def _not_found(title: str, root: Path, how: str, err: Exception | None = None) -> DatasetUnavailable:
    """The message for a missing set: which files go where in the data folder, and that it downloads when online.

    The data folder's path and the download's error go to `detail` (the log), not to the visitor's message.
    """
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] if err else []
    tried = " (the download failed)" if lines else ""
    return DatasetUnavailable(
        f"{title} is not in the server's data folder{tried}. {how} With internet access it downloads "
        "there on first use. Set EXPLORER_DATA_DIR to use another folder.",
        detail=f"data folder {root}" + (f"; download error: {lines[-1][:300]}" if lines else ""),
    )


def _torchvision_idx(cls_name: str, title: str) -> Callable[[str, Path], Found]:
    """MNIST-style sets read by torchvision from <root>/<cls_name>/raw/ (IDX files)."""

    def resolve(split: str, root: Path) -> Found:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        raw = root / cls_name / "raw"
        prefix = "train" if split == "train" else "t10k"
        files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
        if not all(f.is_file() for f in files):
            how = (f"Put the four uncompressed IDX files (train-images-idx3-ubyte, "
                   f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) in "
                   f"{cls_name}/raw/ there.")
            if not _downloads_allowed():
                raise _not_found(title, root, how)
            try:
                _download_or_clean(lambda: cls(str(root), train=split == "train", download=True), root, [cls_name])
            except Exception as err:  # no network, read-only folder, interrupted download
                raise _not_found(title, root, how, err) from err

        def decode() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
            ds = cls(str(root), train=split == "train", download=False)
            return ds.data[:, None].contiguous(), ds.targets.long(), tuple(ds.classes)

        return Found({"source": f"torchvision.{cls_name}", **_files_signature(files)}, decode)

    return resolve


CIFAR_HOW = (
    "Put torchvision's cifar-10-batches-py/ folder (cifar-10-python.tar.gz, extracted), or the "
    "ImageFolder copy cifar10-jpeg/{train,test}/<class>/*.jpg, or cifar10-jpeg.zip holding it, there."
)


def _cifar10(split: str, root: Path) -> Found:
    """CIFAR-10: torchvision's pickles, else the JPEG ImageFolder copy (folder or zip), else download."""
    import torchvision

    train = split == "train"
    pickles = root / "cifar-10-batches-py"
    jpeg_dir, jpeg_zip = root / "cifar10-jpeg" / split, root / "cifar10-jpeg.zip"
    if not pickles.is_dir() and not jpeg_dir.is_dir() and not jpeg_zip.is_file():
        if not _downloads_allowed():
            raise _not_found("CIFAR-10", root, CIFAR_HOW)
        try:
            _download_or_clean(lambda: torchvision.datasets.CIFAR10(str(root), train=train, download=True), root,
                               ["cifar-10-batches-py", "cifar-10-python.tar.gz"])
        except Exception as err:
            raise _not_found("CIFAR-10", root, CIFAR_HOW, err) from err
    if pickles.is_dir():

        def decode() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
            try:
                ds = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
            except RuntimeError as err:
                raise DatasetUnavailable("CIFAR-10's cifar-10-batches-py/ in the data folder is incomplete or "
                                         f"corrupted. Replace the folder. {CIFAR_HOW}",
                                         detail=f"{pickles}: {err}") from err
            x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            return x, torch.as_tensor(ds.targets, dtype=torch.int64), tuple(ds.classes)

        files = sorted(p for p in pickles.iterdir() if p.is_file())
        return Found({"source": "torchvision.CIFAR10", **_files_signature(files)}, decode)
    if jpeg_dir.is_dir():
        items, paths, classes = _label_items(jpeg_dir, f"cifar10-jpeg/{split}")
        return Found({"source": "cifar10-jpeg folder", **_files_signature(list(paths.values()))},
                     lambda: decode_images(items, _file_reader(paths), classes))
    return Found({"source": "cifar10-jpeg.zip", "split": split, **_files_signature([jpeg_zip])},
                 lambda: _read_zip_split(jpeg_zip, f"cifar10-jpeg/{split}/"))


# ---------------------------------------------------------------- image folders


def shorten(name: str) -> str:
    """A file or folder name for a message, cut to MAX_SHOWN_NAME characters."""
    return name if len(name) <= MAX_SHOWN_NAME else name[:MAX_SHOWN_NAME] + "..."


def _inside(path: Path, root: Path) -> bool:
    """True when a resolved path is `root` or lies below it."""
    return path == root or path.is_relative_to(root)


def _root_of(real: Path) -> Path | None:
    """The data root (settings.data_roots, resolved) holding a resolved path, None if none does."""
    return next((r for r in settings.current().data_root_paths() if _inside(real, r)), None)


def _shown(path: Path) -> str:
    """How messages name a folder: relative to the data root holding it (all a visitor may know), else as given
    (the operator's own path)."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a name too long, a symlink loop
        return shorten(str(path))
    root = _root_of(real)
    if root is None:
        return shorten(str(path))
    rel = real.relative_to(root).as_posix()
    return shorten("(data folder)" if rel == "." else rel)


def _unreadable(shown: str, err: OSError) -> DatasetUnavailable:
    """The message for a folder or file the server may not read (permission, vanished, I/O error)."""
    return DatasetUnavailable(f"{shown} cannot be read ({err.strerror or type(err).__name__}).",
                              detail=f"{err.filename}: {err}")


def _link_ok(path: Path, confine: Path | None) -> bool:
    """A symlink may be followed when its target lies inside `confine` (the data root), or when there is no root
    to keep to (the operator's own folder)."""
    if confine is None:
        return True
    try:
        return _inside(path.resolve(), confine)
    except (OSError, RuntimeError):
        return False


def _scandir(folder: Path, shown: str, seen: list[int]) -> list[os.DirEntry]:
    """The non-hidden entries of one folder, sorted; counts them in seen[0] and refuses past MAX_FOLDER_ENTRIES."""
    entries = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                seen[0] += 1
                if seen[0] > MAX_FOLDER_ENTRIES:
                    raise DatasetUnavailable(f"{shown} holds more than {MAX_FOLDER_ENTRIES:,} files and folders, "
                                             "more than an image folder may; use a smaller folder.")
                if not e.name.startswith("."):
                    entries.append(e)
    except OSError as err:
        raise _unreadable(shown, err) from err
    return sorted(entries, key=lambda e: e.name)


def _class_files(top: Path, shown: str, confine: Path | None, seen: list[int]) -> list[tuple[Path, str]]:
    """Every non-hidden regular file below one class folder as (path, name for messages), sorted by path; the first
    file that is not an image is refused as soon as it is seen (a system folder is refused at once).

    Subfolders that are symlinks are not entered; a symlinked file is followed only to inside `confine`;
    devices, sockets and pipes are skipped (reading one could block or never end).
    """
    files: list[tuple[Path, str]] = []
    stack = [(top, shown)]
    while stack:
        folder, name = stack.pop()
        for e in _scandir(folder, name, seen):
            child = f"{name}/{e.name}"
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append((Path(e.path), child))
                elif e.is_symlink():
                    if not _link_ok(Path(e.path), confine):
                        raise DatasetUnavailable(f"{shorten(child)} links to a file outside the data folder; "
                                                 "replace the link by the file.")
                    if not Path(e.path).is_file():
                        continue
                elif not e.is_file(follow_symlinks=False):
                    continue
            except OSError as err:
                raise _unreadable(shorten(child), err) from err
            if Path(e.name).suffix.lower() not in IMAGE_SUFFIXES:
                raise DatasetUnavailable(f"{shorten(child)} is not an image file (allowed: "
                                         f"{' '.join(IMAGE_SUFFIXES)}); remove it from the class folder.")
            files.append((Path(e.path), child))
    return sorted(files, key=lambda f: f[1].split("/"))


def _class_names(split_dir: Path, shown: str, confine: Path | None, seen: list[int]) -> list[tuple[str, Path]]:
    """The class folders of one split folder, (name, path) sorted by name; symlinked ones only to inside `confine`."""
    out = []
    for e in _scandir(split_dir, shown, seen):
        try:
            if not e.is_dir():
                continue
            if e.is_symlink() and not _link_ok(Path(e.path), confine):
                raise DatasetUnavailable(f"{shorten(f'{shown}/{e.name}')} links to a folder outside the data folder; "
                                         "replace the link by the folder.")
            out.append((e.name, Path(e.path)))
        except OSError as err:
            raise _unreadable(shorten(f"{shown}/{e.name}"), err) from err
    return out


def _label_items(split_dir: Path, shown: str | None = None, confine: Path | None = None
                 ) -> tuple[list[tuple[str, int]], dict[str, Path], tuple[str, ...]]:
    """(name, label) for one split folder <split_dir>/<class>/*, each name's file, and the classes: checked (names,
    counts, sizes on disk) before any decoding. Names are as messages show them: `shown` (the folder) + the rest."""
    shown = shown if shown is not None else _shown(split_dir)
    seen = [0]
    found = _class_names(split_dir, shown, confine, seen)
    classes = tuple(name for name, _ in found)
    if len(classes) < 2:
        only = f"only {shorten(classes[0])!r}" if classes else "none"
        raise DatasetUnavailable(f"{shown} needs at least 2 class folders (<class>/<image files>); found {only}.")
    items, paths = [], {}
    for label, (cls, folder) in enumerate(found):
        for path, name in _class_files(folder, f"{shown}/{cls}", confine, seen):
            items.append((name, label))
            paths[name] = path
            if len(items) > MAX_FOLDER_IMAGES:
                raise DatasetUnavailable(f"{shown} holds more than {MAX_FOLDER_IMAGES:,} images, the limit per split; "
                                         "use a smaller folder or a subset of it.")
    empty = [c for i, c in enumerate(classes) if not any(lab == i for _, lab in items)]
    if empty:
        raise DatasetUnavailable(f"class folder(s) {shorten(', '.join(empty))} in {shown} hold no images.")
    return items, paths, classes


def _file_reader(paths: dict[str, Path]) -> Callable[[str], bytes]:
    """Reads the file behind a name of _label_items; a file too big to be an allowed image is refused unread."""

    def read(name: str) -> bytes:
        try:
            size = paths[name].stat().st_size
            if size > MAX_IMAGE_FILE_BYTES:
                raise DatasetUnavailable(f"{shorten(name)} is {size / 2**20:.0f} MB, too big for an image of at most "
                                         f"{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels; resize it first.")
            return paths[name].read_bytes()
        except OSError as err:
            raise _unreadable(shorten(name), err) from err

    return read


@functools.lru_cache(maxsize=1)
def _pil_formats() -> tuple[str, ...]:
    """The PIL_FORMATS this Pillow has decoders for (all plugins loaded once)."""
    from PIL import Image

    Image.init()
    return tuple(f for f in PIL_FORMATS if f in Image.OPEN)


def _pil() -> Any:
    """PIL.Image, with its decompression-bomb limit lowered to BOMB_PIXELS (nothing here opens bigger images)."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > BOMB_PIXELS:
        Image.MAX_IMAGE_PIXELS = BOMB_PIXELS
    return Image


def _gray(mode: str) -> bool:
    """True for Pillow modes read as one channel (black and white, grey, 16- and 32-bit grey)."""
    return mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16")


def _as_uint8(img: Any, mode: str) -> np.ndarray:
    """An opened image's pixels as uint8 (H, W) for mode "L" or (H, W, 3) for "RGB"; 16- and 32-bit grey keep their
    top 8 of 16 bits (Pillow's own conversion would clip them to white), float grey is clipped to 0..255."""
    if img.mode == "F" or img.mode == "I" or img.mode.startswith("I;16"):
        arr = np.asarray(img)
        grey = (np.clip(arr, 0, 255) if img.mode == "F" else np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return grey if mode == "L" else np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert(mode))


def _pixels(name: str, data: bytes, mode: str | None, size: tuple[int, int] | None, first: str) -> np.ndarray:
    """One image decoded to uint8 after its size, read from the header, is checked (Image.open reads only the
    header; the pixels are decoded by the conversion); a damaged or foreign file raises naming it."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data), formats=_pil_formats()) as img:
            w, h = img.size
            if max(w, h) > MAX_IMAGE_SIDE:
                raise DatasetUnavailable(f"{shorten(name)} is {w}x{h} pixels; images larger than {MAX_IMAGE_SIDE} "
                                         "pixels on a side must be resized first.")
            if size is not None and (w, h) != size:
                raise DatasetUnavailable(
                    f"{shorten(name)} is {w}x{h} pixels but {shorten(first)} is {size[0]}x{size[1]}; "
                    "every image of a data set must have the same size: resize them first.")
            return _as_uint8(img, mode or ("L" if _gray(img.mode) else "RGB"))
    except DatasetUnavailable:
        raise
    except Image.DecompressionBombError as err:
        raise DatasetUnavailable(f"{shorten(name)} declares more than {2 * BOMB_PIXELS:,} pixels; images larger than "
                                 f"{MAX_IMAGE_SIDE} pixels on a side must be resized first.") from err
    except Image.UnidentifiedImageError as err:
        raise DatasetUnavailable(f"{shorten(name)} cannot be read as an image (it is damaged, or not a PNG, JPEG, "
                                 "BMP, GIF, WebP or TIFF file); remove or replace it.") from err
    except Exception as err:  # Pillow raises many kinds for damaged files: OSError, SyntaxError, struct.error, ...
        why = " ".join(str(err).split())[:120] or type(err).__name__
        raise DatasetUnavailable(f"{shorten(name)} cannot be read as an image ({why}); remove or replace it.") from err


Reference = tuple[str, Callable[[str], bytes]]  # (name, read) of the image that fixes a set's size and channels


def decode_images(
    items: Sequence[tuple[str, int]], read: Callable[[str], bytes], classes: tuple[str, ...],
    max_bytes: int = MAX_FOLDER_BYTES, reference: Reference | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Decode images of one size into uint8 (N, C, H, W); a bad file raises naming it, and the first failure stops
    the rest. The reference image (default: the split's first) fixes size and channels: give the same one to both
    splits of a set, so that train and test agree (one grey first image must not make one split grey and the
    other colour). The whole split's size is checked before it is allocated."""
    first_name, first_read = reference or (items[0][0], read)
    first = _pixels(first_name, first_read(first_name), None, None, first_name)
    h, w = first.shape[:2]
    c = 1 if first.ndim == 2 else first.shape[2]
    if len(items) * c * h * w > max_bytes:
        raise DatasetUnavailable(
            f"{len(items):,} images of {w}x{h}x{c} would take {len(items) * c * h * w / 1e6:,.0f} MB; "
            f"the limit is {max_bytes / 1e6:,.0f} MB per split. Use fewer or smaller images."
        )
    mode = "L" if c == 1 else "RGB"
    out = np.empty((len(items), h, w, c), dtype=np.uint8)  # (N, H, W, C) while filling
    start = 0
    if first_name == items[0][0]:
        out[0], start = first.reshape(h, w, c), 1
    failed = threading.Event()

    def fill(i: int) -> None:
        if failed.is_set():
            return
        try:
            name = items[i][0]
            out[i] = _pixels(name, read(name), mode, (w, h), first_name).reshape(h, w, c)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        list(pool.map(fill, range(start, len(items))))
    x = torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))  # (N, C, H, W)
    y = torch.tensor([lab for _, lab in items], dtype=torch.int64)
    return x, y, classes


def _read_zip_split(zip_path: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """An ImageFolder split stored in the operator's zip under `prefix` (<prefix><class>/<file>)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = sorted(n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/"))
            if not members:
                raise DatasetUnavailable(f"{zip_path.name} holds no files under {prefix}. {CIFAR_HOW}")
            classes = tuple(sorted({n[len(prefix):].split("/")[0] for n in members}))
            data = {n: zf.read(n) for n in members}  # read sequentially, decode in threads
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DatasetUnavailable(f"{zip_path.name} in the data folder cannot be read as a zip; replace it. "
                                 f"{CIFAR_HOW}", detail=f"{zip_path}: {err}") from err
    labels = {c: i for i, c in enumerate(classes)}
    items = [(n, labels[n[len(prefix):].split("/")[0]]) for n in members]
    return decode_images(items, data.__getitem__, classes)


def seeded_split(items: Sequence[tuple[str, int]], classes: tuple[str, ...], split: str, shown: str
                 ) -> list[tuple[str, int]]:
    """A set without train/ and test/ parts: a fixed seeded stratified 80/20 split of its (name, label) items; every
    class needs MIN_CLASS_IMAGES, and gives at least one image to each split."""
    labels = torch.tensor([lab for _, lab in items])
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    few = [f"{shorten(c)} ({n})" for c, n in zip(classes, counts) if n < MIN_CLASS_IMAGES]
    if few:
        raise DatasetUnavailable(
            f"class folder(s) {', '.join(few[:5])} in {shown} hold fewer than {MIN_CLASS_IMAGES} images; without "
            f"train/ and test/ folders every class needs at least {MIN_CLASS_IMAGES} (one to train on, one to test).")
    g = torch.Generator().manual_seed(0)
    keep = []
    for c in range(len(classes)):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = max(1, int(round(len(idx) * FOLDER_TEST_FRACTION)))
        keep.append(idx[:n_test] if split == "test" else idx[n_test:])
    return [items[i] for i in torch.sort(torch.cat(keep)).values.tolist()]


def _folder(path: str) -> Callable[[str, Path], Found]:
    """An ImageFolder: <root>/{train,test}/<class>/*, or <root>/<class>/* split 80/20.

    Inside a data root, links are followed only to inside that root and messages name paths relative to it.
    """

    def resolve(split: str, root: Path) -> Found:
        base = Path(path).expanduser()
        shown = _shown(base)
        try:
            real = base.resolve()
            is_dir = real.is_dir()
        except (OSError, RuntimeError):
            is_dir = False
        if not is_dir:
            raise DatasetUnavailable(f"image folder {shown} does not exist or is not a folder; "
                                     "give a folder laid out as <root>/<split>/<class>/<images>.")
        confine = _root_of(real)
        split_dir = base / split
        if split_dir.is_dir():
            items, paths, classes = _label_items(split_dir, f"{shown}/{split}", confine)
            reference = (items[0][0], _file_reader(paths))
            signed = list(paths.values())
            other = [s for s in SPLITS if s != split][0]
            if (base / other).is_dir():
                theirs = _class_names(base / other, f"{shown}/{other}", confine, [0])
                if tuple(n for n, _ in theirs) != classes:
                    by_split = {split: classes, other: tuple(n for n, _ in theirs)}
                    raise DatasetUnavailable(
                        f"{shown}/train has the classes {shorten(', '.join(by_split['train']))} but {shown}/test has "
                        f"{shorten(', '.join(by_split['test']))}; both need the same class folders.")
                if split == "test":  # train's first image fixes size and channels of both splits
                    cls, folder = theirs[0]
                    files = _class_files(folder, f"{shown}/{other}/{cls}", confine, [0])
                    if files:
                        reference = (files[0][1], _file_reader({files[0][1]: files[0][0]}))
                        signed.append(files[0][0])  # a changed reference image decodes this split again
            return Found({"source": "image folder", "path": str(real), "split": split, **_files_signature(signed)},
                         lambda: decode_images(items, _file_reader(paths), classes, reference=reference))
        if any((base / s).is_dir() for s in SPLITS):
            raise DatasetUnavailable(f"image folder {shown} has no {split}/ subfolder; "
                                     f"add {shown}/{split}/<class>/<images>.")
        items, paths, classes = _label_items(base, shown, confine)
        chosen = seeded_split(items, classes, split, shown)
        read = _file_reader(paths)
        return Found({"source": "image folder, seeded 80/20 split", "path": str(real), "split": split,
                      **_files_signature(list(paths.values()))},
                     lambda: decode_images(chosen, read, classes, reference=(items[0][0], read)))

    return resolve


def visitor_folder(typed: str) -> str:
    """The data-set name of a server folder a visitor typed: allowed only inside one of the operator's data roots
    (settings.data_roots; symlinks followed, so `..` or a link out of a root is refused). A relative path is looked
    up in each root in turn. Messages quote only what was typed; DatasetUnavailable when refused."""
    roots = settings.current().data_root_paths()
    text = typed.strip()
    if not roots:
        raise DatasetUnavailable("this server opens no server folders for visitors (no data roots are configured); "
                                 "upload a zip of your images instead.")
    if not text or "\x00" in text:
        raise DatasetUnavailable("type the path of an image folder inside the server's data folders.")
    given = Path(text)
    inside_missing = False
    for candidate in ([given] if given.is_absolute() else [r / given for r in roots]):
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError):  # a name too long, a symlink loop
            continue
        if _root_of(real) is None:
            continue  # outside every root: whether it exists is not said
        try:
            if real.is_dir():
                return FOLDER_PREFIX + str(real)
        except OSError:
            pass
        inside_missing = True
    if inside_missing:
        raise DatasetUnavailable(f"folder {shorten(text)!r} does not exist in the server's data folders (or is not a "
                                 "folder).")
    raise DatasetUnavailable(f"folder {shorten(text)!r} is outside the server's data folders; only folders inside "
                             "them may be opened (or upload a zip of your images).")


# ---------------------------------------------------------------- registry and public API

NAMES: dict[str, Source] = {
    "digits": Source("scikit-learn digits (8x8, embedded)", True, _digits),
    "mnist1d": Source("MNIST-1D (generated, embedded)", True, _mnist1d_variant(*MNIST1D_DEFAULT)),
    "mnist1d_16k": Source("MNIST-1D, 16,000 samples: 4,000 train / 12,000 test (generated, embedded)", True,
                          _mnist1d_variant(*MNIST1D_NOTEBOOK)),
    "mnist": Source("MNIST", False, _torchvision_idx("MNIST", "MNIST")),
    "fashion_mnist": Source("Fashion-MNIST", False, _torchvision_idx("FashionMNIST", "Fashion-MNIST")),
    "cifar10": Source("CIFAR-10", False, _cifar10),
}
FALLBACK = "digits"
_UPLOAD_NAME = re.compile(UPLOAD_PREFIX + "[0-9a-f]{64}")
_uploads: OrderedDict[str, Source] = OrderedDict()  # upload:<sha256> -> its source, the latest MAX_UPLOADS_KEPT
_uploads_lock = threading.Lock()


def register_upload(sha256: str, source: Source) -> str:
    """Keep an uploaded set's source in this process (explorer.data.uploads builds it) and return its name,
    upload:<sha256>; the oldest is forgotten beyond MAX_UPLOADS_KEPT."""
    name = UPLOAD_PREFIX + sha256
    if not _UPLOAD_NAME.fullmatch(name):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    with _uploads_lock:
        _uploads[name] = source
        _uploads.move_to_end(name)
        while len(_uploads) > MAX_UPLOADS_KEPT:
            _uploads.popitem(last=False)
    return name


def has_upload(name: str) -> bool:
    """True while an uploaded set is still kept in memory (and keeps it a while longer)."""
    with _uploads_lock:
        if name in _uploads:
            _uploads.move_to_end(name)
            return True
    return False


def title(name: str) -> str:
    """A menu label for a data set name."""
    if name.startswith(FOLDER_PREFIX):
        return f"Image folder {_shown(Path(name[len(FOLDER_PREFIX):]))}"
    if name.startswith(UPLOAD_PREFIX):
        with _uploads_lock:
            source = _uploads.get(name)
        return source.title if source else f"Uploaded images {name[len(UPLOAD_PREFIX):][:12]}"
    return NAMES[name].title if name in NAMES else name


def check_name(field: str, name: Any) -> None:
    """Refuse (ConfigError) a data set name that is neither registered nor folder:<path> nor upload:<sha256>."""
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX) and len(name) > len(FOLDER_PREFIX):
        return
    if isinstance(name, str) and _UPLOAD_NAME.fullmatch(name):
        return
    check_choice(field, name, [*NAMES, f"{FOLDER_PREFIX}<path>", f"{UPLOAD_PREFIX}<sha256>"])


def _source(name: str) -> Source:
    """The registered source for a name, an uploaded set's, or a folder source."""
    if name.startswith(FOLDER_PREFIX) and len(name) > len(FOLDER_PREFIX):
        return Source(title(name), False, _folder(name[len(FOLDER_PREFIX):]))
    if name.startswith(UPLOAD_PREFIX):
        with _uploads_lock:
            source = _uploads.get(name)
        if source is None:
            raise DatasetUnavailable(f"the uploaded images {name[len(UPLOAD_PREFIX):][:12]} are no longer in the "
                                     f"server's memory (it keeps the {MAX_UPLOADS_KEPT} latest uploads); "
                                     "upload the zip again.")
        return source
    if name not in NAMES:
        raise DatasetUnavailable(
            f"unknown data set {shorten(repr(name))}; choose one of {', '.join(NAMES)} or folder:<path>."
        )
    return NAMES[name]


# A plain dict in insertion order (oldest first), not an OrderedDict: CI once saw an OrderedDict whose key was in
# the table but not in its order list (KeyError in move_to_end under this lock); a dict has only the one structure.
_memo: dict[str, ArrayDataset] = {}  # folders' and uploads' sets: the MEMO_SIZE latest
# A registered set's split ("cifar10|train") -> (its key, the set), one each and never evicted: a server whose pages
# use them all holds each once (about 400 MB for MNIST, Fashion-MNIST, CIFAR-10 and the embedded sets), where an LRU
# of MEMO_SIZE re-read them from the disk cache, at twice their size, as visitors moved between pages.
_kept: dict[str, tuple[str, ArrayDataset]] = {}
_memo_lock = threading.Lock()


def _remember(key: str, ds: ArrayDataset, slot: str | None = None) -> ArrayDataset:
    """Keep a loaded set: a registered one in its slot (replacing that slot's earlier set), else in the memo of the
    MEMO_SIZE latest."""
    with _memo_lock:
        if slot is not None:
            _kept[slot] = (key, ds)
            return ds
        _memo.pop(key, None)
        _memo[key] = ds
        while len(_memo) > MEMO_SIZE:
            del _memo[next(iter(_memo))]  # the oldest
    return ds


def _recall(key: str, slot: str | None = None) -> ArrayDataset | None:
    """A kept or memoised set, or None (a memoised one moves to the newest end: a plain dict keeps insertion order)."""
    with _memo_lock:
        if slot is not None:
            kept = _kept.get(slot)
            return kept[1] if kept is not None and kept[0] == key else None
        ds = _memo.pop(key, None)
        if ds is not None:
            _memo[key] = ds
    return ds


def forget_loaded() -> None:
    """Drop every set this process holds (tests: the next load reads the disk cache or decodes)."""
    with _memo_lock:
        _memo.clear()
        _kept.clear()


def load(name: str, split: str = "train", *, data_dir: Path | None = None,
         cache: Cache | None = None) -> ArrayDataset:
    """One split of a data set, decoded once and then read from `cache` (default: the process's default_cache());
    an uploaded set is decoded in memory and never written to the cache. Raises DatasetUnavailable."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    root = _root(data_dir)
    found = _source(name).resolve(split, root)
    if name.startswith(UPLOAD_PREFIX):
        key = f"memory|{name}|{split}|{DECODE_VERSION}"
        ds = _recall(key)
        if ds is None:
            x, y, classes = found.decode()
            ds = _remember(key, ArrayDataset(name, x, y, classes))
        return ds
    config = {"name": name, "split": split, "decode_version": DECODE_VERSION, **found.signature}

    def compute() -> ComputeResult:
        x, y, classes = found.decode()
        return ComputeResult(metrics={"classes": list(classes), "n": len(y)},
                             tensors={"x": x, "y": y}, meta={"data_dir": str(root)})

    cache = cache or default_cache()
    key = f"{cache.root}|{key_for(CACHE_KIND, config)}"
    slot = f"{name}|{split}" if name in NAMES else None
    ds = _recall(key, slot)
    if ds is not None:
        return ds
    entry = cache.get_or_compute(CACHE_KIND, config, compute)
    t = entry.tensors()
    return _remember(key, ArrayDataset(name, t["x"], t["y"], tuple(entry.metrics["classes"])), slot)


def load_or_fallback(
    name: str, split: str = "train", *, data_dir: Path | None = None, cache: Cache | None = None
) -> tuple[ArrayDataset, str | None]:
    """The data set, or the embedded digits and the message saying how to provide the wanted one (safe to show a
    visitor; the server-side detail goes to the log)."""
    try:
        return load(name, split, data_dir=data_dir, cache=cache), None
    except DatasetUnavailable as err:
        log.info("data set %s (%s) unavailable: %s %s", shorten(name), split, err, err.detail)
        return load(FALLBACK, split, cache=cache), f"{err} Showing the embedded {title(FALLBACK)} instead."


def name_or_fallback(name: str, split: str = "train", *, data_dir: Path | None = None) -> tuple[str, str | None]:
    """What load_or_fallback would give, (name used, notice), found without decoding a single image: for a page
    that only needs to say which data set it will use (its results may all be cached)."""
    try:
        _source(name).resolve(split, _root(data_dir))
        return name, None
    except DatasetUnavailable as err:
        log.info("data set %s (%s) unavailable: %s %s", shorten(name), split, err, err.detail)
        return FALLBACK, f"{err} Showing the embedded {title(FALLBACK)} instead."


def class_counts(ds: ArrayDataset) -> list[int]:
    """Examples per class, in class order."""
    return torch.bincount(ds.y, minlength=ds.num_classes).tolist()


def imbalance_ratio(counts: Sequence[int]) -> float:
    """Largest class count over smallest non-empty one (1.0 is perfectly balanced)."""
    nonzero = [c for c in counts if c > 0]
    return max(nonzero) / min(nonzero) if nonzero else float("nan")


def _pick(ds: ArrayDataset, index: torch.Tensor) -> ArrayDataset:
    """The examples at `index`, kept in their original order."""
    index = torch.sort(index).values
    return ArrayDataset(ds.name, ds.x[index], ds.y[index], ds.classes)


def subset(ds: ArrayDataset, per_class: int | Sequence[int], seed: int) -> ArrayDataset:
    """A seeded per-class subset: `per_class` examples of every class, or one count per class."""
    counts = [int(per_class)] * ds.num_classes if isinstance(per_class, int) else [int(c) for c in per_class]
    if len(counts) != ds.num_classes:
        raise ConfigError(f"per_class needs one count per class ({ds.num_classes}), got {len(counts)}")
    if any(c < 0 for c in counts):
        raise ConfigError(f"per-class counts must be >= 0, got {counts}")
    g = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c, n in enumerate(counts):
        idx = torch.nonzero(ds.y == c).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:n]])  # fewer if the class is smaller
    return _pick(ds, torch.cat(chosen))


def take(ds: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    """A seeded random subset of n examples (all of them if n >= len(ds))."""
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    return _pick(ds, torch.randperm(len(ds), generator=g)[:n])
