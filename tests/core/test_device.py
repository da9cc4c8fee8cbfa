"""Device and process settings."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

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
