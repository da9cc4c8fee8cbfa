"""Surfaces: known minima are minima, numeric minima agree with them, formulas parse safely."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.core.config import ConfigError
from explorer.labs.optimizer_race.surfaces import (DTYPE, SURFACES, custom_surface, get_surface, numeric_minima,
                                                   parse_formula)


def _grad_at(surface, x: float, y: float) -> torch.Tensor:
    p = torch.tensor([x, y], dtype=DTYPE, requires_grad=True)
    (g,) = torch.autograd.grad(surface.fn(p[0], p[1]), p)
    return g


@pytest.mark.parametrize("name", list(SURFACES))
def test_every_listed_minimum_is_a_stationary_global_minimum(name: str) -> None:
    s = SURFACES[name]
    assert s.minima, name
    _, _, z = s.grid(201)
    values = [float(s.fn(torch.tensor(x, dtype=DTYPE), torch.tensor(y, dtype=DTYPE))) for x, y in s.minima]
    for (x, y), v in zip(s.minima, values):
        assert float(_grad_at(s, x, y).norm()) < 1e-4, (name, x, y)
        x0, x1, y0, y1 = s.domain
        assert x0 <= x <= x1 and y0 <= y <= y1
        assert v <= float(z.min()) + 1e-6, (name, v, float(z.min()))  # nothing on the grid is lower
    assert max(values) - min(values) < 1e-6  # all listed minima are global


@pytest.mark.parametrize("name", ["rosenbrock", "beale", "quadratic", "rastrigin", "saddle"])
def test_numeric_search_finds_the_known_minimum(name: str) -> None:
    s = SURFACES[name]
    (found,) = numeric_minima(s.fn, s.domain)
    assert min(math.dist(found, m) for m in s.minima) < 1e-4


def test_start_points_lie_inside_the_domains_and_grids_have_the_right_shape() -> None:
    for s in SURFACES.values():
        x0, x1, y0, y1 = s.domain
        assert x0 <= s.start[0] <= x1 and y0 <= s.start[1] <= y1
        xs, ys, z = s.grid(50)
        assert xs.shape == (50,) and ys.shape == (50,) and z.shape == (50, 50)


def test_formula_compiles_to_the_same_function_and_gradient_as_torch() -> None:
    fn = parse_formula("x^2 + 3*sin(y) - exp(-x)/2 + pi")
    p = torch.tensor([0.7, -1.3], dtype=DTYPE, requires_grad=True)
    ours = fn(p[0], p[1])
    ref = p[0] ** 2 + 3 * torch.sin(p[1]) - torch.exp(-p[0]) / 2 + math.pi
    assert torch.allclose(ours, ref)
    (g1,) = torch.autograd.grad(ours, p)
    x, y = 0.7, -1.3
    assert torch.allclose(g1, torch.tensor([2 * x + math.exp(-x) / 2, 3 * math.cos(y)], dtype=DTYPE))


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "x.real", "(lambda: 1)()", "x if y else 1", "open('f')",
    "[x, y]", "x < y", "z + 1", "sin(x, y)", "exp(1)", "", "x" * 300, "x +",
])
def test_formula_refuses_anything_outside_the_whitelist(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_formula(text)


def test_custom_surface_minimum_is_found() -> None:
    s = custom_surface("(x - 1)**2 + 3*(y + 2)**2", 3.0)
    (m,) = s.minima
    assert math.dist(m, (1.0, -2.0)) < 1e-5 and s.numeric
    with pytest.raises(ConfigError, match="surface must be one of"):
        get_surface("volcano")
