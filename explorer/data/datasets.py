"""Real data sets as uint8 tensors: torchvision sets, image folders and embedded data, decoded once.

Every loader returns an `ArrayDataset` (the whole split as tensors, ready to live on the device).
The first load decodes the source files; the result goes into the disk cache (explorer.core.cache,
safetensors) keyed by the data set, the split and a signature of the source files (path, size,
mtime), so the second load is a file read and a changed folder is decoded again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
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

from explorer.core.cache import Cache, ComputeResult, default_cache, key_for
from explorer.core.config import ConfigError, check_choice
from explorer.core.provenance import REPO_DIR

DECODE_VERSION = 1  # bump when decoding changes; cached tensors of older versions then miss
CACHE_KIND = "dataset"
SPLITS = ("train", "test")
FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_FOLDER_IMAGES = 100_000  # per split; an enormous folder is refused before anything is decoded
MAX_FOLDER_BYTES = 2_000_000_000  # decoded uint8 size of one split
MAX_IMAGE_SIDE = 512  # pixels; larger images must be resized before use
FOLDER_TEST_FRACTION = 0.2  # held out as "test" when a folder has no train/ and test/ subfolders
MEMO_SIZE = 6  # data sets kept in memory by this process, so a page rerun costs nothing
DECODE_THREADS = 2  # Pillow releases the GIL while decoding


class DatasetUnavailable(Exception):
    """A data set that cannot be loaded here; the message says exactly how to provide it."""


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
        st = p.stat()
        rows.append(f"{p.resolve().as_posix()}|{st.st_size}|{st.st_mtime_ns}")
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


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> dict[str, Any]:
    """Both splits of MNIST-1D, generated once per process (the generator makes them together)."""
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset seeds numpy's global generator
    try:
        return make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)


def _mnist1d(split: str, root: Path) -> Found:
    """MNIST-1D from the mnist1d package's generator with its default arguments (4,000 / 1,000)."""

    def decode() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
        d = _mnist1d_arrays()
        x, y = (d["x"], d["y"]) if split == "train" else (d["x_test"], d["y_test"])
        classes = tuple(str(c) for c in range(10))
        return (torch.from_numpy(np.asarray(x, np.float32)),
                torch.from_numpy(np.asarray(y, np.int64)), classes)

    import mnist1d

    return Found({"source": "mnist1d.make_dataset", "version": getattr(mnist1d, "__version__", "?")},
                 decode)


# ---------------------------------------------------------------- torchvision sets


