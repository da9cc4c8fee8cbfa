"""The one learning-rate schedule registry shared by the batched trainer and the sweeps."""

import math

from explorer import batched, sweep
from explorer.schedules import SCHEDULES


def test_every_trainer_uses_the_shared_registry() -> None:
    assert batched.SCHEDULES is SCHEDULES and sweep.SCHEDULES is SCHEDULES


def test_schedule_values() -> None:
    assert SCHEDULES["constant"](7, 10) == 1.0
    assert SCHEDULES["cosine"](0, 10) == 1.0 and math.isclose(SCHEDULES["cosine"](5, 10), 0.5)
    assert SCHEDULES["inverse_sqrt"](511, 4000) == 1.0  # Nakkiran et al.: steps down every 512 epochs
    assert math.isclose(SCHEDULES["inverse_sqrt"](512, 4000), 1 / math.sqrt(2))
