"""Differentiable kinematic bicycle rollout (torch): controls -> states, starting where the vehicle is.

Controls per planner step: longitudinal acceleration [m/s^2] and lateral acceleration a_lat [m/s^2], i.e.
path curvature kappa = a_lat / v^2. At every simulator step the curvature becomes the steering angle of
the simulator's bicycle model (``drivediff.sim.kernels.kinematics.bicycle_step``, highway-env 1.12) at the
current speed: the path curvature of that model is sin(beta) / (L/2) with beta = atan(tan(steer) / 2), so
sin(beta) = kappa L / 2 and steer = atan(2 tan(beta)), clipped to the steering limit. Each planned control
is held for ``substeps`` simulator steps of ``sim_dt``; accelerations are clipped to the planner's limits
and speed to [0, 40] m/s, so every rolled-out plan is feasible.
"""

from __future__ import annotations

import math

import torch

from drivediff.planner.config import PlannerConfig

V_EPS = 1.0  # [m/s] below this speed the curvature of a lateral acceleration is taken at 1 m/s


def clip_controls(ctrl: torch.Tensor, cfg: PlannerConfig) -> torch.Tensor:
    """Clip (..., 2) controls to [accel_min, accel_max] x [-lat_acc_max, lat_acc_max]."""
    a = ctrl[..., 0].clamp(cfg.accel_min, cfg.accel_max)
    lat = ctrl[..., 1].clamp(-cfg.lat_acc_max, cfg.lat_acc_max)
    return torch.stack([a, lat], dim=-1)


def sin_slip(lat_acc, speed, length, steer_max: float):
    """sin(beta) of the bicycle model that drives curvature lat_acc / speed^2, within the steering limit."""
    smax = math.sin(math.atan(0.5 * math.tan(steer_max)))
    kappa = lat_acc / torch.clamp(speed, min=V_EPS) ** 2
    return torch.clamp(0.5 * length * kappa, -smax, smax)


def steering(lat_acc, speed, length, steer_max: float):
    """Steering angle [rad] for a lateral acceleration at a speed (the action sent to the simulator)."""
    sb = sin_slip(lat_acc, speed, length, steer_max)
    return torch.atan(2.0 * sb / torch.sqrt(1.0 - sb * sb))


def rollout(state: torch.Tensor, ctrl: torch.Tensor, sim_dt: float, substeps: int, v_max: float = 40.0,
            every_substep: bool = False, steer_max: float = PlannerConfig.steer_max):
    """Roll controls out from the current states.

    Args:
        state: (..., 5) x, y, yaw, speed, length.
        ctrl: (..., H, 2) acceleration and lateral acceleration [m/s^2] per planner step (already clipped).
        sim_dt: simulator step [s]; substeps: simulator steps per planner step.
        every_substep: return the state after every simulator step (H * substeps of them).

    Returns:
        (..., H, 4) (or (..., H * substeps, 4)): x, y, yaw, speed at the end of each planner step.
    """
    x, y, yaw, v, length = (state[..., k] for k in range(5))
    length = length.clamp_min(0.5)
    out = []
    for k in range(ctrl.shape[-2]):
        a = ctrl[..., k, 0]
        lat = ctrl[..., k, 1]
        for _ in range(substeps):
            # steer = atan(2 tan(beta)) as in the simulator: cos(beta), sin(beta) straight from sin(beta)
            sb = sin_slip(lat, v, length, steer_max)
            cb = torch.sqrt(1.0 - sb * sb)
            cy, sy = torch.cos(yaw), torch.sin(yaw)
            x = x + v * (cy * cb - sy * sb) * sim_dt
            y = y + v * (sy * cb + cy * sb) * sim_dt
            yaw = yaw + v * sb / (0.5 * length) * sim_dt
            v = (v + a * sim_dt).clamp(0.0, v_max)
            if every_substep:
                out.append(torch.stack([x, y, yaw, v], dim=-1))
        if not every_substep:
            out.append(torch.stack([x, y, yaw, v], dim=-1))
    return torch.stack(out, dim=-2)
