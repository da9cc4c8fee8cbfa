"""The Data page: loads, draws balance and gallery, refuses bad links, falls back, computes maps (pixels, models)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from explorer.core import settings
from explorer.core.jobs import default_runner
from explorer.data import datasets as D
from explorer.labs.data_maps import representations as R

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_cache) -> None:
    """Own cache; the shared data folder when present; no downloads."""
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(SHARED if SHARED.is_dir() else tmp_path / "data"))
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    D.forget_loaded()


def _unescaped(text: str) -> str:
    """A message as the visitor reads it (views.widgets.plain backslash-escapes its punctuation)."""
    return re.sub(r"\\(.)", r"\1", text)


def _page(**params: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "views" / "data_maps.py"), default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_digits_page_draws_balance_gallery_and_a_pca_map() -> None:
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="digits", method="pca", points="300")
    assert not at.exception
    assert at.selectbox(key="data_dataset").value == "digits"
    assert [m.value for m in at.metric][:2] == ["1,437", "360"]
    assert at.slider(key="data_per_class").value == 8 and len(at.get("image")) >= 10
    job = next(j for j in default_runner().jobs() if j.name.startswith("map digits") and j.id not in before)
    assert job.wait(60)
    at.run()
    assert not at.exception and not at.error
    assert at.get("download_button") and any("trustworthiness" in c.value for c in at.caption)


def test_representation_net_trained_on_the_page_becomes_the_embedding_space() -> None:
    at = _page(dataset="digits", method="pca", points="300")
    assert not at.exception
    assert at.selectbox(key="data_space").options == ["Raw pixels"]
    at.slider(key="data_fm_epochs").set_value(2).run()
    before = {j.id for j in default_runner().jobs()}  # earlier tests in this process leave jobs behind
    at.button(key="data_fm_train").click().run()
    assert not at.exception
    job = next(j for j in default_runner().jobs() if j.name == "representation net digits" and j.id not in before)
    assert job.wait(120), job.state
    at.run()
    assert not at.exception
    ref = job.result.ref
    assert at.selectbox(key="data_space").value == ref and ref.startswith("model:representation_net:")
    assert any("2 epochs" in o for o in at.selectbox(key="data_space").options)
    before = {j.id for j in default_runner().jobs()}
    at.button(key="data_compute").click().run()
    map_job = next(j for j in default_runner().jobs() if j.name.startswith("map digits") and j.id not in before)
    assert map_job.wait(60)
    at.run()
    assert not at.exception and not at.error
    assert any(c.value.startswith("embedding space: Representation net: MLP") for c in at.caption)
    assert any(f"--space {ref}" in c.value for c in at.caption)
    shared = _page(dataset="digits", method="pca", points="300", features=ref)  # links keep their ?features=
    assert not shared.exception and shared.selectbox(key="data_space").value == ref


def test_links_naming_missing_or_malformed_models_get_messages() -> None:
    at = _page(dataset="digits", features=R.make_ref(R.NET_KIND, "c" * 64))
    assert not at.exception and "no cached representation_net model" in _unescaped(at.warning[0].value)
    assert at.selectbox(key="data_space").value == "pixels"
    at = _page(dataset="digits", features="model:nonsense")
    assert not at.exception and "refused" in at.error[0].value


def test_bad_link_gets_a_message() -> None:
    at = _page(points="999999")
    assert not at.exception and "refused" in at.error[0].value


# ---------------------------------------------------------------- visitors' own images


def _zip(entries: dict[str, bytes]) -> bytes:
    """A zip of name -> data."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def _png(seed: int, size: int = 8) -> bytes:
    """A small real PNG."""
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _images(per_class: dict[str, int]) -> dict[str, bytes]:
    """<class>/<i>.png entries."""
    return {f"{cls}/{i:03d}.png": _png(100 * k + i) for k, (cls, n) in enumerate(per_class.items()) for i in range(n)}


def _write(folder: Path, entries: dict[str, bytes]) -> None:
    """The entries as files under folder."""
    for name, data in entries.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


@pytest.fixture
def no_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default: the operator lists no data roots."""
    monkeypatch.delenv("EXPLORER_DATA_ROOTS", raising=False)


def test_without_data_roots_no_server_folder_is_offered(no_roots) -> None:
    at = _page(dataset="folder", folder="/etc")
    assert not at.exception and "refused" in at.error[0].value
    assert "A folder on this server" not in at.selectbox(key="data_dataset").options
    assert not at.text_input  # no path box at all
    at = _page(dataset="upload")
    assert not at.exception and at.file_uploader(key="data_upload") is not None
    assert f"At most {settings.current().max_upload_mb:g} MB" in at.file_uploader(key="data_upload").help
    assert any("Upload a zip" in i.value for i in at.info)


def test_an_uploaded_zip_becomes_the_data_set(no_roots, tmp_path: Path) -> None:
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="upload", method="pca")
    at.file_uploader(key="data_upload").set_value(("pets.zip", _zip(_images({"cat": 40, "dog": 35})),
                                                   "application/zip")).run()
    assert not at.exception and not at.error and not at.warning
    assert [m.value for m in at.metric][:2] == ["60", "15"]  # 80/20 of each class
    assert any("needs at least 50 test images; this data set has 15" in i.value for i in at.info)
    for job in default_runner().jobs():
        if job.id not in before:
            job.cancel()
    assert not (tmp_path / "data").exists()  # nothing written into the data folder


def test_a_bad_upload_is_refused_with_its_entry_named(no_roots) -> None:
    at = _page(dataset="upload")
    at.file_uploader(key="data_upload").set_value(("evil.zip", _zip({**_images({"cat": 3, "dog": 3}),
                                                                     "../../[click](https://evil)/x.png": b"x"}),
                                                   "application/zip")).run()
    assert not at.exception
    assert "climbs out of the archive" in at.error[0].value and "\\[click\\]" in at.error[0].value  # escaped


def test_class_names_from_an_upload_are_shown_as_plain_text(no_roots) -> None:
    at = _page(dataset="upload", method="pca")  # a folder named "[a](https://evil)/..." in the zip
    at.file_uploader(key="data_upload").set_value(("x.zip", _zip(_images({"[a](https://evil)": 3, "b": 3})),
                                                   "application/zip")).run()
    assert not at.exception
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert "\\[a\\]\\(https\\:" in captions  # Markdown in a caption: escaped, shown as typed


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An operator's data root holding a folder of 2 x 60 images (24 test images, fewer than 100: once a crash)."""
    root = tmp_path / "root"
    _write(root / "pics", _images({"a": 60, "b": 60}))
    monkeypatch.setenv("EXPLORER_DATA_ROOTS", str(root))
    return root


