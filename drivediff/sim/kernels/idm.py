"""Longitudinal models: IDM (highway-env's variant and Treiber's), ACC and CACC."""

from __future__ import annotations

import math

from drivediff.sim.jit import kernel


@kernel
def idm_accel(v, v0, time_gap, s0, a, b, delta, gap, v_lead, center_gap):
    """IDM acceleration [m/s^2].

    a * (1 - (v/v0)^delta - (s*/gap)^2), s* = s0 + v T + v dv / (2 sqrt(a b)), dv = v - v_lead.

    ``gap`` is the bumper-to-bumper gap (Treiber), or with ``center_gap`` the centre-to-centre distance
    of highway-env's IDMVehicle, whose s0 then includes a vehicle length (5 + 5 m) and whose s* is not
    clipped at s0 (highway-env 1.12 ``desired_gap``). ``gap = inf`` means no leader.
    """
    v0e = v0 if abs(v0) > 1e-2 else 1e-2  # highway-env not_zero
    acc = a * (1.0 - math.pow(max(v, 0.0) / abs(v0e), delta))
    if gap < math.inf:
        dv = v - v_lead
        dyn = v * time_gap + v * dv / (2.0 * math.sqrt(a * b))
        s_star = s0 + dyn if center_gap else s0 + max(0.0, dyn)
        g = gap if abs(gap) > 1e-2 else 1e-2
        if g < 0.0:
            g = 1e-2
        acc -= a * (s_star / g) ** 2
    return acc


@kernel
def cah_accel(v, v_lead, a_lead, gap, a):
    """Constant-acceleration heuristic (Kesting, Treiber & Helbing 2010, eq. 4): the acceleration that
    just avoids a collision if the leader keeps its acceleration ``a_lead`` (capped at ``a``)."""
    al = min(a_lead, a)
    g = max(gap, 1e-2)
    # strict inequality (as in Treiber's reference code): a stopped, non-accelerating leader takes the
    # second branch, -v^2 / (2 s); with <= it would be 0 / 0
    if v_lead * (v - v_lead) < -2.0 * g * al:
        return v * v * al / (v_lead * v_lead - 2.0 * g * al)
    dv = v - v_lead
    return al - (dv * dv if dv > 0.0 else 0.0) / (2.0 * g)


@kernel
def eidm_accel(v, v0, time_gap, s0, a, b, delta, gap, v_lead, a_lead, coolness, center_gap):
    """Enhanced IDM: IDM, blended with the CAH when IDM brakes harder than the situation requires.

    a = a_IDM if a_IDM >= a_CAH, else (1 - c) a_IDM + c (a_CAH + b tanh((a_IDM - a_CAH) / b)).
    With ``coolness`` c = 0 this is plain IDM; c = 0.99 is the published value. Drivers then react
    calmly when a vehicle cuts in at a short gap but is not slower (merges, lane changes).
    """
    a_idm = idm_accel(v, v0, time_gap, s0, a, b, delta, gap, v_lead, center_gap)
    if coolness <= 0.0 or gap == math.inf:
        return a_idm
    a_cah = cah_accel(v, v_lead, a_lead, gap, a)
    if a_idm >= a_cah:
        return a_idm
    return (1.0 - coolness) * a_idm + coolness * (a_cah + b * math.tanh((a_idm - a_cah) / b))


@kernel
def acc_accel(gap, v, v_lead, time_gap, standstill, k1, k2):
    """ACC (Milanes & Shladover): a = k1 e + k2 (v_lead - v), e = gap - (r + h v)."""
    if gap == math.inf:
        return math.inf
    return k1 * (gap - standstill - time_gap * v) + k2 * (v_lead - v)
