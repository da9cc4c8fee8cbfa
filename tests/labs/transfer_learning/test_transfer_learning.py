"""Transfer learning lab: the torchvision-weights loading path with a file the test writes, wrong files refused
with a clear message, a full table from a self-trained source on the embedded digits, the baselines, the CLI."""

from __future__ import annotations

import pytest
import torch
import torchvision

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.core.seeding import seeded
from explorer.labs.transfer_learning import cli, source as src, transfer as tl

CPU = torch.device("cpu")
TINY_SOURCE = src.SourceConfig(width=0.25, per_class=30, epochs=1)
TINY = dict(dataset="digits", classes=("3", "8"), n_train=100, n_test=60, epochs=1, finetune_lrs=(1e-3, 1e-4),
            hgb_iters=10, source="self", source_cfg=TINY_SOURCE)


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory: pytest.TempPathFactory):
    """A torchvision resnet18 (random init, seed 0) state_dict saved with torch.save, as torchvision's files are."""
    with seeded(0):
        model = torchvision.models.resnet18()
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_a_torchvision_weights_file_loads_to_the_same_weights(r18_file):
    path, want = r18_file
    model = src.resnet18_from_file(path)
    got = model.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    plan = tl.resolve(tl.TransferConfig(dataset="digits", classes=("3", "8")), weights=path)
    assert plan.cfg.source == "imagenet" and plan.cfg.weights_sha256 == src.file_sha256(path)
    assert plan.weights == path and "was given" in plan.why
    source = src.imagenet_source(path, 64, plan.why)
    assert source.mean == src.IMAGENET_MEAN and source.image_size == 64
    copy = source.network().state_dict()
    assert all(torch.equal(copy[k], want[k]) for k in want)


def test_the_hub_cache_file_is_found_and_never_downloaded(r18_file, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("downloaded"))
    cfg = tl.TransferConfig(dataset="digits", classes=("3", "8"))
    plan = tl.resolve(cfg)  # no file: the self-trained source, quietly, saying why
    assert plan.cfg.source == "self" and "not in the torch hub cache" in plan.why
    with pytest.raises(src.WeightsError, match="no ImageNet weights"):
        tl.resolve(tl.TransferConfig(dataset="digits", classes=("3", "8"), source="imagenet"))
    hub = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    assert src.hub_weights_path() == hub
    hub.parent.mkdir()
    hub.write_bytes(r18_file[0].read_bytes())
    plan = tl.resolve(cfg)
    assert plan.cfg.source == "imagenet" and plan.weights == hub and "hub cache" in plan.why
    assert tl.resolve(tl.TransferConfig(dataset="digits", classes=("3", "8"), source="self")).cfg.source == "self"