def test_a_folder_inside_a_data_root_with_few_test_images(data_root: Path) -> None:
    at = _page(dataset="folder", folder="pics", method="pca")
    assert not at.exception and not at.error and not at.warning
    assert at.text_input(key="data_folder").value == "pics"
    assert "A folder on this server" in at.selectbox(key="data_dataset").options
    assert [m.value for m in at.metric][:2] == ["96", "24"]
    assert any("needs at least 50 test images" in i.value for i in at.info)


def test_a_small_folder_keeps_the_map_settings_in_range(data_root: Path) -> None:
    _write(data_root / "mid", _images({"a": 150, "b": 150}))  # 60 test images: the points slider once had min = max
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="folder", folder="mid")
    assert not at.exception and not at.error
    assert at.slider(key="data_points").max == 60 and at.slider(key="data_perplexity").max <= 15
    for job in default_runner().jobs():
        if job.id not in before:
            job.cancel()


@pytest.mark.parametrize("typed", ["/", "/proc/self", "..", "pics/../..", "/etc"])
def test_folders_outside_the_roots_are_refused_naming_only_what_was_typed(data_root: Path, typed: str) -> None:
    at = _page(dataset="folder", folder=typed)
    assert not at.exception
    assert "outside the server" in at.error[0].value and str(data_root) not in at.error[0].value


def test_bad_folder_contents_get_messages(data_root: Path) -> None:
    _write(data_root / "one", {**_images({"b": 4}), "a/000.png": _png(0)})
    at = _page(dataset="folder", folder="one")
    assert not at.exception and "fewer than 2 images" in at.warning[0].value
    _write(data_root / "bad", {**_images({"a": 3, "b": 3}), "a/zz.png": b"not an image"})
    at = _page(dataset="folder", folder="bad")
    assert not at.exception and "bad/a/zz.png cannot be read" in _unescaped(at.warning[0].value)
    assert str(data_root) not in at.warning[0].value


def test_the_root_itself_may_hold_system_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator who lists / as a root: / and /proc/self are refused with a message, never a traceback."""
    monkeypatch.setenv("EXPLORER_DATA_ROOTS", "/")
    for typed in ("/", "/proc/self"):
        at = _page(dataset="folder", folder=typed)
        assert not at.exception and (at.warning or at.error)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not here")
def test_fashion_mnist_default() -> None:
    at = _page()
    assert not at.exception and not at.warning
    assert at.metric[0].value == "60,000" and at.metric[2].value == "1.00x"
    assert any("What to look for" in m.value for m in at.markdown)


def test_every_map_point_has_its_hover_thumbnail() -> None:
    """No point of a finished map lacks its image (a byte cap once left about a quarter of CIFAR points bare)."""
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="digits", method="pca", points="360")  # the map a visitor lands on computes by itself
    job = next(j for j in default_runner().jobs() if j.name.startswith("map digits") and j.id not in before)
    assert job.wait(60)
    at.run()
    assert not at.exception
    assert any("Hover a point for its image: every point." in c.value for c in at.caption)


@pytest.mark.slow  # decodes the CIFAR-10 JPEGs once (~15-30 s here)
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not here")
def test_every_point_of_a_default_size_cifar_map_has_its_thumbnail() -> None:
    """2,000 CIFAR-10 points (the default size): every one carries its image, enlarged from 32 pixels."""
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="cifar10", method="pca", points="2000")  # the map a visitor lands on computes by itself
    job = next(j for j in default_runner().jobs() if j.name.startswith("map cifar10") and j.id not in before)
    assert job.wait(120)
    at.run()
    assert not at.exception
    assert any("Hover a point for its image: every point." in c.value for c in at.caption)


def test_the_map_a_visitor_lands_on_computes_by_itself_and_later_settings_wait_for_compute() -> None:
    before = {j.id for j in default_runner().jobs()}
    at = _page(dataset="digits", method="pca", points="300")
    assert not at.exception
    started = [j for j in default_runner().jobs() if j.id not in before and j.name.startswith("map digits pca")]
    assert len(started) == 1 and started[0].wait(60)
    at.run()
    assert any("trustworthiness" in c.value for c in at.caption)  # the map is shown without a click
    before = {j.id for j in default_runner().jobs()}
    at.radio(key="data_method").set_value("tsne").run()
    assert not [j for j in default_runner().jobs() if j.id not in before]  # a changed setting waits for Compute
    assert any("Press Compute" in i.value for i in at.info)
