"""Data sets: loaders on small files written in the real formats, bad folders, subsets, real data."""

from __future__ import annotations

import hashlib
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.data import datasets as D

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own data folder, no downloads and an empty memo (tests of the disk cache pass their own)."""
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    D.forget_loaded()


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _write_folder(root: Path, per_class: dict[str, int], size: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """PNG files <root>/<class>/<i>.png; returns the pixels written per class."""
    written = {}
    for k, (cls, n) in enumerate(per_class.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        imgs = _images(n, (size, size, 3), seed + k)
        for i, img in enumerate(imgs):
            Image.fromarray(img).save(root / cls / f"{i:03d}.png")
        written[cls] = imgs
    return written


# ---------------------------------------------------------------- embedded data


def test_embedded_digits_and_mnist1d() -> None:
    digits = D.load("digits", "train")
    assert digits.x.dtype == torch.uint8 and digits.input_shape == (1, 8, 8) and digits.is_image
    assert digits.y.dtype == torch.int64 and len(digits) + len(D.load("digits", "test")) == 1797
    assert digits.num_classes == 10 and 0.0 <= digits.to_float().min() and digits.to_float().max() <= 1.0
    m1d = D.load("mnist1d", "test")
    assert m1d.x.dtype == torch.float32 and m1d.x.shape == (1000, 40) and not m1d.is_image
    assert len(D.load("mnist1d", "train")) == 4000


def test_mnist1d_as_the_double_descent_notebook_makes_it() -> None:
    train, test = D.load("mnist1d_16k", "train"), D.load("mnist1d_16k", "test")
    assert train.x.shape == (4000, 40) and test.x.shape == (12000, 40)
    assert sorted(set(test.y.tolist())) == list(range(10))


def test_second_load_comes_from_the_disk_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path / "cache")
    first = D.load("digits", "test", cache=cache)
    assert len(cache.entries(D.CACHE_KIND)) == 1  # decoded now, into this cache
    D.forget_loaded()
    monkeypatch.setattr("sklearn.datasets.load_digits", lambda: pytest.fail("decoded twice"))
    second = D.load("digits", "test", cache=cache)
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)


def test_registered_sets_stay_loaded_while_folder_sets_come_and_go(tmp_path: Path) -> None:
    """A registered set's split is held once and never evicted; folders' (and uploads') sets share an LRU of
    MEMO_SIZE: a server whose visitors move between pages does not re-read CIFAR-10 from disk each time."""
    digits = D.load("digits", "train")
    folders = []
    for i in range(D.MEMO_SIZE + 1):
        _write_folder(tmp_path / f"set{i}" / "train", {"a": 2, "b": 2}, seed=i)
        _write_folder(tmp_path / f"set{i}" / "test", {"a": 1, "b": 1}, seed=i)
        folders.append(D.load(f"folder:{tmp_path / f'set{i}'}", "train"))
    assert D.load("digits", "train") is digits
    assert D.load(f"folder:{tmp_path / 'set0'}", "train") is not folders[0]  # the oldest folder set was dropped
    assert D.load(f"folder:{tmp_path / f'set{D.MEMO_SIZE}'}", "train") is folders[-1]
    D.forget_loaded()
    assert D.load("digits", "train") is not digits


# ---------------------------------------------------------------- real formats


def _idx(path: Path, arr: np.ndarray) -> None:
    """Write an IDX file (the MNIST format): magic, big-endian dims, raw uint8 data."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.tobytes())


def test_idx_files_through_torchvision(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = {p: _images(n, (28, 28), i) for i, (p, n) in enumerate({"train": 12, "t10k": 5}.items())}
    for prefix, imgs in images.items():
        _idx(raw / f"{prefix}-images-idx3-ubyte", imgs)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(len(imgs)) % 10).astype(np.uint8))
    ds = D.load("fashion_mnist", "test")
    assert ds.x.shape == (5, 1, 28, 28) and torch.equal(ds.x[:, 0], torch.from_numpy(images["t10k"]))
    assert ds.y.tolist() == [0, 1, 2, 3, 4] and ds.classes[0] == "T-shirt/top"


