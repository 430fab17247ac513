"""Frequency-domain string stability of the platoon controllers (pure numpy).

A platoon is string stable (in the L2 sense) when the transfer function from the predecessor's
acceleration to the follower's, Gamma(s) = A_i(s) / A_{i-1}(s), has ||Gamma(jw)||_inf <= 1
(shared/REFERENCES.md, "Platoon and car-following").

Ploeg CACC, h du/dt = -u + kp e + kd de/dt + u_{i-1}(t - theta), e = gap - (r + h v), vehicle
tau da/dt + a = u::

    Gamma(s) = (K G + e^{-theta s}) / (H (1 + K G)),  H = 1 + h s,  K = kp + kd s,  G = 1 / (s^2 (tau s + 1))

Without delay Gamma = 1 / (1 + h s): stable for every h > 0. With delay the smallest stable time gap
h_min(theta, tau, kp, kd) grows; |Gamma(jw)| decreases with h at every w (h enters only through |H|), so
``min_time_gap`` finds it by bisection.

Milanes & Shladover ACC, a_des = k1 e + k2 (v_{i-1} - v), same vehicle::

    Gamma(s) = (k1 + k2 s) / (tau s^3 + s^2 + (k2 + k1 h) s + k1)

Near w = 0 it needs h >= (sqrt(k2^2 + 2 k1) - k2) / k1 (2.66 s with the published gains, 0 lag): string
unstable at every usual time gap, as reported for commercial ACCs.

``*_gamma_discrete`` give the same ratio for the simulator's own update (explicit Euler at step dt, the
first-order lag as ``a += dt / tau (u - a)``, the speed updated with the new acceleration, the position
with the old speed, the V2V delay in whole steps), evaluated at z = exp(j w dt). They show how far the
simulated platoon is from the continuous model at a given dt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Ploeg CACC with Plexe defaults (shared/REFERENCES.md)
PLOEG_KP = 0.2
PLOEG_KD = 0.7
PLEXE_LAG = 0.5  # [s]
# Milanes & Shladover ACC gains (the in-kernel values, drivediff.sim.kernels.step.ACC_K1 / ACC_K2)
ACC_K1 = 0.23
ACC_K2 = 0.07


@dataclass(frozen=True)
class FrequencyGrid:
    """Log-spaced angular frequencies [rad/s] on which sup |Gamma| is taken."""

    w_min: float = 1e-3
    w_max: float = 1e2
    points: int = 20000

    def __post_init__(self):
        if not 0 < self.w_min < self.w_max or self.points < 10:
            raise ValueError("FrequencyGrid needs 0 < w_min < w_max and at least 10 points")

    def omegas(self, dt: float | None = None) -> np.ndarray:
        """The grid; for a discrete-time model it stops below the Nyquist frequency pi / dt."""
        hi = self.w_max if dt is None else min(self.w_max, 0.999 * math.pi / dt)
        return np.logspace(math.log10(self.w_min), math.log10(hi), self.points)


DEFAULT_GRID = FrequencyGrid()


# ------------------------------------------------------------------------------------ continuous time
def cacc_gamma(w, h: float, theta: float = 0.0, tau: float = PLEXE_LAG, kp: float = PLOEG_KP,
               kd: float = PLOEG_KD) -> np.ndarray:
    """Gamma(jw) of Ploeg's CACC (complex, shape of ``w``).

    Args:
        w: angular frequencies [rad/s], > 0.
        h: time gap [s]; theta: V2V delay [s]; tau: actuator lag [s]; kp, kd: gains.
    """
    s = 1j * np.asarray(w, dtype=float)
    g = 1.0 / (s ** 2 * (tau * s + 1.0))
    k = kp + kd * s
    return (k * g + np.exp(-theta * s)) / ((1.0 + h * s) * (1.0 + k * g))


def acc_gamma(w, h: float, tau: float = 0.0, k1: float = ACC_K1, k2: float = ACC_K2) -> np.ndarray:
    """Gamma(jw) of the Milanes & Shladover ACC with a first-order actuator lag ``tau`` [s]."""
    s = 1j * np.asarray(w, dtype=float)
    return (k1 + k2 * s) / (tau * s ** 3 + s ** 2 + (k2 + k1 * h) * s + k1)


# -------------------------------------------------------------------------------------- discrete time
def _vehicle_discrete(z, dt: float, tau: float):
    """A = alpha U, V = beta A, X = gamma V for the simulator's update (no lag: alpha = 1)."""
    alpha = (dt / tau) * z / (z - 1.0 + dt / tau) if tau > 0 else np.ones_like(z)
    beta = dt * z / (z - 1.0)  # v_{k+1} = v_k + a_{k+1} dt
    gamma = dt / (z - 1.0)  # x_{k+1} = x_k + v_k dt
    return alpha, beta, gamma


