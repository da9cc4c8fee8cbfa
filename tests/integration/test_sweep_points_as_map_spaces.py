"""Across labs: a double-descent sweep's checkpointed points are embedding spaces for the data-maps lab.

The two labs never import each other; they meet in the cache (kind dd_point), which is what this tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from explorer.core.cache import Cache
from explorer.data import datasets as D
from explorer.labs.data_maps import embed as E
from explorer.labs.data_maps import representations as R
from explorer.labs.double_descent.run import compute_group
from explorer.labs.double_descent.spec import SweepSpec


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cache:
    """This test's own cache, no downloads."""
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    D.forget_loaded()
    return Cache(tmp_path / "cache")


def test_sweep_points_with_checkpoints_serve_as_embedding_spaces(cache) -> None:
    spec = SweepSpec(name="tiny", dataset="digits", train_size=200, test_size=100, label_noise=(0.0,),
                       widths=(8,), seeds=(0,), epochs=2, batch_size=50, checkpoint_epochs=(2,))
    compute_group(spec, spec.points(), cache)
    no_weights = dataclasses.replace(spec, name="no-ckpt", checkpoint_epochs=())
    compute_group(no_weights, no_weights.points(), cache)
    [model] = R.list_models("digits", cache=cache)
    assert model.kind == "dd_point" and "width 8" in model.label and "epoch 2" in model.label
    feats = R.representations(model.ref, D.load("digits", "test"), E.point_index(len(D.load("digits", "test")), 200, 0), cache)
    assert feats.shape == (200, 8) and (feats >= 0).all()
