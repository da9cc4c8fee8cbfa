"""Memorisation lab: fit detection, the epochs-to-fit table, caching, jobs, CLI, refused settings."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from explorer.core.cache import Cache, default_cache
from explorer.core.config import ConfigError
from explorer.core.jobs import JobRunner, JobState
from explorer.labs.memorisation import lab as mem

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
TINY = mem.LabConfig(n_train=60, n_test=60, width=128, depth=1, lr=3e-3, batch_size=20, max_epochs=80)


@pytest.fixture(scope="module", autouse=True)
def _isolated():
    """The shared data folder when present, and one torch thread.

    One thread because this machine is shared: with more runnable threads than cores, each small
    parallel op waits on a descheduled OpenMP thread and tiny models run ~20x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        if SHARED.is_dir():
            mp.setenv("EXPLORER_DATA_DIR", str(SHARED))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    """This module's private cache."""
    return Cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def modes_result(cache) -> dict:
    return mem.run(TINY, cache).metrics


def test_fit_epoch_is_the_first_epoch_with_zero_training_error():
    assert mem.fit_epoch([0.5, 0.1, 0.0, 0.02, 0.0]) == 3
    assert mem.fit_epoch([0.5, 0.01]) is None
    assert mem.fit_epoch([]) is None


def test_fit_table_reports_did_not_fit_and_slowdown():
    metrics = {"modes": ["true_labels", "random_labels", "gaussian"], "titles": ["T", "R", "G"],
               "fit_epoch": [4, 10, None], "diverged": [None, None, None], "max_epochs": 12,
               "label_agreement": [1.0, 0.1, 1.0],
               "history": {"epoch": list(range(1, 13)), "train_err": [[0.0]] * 3, "test_err": [[0.5]] * 3}}
    rows = mem.fit_table(metrics)
    assert [r["epochs to fit"] for r in rows] == ["4", "10", "did not fit within 12 epochs"]
    assert [r["slowdown vs true labels"] for r in rows] == ["1.00x", "2.50x", "–"]
    assert rows[0]["final test acc"] == 0.5


def test_modes_run_memorises_random_labels_and_stays_at_chance(modes_result):
    m = modes_result
    assert m["modes"] == list(mem.ALL_MODES) and m["dataset"] == "mnist1d"
    k = len(m["modes"])
    assert all(len(m["history"][name]) == k for name in ("train_loss", "train_err", "test_loss", "test_err"))
    i_true, i_rand = m["modes"].index("true_labels"), m["modes"].index("random_labels")
    assert m["fit_epoch"][i_true] is not None and m["fit_epoch"][i_rand] is not None
    assert m["fit_epoch"][i_rand] >= m["fit_epoch"][i_true]
    # memorised random labels: perfect on the training set, near chance (0.1) on the true test labels
    assert m["history"]["train_err"][i_rand][-1] == 0.0
    assert 1 - m["history"]["test_err"][i_rand][-1] < 0.3
    assert m["label_agreement"][i_true] == 1.0 and m["label_agreement"][i_rand] < 0.3
    # the run stopped when every model had fitted, or at the cap
    assert len(m["history"]["epoch"]) == max(
        (f if f is not None else m["max_epochs"]) for f in m["fit_epoch"])


def test_second_run_comes_from_the_cache_with_provenance(modes_result, cache):
    entry = mem.cached(TINY, cache)
    assert entry is not None and entry.metrics["fit_epoch"] == modes_result["fit_epoch"]
    assert entry.meta["recompute"] == mem.cli_command(TINY, full=True)
    assert len(mem.cli_command(TINY, full=True)) > len(mem.cli_command(TINY))
    for field in ("code_version", "device", "created", "wall_time_s"):
        assert field in entry.meta


def test_job_publishes_live_snapshots_and_returns_the_entry(cache):
    cfg = mem.SweepPConfig(dataclasses.replace(TINY, max_epochs=3), ps=(0.0, 1.0))
    runner = JobRunner(max_running=1)
    job = runner.submit(mem.job(cfg, cache))
    assert job.wait(120)
    assert job.state is JobState.DONE, job.error
    assert job.snapshot["view"] == "sweep-p" and len(job.snapshot["history"]["epoch"]) == 3
    assert job.result.metrics["ps"] == [0.0, 1.0]
    agreement = job.result.metrics["label_agreement"]
    assert agreement[0] == 1.0 and agreement[1] < 0.3
    assert job.progress == 1.0 and job.message == "epoch 3 of at most 3"
    runner.shutdown()


