"""Config validation shared by every frozen config: one place for the server-side limits."""

from __future__ import annotations

import math
from typing import Any, Iterable


class ConfigError(ValueError):
    """A setting is out of range or malformed; the message says which and what is allowed."""


SHOWN_CHARS = 80  # a refused value is echoed up to this many characters (a crafted link may carry 20 kB)


def shown(value: Any) -> str:
    """repr(value) for a message, cut to SHOWN_CHARS characters with the full length said."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"


def check_range(name: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> None:
    """Refuse a number outside [lo, hi] (or a non-integer where one is needed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {shown(value)}")
    if integer and int(value) != value:
        raise ConfigError(f"{name} must be a whole number, got {shown(value)}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Refuse a value that is not one of the registered choices."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {shown(value)}")