def test_cifar_pickles_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    batches = {}
    for i, name in enumerate(names):
        data = _images(4, (3 * 32 * 32,), i)  # CIFAR rows: 1024 R, 1024 G, 1024 B
        batches[name] = data
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, "labels": [i % 10, 1, 2, 3]}, f)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": classes}, f)

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", [[n, md5(n)] for n in names[:5]])
    monkeypatch.setattr(cifar, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setitem(cifar.meta, "md5", md5("batches.meta"))
    test = D.load("cifar10", "test")
    assert test.x.shape == (4, 3, 32, 32) and test.classes == tuple(classes)
    assert torch.equal(test.x.reshape(4, -1), torch.from_numpy(batches["test_batch"]))
    assert len(D.load("cifar10", "train")) == 20


def test_image_folder_with_splits(tmp_path: Path) -> None:
    written = _write_folder(tmp_path / "pics" / "train", {"cat": 3, "dog": 2})
    _write_folder(tmp_path / "pics" / "test", {"cat": 1, "dog": 1})
    ds = D.load(f"folder:{tmp_path / 'pics'}", "train")
    assert ds.classes == ("cat", "dog") and ds.y.tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(ds.x[3], torch.from_numpy(written["dog"][0]).permute(2, 0, 1))
    assert len(D.load(f"folder:{tmp_path / 'pics'}", "test")) == 2


def test_image_folder_without_splits_is_split_and_change_is_noticed(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pics", {"a": 10, "b": 5})
    name = f"folder:{tmp_path / 'pics'}"
    train, test = D.load(name, "train"), D.load(name, "test")
    assert D.class_counts(train) == [8, 4] and D.class_counts(test) == [2, 1]
    _write_folder(tmp_path / "pics", {"a": 10, "b": 10})
    D.forget_loaded()
    assert D.class_counts(D.load(name, "train")) == [8, 8]


def test_cifar_jpeg_zip(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with zipfile.ZipFile(tmp_path / "data" / "cifar10-jpeg.zip", "w") as zf:
        for split, n in (("train", 3), ("test", 2)):
            for cls in ("airplane", "bird"):
                for i, img in enumerate(_images(n, (32, 32, 3), n)):
                    path = tmp_path / "x.jpg"
                    Image.fromarray(img).save(path, quality=90)
                    zf.write(path, f"cifar10-jpeg/{split}/{cls}/{i:04d}.jpg")
    ds = D.load("cifar10", "test")
    assert ds.x.shape == (4, 3, 32, 32) and ds.classes == ("airplane", "bird") and ds.y.tolist() == [0, 0, 1, 1]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda r: (r / "train" / "a" / "bad.png").write_bytes(b"not a png"), "bad.png cannot be read"),
        (lambda r: (r / "train" / "a" / "notes.txt").write_text("hi"), "notes.txt is not an image"),
        (lambda r: Image.new("RGB", (9, 7)).save(r / "train" / "b" / "big.png"), "big.png is 9x7"),
        (lambda r: Image.new("RGB", (600, 4)).save(r / "train" / "a" / "000.png"), "must be resized"),
    ],
)
def test_bad_folder_files_are_named(tmp_path: Path, make, expected: str) -> None:
    _write_folder(tmp_path / "pics" / "train", {"a": 2, "b": 2})
    make(tmp_path / "pics")
    with pytest.raises(D.DatasetUnavailable, match=expected):
        D.load(f"folder:{tmp_path / 'pics'}", "train")


def test_one_class_empty_class_and_enormous_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_folder(tmp_path / "one" / "train", {"only": 3})
    with pytest.raises(D.DatasetUnavailable, match="at least 2 class folders.*'only'"):
        D.load(f"folder:{tmp_path / 'one'}")
    (tmp_path / "one" / "train" / "empty").mkdir()
    with pytest.raises(D.DatasetUnavailable, match="empty.*hold no images"):
        D.load(f"folder:{tmp_path / 'one'}")
    _write_folder(tmp_path / "big" / "train", {"a": 3, "b": 3})
    monkeypatch.setattr(D, "MAX_FOLDER_IMAGES", 4)
    with pytest.raises(D.DatasetUnavailable, match="more than 4 images"):
        D.load(f"folder:{tmp_path / 'big'}")
    with pytest.raises(D.DatasetUnavailable, match="does not exist"):
        D.load(f"folder:{tmp_path / 'nowhere'}")


def test_missing_set_says_how_to_provide_it_and_falls_back(tmp_path: Path) -> None:
    with pytest.raises(D.DatasetUnavailable, match=r"t10k-images-idx3-ubyte.*FashionMNIST/raw.*downloads"):
        D.load("fashion_mnist", "test")
    ds, message = D.load_or_fallback("cifar10", "test")
    assert ds.name == "digits" and "cifar-10-batches-py" in message and "cifar10-jpeg.zip" in message
    ds, message = D.load_or_fallback("no_such_set", "train")
    assert ds.name == "digits" and "unknown data set" in message
    assert D.load_or_fallback("digits")[1] is None


