"""Two-dimensional loss surfaces as torch functions, with their known minima, and a safe formula parser.

Each surface is f(x, y) written with elementwise torch ops, so one call evaluates a whole grid
(for the contour plot) or every racer at once. Minima are the known global minima from the
literature; for the noisy multi-well surface and user formulas they are found numerically
(grid search, then Newton polish) and marked as such. User formulas are parsed with `ast` and
compiled to torch ops from a whitelist: nothing the user types is ever evaluated by Python.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from explorer.core.config import ConfigError

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DTYPE = torch.float64  # paths on ill-conditioned surfaces need the precision; the cost is nil at 2-D

MAX_FORMULA_CHARS = 200
MAX_FORMULA_NODES = 120
NEWTON_STEPS = 30  # polishing a grid minimum: quadratic convergence needs few


@dataclass(frozen=True)
class Surface:
    """A loss surface: formula, function, plotting domain, default start and known minima."""

    label: str
    formula: str  # for display
    fn: Fn
    domain: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max
    start: tuple[float, float]
    known_minima: tuple[tuple[float, float], ...] | None  # None: find them numerically
    gd_lr: float  # a stable learning rate for plain gradient steps (about 1 / curvature)
    adaptive_lr: float  # a sensible step size for Adam-like methods (in coordinate units)
    grad_noise: float = 0.0  # default std of the noise added to each gradient
    note: str = ""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f(x, y), elementwise."""
        return self.fn(x, y)

    @functools.cached_property
    def minima(self) -> tuple[tuple[float, float], ...]:
        """The global minima: known ones, else found numerically on the domain."""
        if self.known_minima is not None:
            return self.known_minima
        return numeric_minima(self.fn, self.domain)

    @property
    def numeric(self) -> bool:
        """True when the minima were found numerically rather than known in closed form."""
        return self.known_minima is None

    def grid(self, n: int = 160) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """xs (n,), ys (n,), and f on the grid (n, n) indexed [y, x]."""
        x0, x1, y0, y1 = self.domain
        xs = torch.linspace(x0, x1, n, dtype=DTYPE)
        ys = torch.linspace(y0, y1, n, dtype=DTYPE)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        with torch.no_grad():
            return xs, ys, self.fn(gx, gy)

    def distance_to_minimum(self, path: torch.Tensor) -> torch.Tensor | None:
        """Euclidean distance (T,) from each point of `path` (T, 2) to the nearest global minimum."""
        if not self.minima:
            return None
        m = torch.tensor(self.minima, dtype=path.dtype)  # (M, 2)
        return (path[:, None, :] - m[None]).square().sum(-1).sqrt().min(dim=1).values

    def suggested_lr(self, kind: str) -> float:
        """A learning rate that makes an interesting race on this surface for an optimizer kind."""
        return LR_RULES[kind](self)


LR_RULES: dict[str, Callable[[Surface], float]] = {
    "sgd": lambda s: s.gd_lr,
    "momentum": lambda s: s.gd_lr,
    "nesterov": lambda s: s.gd_lr,
    "adagrad": lambda s: 5 * s.adaptive_lr,  # its steps shrink as 1/sqrt(t)
    "rmsprop": lambda s: s.adaptive_lr,
    "adadelta": lambda s: 1.0,  # its own unit-free step; the default is the honest choice
    "adam": lambda s: s.adaptive_lr,
    "adamw": lambda s: s.adaptive_lr,
    "nadam": lambda s: s.adaptive_lr,
    "radam": lambda s: s.adaptive_lr,
}


