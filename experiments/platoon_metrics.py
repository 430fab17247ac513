"""Platoon and traffic-flow metrics on recorded trajectories (pure numpy, no simulator).

Signals are (T, n) arrays: T time steps of n vehicles. For string stability the columns are in platoon
order (column 0 the leader, column k the k-th follower) and time steps are ``dt`` apart.

String stability (shared/REFERENCES.md): per-vehicle amplification ratios gamma_i = ||z_i|| / ||z_{i-1}||
of a signal z (spacing error, acceleration, speed deviation) in the L2 norm (sqrt of the integral of z^2)
and the L-infinity norm (max |z|); a platoon is empirically string stable when max_i gamma_i <= 1.

Energy proxy: positive tractive power per unit mass,
    p(t) = max(0, v (a + g c_r + c_a v^2))  [W/kg],
with rolling resistance c_r = 0.01 and aerodynamic drag c_a = rho C_d A / (2 m) = 1.2 * 0.30 * 2.5 / (2 * 1500)
= 3.0e-4 1/m (a mid-size passenger car). Braking energy is lost (no recuperation), so a platoon that
brakes and re-accelerates less scores lower. Reported as J/kg per vehicle-km: the integral of p over time
and vehicles divided by the distance driven.
"""

from __future__ import annotations

import math

import numpy as np

G = 9.81  # [m/s^2]
ROLLING = 0.01  # rolling resistance coefficient c_r
DRAG = 1.2 * 0.30 * 2.5 / (2.0 * 1500.0)  # rho C_d A / (2 m) [1/m]


# ------------------------------------------------------------------------------------------ norms, ratios
def _finite(z) -> np.ndarray:
    z = np.asarray(z, float)
    return np.where(np.isfinite(z), z, 0.0)


def l2_norm(z: np.ndarray, dt: float) -> np.ndarray:
    """(n,) sqrt(sum_t z^2 dt) of each column of a (T, n) signal; non-finite samples (a vehicle without a
    leader has an infinite gap) count as 0."""
    z = _finite(z)
    return np.sqrt(np.sum(z * z, axis=0) * dt)


def linf_norm(z: np.ndarray) -> np.ndarray:
    """(n,) max_t |z| of each column (0 for an empty signal; non-finite samples ignored)."""
    z = _finite(z)
    return np.max(np.abs(z), axis=0) if z.shape[0] else np.zeros(z.shape[1])


