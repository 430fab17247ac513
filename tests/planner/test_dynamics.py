"""The torch rollout against the simulator's kinematics kernel, and feasibility by construction."""

import numpy as np
import torch

from drivediff.planner.config import PlannerConfig
from drivediff.planner.dynamics import clip_controls, rollout
from drivediff.sim.kernels.kinematics import bicycle_step


def test_rollout_matches_the_simulator_kernel():
    rng = np.random.default_rng(0)
    cfg = PlannerConfig()
    dt, m, h = 0.1, 2, cfg.horizon
    for _ in range(20):
        state = np.array([rng.uniform(-50, 50), rng.uniform(-50, 50), rng.uniform(-3, 3), rng.uniform(0, 30),
                          rng.uniform(4, 6)])
        ctrl = np.stack([rng.uniform(cfg.accel_min, cfg.accel_max, h), rng.uniform(-0.3, 0.3, h)], axis=-1)
        ours = rollout(torch.tensor(state), torch.tensor(ctrl), dt, m).numpy()
        x, y, yaw, v = state[:4]
        ref = []
        for k in range(h):
            for _ in range(m):
                x, y, yaw, v = bicycle_step(x, y, yaw, v, ctrl[k, 0], ctrl[k, 1], state[4], dt, 0.0, 40.0)
            ref.append([x, y, yaw, v])
        np.testing.assert_allclose(ours, np.array(ref), rtol=1e-9, atol=1e-7)


def test_rollout_is_differentiable_and_plans_are_feasible():
    cfg = PlannerConfig()
    ctrl = torch.tensor([[[9.0, 2.0], [-20.0, -3.0]]], requires_grad=True)
    clipped = clip_controls(ctrl, cfg)
    assert clipped[0, 0, 0] == cfg.accel_max and clipped[0, 1, 0] == cfg.accel_min
    assert clipped[0, 0, 1] == cfg.steer_max and clipped[0, 1, 1] == -cfg.steer_max
    state = torch.tensor([[0.0, 0.0, 0.0, 0.5, 5.0]])
    traj = rollout(state, clipped, 0.1, 2)
    assert traj[..., 3].min() >= 0.0  # braking never reverses
    ctrl2 = torch.zeros(1, 20, 2, requires_grad=True)
    out = rollout(torch.tensor([[0.0, 0.0, 0.0, 10.0, 5.0]]), ctrl2, 0.1, 2)
    out[..., 0].sum().backward()
    assert torch.isfinite(ctrl2.grad).all() and ctrl2.grad[..., 0].abs().sum() > 0
