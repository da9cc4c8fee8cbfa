"""What every lab's command (`python -m explorer <lab>`) shares: the options that say where a result is computed
and where it is kept, and the device and cache they name.

`--device cpu|cuda|...` picks the device (default: the app's, cuda > mps > cpu); `--ship` (alias `--shipped`)
stores the result in cache/shipped, to commit with the app, instead of the runtime cache.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from explorer.core.cache import Cache, default_cache, shipped_cache
from explorer.core.report import Reporter, terminal_run


def add_device_option(ap: argparse.ArgumentParser) -> None:
    """--device, read back by command_device."""
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: the app's device)")


def add_ship_option(ap: argparse.ArgumentParser, what: str = "result") -> None:
    """--ship (alias --shipped) into args.ship, read back by command_cache."""
    ap.add_argument("--ship", "--shipped", dest="ship", action="store_true",
                    help=f"store the {what} in cache/shipped (to commit)")


def command_device(name: str | None) -> torch.device | None:
    """The device --device names; None (the app's best device) when it names none."""
    return torch.device(name) if name else None


def command_cache(ship: bool) -> Cache:
    """The cache a command reads and writes: cache/shipped with --ship, else the runtime cache."""
    return shipped_cache() if ship else default_cache()


def command_run(args: argparse.Namespace, run: Callable[[Cache, Reporter, torch.device | None], Any]) -> Any:
    """run(cache, report, device) on the cache and device that args.ship and args.device name, with a progress bar
    on the terminal; the cache entry it returns (its notice printed, as terminal_run does)."""
    cache, device = command_cache(args.ship), command_device(args.device)
    return terminal_run(lambda report: run(cache, report, device))
