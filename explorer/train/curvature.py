"""Curvature of a loss on a flat parameter vector: Hessian-vector products, power iteration, epsilon-sharpness.

Everything here takes `loss_fn(theta) -> scalar` on a flat (P,) parameter vector (`flat_loss` builds one for an
nn.Module and a fixed batch), so a quadratic, a tiny net and a CNN are treated alike. `hvp` is forward-over-reverse
(torch.func.jvp of torch.func.grad): H v at the cost of about two gradients, never forming H. `top_eigenvalue` is
the power iteration of PyHessian (Yao et al. 2020): a random unit vector, v <- Hv / |Hv|, the Rayleigh quotient
v.Hv as the estimate, stopped after `iters` products or once it changes by less than `tol` (relative); it finds
the eigenvalue of largest magnitude, which after training is the top (positive) one. `epsilon_sharpness` is
Keskar et al. 2017's measure, maximised by projected sign-gradient ascent inside the box
|delta_i| <= eps (|theta_i| + 1). `input_sensitivity` is the mean Frobenius norm of d loss_i / d x_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

LossFn = Callable[[torch.Tensor], torch.Tensor]  # flat (P,) parameters -> scalar loss


def flatten_params(model: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Size]]:
    """The model's parameters as one detached flat vector, and each name's shape (in order)."""
    shapes = {n: p.shape for n, p in model.named_parameters()}
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), shapes


def unflatten(theta: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Views of a flat vector, one per parameter name."""
    out, i = {}, 0
    for name, shape in shapes.items():
        n = shape.numel()
        out[name] = theta[i:i + n].view(shape)
        i += n
    return out


def flat_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[LossFn, torch.Tensor]:
    """Mean cross-entropy of `model` on (x, y) as a function of the flat parameters, and those parameters now."""
    theta, shapes = flatten_params(model)

    def loss_fn(t: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, unflatten(t, shapes), (x,)), y)

    return loss_fn, theta


def hvp(loss_fn: LossFn, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """H(theta) v, the Hessian of loss_fn at theta times v (forward-over-reverse)."""
    return jvp(grad(loss_fn), (theta,), (v,))[1]


@dataclass(frozen=True)
class PowerResult:
    """The power iteration's estimate, how many products it took and whether it met the tolerance."""

    eigenvalue: float
    iterations: int
    converged: bool
    vector: torch.Tensor


def power_iteration(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, iters: int = 20, tol: float = 1e-3,
                    seed: int = 0, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> PowerResult:
    """Largest-magnitude eigenvalue of a symmetric operator given as v -> Av (PyHessian's stopping rule)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=g, dtype=dtype).to(device)
    v = v / v.norm()
    value: float | None = None
    for i in range(1, iters + 1):
        av = matvec(v)
        new = float(torch.dot(av, v))  # Rayleigh quotient of the unit vector v
        norm = av.norm()
        if not torch.isfinite(norm) or float(norm) == 0.0:
            return PowerResult(new, i, False, v)
        v = av / norm
        if value is not None and abs(new - value) <= tol * (abs(value) + 1e-6):
            return PowerResult(new, i, True, v)
        value = new
    return PowerResult(float(value), iters, False, v)


def top_eigenvalue(loss_fn: LossFn, theta: torch.Tensor, iters: int = 20, tol: float = 1e-3,
                   seed: int = 0) -> PowerResult:
    """Top Hessian eigenvalue of loss_fn at theta by power iteration on Hessian-vector products."""
    return power_iteration(lambda v: hvp(loss_fn, theta, v), theta.numel(), iters, tol, seed, theta.dtype,
                           theta.device)


@dataclass(frozen=True)
class SharpnessResult:
    """Keskar's epsilon-sharpness and the numbers it is made of."""

    sharpness: float  # 100 (max L - L) / (1 + L)
    loss: float  # L(theta)
    max_loss: float  # the largest L(theta + delta) found in the box
    box_ok: bool  # every tried delta stayed inside the box


def epsilon_sharpness(loss_fn: LossFn, theta: torch.Tensor, eps: float = 1e-3, steps: int = 10) -> SharpnessResult:
    """100 (max_{|delta_i| <= eps (|theta_i| + 1)} L(theta + delta) - L(theta)) / (1 + L(theta)), the max by projected
    sign-gradient ascent from delta = 0 (step 2.5 box / steps, as in PGD attacks), the best iterate kept."""
    theta = theta.detach()
    box = eps * (theta.abs() + 1)
    base = float(loss_fn(theta))
    best, delta, inside = base, torch.zeros_like(theta), True
    step = 2.5 * box / max(steps, 1)
    g_fn = grad(loss_fn)
    for _ in range(steps):
        g = g_fn(theta + delta)
        delta = torch.maximum(torch.minimum(delta + step * torch.sign(g), box), -box)
        inside = inside and bool((delta.abs() <= box * (1 + 1e-6)).all())
        best = max(best, float(loss_fn(theta + delta)))
    return SharpnessResult(100 * (best - base) / (1 + base), base, best, inside)


def input_sensitivity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 1000) -> float:
    """Mean over examples of the Frobenius norm of the gradient of example i's cross-entropy w.r.t. its input x_i.
    The loss summed over a chunk gives each input its own gradient (examples do not interact in eval mode)."""
    total = 0.0
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk].detach().clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xb), y[i:i + chunk], reduction="sum")
        (gx,) = torch.autograd.grad(loss, xb)
        total += float(gx.reshape(len(xb), -1).norm(dim=1).sum())
    return total / len(x)
