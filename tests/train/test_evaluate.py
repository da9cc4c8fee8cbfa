"""Shared evaluation: chunked loss and error equal cross-entropy and argmax; divergence found and explained."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from explorer.core.config import ConfigError
from explorer.train.evaluate import Diverged, diverged_message, evaluate, exit_codes, first_nonfinite


def _linear_models(k: int, d: int, c: int, seed: int = 0):
    """K linear models as one logits function: x (b, D) shared or (K, b, D) per model -> (K, b, C)."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(k, d, c, generator=g), torch.randn(k, 1, c, generator=g)
    seen: list[int] = []

    def logits(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[-2])
        return torch.matmul(x, w) + b

    return logits, seen


def test_chunked_evaluation_equals_cross_entropy_and_argmax() -> None:
    logits, seen = _linear_models(3, 40, 10)
    x = torch.randn(2500, 40)
    labels = [torch.randint(0, 10, (3, 2500)) for _ in range(2)] + [torch.randint(0, 10, (2500,))]
    z = logits(x)
    seen.clear()
    results = evaluate(logits, x, labels, 1024)
    assert seen == [1024, 1024, 452]  # never the whole set's activations at once
    for (loss, err), y in zip(results, labels):
        y = y.expand(3, -1)
        ref = torch.stack([F.cross_entropy(z[k], y[k]) for k in range(3)])
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(err, (z.argmax(-1) != y).float().mean(1))


def test_classes_major_logits_and_per_model_inputs_give_the_same() -> None:
    logits, _ = _linear_models(2, 6, 4, seed=1)
    x, y = torch.randn(50, 6), torch.randint(0, 4, (2, 50))
    [ref] = evaluate(logits, x, [y], 7)
    [major] = evaluate(lambda xb: logits(xb).transpose(1, 2), x, [y], 7, classes_dim=1)  # (K, C, b)
    [per_model] = evaluate(logits, x.expand(2, -1, -1), [y], 7, example_dim=1)  # (K, N, D)
    [whole] = evaluate(logits, x, [y], 1000)
    for other in (major, per_model, whole):
        for u, v in zip(ref, other):
            torch.testing.assert_close(u, v)


def test_evaluating_nothing_is_refused() -> None:
    logits, _ = _linear_models(1, 3, 2)
    with pytest.raises(ValueError, match="no examples"):
        evaluate(logits, torch.empty(0, 3), [torch.empty(0, dtype=torch.int64)], 8)


def test_first_nonfinite_finds_the_first_bad_step_of_each_model() -> None:
    v = torch.ones(6, 4)
    v[3, 1], v[5, 1] = math.nan, math.inf  # model 1: first at 3
    v[0, 2] = -math.inf  # model 2: at once
    v[5, 3] = math.inf  # model 3: at the last step
    assert first_nonfinite(v) == [None, 3, 0, 5]
    assert first_nonfinite(v[:, 1]) == [3]  # (steps,) is one model
    assert first_nonfinite(torch.ones(4)) == [None]
    limit = torch.tensor([10.0, 10.0, 10.0, 10.0], dtype=torch.float64)
    v = torch.ones(6, 4)
    v[2, 0] = 11.0  # above its limit counts too
    v[4, 3] = 10.0  # at the limit does not
    assert first_nonfinite(v, limit) == [2, None, None, None]


def test_diverged_message_names_the_run_the_step_and_what_to_change() -> None:
    msg = diverged_message("model 2", 17, 3, 0.5)
    assert msg.startswith("model 2 diverged at step 17 (epoch 3): the loss became non-finite;")
    assert "learning rate 0.5 is probably too high" in msg and "try 0.05" in msg
    small = diverged_message("training", 4, lr=1e-4, cause="the loss exceeded 1000× its first value")
    assert small.startswith("training diverged at step 4: the loss exceeded 1000× its first value;")
    assert "already small" in small and "extreme values" in small
    assert diverged_message("", 1).startswith("diverged at step 1: ")
    assert "lower the learning rate" in diverged_message("", 1)


def test_first_nonfinite_scans_small_host_windows_like_the_tensor_path() -> None:
    from explorer.train.evaluate import HOST_SCAN, first_nonfinite

    g = torch.Generator().manual_seed(0)
    for steps in (1, 3, 200):
        x = torch.rand(steps, 6, generator=g)
        x[-1, 1], x[0, 2], x[steps // 2, 4] = float("nan"), float("inf"), 50.0
        limit = torch.full((6,), 10.0)
        small, large = x, x.repeat(HOST_SCAN, 1)  # the same first bad rows; large takes the tensor path
        for lim in (None, limit):
            assert first_nonfinite(small, lim) == first_nonfinite(large, lim)
        assert first_nonfinite(small, limit)[4] == steps // 2 and first_nonfinite(small)[4] is None


def test_a_chunk_out_of_memory_is_retried_in_halves_with_the_same_result() -> None:
    logits, seen = _linear_models(3, 40, 10)
    x = torch.randn(2500, 40)
    labels = [torch.randint(0, 10, (3, 2500)), torch.randint(0, 10, (2500,))]
    expected = evaluate(logits, x, labels, 1024)
    seen.clear()

    def small_device(xb: torch.Tensor) -> torch.Tensor:
        if xb.shape[0] > 200:  # what a GPU says when a chunk's activations do not fit
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return logits(xb)

    results = evaluate(small_device, x, labels, 1024)
    assert max(seen) <= 200 and sum(seen) == 2500  # 1024 -> 512 -> 256 -> 128, then every chunk fits
    assert seen[0] == 128
    for (loss, err), (ref_loss, ref_err) in zip(results, expected):
        torch.testing.assert_close(loss, ref_loss)
        torch.testing.assert_close(err, ref_err)


def test_an_allocator_message_counts_as_out_of_memory_and_other_errors_pass_through() -> None:
    logits, seen = _linear_models(1, 4, 3)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    calls = 0

    def flaky(xb: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:  # MPS and other allocators raise a plain RuntimeError
            raise RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)")
        return logits(xb)

    [(loss, _)] = evaluate(flaky, x, [y], 64)
    [(ref, _)] = evaluate(logits, x, [y], 64)
    torch.testing.assert_close(loss, ref)
    assert seen[0] == 32  # halved once
    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluate(lambda xb: (_ for _ in ()).throw(RuntimeError("shape mismatch")), x, [y], 64)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # one example that does not fit: the error is real
        evaluate(lambda xb: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("CUDA out of memory")), x, [y], 4)


def test_exit_codes_give_every_cli_the_same_refusal_and_divergence_messages(capsys) -> None:
    @exit_codes
    def main(what: str) -> int:
        if what == "refuse":
            raise ConfigError("width must be between 2 and 512; got 9999")
        if what == "diverge":
            raise Diverged("run 1 diverged at step 3 (epoch 1): the loss is nan", step=3, epoch=1)
        return 0

    assert main("ok") == 0 and main.__name__ == "main"
    assert main("refuse") == 2
    assert capsys.readouterr().err == "setting refused: width must be between 2 and 512; got 9999\n"
    assert main("diverge") == 1
    assert "diverged at step 3" in capsys.readouterr().err