def test_width_sweep_rows_per_width_and_mode(cache, recorder):
    cfg = mem.WidthConfig(dataclasses.replace(TINY, max_epochs=2), widths=(2, 8, 32))
    m = mem.run(cfg, cache, recorder).metrics
    assert recorder.progress == pytest.approx([(j + e / 2) / 3 for j in range(3) for e in (1, 2, 2)])
    assert recorder.messages[:3] == ["width 2: epoch 1 of at most 2", "width 2: epoch 2 of at most 2", "width 2 done"]
    assert all(s["view"] == "sweep-width" for s in recorder.snapshots)  # the whole sweep, never one width's run
    assert [(r["width"], r["mode"]) for r in m["rows"]] == [
        (w, mode) for w in (2, 8, 32) for mode in ("true_labels", "random_labels")]
    params = [r["num_params"] for r in m["rows"][::2]]
    assert params == sorted(params) and params[0] == 40 * 2 + 2 + 2 * 10 + 10
    assert all(0.0 <= r["train_err"] <= 1.0 and math.isfinite(r["test_loss"]) for r in m["rows"])


def test_cli_prints_the_table_and_command_round_trips(capsys):
    cfg = dataclasses.replace(TINY, max_epochs=2, modes=("true_labels", "random_labels"))
    argv = mem.cli_command(cfg).split()[4:]
    assert mem.cli_command(cfg).startswith("python -m explorer memorise modes ")
    assert argv[0] == "modes" and mem.main(argv) == 0
    out = capsys.readouterr().out
    assert "Random labels" in out and "did not fit within 2 epochs" in out
    assert mem.cached(cfg, default_cache()) is not None  # the CLI's flags rebuilt exactly this config
    assert mem.main(["modes", "--lr", "50"]) == 2
    assert "learning rate" in capsys.readouterr().err


def test_missing_dataset_falls_back_to_digits_under_its_own_name(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(tmp_path))  # empty: no Fashion-MNIST here
    cfg = dataclasses.replace(TINY, dataset="fashion_mnist", max_epochs=1, modes=("true_labels",))
    assert "Fashion-MNIST" in mem.fallback_notice(cfg)
    entry = mem.run(cfg, cache)
    assert entry.metrics["dataset"] == "digits" and entry.config["dataset"] == "digits"
    assert mem.cached(cfg, cache) is None  # nothing is stored under the name of the missing data set


@pytest.mark.parametrize("change, message", [
    ({"lr": 5.0}, "learning rate"), ({"n_train": 10}, "training examples"), ({"modes": ()}, "modes"),
    ({"modes": ("true_labels", "flip")}, "corruption mode"), ({"p": -0.1}, "p"),
    ({"model": "small_cnn"}, "image data"), ({"max_epochs": 10**6}, "epochs"), ({"dataset": "imagenet"}, "dataset"),
    ({"modes": ("gaussian", "gaussian")}, "once"),
])
def test_bad_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY, **change)


def test_bad_sweep_settings_are_refused():
    with pytest.raises(ConfigError, match="p"):
        mem.SweepPConfig(TINY, ps=(0.0, 2.0))
    with pytest.raises(ConfigError, match="width"):
        mem.WidthConfig(TINY, widths=(4, 5000))


@pytest.mark.slow  # decodes all 60,000 CIFAR-10 JPEGs once per fresh cache (~15-30 s here)
@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared data folder is absent")
def test_cifar_subset_with_the_small_cnn_runs_batched(cache):
    cfg = mem.LabConfig(dataset="cifar10", model="small_cnn", n_train=60, n_test=50, width=4, depth=2,
                        max_epochs=1, modes=("true_labels", "shuffled_pixels"))
    m = mem.run(cfg, cache).metrics
    assert m["dataset"] == "cifar10" and len(m["history"]["epoch"]) == 1


def test_shipped_entries_keep_their_keys_and_their_networks():
    """Each shipped result is found under its stored config's key, and today's network for that config has the
    parameter count the result was computed with (same architecture from the merged nets.small families)."""
    from explorer.core.cache import shipped_cache
    from explorer.train.stacked import ModelSpec

    shapes = {"mnist1d": (40,), "digits": (1, 8, 8), "cifar10": (3, 32, 32), "fashion_mnist": (1, 28, 28)}
    seen = 0
    for kind, config_type in ((mem.KINDS["modes"], mem.LabConfig), (mem.KINDS["sweep-p"], mem.SweepPConfig),
                              (mem.KINDS["sweep-width"], mem.WidthConfig)):
        for entry in shipped_cache().entries(kind):
            plain = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.config.items()}
            if config_type is mem.LabConfig:
                cfg = lab = mem.LabConfig(**plain)
            else:
                lab = mem.LabConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in plain.pop("lab").items()})
                cfg = config_type(lab, **plain)
            assert mem.cached(cfg, shipped_cache()).key == entry.key
            rows = entry.metrics.get("rows") or [{"width": lab.width, "num_params": entry.metrics["num_params"]}]
            for row in rows:
                spec = ModelSpec(mem.net_config(lab, row["width"]), shapes[entry.metrics["dataset"]], 10)
                assert spec.num_params == row["num_params"], (kind, row["width"])
            seen += 1
    assert seen >= 4
