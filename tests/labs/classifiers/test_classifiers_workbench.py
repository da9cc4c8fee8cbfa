"""Classifier workbench: refused settings, the presets, a tiny real run on digits (metrics, the checkpoint reloads
and predicts the same, every run kept), the comparison rows, and a tiny Fashion-MNIST run when the data is here."""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

import pytest
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.data.augment import AugmentConfig
from explorer.labs.classifiers import cli
from explorer.labs.classifiers import presets as P
from explorer.labs.classifiers import workbench as W
from explorer.labs.classifiers.config import ClassifierConfig, with_values
from explorer.nets.cnn import CNNConfig, build_cnn
from explorer.train.image_fit import FitConfig, ImageData, predict

CPU = torch.device("cpu")
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
TINY = {"dataset": "digits", "n_train": 200, "n_val": 100, "n_test": 100, "model.width": 0.25, "fit.epochs": 1,
        "fit.patience": 0}


def tiny(**more: object) -> ClassifierConfig:
    """The Simple CNN preset shrunk to seconds: 200 digits, width 0.25, one epoch."""
    return with_values(P.PRESETS["simple"].cpu, {**TINY, **more})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClassifierConfig, Cache, W.Entry]:
    cache = Cache(tmp_path_factory.mktemp("cache"))
    cfg = tiny()
    return cfg, cache, W.run(cfg, cache, device=CPU)


@pytest.mark.parametrize("bad, match", [
    (dict(n_train=10), "training images must be between"),
    (dict(n_val=-1), "validation images must be between"),
    (dict(n_test=20_000), "test images must be between"),
    (dict(dataset="cifar100"), "dataset must be one of"),
    (dict(n_val=0, fit=FitConfig(patience=3)), "early stopping watches the validation loss"),
    (dict(model="resnet9"), "model must be a CNNConfig"),
])
def test_out_of_range_settings_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        ClassifierConfig(**bad)


def test_refused_by_the_engine_and_by_the_data():
    with pytest.raises(ConfigError):
        with_values(P.PRESETS["simple"].cpu, {"model.width": 99.0})
    with pytest.raises(ConfigError):
        with_values(P.PRESETS["simple"].cpu, {"fit.epochs": 0})
    with pytest.raises(ConfigError, match="not an image data set"):
        W.resolve(ClassifierConfig(dataset="mnist1d"))


def test_one_seed_seeds_everything():
    cfg = ClassifierConfig(seed=7)
    assert cfg.fit.seed == 7 and dataclasses.replace(cfg, seed=3).fit.seed == 3


def test_presets_build_at_both_scales_and_recompute_from_their_command():
    assert ClassifierConfig() == P.PRESETS[P.DEFAULT].cpu  # the page opens on the default preset's CPU scale
    assert {p.title for p in P.PRESETS.values()} >= {"Simple CNN (report)", "ResNet9 (report)", "ResNet20 (report)"}
    errs = {k: p.report_top1_err for k, p in P.PRESETS.items()}
    assert errs["simple"] == 0.173 and errs["resnet9"] == 0.111 and errs["resnet20"] == 0.127
    s, r9, r20 = P.PRESETS["simple"].full, P.PRESETS["resnet9"].full, P.PRESETS["resnet20"].full
    assert (s.fit.optimizer, s.fit.batch_size, s.fit.augment.active) == ("adam", 32, False)
    assert (r9.fit.optimizer, r9.fit.batch_size, r9.fit.clip > 0, r9.fit.augment.flip) == ("adamw", 400, True, True)
    assert (r20.fit.optimizer, r20.fit.schedule, r20.fit.batch_size) == ("adamw", "plateau", 128)
    for key, p in P.PRESETS.items():
        assert p.full.n_train + p.full.n_val == 50_000 and p.full.dataset == "cifar10"
        assert p.cpu.model.width < p.full.model.width or p.cpu.n_train < p.full.n_train
        assert W.cli_command(p.cpu) == f"python -m explorer classify --preset {key}"
        assert W.cli_command(p.full) == f"python -m explorer classify --preset {key} --full"
        assert P.which(p.cpu) == (key, "cpu") and P.by_name(p.title) is p
        resolved = W.resolve(p.cpu, fallback=False)
        assert resolved.model.in_channels == 3 and resolved.model.classes == 10


