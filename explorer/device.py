"""Choose the compute device once: cuda, then mps, then cpu; EXPLORER_DEVICE overrides."""

from __future__ import annotations

import functools
import os

import torch


@functools.lru_cache(maxsize=1)
def get_device() -> torch.device:
    """The device every computation uses; set EXPLORER_DEVICE=cpu|cuda|cuda:1|mps to override."""
    forced = os.environ.get("EXPLORER_DEVICE", "").strip()
    if forced:
        dev = torch.device(forced)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"EXPLORER_DEVICE={forced} but CUDA is not available")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"EXPLORER_DEVICE={forced} but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(dev: torch.device | None = None) -> str:
    """A human-readable name for the device, recorded in provenance."""
    dev = dev or get_device()
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    if dev.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
