"""Kinematic bicycle model (highway-env 1.12 ``Vehicle.step``)."""

from __future__ import annotations

import math

from drivediff.sim.jit import kernel


@kernel
def bicycle_step(x, y, yaw, v, accel, steer, length, dt, v_min, v_max):
    """One Euler step of the bicycle model with slip angle beta = atan(tan(steer) / 2).

    Position and heading use the speed at the start of the step, as in highway-env; the new speed is
    clipped to [v_min, v_max] (v_min = 0: a braking vehicle stops and never reverses).
    """
    # beta = atan(tan(steer) / 2), written without atan: cos(beta) = 1 / sqrt(1 + q^2), sin(beta) = q cos(beta)
    q = 0.5 * math.tan(steer)
    cb = 1.0 / math.sqrt(1.0 + q * q)
    sb = q * cb
    cy = math.cos(yaw)
    sy = math.sin(yaw)
    x2 = x + v * (cy * cb - sy * sb) * dt
    y2 = y + v * (sy * cb + cy * sb) * dt
    yaw2 = yaw + v * sb / (0.5 * length) * dt
    v2 = v + accel * dt
    if v2 < v_min:
        v2 = v_min
    elif v2 > v_max:
        v2 = v_max
    return x2, y2, yaw2, v2
