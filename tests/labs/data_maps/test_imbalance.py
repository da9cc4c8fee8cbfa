"""Per-class recall under imbalance, and the pictures drawn of examples."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from explorer.core.config import ConfigError
from explorer.data import datasets as D
from explorer.labs.data_maps.imbalance import ImbalanceConfig, compare_recall, fit_softmax
from explorer.render import gallery as G
from explorer.train.evaluate import Diverged


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own cache, no downloads."""
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    D.forget_loaded()


def test_a_rare_class_loses_recall() -> None:
    cfg = ImbalanceConfig(dataset="digits", per_class=100, minority_class=3, minority=2, steps=40, lr=0.1)
    res = compare_recall(cfg)
    assert res["balanced"]["train_counts"][3] == 100 and res["imbalanced"]["train_counts"][3] == 2
    assert len(res["balanced"]["recall"]) == 10 and res["balanced"]["recall"][3] > 0.8
    assert res["imbalanced"]["recall"][3] < res["balanced"]["recall"][3] - 0.2


def test_imbalance_config_limits_and_divergence() -> None:
    with pytest.raises(ConfigError, match="minority must be between"):
        ImbalanceConfig(per_class=10, minority=11)
    with pytest.raises(ConfigError, match="per_class"):
        ImbalanceConfig(per_class=10**6)
    x, y = torch.tensor([[1e30, -1e30], [-1e30, 1e30]]), torch.tensor([0, 1])
    with pytest.raises(Diverged, match="diverged at step 1: the loss became non-finite"):
        fit_softmax(x * 1e10, y, 2, steps=3, lr=1.0, seed=0)


def test_pictures_of_images_and_signals() -> None:
    imgs = torch.randint(0, 256, (5, 3, 4, 6), dtype=torch.uint8)
    g = G.grid(imgs, ncols=2, scale=2, gap=1)
    assert g.shape == (3 * 5 * 2 - 2, 2 * 7 * 2 - 2, 3) and g.dtype.name == "uint8"
    assert (g[:8, :12] == imgs[0].permute(1, 2, 0).numpy().repeat(2, 0).repeat(2, 1)).all()
    sig = G.signal_image(torch.sin(torch.linspace(0, 6, 40)))
    assert sig.shape == (G.SIGNAL_HEIGHT, 80) and (sig < 255).any(axis=0).all()
    uri = G.data_uri(imgs[0])  # colour: JPEG, so that every point of a CIFAR-10 map carries its thumbnail
    assert uri.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",")[1]))).size == (60, 40)
    grey = G.data_uri(imgs[0, :1])  # grey and signals: exact PNG
    assert grey.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(grey.split(",")[1]))).size == (60, 40)