@pytest.mark.parametrize("cfg", [
    tiny(),
    tiny(**{"model.family": "resnet20", "fit.optimizer": "sgd", "fit.nesterov": True, "fit.lr": 0.05,
            "fit.augment.flip": True, "fit.augment.cutout": 4, "seed": 3}),
    with_values(P.PRESETS["resnet9"].full, {"fit.augment.flip": False, "fit.epochs": 3}),
])
def test_the_recompute_command_gives_back_the_config(cfg):
    words = shlex.split(W.cli_command(cfg))
    assert words[:3] == ["python", "-m", "explorer"] and words[3] == "classify"
    assert cli.config_from_args(cli.parser().parse_args(words[4:])) == cfg


def test_tiny_run_on_digits_is_evaluated_and_kept(tiny_run):
    cfg, cache, entry = tiny_run
    m = entry.metrics
    assert m["dataset"] == "digits" and m["n_train"] == 200 and m["n_val"] == 100 and m["n_test"] == 100
    assert m["image_shape"] == [1, 8, 8] and len(m["classes"]) == 10 and m["epochs_run"] == 1
    assert m["params"] > 0 and m["flops_per_image"] > 0 and m["images_per_s"] > 0
    t = m["test"]
    assert 0.0 <= t["top5_err"] <= t["top1_err"] <= 1.0 and t["loss"] > 0
    cm = torch.tensor(t["confusion"])
    assert cm.shape == (10, 10) and int(cm.sum()) == 100
    assert t["top1_err"] == pytest.approx(1 - cm.diag().sum().item() / 100)
    assert len(t["per_class"]["accuracy"]) == 10
    h = m["history"]
    assert h["epoch"] == [1] and len(h["val_loss"]) == 1 and len(h["train_loss"]) == 1
    assert len(m["mistakes"]) == min(W.N_MISTAKES, int(cm.sum() - cm.diag().sum()))
    confidences = [x["confidence"] for x in m["mistakes"]]
    assert confidences == sorted(confidences, reverse=True) and all(x["pred"] != x["true"] for x in m["mistakes"])
    images = W.mistake_images(entry)
    assert images.dtype == torch.uint8 and tuple(images.shape) == (len(m["mistakes"]), 1, 8, 8)
    assert entry.meta["recompute"] == W.cli_command(W.resolve(cfg))
    again = W.run(cfg, cache, device=CPU)  # kept: the same entry, not trained again
    assert again.key == entry.key and again.meta["created"] == entry.meta["created"]


def test_the_checkpoint_reloads_and_predicts_the_same(tiny_run):
    cfg, _, entry = tiny_run
    model = W.load_model(entry)
    fresh = build_cnn(W.config_of(entry).model)
    assert set(model.state_dict()) == set(fresh.state_dict())
    train, _, test, _ = W.split_data(W.config_of(entry))
    tr = ImageData.from_dataset(train, CPU)
    logits = predict(model, ImageData.from_dataset(test, CPU, tr.mean, tr.std))
    pred = logits.argmax(1)
    cm = torch.zeros(10, 10, dtype=torch.long)
    cm.index_put_((test.y, pred), torch.ones_like(pred), accumulate=True)
    assert cm.tolist() == entry.metrics["test"]["confusion"]
    probs = logits.softmax(1)
    for x in entry.metrics["mistakes"]:
        assert int(pred[x["index"]]) == x["pred"] and test.y[x["index"]] == x["true"]
        assert float(probs[x["index"], x["pred"]]) == pytest.approx(x["confidence"], abs=1e-5)