def cacc_gamma_discrete(w, h: float, theta: float, dt: float, tau: float = PLEXE_LAG, kp: float = PLOEG_KP,
                        kd: float = PLOEG_KD) -> np.ndarray:
    """Gamma(e^{jw dt}) of the simulator's CACC update (``drivediff.sim.kernels.step._cc_accel``): the V2V
    delay is ``round(theta / dt)`` steps."""
    z = np.exp(1j * np.asarray(w, dtype=float) * dt)
    d = int(round(theta / dt))
    a, b, g = _vehicle_discrete(z, dt, tau)
    c = dt / h
    num = c * (kp * g * b * a + kd * b * a + z ** (-d))
    den = z - 1.0 + c + c * (kp * (g + h) * b * a + kd * (b + h) * a)
    return num / den


def acc_gamma_discrete(w, h: float, dt: float, tau: float = 0.0, k1: float = ACC_K1,
                       k2: float = ACC_K2) -> np.ndarray:
    """Gamma(e^{jw dt}) of the simulator's ACC update."""
    z = np.exp(1j * np.asarray(w, dtype=float) * dt)
    a, b, g = _vehicle_discrete(z, dt, tau)
    # u_{k+1} = k1 (x_j - x_i - h v_i) + k2 (v_j - v_i), all at step k: U z = k1 (...) + k2 (...)
    num = k1 * g * b * a + k2 * b * a
    den = z + k1 * (g + h) * b * a + k2 * b * a
    return num / den


# ------------------------------------------------------------------------------------------ sup, h_min
def sup_gamma(kind: str, h: float, theta: float = 0.0, tau: float = PLEXE_LAG, kp: float = PLOEG_KP,
              kd: float = PLOEG_KD, dt: float | None = None, grid: FrequencyGrid = DEFAULT_GRID) -> float:
    """sup_w |Gamma(jw)| of ``kind`` ("cacc" or "acc"; ACC ignores theta, kp, kd) on ``grid``.

    ``dt``: None for the continuous model, else the simulator's discrete update at that step.
    """
    w = grid.omegas(dt)
    if kind == "cacc":
        gam = cacc_gamma(w, h, theta, tau, kp, kd) if dt is None else cacc_gamma_discrete(w, h, theta, dt, tau,
                                                                                           kp, kd)
    elif kind == "acc":
        gam = acc_gamma(w, h, tau) if dt is None else acc_gamma_discrete(w, h, dt, tau)
    else:
        raise ValueError(f"unknown controller {kind!r} (cacc, acc)")
    return float(np.max(np.abs(gam)))


def min_time_gap(kind: str = "cacc", theta: float = 0.0, tau: float = PLEXE_LAG, kp: float = PLOEG_KP,
                 kd: float = PLOEG_KD, dt: float | None = None, h_max: float = 20.0, tol: float = 1e-4,
                 grid: FrequencyGrid = DEFAULT_GRID) -> float:
    """Smallest time gap h [s] with sup |Gamma| <= 1, by bisection (0.0 if every h > 0 is stable, inf if
    none up to ``h_max`` is).

    ``sup |Gamma| <= 1`` is tested with a 1e-9 tolerance: at w -> 0 every controller has |Gamma| -> 1.
    """
    def stable(h):
        return sup_gamma(kind, h, theta, tau, kp, kd, dt, grid) <= 1.0 + 1e-9

    lo = tol
    if stable(lo):
        return 0.0
    if not stable(h_max):
        return math.inf
    hi = h_max
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if stable(mid):
            hi = mid
        else:
            lo = mid
    return hi


def acc_low_frequency_bound(k1: float = ACC_K1, k2: float = ACC_K2) -> float:
    """The time gap below which the lag-free ACC amplifies slow oscillations: (sqrt(k2^2 + 2 k1) - k2) / k1."""
    return (math.sqrt(k2 * k2 + 2.0 * k1) - k2) / k1


__all__ = ["FrequencyGrid", "cacc_gamma", "acc_gamma", "cacc_gamma_discrete", "acc_gamma_discrete", "sup_gamma",
           "min_time_gap", "acc_low_frequency_bound", "PLOEG_KP", "PLOEG_KD", "PLEXE_LAG", "ACC_K1", "ACC_K2"]
