"""Sweep specs, label noise, grouped models, the batched MLP step, resume, and the Ray backend."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.core.report import NullReporter, TerminalReporter
from explorer.data.noise import noisy_labels
from explorer.labs.double_descent.results import describe, interpolation_threshold, list_sweeps, sweep_frame
from explorer.labs.double_descent.run import plan_groups, point_cost, run_sweep
from explorer.labs.double_descent.spec import (POINT_KIND, SWEEP_KIND, Point, SweepSpec, load_data, parse_spec,
                                               point_config)
from explorer.labs.double_descent.train import _FusedGroup
from explorer.nets import grouped as ddmodels

GOOD = """
[sweep]
name = "tiny"
dataset = "digits"
train_size = 200
test_size = 100
label_noise = [0.0, 0.2]
family = "mlp"
widths = [4, 8]
epochs = 3
batch_size = 50
seeds = [0]
checkpoint_epochs = [3]
"""


def tiny() -> SweepSpec:
    return parse_spec(GOOD)


def test_spec_parses_with_types() -> None:
    spec = tiny()
    assert spec.widths == (4, 8) and spec.label_noise == (0.0, 0.2) and spec.checkpoint_epochs == (3,)
    assert [dataclasses.astuple(p) for p in spec.points()] == [(4, 0.0, 0), (4, 0.2, 0), (8, 0.0, 0), (8, 0.2, 0)]
    assert spec.recorded_epochs() == [1, 2, 3]


@pytest.mark.parametrize("change, message", [
    ('widths = [4, 8]', None),
    ('widths = [0, 8]', "widths"),
    ('widths = "eight"', "widths must hold int"),
    ('label_noise = [0.0, 1.5]', "label_noise must be between"),
    ('epochs = 3\nbogus = 1', "unknown setting"),
    ('family = "mlp"\nfamily2 = "x"', "unknown setting"),
    ('family = "transformer"', "family must be one of"),
    ('optimizer = "lion"', "optimizer must be one of"),
    ('seeds = [0, 0]', "must not repeat"),
    ('checkpoint_epochs = [9]', "checkpoint_epochs must be between"),
    ('dataset = "imagenet"', "dataset"),
    ('epochs = [3', "not valid TOML"),
])
def test_bad_specs_get_clear_errors(change: str, message: str | None) -> None:
    key = change.split("=")[0].strip()
    lines = [ln for ln in GOOD.splitlines() if not ln.startswith(key + " ")]
    text = "\n".join(lines) + "\n" + change + "\n"
    if message is None:
        parse_spec(text)
        return
    with pytest.raises(ConfigError, match=message):
        parse_spec(text)


def test_spec_needs_a_name() -> None:
    with pytest.raises(ConfigError, match="needs a name"):
        parse_spec(GOOD.replace('name = "tiny"', ""))


def test_live_sweep_limits_are_checked_in_the_core() -> None:
    from explorer.labs.double_descent.spec import live_spec

    for bad in (([4, 7], 15, 30), ([4], 15, 501), ([4], 60, 30), ([], 15, 30)):  # width, epochs, noise, none
        with pytest.raises(ConfigError):
            live_spec(*bad)
    spec = live_spec([300, 2], 15, 500)
    assert spec.widths == (2, 300) and spec.label_noise == (0.0, 0.15) and spec.seeds == (0,) and spec.epochs == 500


def test_label_noise_statistics() -> None:
    y = torch.arange(10).repeat(1000)  # 10,000 labels, balanced
    noisy = noisy_labels(y, 0.15, 10, seed=3)
    flipped = noisy != y
    assert int(flipped.sum()) == 1500  # exactly round(p * N), never a flip to the same class
    shift = (noisy[flipped] - y[flipped]) % 10
    counts = torch.bincount(shift, minlength=10)[1:].double()  # uniform over the 9 other classes
    chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
    assert chi2 < 30  # chi-square with 8 degrees of freedom; p < 1e-3 above about 26
    assert torch.equal(noisy, noisy_labels(y, 0.15, 10, seed=3))
    assert not torch.equal(noisy, noisy_labels(y, 0.15, 10, seed=4))
    assert torch.equal(noisy_labels(y, 0.0, 10, seed=3), y)


def test_a_fused_group_trains_each_point_like_its_own_grouped_mlp_with_torch_optim() -> None:
    spec = dataclasses.replace(tiny(), optimizer="momentum", lr=0.05, weight_decay=0.01)
    net = _FusedGroup([3, 5], [0, 1], 40, 10, spec, torch.device("cpu"))
    models = []
    for k, w in enumerate([3, 5]):
        m = ddmodels.build("mlp", w, 1, (40,), 10)
        m.load_state_dict(net.state(k))
        models.append((m, torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)))
    for _ in range(3):
        x, y = torch.randn(20, 40), torch.randint(0, 10, (2, 20))
        net.step(net.prepare(x), y, 0.05)
        for k, (m, o) in enumerate(models):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x)[0], y[k]).backward()
            o.step()
    for k, (m, _) in enumerate(models):
        ours = net.state(k)
        for name, t in m.state_dict().items():
            torch.testing.assert_close(ours[name], t, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("family", ["mlp", "cnn5", "resnet18"])
def test_grouped_model_equals_its_single_models(family: str) -> None:
    torch.manual_seed(0)
    shape = (40,) if family == "mlp" else (3, 16, 16)
    group = ddmodels.build(family, 4, 3, shape, 10).eval()
    x = torch.randn(5, *shape)
    z = group(x)  # (3, 5, 10)
    for k in range(3):
        single = ddmodels.build(family, 4, 1, shape, 10).eval()
        single.load_state_dict(ddmodels.unstack(group.state_dict(), 3, k))
        torch.testing.assert_close(single(x)[0], z[k], atol=1e-5, rtol=1e-4)
    assert ddmodels.param_count("mlp", 10, (40,), 10) == 40 * 10 + 10 + 10 * 10 + 10 + 10 * 10 + 10


def test_plan_groups_merges_small_mlp_widths_only() -> None:
    spec = dataclasses.replace(tiny(), widths=(2, 4, 8, 300), seeds=(0, 1))
    groups = plan_groups(spec, spec.points())
    assert [sorted({p.width for p in g}) for g in groups] == [[2, 4, 8], [300]]
    cnn = dataclasses.replace(spec, family="cnn5", widths=(2, 4))
    assert [len(g) for g in plan_groups(cnn, cnn.points())] == [4, 4]


class Interrupt(Exception):
    pass


def test_interrupted_sweep_resumes_and_computes_only_missing_points(tmp_path) -> None:
    cache = Cache(tmp_path / "rt", tmp_path / "shipped")
    spec = dataclasses.replace(tiny(), widths=(4, 200))  # two groups: 4 alone would merge with 8

    class StopInSecondGroup(NullReporter):
        calls = 0

        def checkpoint(self) -> None:
            self.calls += 1
            if self.calls > spec.epochs:  # the first group's epochs pass, the second's first one stops
                raise Interrupt

    with pytest.raises(Interrupt):
        run_sweep(spec, cache=cache, report=StopInSecondGroup())
    done = [p for p in spec.points() if cache.get(POINT_KIND, point_config(spec, p)) is not None]
    assert [p.width for p in done] == [4, 4]
    out = io.StringIO()
    with TerminalReporter(out) as bar:
        res = run_sweep(spec, cache=cache, report=bar)
    assert (res.computed, res.cached) == (2, 2)
    assert "2/4 points" in out.getvalue() and "4/4 points" in out.getvalue().split("\r")[-1]
    entry = res.entry
    assert entry.kind == SWEEP_KIND and list_sweeps(cache)[0].key == entry.key
    table = entry.tensors()["metrics"]  # (P, E, M)
    assert table.shape == (4, 3, 6) and torch.isfinite(table).all()
    assert entry.metrics["points"][0]["params"] == ddmodels.param_count("mlp", 4, (1, 8, 8), 10)
    df = sweep_frame(entry)
    assert len(df) == 4 * 3 and set(df["width"]) == {4, 200}
    assert interpolation_threshold(df, 0.0, 3) in (None, 4.0, 200.0)
    assert describe(entry).startswith("tiny: mlp on digits (n=200), 2 widths, noise 0%/20%, 1 seed(s), 3 epochs")
    point = cache.get(POINT_KIND, point_config(spec, Point(200, 0.2, 0)))
    ckpt = point.tensors()
    assert "epoch3/layers.1.weight" in ckpt and ckpt["epoch3/layers.1.weight"].shape == (1, 200, 200)
    again = run_sweep(spec, cache=cache)
    assert (again.computed, again.cached) == (0, 4)


def test_progress_is_the_share_of_the_cost_done_over_every_epoch(tmp_path, recorder) -> None:
    spec = dataclasses.replace(tiny(), widths=(4, 200), checkpoint_epochs=())  # two groups, 3 epochs each
    run_sweep(spec, cache=Cache(tmp_path / "rt", tmp_path / "shipped"), report=recorder)
    costs = [2 * 3 * point_cost(spec, w) for w in (4, 200)]  # 2 noise levels per group, 3 epochs
    first = costs[0] / sum(costs)
    expected = [0.0, *(first * e / 3 for e in (1, 2, 3)), first, *(first + (1 - first) * e / 3 for e in (1, 2, 3)), 1.0]
    assert recorder.progress == pytest.approx(expected)
    assert recorder.messages == ["0/4 points", "2/4 points", "4/4 points"]
    assert recorder.checkpoints == 6


def test_random_features_family_runs_in_the_sweep(tmp_path) -> None:
    cache = Cache(tmp_path / "rt", tmp_path / "shipped")
    spec = dataclasses.replace(tiny(), family="rf_fourier", widths=(50, 200, 400), label_noise=(0.0,))
    res = run_sweep(spec, cache=cache)
    table = res.entry.tensors()["metrics"]  # (P, 1, M)
    assert table.shape == (3, 1, 6)
    assert float(table[2, 0, 0]) == 0.0  # 400 features > 200 points: interpolates the train set


@pytest.mark.slow  # starting a local Ray instance takes 10-60 s
def test_ray_backend_on_a_local_instance(tmp_path) -> None:
    ray = pytest.importorskip("ray")
    cache = Cache(tmp_path / "rt", tmp_path / "shipped")
    spec = dataclasses.replace(tiny(), epochs=2, checkpoint_epochs=())
    try:
        res = run_sweep(spec, backend="ray", workers=1, cache=cache)
    finally:
        ray.shutdown()
    assert res.computed == 4
    local = run_sweep(spec, cache=Cache(tmp_path / "rt2", tmp_path / "shipped"))
    torch.testing.assert_close(res.entry.tensors()["metrics"], local.entry.tensors()["metrics"], atol=1e-4, rtol=0)
    assert not math.isnan(res.entry.metrics["points"][0]["wall_time_s"])


def test_worker_processes_record_the_kernels_their_points_ran_on(tmp_path, plain_main) -> None:
    """With --workers, points run in processes on a share of the cores (fewer torch threads than this process):
    the summary records the points' device, thread count and numerics fingerprint, the ones an exact recompute
    must use, not those of the process that writes it."""
    spec = dataclasses.replace(tiny(), widths=(4, 64), epochs=2, checkpoint_epochs=())
    assert len(plan_groups(spec, spec.points())) == 2
    cache = Cache(tmp_path / "rt", tmp_path / "shipped")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        res = run_sweep(spec, cache=cache, workers=2)
    finally:
        torch.set_num_threads(before)
    points = [cache.get(POINT_KIND, point_config(spec, p)) for p in spec.points()]
    assert {e.meta["device"] for e in points} == {res.entry.meta["device"]}
    assert "1 torch threads" in res.entry.meta["device"]
    assert {e.meta["numerics"] for e in points} == {res.entry.meta["numerics"]}
    local = run_sweep(spec, cache=Cache(tmp_path / "rt2", tmp_path / "shipped"))
    torch.testing.assert_close(res.entry.tensors()["metrics"], local.entry.tensors()["metrics"], atol=1e-4, rtol=0)


def test_a_summary_of_points_on_mixed_kernels_records_no_fingerprint(tmp_path) -> None:
    from explorer.labs.double_descent.run import points_kernels

    class E:
        def __init__(self, meta):
            self.meta = meta
    same = [E({"device": "cpu (2 cores, 1 torch threads)", "cpu": "x", "numerics": "ab"}) for _ in range(2)]
    assert points_kernels(same) == {"device": "cpu (2 cores, 1 torch threads)", "cpu": "x", "numerics": "ab"}
    mixed = same + [E({"device": "cpu (2 cores, 2 torch threads)", "cpu": "x", "numerics": "cd"})]
    assert points_kernels(mixed) == {"cpu": "x", "numerics": None}


def test_a_diverging_model_is_marked_and_the_others_go_on(monkeypatch) -> None:
    from explorer.labs.double_descent import train as sweep

    spec = dataclasses.replace(tiny(), checkpoint_epochs=())
    init = sweep._FusedGroup.__init__

    def poisoned(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.layers[-1][0][1].fill_(float("inf"))  # model 1's output layer: its loss is non-finite at once

    monkeypatch.setattr(sweep._FusedGroup, "__init__", poisoned)
    results = sweep.train_group(spec, spec.points()[:2], load_data(spec))
    assert results[0].diverged is None and all(math.isfinite(v) for v in results[0].metrics["test_err"])
    p = results[1].point
    assert results[1].diverged.startswith(f"width {p.width} (noise {p.noise:g}, seed {p.seed}) diverged at step 1 "
                                          "(epoch 1): the loss became non-finite")
    assert all(math.isnan(v) for v in results[1].metrics["test_err"])



def test_training_until_an_epoch_gives_the_full_runs_first_epochs_bit_for_bit() -> None:
    from explorer.labs.double_descent.train import train_group

    spec = dataclasses.replace(tiny(), checkpoint_epochs=(), schedule="cosine")  # the prefix keeps the full schedule
    data = load_data(spec)
    full, head = (train_group(spec, spec.points()[:2], data, until=u) for u in (None, 2))
    for f, h in zip(full, head):
        assert h.epochs == [1, 2] and f.epochs == [1, 2, 3]
        assert all(h.metrics[m] == f.metrics[m][:2] for m in f.metrics)


def test_the_conv_cost_model_matches_the_measured_point_times_of_the_shipped_cnn_sweeps(tmp_path) -> None:
    from explorer.labs.double_descent.spec import spec_from_dict

    # cifar10-cnn5's shipped point times were measured while other jobs shared the two cores (its re-ship of
    # 2026-12-02 took 33.5 min against 14 min alone: k = 2 took less than k = 1), so they do not measure the kernels
    sweeps = [e for e in Cache(tmp_path / "rt").entries(SWEEP_KIND) if e.shipped and e.config["family"] == "cnn5"
              and e.config["name"] in ("fashion-cnn5", "fashion-cnn5-noise40")]
    assert len(sweeps) == 2, "the Fashion-MNIST CNN5 sweeps are shipped"
    for e in sweeps:
        spec, points = spec_from_dict(e.config), e.metrics["points"]
        times = {p["width"]: 0.0 for p in points}
        for p in points:
            times[p["width"]] += p["wall_time_s"]
        costs = {w: sum(point_cost(spec, p["width"]) for p in points if p["width"] == w) for w in times}
        measured = [times[w] / sum(times.values()) for w in sorted(times)]
        modelled = [costs[w] / sum(costs.values()) for w in sorted(times)]
        # each width's share of the run within a third of its measured share (the FLOPs-only model was 10x off)
        assert modelled == pytest.approx(measured, rel=0.35), e.config["name"]
