"""Trained models as maps' embedding spaces: training, representations, listing by data set, refusals, map keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from explorer.core.config import ConfigError
from explorer.core.jobs import JobRunner, JobState
from explorer.data import datasets as D
from explorer.labs.data_maps import embed as E
from explorer.labs.data_maps import representations as R
from explorer.nets.small import NetConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One torch thread, as in the app: on a busy 2-core machine two threads wait on each other (10-100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = R.RepresentationNetConfig(dataset="digits", net=NetConfig(width=32), n_train=500, epochs=3, batch_size=64)


def _index(n: int = 200) -> torch.Tensor:
    return E.point_index(len(D.load("digits", "test")), n, 0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(n_train=10), "training examples must be between"),
        (dict(epochs=0), "epochs must be between"),
        (dict(lr=5.0), "learning rate must be between"),
        (dict(dataset="imagenet"), "dataset must be one of"),
        (dict(n_train=60_000, epochs=30), "at most"),
    ],
)
def test_representation_net_config_refuses_out_of_range_settings(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY, **bad)


def test_training_is_seeded_and_representations_have_the_penultimate_layers_width(cache) -> None:
    a, b = R.train_representation_net(TINY), R.train_representation_net(TINY)
    assert a.tensors.keys() == b.tensors.keys() and "input.mean" in a.tensors
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.metrics["test_accuracy"] > 0.5 and len(a.metrics["train_loss"]) == 3
    model = R.representation_net(TINY, cache)
    assert model.dataset == "digits" and model.input_shape == (1, 8, 8) and model.dims == 32
    assert "MLP" in model.label and "test accuracy" in model.label
    f1 = R.representations(model.ref, D.load("digits", "test"), _index(), cache)
    f2 = R.representations(model.ref, D.load("digits", "test"), _index(), cache)
    assert f1.shape == (200, 32) and f1.dtype == torch.float32 and torch.equal(f1, f2)
    assert (f1 >= 0).all() and (f1 > 0).any()  # ReLU activations of the penultimate layer
    other = R.representation_net(dataclasses.replace(TINY, seed=1), cache)
    assert not torch.equal(R.representations(other.ref, D.load("digits", "test"), _index(), cache), f1)


def test_small_cnn_representations(cache) -> None:
    cnn = dataclasses.replace(TINY, net=NetConfig(arch="small_cnn", width=16, channels=4))
    model = R.representation_net(cnn, cache)
    assert R.representations(model.ref, D.load("digits", "test"), _index(50), cache).shape == (50, 16)


def test_training_job_reports_progress_and_caches_the_model(cache) -> None:
    runner = JobRunner(max_running=1)
    try:
        job = runner.submit(R.representation_net_job(TINY, cache))
        assert job.wait(120) and job.state is JobState.DONE, job.error
        assert job.result.ref == R.make_ref(R.NET_KIND, R.cached_representation_net(TINY, cache).key)
        assert "test accuracy" in job.message and job.progress == 1.0
    finally:
        runner.shutdown()


def test_models_are_listed_by_data_set_and_input_shape(cache) -> None:
    assert R.list_models("digits", cache=cache) == []
    model = R.representation_net(TINY, cache)
    assert [m.ref for m in R.list_models("digits", cache=cache)] == [model.ref]
    assert [m.ref for m in R.list_models("digits", (1, 8, 8), cache=cache)] == [model.ref]
    assert R.list_models("digits", (1, 28, 28), cache=cache) == [] and R.list_models("mnist1d", cache=cache) == []


def test_unknown_missing_corrupt_and_mismatched_models_are_refused(cache) -> None:
    with pytest.raises(ConfigError, match="not a model name"):
        E.MapConfig(dataset="digits", space="model:representation_net:abc")
    with pytest.raises(ConfigError, match="cannot serve as embedding spaces"):
        E.MapConfig(dataset="digits", space=R.make_ref("optimizer_race", "a" * 64))
    with pytest.raises(ConfigError, match="embedding space must be one of"):
        E.MapConfig(dataset="digits", space="hog")
    missing = E.MapConfig(dataset="digits", method="pca", n_points=100, space=R.make_ref(R.NET_KIND, "a" * 64))
    with pytest.raises(R.ModelSpaceError, match="no cached representation_net model"):
        E.compute_map(missing, cache)
    model = R.representation_net(TINY, cache)
    with pytest.raises(R.ModelSpaceError, match="was trained on scikit-learn digits"):
        R.resolve(model.ref, "mnist1d", cache=cache)
    with pytest.raises(R.ModelSpaceError, match=r"takes inputs of shape \(1, 8, 8\)"):
        R.resolve(model.ref, "digits", (1, 28, 28), cache=cache)
    with pytest.raises(R.ModelSpaceError, match="was trained on"):
        R.representations(model.ref, D.load("mnist1d", "test"), torch.arange(10), cache)
    (model.entry.path / "tensors.safetensors").write_bytes(b"not weights")  # corrupt: removed on read
    with pytest.raises(R.ModelSpaceError, match="no cached representation_net model"):
        E.compute_map(dataclasses.replace(missing, space=model.ref), cache)


def test_a_malformed_model_entry_is_refused_with_a_message(cache) -> None:
    train = D.load("digits", "train")
    good = R.representation_net(TINY, cache)
    key = R._net_cache_key(TINY, train)
    wrong_width = {**key, "net": dataclasses.replace(TINY, net=NetConfig(width=64))}
    cache.put(R.NET_KIND, wrong_width, good.entry.metrics, good.entry.tensors())  # weights of width 32
    ref = R.make_ref(R.NET_KIND, cache.get(R.NET_KIND, wrong_width).key)
    with pytest.raises(R.ModelSpaceError, match="do not load"):
        R.representations(ref, D.load("digits", "test"), _index(), cache)
    broken = cache.put(R.NET_KIND, {"net": {"dataset": "digits", "net": {"arch": "transformer"}}}, {})
    with pytest.raises(R.ModelSpaceError, match="malformed"):
        R.resolve(R.make_ref(R.NET_KIND, broken.key), "digits", cache=cache)
    assert {m.ref for m in R.list_models("digits", cache=cache)} == {ref, good.ref}  # the broken one is not offered


def test_maps_of_different_models_are_different_cache_entries(cache) -> None:
    a, b = R.representation_net(TINY, cache), R.representation_net(dataclasses.replace(TINY, seed=1), cache)
    base = E.MapConfig(dataset="digits", method="pca", n_points=200, seed=0)
    maps = {f: E.compute_map(dataclasses.replace(base, space=f), cache) for f in ("pixels", a.ref, b.ref)}
    assert len({m.entry.key for m in maps.values()}) == 3 and len(cache.entries(E.CACHE_KIND)) == 3
    assert maps[a.ref].entry.config["map"]["space"] == a.ref
    assert not np.allclose(maps[a.ref].coords, maps[b.ref].coords)
    assert E.cached_map(dataclasses.replace(base, space=a.ref), cache).entry.key == maps[a.ref].entry.key
    again = E.compute_map(dataclasses.replace(base, space=a.ref), cache, use_cache=False)
    np.testing.assert_allclose(again.coords, maps[a.ref].coords, atol=1e-5)


def test_tsne_of_model_representations(cache) -> None:
    model = R.representation_net(TINY, cache)
    res = E.compute_map(E.MapConfig(dataset="digits", method="tsne", n_points=300, n_iter=100, space=model.ref),
                        cache, use_cache=False)
    assert res.coords.shape == (300, 2) and np.isfinite(res.coords).all()
    assert len(res.metrics["explained_variance"]) == 32  # PCA keeps at most the representation layer's width
    assert res.metrics["trustworthiness"] > 0.85


def test_cli_trains_lists_and_maps(capsys: pytest.CaptureFixture[str]) -> None:
    from explorer.labs.data_maps import cli as cli_map

    assert R.main(["train", "--dataset", "digits", "--width", "32", "--epochs", "2", "--n-train", "300"]) == 0
    ref = capsys.readouterr().out.strip().splitlines()[-1]
    assert R.main(["list", "--dataset", "digits"]) == 0 and ref in capsys.readouterr().out
    assert cli_map.main(["--dataset", "digits", "--method", "pca", "--points", "100", "--space", ref]) == 0
    assert cli_map.main(["--dataset", "digits", "--space", R.make_ref(R.NET_KIND, "b" * 64)]) == 2
    assert "no cached representation_net model" in capsys.readouterr().err
