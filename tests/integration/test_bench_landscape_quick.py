"""A smoke run of benchmarks/bench_landscape.py (the full run is `python -m benchmarks.bench_landscape`): both parts
finish, print their ratio and agreement lines, and the batched trajectories agree with the plain loops. Speed is
not checked (CI machines are noisy; the measured figures are in the benchmark's docstring)."""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks import bench_landscape as B


@pytest.fixture
def _threads():
    """The benchmark sets torch's thread count for its process: put it back for the other tests."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_the_quick_run_prints_ratios_and_agreement(capsys: pytest.CaptureFixture[str], _threads: None) -> None:
    assert B.main(["--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ratio \(a\) / \(b\): [\d.]+x", out), out
    assert "ratio full Hessian / power iteration" in out
    weights = re.search(r"weights max \|diff\| after epoch 1 ([\d.e+-]+)", out)
    assert weights and float(weights.group(1)) < 1e-4, out  # the batched runs are the plain loops, to rounding
    errors = [float(e) for e in re.findall(r"\|lambda_exact\| = ([\d.e+-]+)", out)]
    assert len(errors) == 2 and errors[1] < 1e-3, out  # the tight rule finds the full Hessian's eigenvalue


def test_a_flag_outside_the_labs_limits_is_refused(capsys: pytest.CaptureFixture[str], _threads: None) -> None:
    assert B.main(["--threads", "1", "--parts", "trajectories", "--n-train", "5"]) == 2
    assert "training images must be between" in capsys.readouterr().err
