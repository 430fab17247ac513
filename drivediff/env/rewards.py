"""Per-agent rewards: named terms computed by a kernel, weighted by :class:`~drivediff.env.config.RewardConfig`.

==========  =====================================================================================  =======
term        value on one environment step of duration T = action_repeat x dt                       weight
==========  =====================================================================================  =======
progress    T x clip(v cos(yaw - lane heading) / lane speed limit, 0, 1)                            +1.0
collision   1 on the step the agent collides (its episode ends)                                   -10.0
offroad     1 on each step a box corner is outside the drivable area (ends the episode by default)  -10.0
comfort     T x (min(abs(jerk) / 4.13, 1) + min(abs(lateral accel) / 4.89, 1)) / 2 (nuPlan bounds)  -0.5
goal        1 on the step the agent leaves the road through an exit (the end of its route)          +10.0
==========  =====================================================================================  =======

jerk = (acceleration - acceleration at the previous environment step) / T; lateral acceleration of the
bicycle model = v^2 sin(beta) / (L / 2) with beta = atan(tan(steer) / 2). The reward is the weighted sum;
the terms are reported per agent (``infos[agent]["reward_terms"]`` in PettingZoo and Gymnasium,
``info["reward_terms"]`` (B, A, 5) in the batched API).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from drivediff.env.config import RewardConfig
from drivediff.sim.jit import kernel
from drivediff.sim.kernels.frenet import lane_pose_hot
from drivediff.sim.layout import ACCEL, L_SPEED, LANE, LENGTH, SPEED, STEER, YAW, S

__all__ = ["TERMS", "RewardParams", "reward_params"]

TERMS = ("progress", "collision", "offroad", "comfort", "goal")
PROGRESS, COLLISION, OFFROAD, COMFORT, GOAL = range(5)


class RewardParams(NamedTuple):
    w_progress: float
    w_collision: float
    w_offroad: float
    w_comfort: float
    w_goal: float
    jerk_ref: float  # [m/s^3]
    lat_ref: float  # [m/s^2]
    period: float  # duration of one environment step [s]


def reward_params(cfg: RewardConfig, period: float) -> RewardParams:
    return RewardParams(float(cfg.progress), float(cfg.collision), float(cfg.offroad), float(cfg.comfort),
                        float(cfg.goal), float(cfg.jerk_ref), float(cfg.lat_accel_ref), float(period))


def weights(rp: RewardParams) -> np.ndarray:
    """(5,) weights in the order of ``TERMS``."""
    return np.array([rp.w_progress, rp.w_collision, rp.w_offroad, rp.w_comfort, rp.w_goal])


@kernel(inline=True)
def rate_terms(road, f, iv, b, i, prev_accel, rp, t):
    """Progress and comfort terms of vehicle i into ``t`` (5,)."""
    ln = iv[b, LANE, i]
    v = f[b, SPEED, i]
    lh = lane_pose_hot(road, ln, f[b, S, i])[2]
    v_lon = v * math.cos(f[b, YAW, i] - lh)
    t[PROGRESS] = rp.period * min(max(v_lon / road.lane_f[ln, L_SPEED], 0.0), 1.0)
    jerk = (f[b, ACCEL, i] - prev_accel) / rp.period
    beta = math.atan(0.5 * math.tan(f[b, STEER, i]))
    a_lat = v * v * math.sin(beta) / (0.5 * f[b, LENGTH, i])
    t[COMFORT] = rp.period * 0.5 * (min(abs(jerk) / rp.jerk_ref, 1.0) + min(abs(a_lat) / rp.lat_ref, 1.0))


@kernel(inline=True)
def weighted(rp, t):
    return (rp.w_progress * t[PROGRESS] + rp.w_collision * t[COLLISION] + rp.w_offroad * t[OFFROAD]
            + rp.w_comfort * t[COMFORT] + rp.w_goal * t[GOAL])
