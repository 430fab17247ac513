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


def plan_states(state: torch.Tensor, ctrl: torch.Tensor, sim_dt: float, substeps: int,
                steer_max: float = PlannerConfig.steer_max) -> torch.Tensor:
    """States (..., H, 4) at the end of each planner step of controls (..., H, 2) held for ``substeps``
    simulator steps of ``sim_dt`` (:func:`rollout_cumulative` read at the planner steps)."""
    fine = rollout_cumulative(state, ctrl, sim_dt, substeps, steer_max=steer_max)
    return fine[..., substeps - 1::substeps, :]


def rollout_cumulative(state: torch.Tensor, ctrl: torch.Tensor, dt: float, substeps: int = 1, v_max: float = 40.0,
                       steer_max: float = PlannerConfig.steer_max) -> torch.Tensor:
    """:func:`rollout` with one Euler step of ``dt`` per control, written with cumulative sums over the
    horizon instead of a loop: about 20 tensor operations instead of 20 per step, which is what the guidance
    gradient (a forward and backward pass per denoising step) pays for. Equal to
    ``rollout(state, ctrl, dt, 1)``: the speed clamped at 0 step by step is the running sum of the
    accelerations reflected at 0, S_k - min(0, min_j<=k S_j) (the upper limit ``v_max`` is applied to the
    result, exact unless a plan touches both limits). ``substeps`` holds each control for that many steps of
    ``dt``, like :func:`rollout` with ``every_substep=True``.

    Returns (..., H * substeps, 4): x, y, yaw, speed at the end of each step.
    """
    x0, y0, yaw0, v0, length = (state[..., k:k + 1] for k in range(5))
    length = length.clamp_min(0.5)
    if substeps > 1:
        ctrl = ctrl.repeat_interleave(substeps, dim=-2)
    a, lat = ctrl[..., 0], ctrl[..., 1]
    run = v0 + torch.cumsum(a * dt, dim=-1)
    v_after = (run - torch.cummin(run, dim=-1).values.clamp(max=0.0)).clamp(max=v_max)
    v = torch.cat([v0, v_after[..., :-1]], dim=-1)  # speed during each step
    sb = sin_slip(lat, v, length, steer_max)
    cb = torch.sqrt(1.0 - sb * sb)
    yaw_after = yaw0 + torch.cumsum(v * sb / (0.5 * length) * dt, dim=-1)
    yaw = torch.cat([yaw0, yaw_after[..., :-1]], dim=-1)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    x = x0 + torch.cumsum(v * (cy * cb - sy * sb) * dt, dim=-1)
    y = y0 + torch.cumsum(v * (sy * cb + cy * sb) * dt, dim=-1)
    return torch.stack([x, y, yaw_after, v_after], dim=-1)
