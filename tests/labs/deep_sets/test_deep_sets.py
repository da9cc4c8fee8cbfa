"""DeepSets lab: equivariance and invariance under random permutations (with padding, every pool), the tasks'
labels, parameter counts, a tiny sweep beating the predict-the-mean baseline, the MLP's lack of invariance, the CLI."""

from __future__ import annotations

import pytest
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.labs.deep_sets import cli, sets
from explorer.labs.deep_sets.tasks import TASKS, SetData, make_sets

CPU = torch.device("cpu")
TINY = dict(layers=(1,), widths=(16,), n_train=400, n_val=100, n_test=50, epochs=15, batch_size=16,
            test_sizes=(5, 10, 20))


def _padded(n_sets: int = 6, n: int = 12, d: int = 3, seed: int = 0) -> SetData:
    """Random sets of sizes 1..n padded to n, with garbage in the padding (the mask must hide it)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(n)[None] < torch.randint(1, n + 1, (n_sets,), generator=g)[:, None]
    return SetData(torch.randn(n_sets, n, d, generator=g), mask, torch.zeros(n_sets))


@pytest.mark.parametrize("pool", sets.POOLS)
def test_layer_is_equivariant_and_readout_invariant(pool):
    data = _padded()
    with torch.no_grad():
        model = sets.DeepSet(3, 2, 8, pool, pool)
    for seed in range(3):
        assert sets.equivariance_diff(model.layers[0], data, seed) < 1e-5
        assert sets.permutation_diff(model, data, seed) < 1e-5
    clean = SetData(data.x * data.mask[..., None], data.mask, data.y)  # padding content does not matter
    torch.testing.assert_close(sets.predict(model, clean), sets.predict(model, data))
    # a set padded further gives the same output
    more = SetData(torch.nn.functional.pad(data.x, (0, 0, 0, 5)), torch.nn.functional.pad(data.mask, (0, 5)), data.y)
    torch.testing.assert_close(sets.predict(model, more), sets.predict(model, data), rtol=1e-5, atol=1e-5)


def test_masked_pool_reads_only_real_elements():
    h = torch.tensor([[[1.0], [2.0], [100.0]]])
    m = torch.tensor([[True, True, False]])
    assert sets.masked_pool(h, m, "sum").item() == 3.0
    assert sets.masked_pool(h, m, "mean").item() == 1.5
    assert sets.masked_pool(h, m, "max").item() == 2.0


def test_the_padded_mlp_is_not_invariant():
    data = _padded()
    mlp = sets.PaddedMLP(3, 12, 16)
    assert sets.permutation_diff(mlp, data) > 1e-3


def test_task_labels():
    g = torch.Generator().manual_seed(0)
    for name, task in TASKS.items():
        pool = (torch.randn(30, 4), torch.arange(30) % 10) if task.images else None
        s = make_sets(name, 20, 2, 7, g, pool)
        assert s.x.shape[:2] == s.mask.shape == (20, 7) and s.y.shape == (20,)
        assert (s.x[~s.mask] == 0).all()
        for i in range(20):
            k = int(s.mask[i].sum())
            vals = s.x[i, :k, 0].tolist() if not task.images else None
            expected = {"sum": lambda v: sum(v), "mean": lambda v: sum(v) / len(v), "max": max,
                        "second_largest": lambda v: sorted(v)[-2],
                        "variance": lambda v: float(torch.tensor(v).var(unbiased=False))}
            if name in expected:
                assert s.y[i].item() == pytest.approx(expected[name](vals), rel=1e-5, abs=1e-6)
    feats, labels = torch.eye(10), torch.arange(10)  # feature j is one-hot of label j
    s = make_sets("digit_sum", 10, 3, 5, g, (feats, labels))
    assert torch.equal(s.y, (s.x.argmax(2).float() * s.mask).sum(1))


def test_parameter_counts():
    for d, L, w in ((1, 1, 16), (64, 2, 32), (3, 3, 8)):
        assert sets.count_params(sets.DeepSet(d, L, w, "mean", "sum")) == sets.deepset_params(d, L, w)


def test_tiny_sweep_beats_the_mean_and_publishes(recorder):
    cfg = sets.SetsConfig(**TINY)
    m = sets.train_sweep(cfg, recorder, device=CPU)
    rows = {r["model"]: r for r in sets.table(m)}
    ds, mlp = rows["L1 w16"], rows["MLP w16 (not invariant)"]
    base = m["baseline"]["per_size"]
    assert ds["test MSE"] < 0.3 * m["baseline"]["test_mse"]
    assert ds["MSE@5"] < 0.2 * base["5"] and ds["MSE@10"] < 0.2 * base["10"]  # sizes seen in training
    assert ds["perm |Δ|"] < 1e-4 and mlp["perm |Δ|"] > 1e-3
    assert ds["params"] == sets.deepset_params(1, 1, 16) and 1 <= ds["epochs"] <= 15
    assert set(m["baseline"]["per_size"]) == {"5", "10", "20"}
    assert recorder.progress[-1] == pytest.approx(1.0) and recorder.checkpoints >= 2
    assert {r["size"] for r in sets.size_rows(m)} == {5, 10, 20}


def test_early_stopping_ends_a_model():
    m = sets.train_sweep(sets.SetsConfig(**{**TINY, "epochs": 40, "patience": 1, "lr": 0.05}, baseline=False),
                         device=CPU)
    f = m["models"][0]["final"]
    assert f["epochs"] < 40 and f["epochs"] - f["best_epoch"] == 1


@pytest.mark.parametrize("bad, match", [
    (dict(layers=(0,)), "layer must be between 1 and 6"),
    (dict(widths=(16, 16)), "only once"),
    (dict(task="median"), "task must be one of"),
    (dict(readout_pool="prod"), "readout pool"),
    (dict(max_size=1), "largest training set"),
    (dict(task="second_largest", test_sizes=(1, 5)), "at least 2"),
    (dict(epochs=0), "epochs must be between 1 and 500"),
])
def test_out_of_range_settings_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        sets.SetsConfig(**bad)


def test_cache_and_cli(tmp_path, capsys, monkeypatch):
    cfg = sets.SetsConfig(**{**TINY, "epochs": 2})
    e = sets.run(cfg, Cache(tmp_path / "c"), device=CPU)
    assert e.meta["recompute"] == ("python -m explorer deepsets --layers 1 --widths 16 --test-sizes 5,10,20 "
                                   "--n-train 400 --n-val 100 --n-test 50 --epochs 2 --batch-size 16")
    assert sets.cached(cfg, Cache(tmp_path / "c")) is not None
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "cli"))
    monkeypatch.setattr("explorer.core.command.default_cache", lambda: Cache(tmp_path / "cli"))
    assert cli.main(["--layers", "1", "--widths", "8", "--n-train", "200", "--n-val", "50", "--n-test", "20",
                     "--epochs", "2", "--test-sizes", "5,20", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "L1 w8" in out and "MLP w8" in out and "predict the mean" in out and "@20" in out
    assert cli.main(["--layers", "0"]) == 2 and "layer must be between" in capsys.readouterr().err
    assert cli.main(["--widths", "a,b"]) == 2


def test_check_on_screen():
    r = sets.check(sets.SetsConfig(), 2, 16)
    assert r["deepset_diff"] < 1e-4 and r["layer_diff"] < 1e-4 and r["mlp_diff"] > 1e-3 and len(r["rows"]) == 4
