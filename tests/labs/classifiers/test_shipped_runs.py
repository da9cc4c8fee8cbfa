"""The shipped classifier runs: each is a preset at one of its scales, records the command that recomputes it, and
the report's Simple CNN is shipped trained to completion at full scale, its checkpoint giving its test confusion
matrix again (needs ../shared/datasets: skips when absent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from explorer.core.cache import Cache, Entry
from explorer.core.provenance import cpu_description
from explorer.data.datasets import DatasetUnavailable
from explorer.labs.classifiers import presets as P
from explorer.labs.classifiers import workbench as W
from explorer.train.image_fit import ImageData, predict
from explorer.train.metrics import confusion_matrix


def _shipped() -> list[Entry]:
    return [e for e in W.runs(Cache(Path(tempfile.mkdtemp(prefix="clf-shipped-")))) if e.shipped]


def _preset_of(entry: Entry) -> tuple[str, str] | None:
    cfg = W.config_of(entry)
    return next(((k, s) for k, p in P.PRESETS.items() for s in P.SCALES if p.at(s) == cfg), None)


def test_every_shipped_run_is_a_preset_with_its_recompute_command() -> None:
    runs = _shipped()
    assert {_preset_of(e) for e in runs} >= {("simple", "cpu"), ("simple", "full"), ("resnet9", "cpu"),
                                            ("resnet20", "cpu")}
    for e in runs:
        key, scale = _preset_of(e)
        assert e.meta["recompute"] == W.cli_command(W.config_of(e)) == \
            f"python -m explorer classify --preset {key}{' --full' if scale == 'full' else ''}"
        assert float(e.meta["wall_time_s"]) > 0 and 0 < e.metrics["test"]["top1_err"] < 1


def test_the_full_scale_simple_cnn_is_trained_to_completion_and_its_checkpoint_gives_its_results() -> None:
    [entry] = [e for e in _shipped() if _preset_of(e) == ("simple", "full")]
    cfg = W.config_of(entry)
    assert cfg.n_train == 45_000 and cfg.n_val == 5_000 and cfg.model.width == 1
    m = entry.metrics
    assert m["epochs_run"] == len(m["history"]["train_loss"])
    assert m["epochs_run"] == cfg.fit.epochs or m["epochs_run"] == m["best_epoch"] + cfg.fit.patience, \
        "ran every epoch, or stopped early by its patience"
    try:
        train, _, test, _ = W.split_data(cfg)
    except DatasetUnavailable as err:
        if not os.environ.get("EXPLORER_DATA_DIR"):
            pytest.skip(f"needs ../shared/datasets: {err}")
        raise
    cpu = torch.device("cpu")
    tr = ImageData.from_dataset(train, cpu)
    pred = predict(W.load_model(entry), ImageData.from_dataset(test, cpu, tr.mean, tr.std)).argmax(1)
    cm = confusion_matrix(test.y, pred, 10)
    shipped = torch.tensor(entry.metrics["test"]["confusion"])
    if entry.meta.get("cpu") == cpu_description():
        assert torch.equal(cm, shipped)
    else:  # another CPU's kernels may flip a near-tie image or two
        assert int((cm.diagonal() - shipped.diagonal()).abs().sum()) <= 5