def _rosenbrock(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (1 - x) * (1 - x) + 100 * (y - x * x) * (y - x * x)


def _beale(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a = 1.5 - x + x * y
    b = 2.25 - x + x * y * y
    c = 2.625 - x + x * y * y * y
    return a * a + b * b + c * c


def _himmelblau(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a = x * x + y - 11
    b = x + y * y - 7
    return a * a + b * b


def _saddle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * x - y * y + 0.25 * y * y * y * y


def _monkey_saddle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r2 = x * x + y * y
    return x * x * x - 3 * x * y * y + 0.5 * r2 * r2


def _quadratic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x * x + 50 * y * y)


def _rastrigin(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 20 + x * x - 10 * torch.cos(2 * math.pi * x) + y * y - 10 * torch.cos(2 * math.pi * y)


WELLS = ((1.5, 1.0, 1.0, 0.5), (-1.5, -1.0, 1.6, 0.8), (1.3, -1.7, 0.8, 0.4), (-1.2, 1.8, 0.6, 0.3))  # x, y, depth, 2σ²


def _multiwell(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    f = 0.05 * (x * x + y * y) + 0.04 * torch.sin(6 * x) * torch.sin(6 * y)
    for cx, cy, depth, width in WELLS:
        f = f - depth * torch.exp(-((x - cx) * (x - cx) + (y - cy) * (y - cy)) / width)
    return f


_MONKEY_R = 1.5  # minima of -r³ + r⁴/2 lie at r = 3/2, where cos 3θ = -1
SURFACES: dict[str, Surface] = {
    "rosenbrock": Surface("Rosenbrock", "(1 − x)² + 100 (y − x²)²", _rosenbrock, (-2.0, 2.0, -1.0, 3.0),
                          (-1.5, 2.5), ((1.0, 1.0),), gd_lr=1e-3, adaptive_lr=0.05,
                          note="a curved narrow valley: finding it is easy, following it to (1, 1) is not"),
    "beale": Surface("Beale", "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²", _beale,
                     (-4.5, 4.5, -4.5, 4.5), (0.7, 1.4), ((3.0, 0.5),), gd_lr=1e-3, adaptive_lr=0.05,
                     note="flat plateaus and steep walls; the gradient scale varies by orders of magnitude"),
    "himmelblau": Surface("Himmelblau", "(x² + y − 11)² + (x + y² − 7)²", _himmelblau, (-5.0, 5.0, -5.0, 5.0),
                          (-0.3, -0.9),
                          ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)),
                          gd_lr=5e-3, adaptive_lr=0.1,
                          note="four global minima: which one a racer reaches depends on its path"),
    "saddle": Surface("Saddle", "x² − y² + y⁴/4", _saddle, (-2.5, 2.5, -2.5, 2.5), (-2.0, 1e-3),
                      ((0.0, math.sqrt(2.0)), (0.0, -math.sqrt(2.0))), gd_lr=0.05, adaptive_lr=0.05,
                      note="a saddle at the origin; start on (or near) y = 0 and watch who escapes it"),
    "monkey_saddle": Surface("Monkey saddle", "x³ − 3xy² + (x² + y²)²/2", _monkey_saddle, (-2.5, 2.5, -2.5, 2.5),
                             (0.8, 0.05),
                             tuple((round(_MONKEY_R * math.cos(t), 12), round(_MONKEY_R * math.sin(t), 12))
                                   for t in (math.pi / 3, math.pi, 5 * math.pi / 3)),
                             gd_lr=0.02, adaptive_lr=0.05,
                             note="a flat, degenerate saddle at the origin (zero curvature), three minima around it"),
    "quadratic": Surface("Ill-conditioned quadratic", "(x² + 50 y²)/2", _quadratic, (-3.0, 3.0, -3.0, 3.0),
                         (-2.8, 1.5), ((0.0, 0.0),), gd_lr=0.035, adaptive_lr=0.05,
                         note="condition number 50: gradient descent zig-zags across the valley"),
    "rastrigin": Surface("Rastrigin", "20 + x² − 10 cos 2πx + y² − 10 cos 2πy", _rastrigin,
                         (-5.12, 5.12, -5.12, 5.12), (3.1, -2.2), ((0.0, 0.0),), gd_lr=1e-3, adaptive_lr=0.05,
                         note="a local minimum near every integer point; the global one is at the origin"),
    "multiwell": Surface("Noisy multi-well", "bowl − Σ Gaussian wells + 0.04 sin 6x sin 6y", _multiwell,
                         (-3.0, 3.0, -3.0, 3.0), (2.5, 2.5), None, gd_lr=0.05, adaptive_lr=0.05, grad_noise=0.3,
                         note="wells of different depths under ripples; gradients carry noise, as in SGD"),
}


def numeric_minima(fn: Fn, domain: tuple[float, float, float, float], n: int = 301) -> tuple[tuple[float, float], ...]:
    """The global minimum of fn on the domain: the best grid point, polished by Newton steps (float64)."""
    x0, x1, y0, y1 = domain
    xs = torch.linspace(x0, x1, n, dtype=DTYPE)
    ys = torch.linspace(y0, y1, n, dtype=DTYPE)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    with torch.no_grad():
        z = fn(gx, gy).flatten()
    z = torch.where(torch.isfinite(z), z, torch.full_like(z, math.inf))
    if not torch.isfinite(z).any():
        return ()
    i = int(torch.argmin(z))
    p = torch.stack([gx.flatten()[i], gy.flatten()[i]])
    best = float(z[i])

    def f(q: torch.Tensor) -> torch.Tensor:
        return fn(q[0], q[1])

    for _ in range(NEWTON_STEPS):
        q = p.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(q), q)
        h = torch.autograd.functional.hessian(f, p)  # (2, 2)
        if not bool(torch.isfinite(h).all()) or float(torch.linalg.eigvalsh(h).min()) <= 0:
            break  # not locally convex here: keep the best point so far
        step = torch.linalg.solve(h, g)
        cand = p - step
        with torch.no_grad():
            value = float(f(cand))
        if not value <= best or not (x0 <= float(cand[0]) <= x1 and y0 <= float(cand[1]) <= y1):
            break
        p, best = cand, value
        if float(step.norm()) < 1e-13:
            break
    return ((float(p[0]), float(p[1])),)


# --- user formulas --------------------------------------------------------------------------------------
FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "exp": torch.exp, "log": torch.log,
    "sqrt": torch.sqrt, "abs": torch.abs, "tanh": torch.tanh, "sinh": torch.sinh, "cosh": torch.cosh,
    "atan": torch.atan, "sigmoid": torch.sigmoid,
}
CONSTANTS = {"pi": math.pi, "e": math.e}
BINARY: dict[type, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    ast.Add: torch.add, ast.Sub: torch.sub, ast.Mult: torch.mul, ast.Div: torch.div, ast.Pow: torch.pow,
}
UNARY: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {ast.USub: torch.neg, ast.UAdd: lambda t: t}


