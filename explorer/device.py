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


def configure_threads(default: int = 1) -> int:
    """Set torch's intra-op CPU threads from EXPLORER_TORCH_THREADS (else `default`); returns the count.

    The app runs many small concurrent jobs (one per student): parallelism comes from the jobs, and
    intra-op threads only fight over the cores. Measured on a loaded 2-core machine: the playground's
    epoch rate went from 2-22 to about 170 epochs per second with 1 thread instead of 2.
    """
    raw = os.environ.get("EXPLORER_TORCH_THREADS", "").strip()
    try:
        n = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"EXPLORER_TORCH_THREADS must be a whole number, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"EXPLORER_TORCH_THREADS must be at least 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