def _not_found(title: str, root: Path, how: str, err: Exception | None = None) -> DatasetUnavailable:
    """The message for a missing set: which folder, which files, and that it downloads when online."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] if err else []
    tried = f" (download failed: {lines[-1][:160]})" if lines else ""
    return DatasetUnavailable(
        f"{title} is not in the data folder {root}{tried}. {how} With internet access it downloads "
        "there on first use. Set EXPLORER_DATA_DIR to use another folder."
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
                   f"{raw}/.")
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
                raise DatasetUnavailable(f"CIFAR-10 in {pickles} is incomplete or corrupted "
                                         f"({err}). Replace the folder. {CIFAR_HOW}") from err
            x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            return x, torch.as_tensor(ds.targets, dtype=torch.int64), tuple(ds.classes)

        files = sorted(p for p in pickles.iterdir() if p.is_file())
        return Found({"source": "torchvision.CIFAR10", **_files_signature(files)}, decode)
    if jpeg_dir.is_dir():
        return Found({"source": "cifar10-jpeg folder", **_files_signature(_folder_files(jpeg_dir))},
                     lambda: _read_folder_split(jpeg_dir))
    return Found({"source": "cifar10-jpeg.zip", "split": split, **_files_signature([jpeg_zip])},
                 lambda: _read_zip_split(jpeg_zip, f"cifar10-jpeg/{split}/"))


# ---------------------------------------------------------------- image folders


def _folder_files(split_dir: Path) -> list[Path]:
    """Every non-hidden file inside the class folders of one split, sorted."""
    return sorted(p for c in split_dir.iterdir() if c.is_dir() and not c.name.startswith(".")
                  for p in c.rglob("*") if p.is_file() and not p.name.startswith("."))


def _label_items(split_dir: Path) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """(file, label) for one split folder <split_dir>/<class>/*, checked before any decoding."""
    classes = tuple(sorted(c.name for c in split_dir.iterdir()
                           if c.is_dir() and not c.name.startswith(".")))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DatasetUnavailable(
            f"{split_dir} needs at least 2 class folders (<class>/<image files>); found {found}."
        )
    items = []
    for label, cls in enumerate(classes):
        for p in sorted((split_dir / cls).rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DatasetUnavailable(
                    f"{p} is not an image file (allowed: {' '.join(IMAGE_SUFFIXES)}); "
                    "remove it from the class folder."
                )
            items.append((str(p), label))
            if len(items) > MAX_FOLDER_IMAGES:
                raise DatasetUnavailable(
                    f"{split_dir} holds more than {MAX_FOLDER_IMAGES:,} images, the limit per split; "
                    "use a smaller folder or a subset of it."
                )
    empty = [c for i, c in enumerate(classes) if not any(lab == i for _, lab in items)]
    if empty:
        raise DatasetUnavailable(f"class folder(s) {', '.join(empty)} in {split_dir} hold no images.")
    return items, classes


def _decode_all(
    items: Sequence[tuple[str, int]], read: Callable[[str], bytes], classes: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Decode images of one size into uint8 (N, C, H, W); a bad file raises naming it."""
    from PIL import Image

    def pixels(name: str, mode: str | None) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(read(name))) as img:
                if mode is None:
                    mode = "L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"
                return np.asarray(img.convert(mode))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DatasetUnavailable(f"{name} cannot be read as an image ({err}); "
                                     "remove or replace it.") from err

    first = pixels(items[0][0], None)
    h, w = first.shape[:2]
    c = 1 if first.ndim == 2 else first.shape[2]
    if max(h, w) > MAX_IMAGE_SIDE:
        raise DatasetUnavailable(f"{items[0][0]} is {w}x{h} pixels; images larger than "
                                 f"{MAX_IMAGE_SIDE} pixels on a side must be resized first.")
    if len(items) * c * h * w > MAX_FOLDER_BYTES:
        raise DatasetUnavailable(
            f"{len(items):,} images of {w}x{h}x{c} would take {len(items) * c * h * w / 1e9:.1f} GB; "
            f"the limit is {MAX_FOLDER_BYTES / 1e9:.0f} GB per split. Use fewer or smaller images."
        )
    mode = "L" if c == 1 else "RGB"
    out = np.empty((len(items), h, w, c), dtype=np.uint8)  # (N, H, W, C) while filling

    def fill(i: int) -> None:
        arr = pixels(items[i][0], mode)
        if arr.shape[:2] != (h, w):
            raise DatasetUnavailable(
                f"{items[i][0]} is {arr.shape[1]}x{arr.shape[0]} pixels but {items[0][0]} is {w}x{h}; "
                "every image of a data set must have the same size: resize them first."
            )
        out[i] = arr.reshape(h, w, c)

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        list(pool.map(fill, range(len(items))))
    x = torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))  # (N, C, H, W)
    y = torch.tensor([lab for _, lab in items], dtype=torch.int64)
    return x, y, classes


def _read_folder_split(split_dir: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """An ImageFolder split <split_dir>/<class>/*.png|jpg as uint8 tensors."""
    items, classes = _label_items(split_dir)
    return _decode_all(items, lambda name: Path(name).read_bytes(), classes)


def _read_zip_split(zip_path: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """An ImageFolder split stored in a zip under `prefix` (<prefix><class>/<file>)."""
    with zipfile.ZipFile(zip_path) as zf:
        members = sorted(n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/"))
        if not members:
            raise DatasetUnavailable(f"{zip_path} holds no files under {prefix}. {CIFAR_HOW}")
        classes = tuple(sorted({n[len(prefix):].split("/")[0] for n in members}))
        data = {n: zf.read(n) for n in members}  # read sequentially, decode in threads
    labels = {c: i for i, c in enumerate(classes)}
    items = [(n, labels[n[len(prefix):].split("/")[0]]) for n in members]
    return _decode_all(items, data.__getitem__, classes)


def _folder(path: str) -> Callable[[str, Path], Found]:
    """A user's ImageFolder: <root>/{train,test}/<class>/*, or <root>/<class>/* split 80/20."""

    def resolve(split: str, root: Path) -> Found:
        base = Path(path).expanduser()
        if not base.is_dir():
            raise DatasetUnavailable(f"image folder {base} does not exist or is not a folder; "
                                     "give a folder laid out as <root>/<split>/<class>/<images>.")
        split_dir = base / split
        if split_dir.is_dir():
            return Found({"source": "image folder", "path": str(base.resolve()), "split": split,
                          **_files_signature(_folder_files(split_dir))},
                         lambda: _read_folder_split(split_dir))
        if any((base / s).is_dir() for s in SPLITS):
            raise DatasetUnavailable(f"image folder {base} has no {split}/ subfolder; "
                                     f"add {split_dir}/<class>/<images>.")
        return Found({"source": "image folder, seeded 80/20 split", "path": str(base.resolve()),
                      "split": split, **_files_signature(_folder_files(base))},
                     lambda: _split_folder(base, split))

    return resolve


def _split_folder(base: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """A folder without split subfolders: a fixed seeded stratified 80/20 train/test split."""
    items, classes = _label_items(base)
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([lab for _, lab in items])
    keep = []
    for c in range(len(classes)):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(len(idx) * FOLDER_TEST_FRACTION))
        keep.append(idx[:n_test] if split == "test" else idx[n_test:])
    chosen = torch.sort(torch.cat(keep)).values.tolist()
    if not chosen:
        raise DatasetUnavailable(f"{base} has too few images per class for a {split} split.")
    return _decode_all([items[i] for i in chosen], lambda name: Path(name).read_bytes(), classes)


# ---------------------------------------------------------------- registry and public API

NAMES: dict[str, Source] = {
    "digits": Source("scikit-learn digits (8x8, embedded)", True, _digits),
    "mnist1d": Source("MNIST-1D (generated, embedded)", True, _mnist1d),
    "mnist": Source("MNIST", False, _torchvision_idx("MNIST", "MNIST")),
    "fashion_mnist": Source("Fashion-MNIST", False, _torchvision_idx("FashionMNIST", "Fashion-MNIST")),
    "cifar10": Source("CIFAR-10", False, _cifar10),
}
FALLBACK = "digits"


def title(name: str) -> str:
    """A menu label for a data set name."""
    if name.startswith(FOLDER_PREFIX):
        return f"Image folder {name[len(FOLDER_PREFIX):]}"
    return NAMES[name].title if name in NAMES else name


def check_name(field: str, name: Any) -> None:
    """Refuse (ConfigError) a data set name that is neither registered nor folder:<path>."""
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX) and len(name) > len(FOLDER_PREFIX):
        return
    check_choice(field, name, [*NAMES, f"{FOLDER_PREFIX}<path>"])


def _source(name: str) -> Source:
    """The registered source for a name, or a folder source."""
    if name.startswith(FOLDER_PREFIX) and len(name) > len(FOLDER_PREFIX):
        return Source(title(name), False, _folder(name[len(FOLDER_PREFIX):]))
    if name not in NAMES:
        raise DatasetUnavailable(
            f"unknown data set {name!r}; choose one of {', '.join(NAMES)} or folder:<path>."
        )
    return NAMES[name]


_memo: OrderedDict[str, ArrayDataset] = OrderedDict()
_memo_lock = threading.Lock()


def load(name: str, split: str = "train", *, data_dir: Path | None = None,
         cache: Cache | None = None) -> ArrayDataset:
    """One split of a data set, decoded once and then read from `cache` (default: the process's default_cache());
    raises DatasetUnavailable."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    root = _root(data_dir)
    found = _source(name).resolve(split, root)
    config = {"name": name, "split": split, "decode_version": DECODE_VERSION, **found.signature}

    def compute() -> ComputeResult:
        x, y, classes = found.decode()
        return ComputeResult(metrics={"classes": list(classes), "n": len(y)},
                             tensors={"x": x, "y": y}, meta={"data_dir": str(root)})

    cache = cache or default_cache()
    key = f"{cache.root}|{key_for(CACHE_KIND, config)}"
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    entry = cache.get_or_compute(CACHE_KIND, config, compute)
    t = entry.tensors()
    ds = ArrayDataset(name, t["x"], t["y"], tuple(entry.metrics["classes"]))
    with _memo_lock:
        _memo[key] = ds
        while len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)
    return ds


def load_or_fallback(
    name: str, split: str = "train", *, data_dir: Path | None = None, cache: Cache | None = None
) -> tuple[ArrayDataset, str | None]:
    """The data set, or the embedded digits and the message saying how to provide the wanted one."""
    try:
        return load(name, split, data_dir=data_dir, cache=cache), None
    except DatasetUnavailable as err:
        return load(FALLBACK, split, cache=cache), f"{err} Showing the embedded {title(FALLBACK)} instead."


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
