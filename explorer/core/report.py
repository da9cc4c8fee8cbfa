"""Progress reporting shared by every lab: time formatting for progress lines and ETAs."""

from __future__ import annotations

import math


def hms(s: float) -> str:
    """Seconds as 1h02m03s / 2m03s / 3s ("?" when unknown)."""
    if not math.isfinite(s):
        return "?"
    s = int(s)
    h, m = s // 3600, s % 3600 // 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else (f"{m}m{s % 60:02d}s" if m else f"{s}s")
