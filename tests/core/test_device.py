"""Device and process settings."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from explorer.core import device


def test_device_is_one_of_the_supported_kinds() -> None:
    assert device.get_device().type in ("cuda", "mps", "cpu")


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_allocator_tuning_applies_once_and_can_be_turned_off() -> None:
    code = "from explorer.core.device import configure_allocator as c; print(c(), c())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert on.stdout.split() == ["True", "True"]
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "EXPLORER_MALLOC_TUNING": "0"})
    assert off.stdout.split() == ["False", "False"]


def test_torch_threads_sets_the_recorded_count_and_restores_it() -> None:
    assert device.recorded_threads({"device": "cpu (16 cores, 2 torch threads)"}) == 2
    assert device.recorded_threads({"device": "cuda (NVIDIA H200)"}) is None and device.recorded_threads({}) is None
    before = torch.get_num_threads()
    with device.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with device.torch_threads(None):  # a result that does not say: unchanged
        assert torch.get_num_threads() == before