def test_names_and_splits_are_checked() -> None:
    D.check_name("dataset", "cifar10")
    D.check_name("dataset", "folder:/some/where")
    with pytest.raises(ConfigError, match="dataset must be one of"):
        D.check_name("dataset", "imagenet")
    with pytest.raises(ConfigError, match="split"):
        D.load("digits", "validation")


# ---------------------------------------------------------------- subsets


def test_subsets_are_seeded_and_can_be_imbalanced() -> None:
    ds = D.load("digits", "train")
    a, b = D.subset(ds, 5, seed=1), D.subset(ds, 5, seed=1)
    assert D.class_counts(a) == [5] * 10 and torch.equal(a.x, b.x)
    assert not torch.equal(a.y, D.subset(ds, 5, seed=2).y) or not torch.equal(a.x, D.subset(ds, 5, seed=2).x)
    imbalanced = D.subset(ds, [100, 1, 1, 1, 1, 1, 1, 1, 1, 1000], seed=0)
    counts = D.class_counts(imbalanced)
    assert counts[:9] == [100] + [1] * 8 and counts[9] == D.class_counts(ds)[9]
    assert D.imbalance_ratio(counts) == counts[9]
    assert len(D.take(ds, 17, seed=3)) == 17 and torch.equal(D.take(ds, 17, 3).x, D.take(ds, 17, 3).x)
    with pytest.raises(ConfigError):
        D.subset(ds, [1, 2], seed=0)


# ---------------------------------------------------------------- real data (skipped without it)

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not here")


@needs_shared
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(SHARED))
    ds = D.load("fashion_mnist", "test")
    assert ds.x.shape == (10000, 1, 28, 28) and D.class_counts(ds) == [1000] * 10


@needs_shared
def test_real_cifar10_from_the_jpeg_zip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(SHARED))
    ds = D.load("cifar10", "test")
    assert ds.x.shape == (10000, 3, 32, 32) and D.class_counts(ds) == [1000] * 10
    assert ds.classes[0] == "airplane" and ds.classes[-1] == "truck"
    assert 0.3 < ds.to_float().mean().item() < 0.7


# ---------------------------------------------------------------- server folders are the operator's


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One data root, <tmp>/roots, with a good folder pics/ (3 + 3 images) in it."""
    root = tmp_path / "roots"
    _write_folder(root / "pics", {"a": 3, "b": 3})
    monkeypatch.setenv("EXPLORER_DATA_ROOTS", str(root))
    return root


def test_visitors_open_no_server_folder_without_data_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPLORER_DATA_ROOTS", raising=False)
    _write_folder(tmp_path / "pics", {"a": 3, "b": 3})
    with pytest.raises(D.DatasetUnavailable, match="opens no server folders.*upload"):
        D.visitor_folder(str(tmp_path / "pics"))


def test_visitor_folders_stay_inside_the_data_roots(roots: Path, tmp_path: Path) -> None:
    name = D.visitor_folder("pics")  # relative to the root
    assert name == D.visitor_folder(str(roots / "pics")) == f"{D.FOLDER_PREFIX}{(roots / 'pics').resolve()}"
    assert D.class_counts(D.load(name, "train")) == [2, 2] and D.title(name) == "Image folder pics"
    _write_folder(tmp_path / "outside", {"a": 3, "b": 3})
    (roots / "link").symlink_to(tmp_path / "outside")
    for typed in ("/", "/proc/self", "/etc", "..", "pics/../..", "link", str(tmp_path / "outside"), "../outside"):
        with pytest.raises(D.DatasetUnavailable, match="is outside the server's data folders") as err:
            D.visitor_folder(typed)
        assert str(tmp_path) not in str(err.value).replace(typed, "")  # names only what was typed
    with pytest.raises(D.DatasetUnavailable, match="'nothing/here' does not exist"):
        D.visitor_folder("nothing/here")


def test_messages_name_files_relative_to_the_data_root(roots: Path) -> None:
    (roots / "pics" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(D.DatasetUnavailable) as err:
        D.load(D.visitor_folder("pics"), "train")
        D.load(D.visitor_folder("pics"), "test")
    assert "pics/a/bad.png cannot be read as an image" in str(err.value) and str(roots) not in str(err.value)


def test_links_inside_a_root_may_not_lead_out_of_it(roots: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (6, 6)).save(secret)
    (roots / "pics" / "a" / "zz.png").symlink_to(secret)
    with pytest.raises(D.DatasetUnavailable, match="pics/a/zz.png links to a file outside the data folder"):
        D.load(D.visitor_folder("pics"), "train")


@pytest.mark.parametrize("typed", ["/", "/proc/self"])
def test_system_folders_are_refused_quickly_with_a_message(typed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's own path, and a root of / (everything inside it): a message at once, never a traceback."""
    import time

    for name in (f"{D.FOLDER_PREFIX}{typed}", None):
        if name is None:
            monkeypatch.setenv("EXPLORER_DATA_ROOTS", "/")
            name = D.visitor_folder(typed)
        t0 = time.perf_counter()
        with pytest.raises(D.DatasetUnavailable, match="is not an image file|cannot be read|class folders|more than"):
            D.load(name, "train")
        assert time.perf_counter() - t0 < 20


