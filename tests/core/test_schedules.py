"""The one learning-rate schedule registry shared by the batched trainer and the sweeps."""

import math

from explorer.core.schedules import SCHEDULES
from explorer.labs.double_descent import train as sweep_train
from explorer.train import stacked as batched


def test_every_trainer_uses_the_shared_registry() -> None:
    assert batched.SCHEDULES is SCHEDULES and sweep_train.SCHEDULES is SCHEDULES


def test_schedule_values() -> None:
    assert SCHEDULES["constant"](7, 10) == 1.0
    assert SCHEDULES["cosine"](0, 10) == 1.0 and math.isclose(SCHEDULES["cosine"](5, 10), 0.5)
    assert SCHEDULES["inverse_sqrt"](511, 4000) == 1.0  # Nakkiran et al.: steps down every 512 epochs
    assert math.isclose(SCHEDULES["inverse_sqrt"](512, 4000), 1 / math.sqrt(2))
