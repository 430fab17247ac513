"""Differentiable kinematic bicycle rollout (torch): controls -> states, starting where the vehicle is.

The same model as the simulator's kernel (``drivediff.sim.kernels.kinematics.bicycle_step``, highway-env
1.12): each planned control is held for ``substeps`` simulator steps of ``sim_dt``. Controls are clipped to
the planner's dynamics limits and speed to [0, 40] m/s, so every rolled-out plan is feasible.
"""

from __future__ import annotations

import torch

from drivediff.planner.config import PlannerConfig


def clip_controls(ctrl: torch.Tensor, cfg: PlannerConfig) -> torch.Tensor:
    """Clip (..., 2) controls to [accel_min, accel_max] x [-steer_max, steer_max]."""
    a = ctrl[..., 0].clamp(cfg.accel_min, cfg.accel_max)
    d = ctrl[..., 1].clamp(-cfg.steer_max, cfg.steer_max)
    return torch.stack([a, d], dim=-1)


def rollout(state: torch.Tensor, ctrl: torch.Tensor, sim_dt: float, substeps: int, v_max: float = 40.0):
    """Roll controls out from the current states.

    Args:
        state: (..., 5) x, y, yaw, speed, length.
        ctrl: (..., H, 2) acceleration [m/s^2], steering [rad] per planner step (already clipped).
        sim_dt: simulator step [s]; substeps: simulator steps per planner step.

    Returns:
        (..., H, 4): x, y, yaw, speed at the end of each planner step.
    """
    x, y, yaw, v, length = (state[..., k] for k in range(5))
    out = []
    for k in range(ctrl.shape[-2]):
        a = ctrl[..., k, 0]
        q = 0.5 * torch.tan(ctrl[..., k, 1])
        cb = torch.rsqrt(1.0 + q * q)  # beta = atan(tan(steer) / 2)
        sb = q * cb
        for _ in range(substeps):
            cy, sy = torch.cos(yaw), torch.sin(yaw)
            x = x + v * (cy * cb - sy * sb) * sim_dt
            y = y + v * (sy * cb + cy * sb) * sim_dt
            yaw = yaw + v * sb / (0.5 * length.clamp_min(0.5)) * sim_dt
            v = (v + a * sim_dt).clamp(0.0, v_max)
        out.append(torch.stack([x, y, yaw, v], dim=-1))
    return torch.stack(out, dim=-2)