def test_few_images_per_class_and_mismatched_splits(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pics", {"a": 1, "b": 5})
    with pytest.raises(D.DatasetUnavailable, match=r"a \(1\) in .* hold fewer than 2 images"):
        D.load(f"folder:{tmp_path / 'pics'}", "train")
    _write_folder(tmp_path / "two", {"a": 2, "b": 2})  # two images: one for each split
    assert len(D.load(f"folder:{tmp_path / 'two'}", "test")) == 2
    _write_folder(tmp_path / "split" / "train", {"a": 2, "b": 2})
    _write_folder(tmp_path / "split" / "test", {"a": 1, "c": 1})
    with pytest.raises(D.DatasetUnavailable, match="has the classes a, b but .*test has a, c"):
        D.load(f"folder:{tmp_path / 'split'}", "test")


def test_both_splits_share_the_first_images_size_and_channels(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pics" / "train", {"a": 2, "b": 2})
    _write_folder(tmp_path / "pics" / "test", {"a": 1, "b": 1})
    Image.new("L", (6, 6)).save(tmp_path / "pics" / "test" / "a" / "000.png")  # grey first test image
    train, test = D.load(f"folder:{tmp_path / 'pics'}", "train"), D.load(f"folder:{tmp_path / 'pics'}", "test")
    assert train.input_shape == test.input_shape == (3, 6, 6)


def test_image_sizes_come_from_the_header_before_decoding(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pics" / "train", {"a": 2, "b": 2})
    Image.new("RGB", (700, 6)).save(tmp_path / "pics" / "train" / "b" / "zz.png")  # not the first image
    with pytest.raises(D.DatasetUnavailable, match="zz.png is 700x6 pixels; images larger than 512"):
        D.load(f"folder:{tmp_path / 'pics'}", "train")


def test_odd_image_modes_decode(tmp_path: Path) -> None:
    """16-bit grey keeps its top 8 bits (Pillow alone would clip it to white); CMYK, palette, 1-bit decode."""
    _write_folder(tmp_path / "pics" / "train", {"a": 1, "b": 3})
    Image.fromarray(np.full((6, 6), 40000, np.uint16)).save(tmp_path / "pics" / "train" / "a" / "000.png")
    Image.new("CMYK", (6, 6)).save(tmp_path / "pics" / "train" / "a" / "001.jpg")
    Image.new("P", (6, 6)).save(tmp_path / "pics" / "train" / "b" / "000.png")
    Image.new("1", (6, 6)).save(tmp_path / "pics" / "train" / "b" / "001.png")
    ds = D.load(f"folder:{tmp_path / 'pics'}", "train")
    assert ds.input_shape == (1, 6, 6) and int(ds.x[0].max()) == 40000 >> 8


def test_missing_sets_do_not_show_the_data_folder_path(tmp_path: Path) -> None:
    ds, message = D.load_or_fallback("fashion_mnist", "test")
    assert ds.name == "digits" and str(tmp_path) not in message and "FashionMNIST/raw/" in message


def test_upload_names_are_checked() -> None:
    D.check_name("dataset", "upload:" + "ab" * 32)
    with pytest.raises(ConfigError):
        D.check_name("dataset", "upload:nothex")
    with pytest.raises(D.DatasetUnavailable, match="no longer in the server's memory.*upload the zip again"):
        D.load("upload:" + "cd" * 32, "train")


def test_name_or_fallback_finds_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    assert D.name_or_fallback("digits") == ("digits", None)
    name, notice = D.name_or_fallback("cifar10", data_dir=tmp_path)  # an empty folder: not there
    assert name == D.FALLBACK and "CIFAR-10" in notice and "embedded" in notice
