"""Choose the compute device once: cuda, then mps, then cpu; EXPLORER_DEVICE overrides."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

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


def recorded_threads(meta: Mapping[str, Any]) -> int | None:
    """The torch intra-op thread count a cached result was computed with (from its provenance's device text,
    "cpu (2 cores, 2 torch threads)"); None for a GPU result or one that does not say."""
    found = re.search(r"(\d+) torch threads", str(meta.get("device", "")))
    return int(found.group(1)) if found else None


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to n inside the block (unchanged for None), restored after it. A CPU
    result's last bits depend on how its reductions are split across threads, so an exact recompute runs with
    the count the result recorded."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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
    configure_allocator()
    return n


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
ALLOC_MMAP_THRESHOLD = 64 * 2**20  # bytes: smaller blocks come from the heap and are reused
ALLOC_TRIM_THRESHOLD = 128 * 2**20  # bytes of free heap kept before returning memory to the system
_allocator_done = False


def configure_allocator() -> bool:
    """Keep freed CPU tensors' memory for reuse (glibc only); returns True when it was applied.

    glibc serves every block above 128 KB with a fresh mmap and unmaps it on free, so each training
    step's stacked activations (K models x batch x width floats, a few hundred KB) come back as new
    pages that fault on first touch: a relu over one took 232 us instead of 7 us. Raising the mmap
    threshold makes them ordinary heap blocks that are reused. Measured with benchmarks.bench_sweep
    (2 epochs, 3 rounds): the sweep engine 0.75 s -> 0.45 s, the plain loop 3.83 s -> 2.71 s.
    Set EXPLORER_MALLOC_TUNING=0 to leave the allocator alone. A no-op off glibc.
    """
    global _allocator_done
    if _allocator_done:
        return True
    if os.environ.get("EXPLORER_MALLOC_TUNING", "1").strip() == "0":
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, ALLOC_MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, ALLOC_TRIM_THRESHOLD) == 1
    _allocator_done = ok
    return ok