def test_wrong_weights_files_say_what_is_wrong(r18_file, tmp_path):
    path, good = r18_file
    model = torchvision.models.resnet18()
    bad = dict(good)
    bad["fc.weight"], bad["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    with pytest.raises(src.WeightsError, match=r"2 shapes differ \(fc.weight is \(10, 512\), not \(1000, 512\)"):
        src.check_state(bad, model)
    bad = {k: v for k, v in good.items() if k != "layer4.1.bn2.weight"} | {"extra.weight": torch.zeros(1)}
    with pytest.raises(src.WeightsError, match=r"1 keys missing \(layer4.1.bn2.weight\); 1 unexpected keys "
                                               r"\(extra.weight\)"):
        src.check_state(bad, model)
    with pytest.raises(src.WeightsError, match="does not hold a state_dict .* list"):
        src.check_state([torch.zeros(1)], model)
    counters = {k: v for k, v in good.items() if not k.endswith("num_batches_tracked")}  # older files lack them
    assert src.check_state(counters, model) is counters
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(src.WeightsError, match=r"junk.pth cannot be read as tensors with torch.load\(weights_only"):
        src.load_resnet18_state(junk)
    small = tmp_path / "small.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, small)
    with pytest.raises(src.WeightsError, match="small.pth is not a torchvision resnet18 state_dict: .* keys missing"):
        tl.resolve(tl.TransferConfig(dataset="digits", classes=("3", "8")), weights=small)
    with pytest.raises(src.WeightsError, match="does not exist"):
        src.find_imagenet_weights(tmp_path / "nowhere.pth")


def test_cli_refuses_a_wrong_weights_file(tmp_path, capsys):
    small = tmp_path / "small.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, small)
    assert cli.main(["--dataset", "digits", "--classes", "3,8", "--weights", str(small)]) == 2
    assert "is not a torchvision resnet18 state_dict" in capsys.readouterr().err
    assert cli.main(["--epochs", "0"]) == 2
    assert "epochs must be between" in capsys.readouterr().err


def test_transfer_from_a_self_trained_source_gives_every_row(tmp_path, recorder):
    cache = Cache(tmp_path)
    cfg = tl.TransferConfig(**TINY)
    entry = tl.run(cfg, cache, recorder, CPU)
    m = entry.metrics
    assert [r["method"] for r in m["rows"]] == ["scratch", "probe", "finetune", "finetune", "sklearn_probe",
                                                "boosting"]
    assert [r["lr"] for r in m["rows"] if r["method"] == "finetune"] == [1e-3, 1e-4]
    assert m["source"]["kind"] == "self" and m["dataset"] == "digits" and m["classes"] == ["3", "8"]
    assert m["source"]["info"]["classes"] == ["0", "1", "2", "4", "5", "6", "7", "9"]  # never the task's
    assert m["n_train"] == 100 and m["n_test"] == 60
    rows = {r["method"]: r for r in m["rows"]}
    total = rows["scratch"]["params"]
    assert rows["finetune"]["params"] == total  # every weight trains
    feats = (rows["probe"]["params"] - 2) // 2  # a linear head feats -> 2
    assert 0 < rows["probe"]["params"] < total and rows["sklearn_probe"]["params"] == feats + 1
    assert rows["boosting"]["params"] > 0
    for r in m["rows"]:
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["train_acc"] <= 1.0 and r["seconds"] >= 0
    assert [r["method"] for r in tl.table(m)] == [r["label"] for r in m["rows"]]
    assert len(tl.ranking(m)) == 5 and " > " in tl.ranking_text(m)
    assert recorder.progress[-1] == pytest.approx(1.0)
    assert any("fine-tune lr 0.0001" in msg for msg in recorder.messages)
    assert entry.meta["recompute"].startswith("python -m explorer transfer --dataset digits --classes 3,8")
    assert len([e for e in cache.entries(src.SOURCE_KIND) if not e.shipped]) == 1  # the shipped one aside
    assert tl.cached(cfg, cache).key == entry.key
    again = tl.run(tl.TransferConfig(**{**TINY, "finetune_lrs": (1e-2,)}), cache, device=CPU)  # source reused
    assert len([e for e in cache.entries(src.SOURCE_KIND) if not e.shipped]) == 1 and again.metrics["source"]["info"]["cache_key"] == \
        m["source"]["info"]["cache_key"]


def test_the_probe_changes_only_the_head():
    from explorer.data.datasets import load
    from explorer.train.image_fit import FitConfig, ImageData, fit

    with seeded(0):
        backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    net = tl.TaskNet(backbone, 4, 2, frozen=True)
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    ds = tl.task_split(load("digits"), ("3", "8"), 64, 0)
    fit(net, ImageData.from_dataset(ds, CPU), None, FitConfig(epochs=1, batch_size=16), device=CPU)
    assert all(torch.equal(before[k], v) for k, v in net.backbone.state_dict().items())  # BN statistics too
    assert tl.trainable(net) == 4 * 2 + 2


def test_out_of_range_settings_are_refused():
    for bad, match in [(dict(classes=("cat",)), "number of task classes"), (dict(classes=("cat", "cow")), "class"),
                       (dict(classes=("cat", "cat")), "only once"), (dict(n_train=5), "training images"),
                       (dict(finetune_lrs=()), "number of fine-tuning"), (dict(finetune_lrs=(2.0,)), "fine-tuning"),
                       (dict(source="web"), "source"), (dict(image_size=50), "image size"),
                       (dict(source_cfg=src.SourceConfig(epochs=1)), None)]:
        if match is None:
            tl.TransferConfig(**bad)
            continue
        with pytest.raises(ConfigError, match=match):
            tl.TransferConfig(**bad)
    with pytest.raises(ConfigError, match="source width"):
        src.SourceConfig(width=8.0)
    assert tl.TransferConfig(finetune_lrs=(1e-5, 1e-3)).finetune_lrs == (1e-3, 1e-5)


def test_cli_prints_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("explorer.core.command.default_cache", lambda: Cache(tmp_path))
    assert cli.main(["--dataset", "digits", "--classes", "3,8", "--n-train", "60", "--n-test", "40", "--epochs", "1",
                     "--finetune-lrs", "1e-3", "--hgb-iters", "10", "--source", "self", "--source-width", "0.25",
                     "--source-per-class", "20", "--source-epochs", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test acc" in out and "from scratch" in out and "linear probe" in out and "fine-tune" in out
    assert "LogisticRegression" in out and "gradient boosting" in out and "source: self-trained" in out
    assert "ranking:" in out
