"""Learning-rate schedules: a factor on the base learning rate for (epoch index, total epochs).

One registry for every training loop that takes a schedule by name (the batched trainer of the
memorisation lab, the double-descent sweeps); the factor is applied at the start of each epoch.
"""

from __future__ import annotations

import math
from typing import Callable


def constant(epoch: int, epochs: int) -> float:
    """Constant learning rate."""
    return 1.0


def cosine(epoch: int, epochs: int) -> float:
    """Cosine decay to zero over the run."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def inverse_sqrt(epoch: int, epochs: int) -> float:
    """Nakkiran et al.'s SGD schedule: lr0 / sqrt(1 + floor(epoch / 512))."""
    return 1.0 / math.sqrt(1.0 + epoch // 512)


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": constant,
    "cosine": cosine,
    "inverse_sqrt": inverse_sqrt,
}