def test_progress_and_live_history_are_published(recorder):
    W.train_and_evaluate(tiny(**{"fit.epochs": 2}), recorder, device=CPU)
    assert recorder.progress[-1] == pytest.approx(1.0)
    assert recorder.progress == sorted(recorder.progress)
    lives = [s for s in recorder.snapshots if isinstance(s, dict) and s.get("history", {}).get("epoch")]
    assert lives and lives[-1]["history"]["epoch"] == [1, 2] and lives[-1]["epochs"] == 2
    assert recorder.checkpoints >= 2


def test_every_run_is_kept_and_compared(tiny_run):
    cfg, cache, first = tiny_run
    other = W.run(tiny(**{"fit.optimizer": "sgd", "fit.lr": 0.05, "fit.augment.flip": True}), cache, device=CPU)
    kept = W.runs(cache)
    assert {e.key for e in kept} >= {first.key, other.key} and kept[0].key == other.key  # newest first
    rows = {r["key"]: r for r in W.compare(kept)}
    a, b = rows[first.key], rows[other.key]
    for col in ("model", "params", "FLOPs/image", "data", "epochs", "optimizer", "augmentation", "top-1 err",
                "top-5 err", "loss", "time (s)"):
        assert col in a
    assert a["model"] == "Simple CNN x0.25" and a["optimizer"].startswith("adam lr 0.001")
    assert b["optimizer"].startswith("sgd") and "flip" in b["augmentation"] and a["augmentation"] == "none"
    curves = W.curve_rows([first, other])
    assert {r["run"] for r in curves} == {W.run_label(first), W.run_label(other)}
    assert {r["split"] for r in curves} == {"train", "val"}


def test_a_missing_data_set_falls_back_to_digits_with_a_notice(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    cfg = with_values(tiny(), {"dataset": "fashion_mnist"})
    resolved = W.resolve(cfg)
    assert resolved.dataset == "digits" and resolved.model.in_channels == 1
    entry = W.run(cfg, Cache(tmp_path / "cache"), device=CPU)
    assert entry.metrics["dataset"] == "digits"  # kept as a digits run: the page says why (name_or_fallback)
    assert "--dataset digits" in entry.meta["recompute"]


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(), reason="the shared Fashion-MNIST is absent")
def test_tiny_fashion_mnist_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_DATA_DIR", os.environ.get("EXPLORER_DATA_DIR", str(SHARED)))
    cfg = with_values(tiny(), {"dataset": "fashion_mnist", "n_train": 300, "n_test": 200})
    m = W.run(cfg, Cache(tmp_path), device=CPU).metrics
    assert m["dataset"] == "fashion_mnist" and m["image_shape"] == [1, 28, 28] and m["n_test"] == 200
    assert m["test"]["top1_err"] < 0.9  # better than chance after one epoch on 300 images
    assert m["classes"][0] == "T-shirt/top"


def test_augmentation_and_family_reach_the_engine():
    cfg = tiny(**{"model.family": "resnet9", "fit.augment.translate": 2})
    assert isinstance(cfg.model, CNNConfig) and cfg.model.family == "resnet9"
    assert cfg.fit.augment == AugmentConfig(translate=2)


def test_a_run_on_uploaded_images_is_listed_only_to_its_uploader(tiny_run):
    cfg, cache, first = tiny_run
    upload = "upload:" + "ab" * 32
    theirs = dataclasses.replace(cfg, dataset=upload)
    cache.put(W.KIND, theirs, first.metrics, first.tensors())  # its mistakes gallery holds the visitor's images
    assert all(W.config_of(e) != theirs for e in W.runs(cache))
    assert any(W.config_of(e) == theirs for e in W.runs(cache, uploads={upload}))
    assert [e.key for e in W.runs(cache, uploads={upload}, only={cfg})] == [first.key]
