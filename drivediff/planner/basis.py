"""A smooth basis for control sequences: clamped cubic B-splines over the horizon.

Each agent's H planned controls per channel are ``B @ c`` for K coefficients c, with B (H, K) the
B-spline basis sampled at the middle of each planner step. Diffusing the K coefficients instead of the H
raw values rules out step-to-step jitter by construction (at 25 m/s a steering sequence that alternates
by 0.05 rad turns the car out of its lane within a second) and leaves fewer numbers to denoise.
"""

from __future__ import annotations

import numpy as np


def bspline_basis(num_steps: int, num_coef: int, degree: int = 3) -> np.ndarray:
    """(num_steps, num_coef) clamped B-spline basis (Cox-de Boor), rows sum to 1."""
    if num_coef < degree + 1:
        raise ValueError(f"a degree-{degree} B-spline needs at least {degree + 1} coefficients")
    interior = np.linspace(0.0, 1.0, num_coef - degree + 1)[1:-1]
    knots = np.r_[np.zeros(degree + 1), interior, np.ones(degree + 1)]
    u = (np.arange(num_steps) + 0.5) / num_steps
    basis = np.zeros((num_steps, len(knots) - 1))
    for j in range(len(knots) - 1):
        basis[:, j] = (knots[j] <= u) & (u < knots[j + 1])
    for p in range(1, degree + 1):
        nxt = np.zeros((num_steps, len(knots) - 1 - p))
        for j in range(len(knots) - 1 - p):
            left = knots[j + p] - knots[j]
            right = knots[j + p + 1] - knots[j + 1]
            a = (u - knots[j]) / left * basis[:, j] if left > 0 else 0.0
            b = (knots[j + p + 1] - u) / right * basis[:, j + 1] if right > 0 else 0.0
            nxt[:, j] = a + b
        basis = nxt
    return basis
