"""Every shipped sweep is what today's code computes: its spec file unchanged, and its smallest group recomputed in
full with today's engine equal, bit for bit (==), to the shipped numbers at every recorded epoch.

The smallest group is the one the sweep trained first (plan_groups): MLP points of small widths train together
zero-padded to the group's widest model, and the padding changes the last bits, so the group is recomputed as it
was planned. A random-features point does not depend on its group (nested features), so only the smallest width
of the first seed is recomputed. Times on the 2-core CPU, idle: mnist1d-mlp ~30 s (36 models x 500 epochs),
fashion-cnn5 ~10 s, fashion-cnn5-noise40 ~20 s, fashion-rf ~2 s (plus loading Fashion-MNIST).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from explorer.core.cache import Cache, Entry
from explorer.core.device import recorded_threads, torch_threads
from explorer.core.provenance import cpu_description
from explorer.data.datasets import DatasetUnavailable
from explorer.labs.double_descent.results import recompute_command, spec_file, summary_spec
from explorer.labs.double_descent.run import compute_points, is_current, plan_groups
from explorer.labs.double_descent.spec import METRICS, SWEEP_KIND, load_data, load_spec
from explorer.labs.double_descent.train import numerics_probe

# Shipped sweeps whose recompute is known to differ from what is shipped, until they are re-shipped with the command
# given. Strict: once a re-shipped entry reproduces, the test passes unexpectedly and fails, and its name goes here.
AWAITING_RESHIP = {
}
# Shipped before summaries recorded the numerics fingerprint (numerics_probe), so the test cannot tell the kernels
# they were computed with from others: exact on those (CI passed on them at e095ff5), a few last bits apart from the
# first epoch on other CPUs' convolution kernels (2026-12-02's machine: epoch-1 train loss 2.3323450 vs shipped
# 2.3323929; 2026-12-03's machine differs too, while 12-02's second one was exact). Not strict, because which CPU
# a CI run gets varies; re-shipping records the fingerprint (and now the processor) and removes them.
NO_FINGERPRINT = {
    "fashion-cnn5": "no numerics fingerprint; re-ship: python -m explorer sweep sweeps/fashion_cnn5.toml --force --ship (18 min)",
    "fashion-cnn5-noise40": "no numerics fingerprint; re-ship: python -m explorer sweep "
                            "sweeps/fashion_cnn5_noise40.toml --force --ship (43 min)",
}
# Shipped with a numerics fingerprint that this machine's probe reproduces, yet the recompute differs from epoch 2
# on (2026-12-02's second machine: epoch-2 train loss 2.3301201 vs shipped 2.3299291; the same at 046fcbb, whose CI
# passed on the machine that shipped it): the probe does not tell these kernels apart. Not strict until the cause is
# found (issue 14); re-ship on idle cores: python -m explorer sweep sweeps/cifar10_cnn5.toml --force --ship (14 min).
DIFFERS_ON_SOME_CPUS = {
    "cifar10-cnn5": "recompute differs from epoch 2 on some CPUs although the numerics probe matches (issue 14)",
}


def _shipped() -> list[Entry]:
    """The shipped sweep summaries (read through a throwaway runtime root)."""
    return [e for e in Cache(Path(tempfile.mkdtemp(prefix="dd-shipped-"))).entries(SWEEP_KIND) if e.shipped]


def _params(reason_for: dict[str, str], unsure: dict[str, str] | None = None,
            differs: dict[str, str] | None = None) -> list:
    """One test case per shipped sweep, id'd by its name; strict xfail where `reason_for` names it. Where `unsure`
    (no fingerprint) or `differs` names it and the entry does not record its processor, nothing can decide
    whether this machine's kernels are its kernels: skipped, not run as a non-strict xfail, which asserts
    nothing and cost a CI run minutes (the CIFAR-10 group alone about 2 min). Once re-shipped (recording the
    fingerprint and the processor), the test decides by those."""
    unsure, differs = unsure or {}, differs or {}

    def marks(e: Entry) -> list:
        name = e.config["name"]
        if name in reason_for:
            return [pytest.mark.xfail(strict=True, reason=reason_for[name])]
        undecidable = (name in unsure and e.meta.get("numerics") is None) or name in differs
        if undecidable and e.meta.get("cpu") is None:
            return [pytest.mark.skip(reason=unsure.get(name) or differs[name])]
        return []

    return [pytest.param(e, id=e.config["name"], marks=marks(e)) for e in _shipped()]


def test_sweeps_are_shipped() -> None:
    assert len(_shipped()) >= 4, "no shipped sweep found in cache/shipped"


@pytest.mark.parametrize("entry", _params({}))
def test_every_shipped_sweep_matches_its_spec_file(entry: Entry) -> None:
    """Each shipped summary was computed from the spec file in sweeps/ that has its name, unchanged."""
    path = spec_file(entry.config["name"])
    assert path is not None, f"no spec in sweeps/ for shipped sweep {entry.config['name']}"
    assert load_spec(path) == summary_spec(entry), f"{path} differs from what was shipped"
    assert recompute_command(entry) == f"python -m explorer sweep sweeps/{path.name} --ship"
    assert is_current(entry), "shipped by an earlier engine"


@pytest.mark.parametrize("entry", _params(AWAITING_RESHIP, NO_FINGERPRINT, DIFFERS_ON_SOME_CPUS))
def test_the_smallest_group_of_a_shipped_sweep_recomputes_exactly(entry: Entry) -> None:
    with torch_threads(recorded_threads(entry.meta)):  # the probe and the recompute at the shipped thread count
        _recompute_smallest_group(entry)


def _recompute_smallest_group(entry: Entry) -> None:
    spec = summary_spec(entry)
    here = numerics_probe(spec.family)
    if entry.meta.get("numerics") not in (None, here):
        pytest.skip(f"shipped where the float kernels give other bits (numerics {entry.meta['numerics']}, here "
                    f"{here}: another CPU, BLAS or thread count); exact equality holds only on the same kernels")
    if entry.meta.get("cpu") not in (None, cpu_description()):  # the probe alone missed a CPU's conv kernels
        pytest.skip(f"shipped on another processor ({entry.meta['cpu']}; here {cpu_description()}): its kernels "
                    "may round differently, and exact equality holds only on the same kernels")
    try:
        data = load_data(spec)
    except DatasetUnavailable as err:
        if not os.environ.get("EXPLORER_DATA_DIR"):
            pytest.skip(f"needs ../shared/datasets: {err}")
        raise
    if spec.trained:
        group = plan_groups(spec, spec.points())[0]
    else:
        group = [p for p in spec.points() if p.width == min(spec.widths) and p.seed == spec.seeds[0]]
    assert any(p.noise > 0 for p in group)
    table = entry.tensors()["metrics"]  # (P, E, M)
    index = {(p["width"], p["noise"], p["seed"]): i for i, p in enumerate(entry.metrics["points"])}
    for r in compute_points(spec, group, data):
        assert r.epochs == entry.metrics["epochs"]
        ours = torch.tensor([r.metrics[m] for m in METRICS], dtype=torch.float32).T  # (E, M), as write_summary
        shipped = table[index[(r.point.width, r.point.noise, r.point.seed)]]
        same = (ours == shipped) | (ours.isnan() & shipped.isnan())
        if not bool(same.all()):
            epoch, metric = (int(v) for v in (~same).nonzero()[0])
            pytest.fail(f"{r.point}: first differs at epoch {r.epochs[epoch]} in {METRICS[metric]} "
                        f"({float(ours[epoch, metric])!r} vs shipped {float(shipped[epoch, metric])!r}); "
                        f"largest difference {float((ours - shipped).abs().nan_to_num().max()):.3g}")