def amplification(norms: np.ndarray) -> np.ndarray:
    """(n - 1,) gamma_i = norms[i] / norms[i - 1]; inf where the predecessor's norm is 0 and this one's not,
    1 where both are 0 (nothing to amplify)."""
    norms = np.asarray(norms, float)
    num, den = norms[1:], norms[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = num / den
    g = np.where(den > 0, g, np.where(num > 0, np.inf, 1.0))
    return g


def string_stability(z: np.ndarray, dt: float) -> dict:
    """Amplification ratios of one signal z (T, n), columns in platoon order.

    Returns:
        dict with, for ``norm`` in (``l2``, ``linf``): ``gamma_<norm>`` (n - 1,) list of per-vehicle ratios,
        ``max_<norm>`` the largest, ``head_to_tail_<norm>`` ||z_last|| / ||z_first||, and ``stable_<norm>``
        (max ratio <= 1).
    """
    z = np.asarray(z, float)
    out = {}
    for name, norms in (("l2", l2_norm(z, dt)), ("linf", linf_norm(z))):
        g = amplification(norms)
        out[f"gamma_{name}"] = g.tolist()
        out[f"max_{name}"] = float(np.max(g)) if g.size else math.nan
        h2t = amplification(norms[[0, -1]])[0] if norms.size >= 2 else math.nan
        out[f"head_to_tail_{name}"] = float(h2t)
        out[f"stable_{name}"] = bool(g.size and np.max(g) <= 1.0)
    return out


def spacing_error(gap: np.ndarray, speed: np.ndarray, time_gap, standstill) -> np.ndarray:
    """Constant time-gap spacing error e = gap - (r + h v) (T, n); ``time_gap``/``standstill`` scalars or (n,)."""
    return np.asarray(gap, float) - (np.asarray(standstill, float) + np.asarray(time_gap, float) *
                                     np.asarray(speed, float))


def idm_equilibrium_gap(speed, v0, time_gap, s0, delta) -> np.ndarray:
    """IDM equilibrium gap s_e(v) = (s0 + v T) / sqrt(1 - (v / v0)^delta) [m] (inf at and above v0)."""
    v = np.asarray(speed, float)
    r = 1.0 - np.power(np.clip(v / np.asarray(v0, float), 0.0, None), delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, (s0 + v * time_gap) / np.sqrt(np.where(r > 0, r, 1.0)), np.inf)


# ------------------------------------------------------------------------------------- safety, comfort
def jerk(accel: np.ndarray, dt: float) -> np.ndarray:
    """(T - 1, n) finite-difference jerk [m/s^3]."""
    return np.diff(np.asarray(accel, float), axis=0) / dt


def comfort(accel: np.ndarray, dt: float, valid: np.ndarray | None = None) -> dict:
    """RMS and max |jerk| over all vehicles and steps [m/s^3].

    ``valid``: (T, n) the vehicle is there at a step (jerk where it is there at both ends), or (T - 1, n)
    which differences to use (e.g. the same vehicle id at both ends, when slots are reused)."""
    j = jerk(accel, dt)
    if valid is not None:
        v = np.asarray(valid, bool)
        j = j[v if v.shape == j.shape else v[1:] & v[:-1]]
    j = np.ravel(j)
    if not j.size:
        return {"jerk_rms": math.nan, "jerk_max": math.nan}
    return {"jerk_rms": float(np.sqrt(np.mean(j * j))), "jerk_max": float(np.max(np.abs(j)))}


def safety(gap: np.ndarray, ttc: np.ndarray, collided: np.ndarray, valid: np.ndarray | None = None,
           vid: np.ndarray | None = None) -> dict:
    """Minimum bumper gap [m], minimum time to collision [s] and the number of vehicles that collided
    (distinct ``vid`` values when given: slots may be reused by new vehicles; else columns)."""
    gap, ttc, coll = np.asarray(gap, float), np.asarray(ttc, float), np.asarray(collided, bool)
    v = np.ones(gap.shape, bool) if valid is None else np.asarray(valid, bool)
    g = gap[v & np.isfinite(gap)]
    t = ttc[v]
    hit = coll & v
    count = int(np.unique(np.asarray(vid)[hit]).size) if vid is not None else int(hit.any(axis=0).sum())
    return {"min_gap": float(g.min()) if g.size else math.inf, "min_ttc": float(t.min()) if t.size else math.inf,
            "collisions": count}


# ------------------------------------------------------------------------------------------ efficiency
def speed_spread(speed: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Standard deviation of speed across vehicles at each step, averaged over the steps with at least two
    vehicles [m/s]."""
    s = np.asarray(speed, float)
    v = np.ones(s.shape, bool) if valid is None else np.asarray(valid, bool)
    cnt = v.sum(axis=1)
    ok = cnt > 1
    if not ok.any():
        return 0.0
    mean = np.where(v, s, 0.0).sum(axis=1) / np.maximum(cnt, 1)
    var = np.where(v, (s - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(cnt, 1)
    return float(np.mean(np.sqrt(var[ok])))


def mean_speed(speed: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean over vehicles and steps [m/s]."""
    s = np.asarray(speed, float)
    v = np.ones(s.shape, bool) if valid is None else np.asarray(valid, bool)
    return float(s[v].mean()) if v.any() else math.nan


def edie_flow(speed: np.ndarray, region_length, valid: np.ndarray | None = None) -> float:
    """Edie's generalised flow of a time-space region: distance travelled / (region length x duration),
    in vehicles per hour. ``speed`` (T, n) of the vehicles inside the region at each step (``valid``
    marks them), ``region_length`` [m] scalar or (T,)."""
    s = np.asarray(speed, float)
    v = np.ones(s.shape, bool) if valid is None else np.asarray(valid, bool)
    length = np.broadcast_to(np.asarray(region_length, float), (s.shape[0],))
    per_step = np.where(v, s, 0.0).sum(axis=1) / length
    return float(3600.0 * per_step.mean()) if per_step.size else math.nan


def crossings(pos: np.ndarray, valid: np.ndarray, x_ref: float) -> int:
    """Number of times a vehicle's position passes ``x_ref`` forwards between consecutive valid steps."""
    p = np.asarray(pos, float)
    v = np.asarray(valid, bool)
    both = v[1:] & v[:-1]
    return int(((p[:-1] < x_ref) & (p[1:] >= x_ref) & both).sum())


def tractive_power(speed: np.ndarray, accel: np.ndarray) -> np.ndarray:
    """Positive tractive power per unit mass [W/kg] (see the module docstring)."""
    v = np.asarray(speed, float)
    a = np.asarray(accel, float)
    return np.maximum(0.0, v * (a + G * ROLLING + DRAG * v * v))


def energy_per_km(speed: np.ndarray, accel: np.ndarray, dt: float, valid: np.ndarray | None = None) -> float:
    """Tractive energy per unit mass per vehicle-km [J/(kg km)]."""
    v = np.ones(np.shape(speed), bool) if valid is None else np.asarray(valid, bool)
    p = np.where(v, tractive_power(speed, accel), 0.0)
    dist_km = np.where(v, np.asarray(speed, float), 0.0).sum() * dt / 1000.0
    return float(p.sum() * dt / dist_km) if dist_km > 0 else math.nan


__all__ = ["l2_norm", "linf_norm", "amplification", "string_stability", "spacing_error", "idm_equilibrium_gap",
           "jerk", "comfort", "safety", "speed_spread", "mean_speed", "edie_flow", "crossings", "tractive_power",
           "energy_per_km"]
