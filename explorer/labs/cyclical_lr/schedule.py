"""The triangular cyclical learning rate (Smith 2015, arXiv:1506.01186; the DD2424 assignment's formula).

Over one cycle of 2 n_s update steps the rate rises linearly from eta_min to eta_max in n_s steps and falls
back in the next n_s: for 2 l n_s <= t <= (2l+1) n_s, eta_t = eta_min + (t - 2 l n_s) / n_s (eta_max - eta_min);
for (2l+1) n_s <= t <= 2(l+1) n_s, eta_t = eta_max - (t - (2l+1) n_s) / n_s (eta_max - eta_min).
The LR range test's sweep is here too: an exponential rise from a low to a high rate, one factor per step.
"""

from __future__ import annotations


def triangular(t: int, eta_min: float, eta_max: float, n_s: int) -> float:
    """The rate at update step t (0-based) of the triangular schedule with step size n_s."""
    phase = t % (2 * n_s)  # where in its cycle step t is
    frac = phase / n_s if phase <= n_s else (2 * n_s - phase) / n_s
    return eta_min + frac * (eta_max - eta_min)


def exponential(t: int, lr_low: float, lr_high: float, steps: int) -> float:
    """The range test's rate at step t of `steps`: lr_low at t=0, lr_high at t=steps-1, a constant factor between."""
    return lr_low * (lr_high / lr_low) ** (t / max(steps - 1, 1))


def curve(eta_min: float, eta_max: float, n_s: int, cycles: int, points_per_half: int = 8) -> list[tuple[int, float]]:
    """(step, rate) points that draw the whole schedule: its corners and a few points between them."""
    out = []
    for c in range(2 * cycles):
        for j in range(points_per_half):
            t = c * n_s + j * n_s // points_per_half
            out.append((t, triangular(t, eta_min, eta_max, n_s)))
    end = 2 * n_s * cycles
    out.append((end, triangular(end, eta_min, eta_max, n_s)))
    return out