def _compile(node: ast.AST) -> Fn:
    """Turn one whitelisted AST node into a torch function of (x, y); anything else is refused."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        value = float(node.value)
        return lambda x, y: torch.full_like(x, value)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return lambda x, y: x
        if node.id == "y":
            return lambda x, y: y
        if node.id in CONSTANTS:
            value = CONSTANTS[node.id]
            return lambda x, y: torch.full_like(x, value)
        raise ConfigError(f"unknown name {node.id!r} in the formula: use x, y, pi, e "
                          f"and the functions {', '.join(FUNCTIONS)}")
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        op, left, right = BINARY[type(node.op)], _compile(node.left), _compile(node.right)
        return lambda x, y: op(left(x, y), right(x, y))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        uop, operand = UNARY[type(node.op)], _compile(node.operand)
        return lambda x, y: uop(operand(x, y))
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS or len(node.args) != 1 or node.keywords:
            raise ConfigError(f"only one-argument calls of {', '.join(FUNCTIONS)} are allowed in a formula")
        fun, arg = FUNCTIONS[name], _compile(node.args[0])
        return lambda x, y: fun(arg(x, y))
    raise ConfigError(f"the formula may use numbers, x, y, + − * / ** and {', '.join(FUNCTIONS)}; "
                      f"{type(node).__name__} is not allowed")


def parse_formula(text: str) -> Fn:
    """Compile a formula in x and y (e.g. 'x**2 + 3*sin(y)') to a torch function, safely."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("type a formula in x and y, for example x**2 + 3*y**2")
    if len(text) > MAX_FORMULA_CHARS:
        raise ConfigError(f"the formula is too long ({len(text)} characters; at most {MAX_FORMULA_CHARS})")
    try:
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ConfigError(f"the formula cannot be read: {exc}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_FORMULA_NODES:
        raise ConfigError(f"the formula is too complex (more than {MAX_FORMULA_NODES} parts)")
    fn = _compile(tree.body)
    probe = torch.tensor([0.5, -1.5], dtype=DTYPE, requires_grad=True)
    out = fn(probe, probe.flip(0))
    if not out.requires_grad:
        raise ConfigError("the formula must depend on x or y")
    return fn


@functools.lru_cache(maxsize=32)
def custom_surface(formula: str, half_width: float = 3.0) -> Surface:
    """A surface from a user formula on the square [-half_width, half_width]², minima found numerically."""
    fn = parse_formula(formula)
    h = float(half_width)
    return Surface("Custom", formula, fn, (-h, h, -h, h), (-0.8 * h, 0.6 * h), None,
                   gd_lr=0.01, adaptive_lr=0.02 * h, note="your formula; its minimum is found numerically")


def get_surface(name: str, formula: str = "", half_width: float = 3.0) -> Surface:
    """A registered surface by name, or the user's formula when name is 'custom'."""
    if name == "custom":
        return custom_surface(formula, half_width)
    if name not in SURFACES:
        raise ConfigError(f"surface must be one of {', '.join([*SURFACES, 'custom'])}; got {name!r}")
    return SURFACES[name]
