"""The torch rollout against the simulator's kinematics kernel, and feasibility by construction."""

import math

import numpy as np
import torch

from drivediff.planner.config import PlannerConfig
from drivediff.planner.dynamics import clip_controls, rollout, rollout_cumulative, steering
from drivediff.sim.kernels.kinematics import bicycle_step


def test_rollout_matches_the_simulator_kernel():
    """Steering computed from the planned lateral acceleration at every simulator step, then the
    simulator's own bicycle kernel: the torch rollout gives the same states."""
    rng = np.random.default_rng(0)
    cfg = PlannerConfig()
    dt, m, h = 0.1, 2, cfg.horizon
    for _ in range(20):
        state = np.array([rng.uniform(-50, 50), rng.uniform(-50, 50), rng.uniform(-3, 3), rng.uniform(0, 30),
                          rng.uniform(4, 6)])
        ctrl = np.stack([rng.uniform(cfg.accel_min, cfg.accel_max, h), rng.uniform(-4, 4, h)], axis=-1)
        ours = rollout(torch.tensor(state), torch.tensor(ctrl), dt, m).numpy()
        x, y, yaw, v = state[:4]
        ref = []
        for k in range(h):
            for _ in range(m):
                d = steering(torch.tensor(ctrl[k, 1]), torch.tensor(v), torch.tensor(state[4]), cfg.steer_max).item()
                x, y, yaw, v = bicycle_step(x, y, yaw, v, ctrl[k, 0], d, state[4], dt, 0.0, 40.0)
            ref.append([x, y, yaw, v])
        # the round trip a_lat -> steer -> sin(beta) costs a few ulps per step (fastmath kernel)
        np.testing.assert_allclose(ours, np.array(ref), rtol=1e-8, atol=1e-6)


def test_cumulative_rollout_equals_the_loop():
    """The vectorised rollout of the guidance is the loop's Euler rollout, batched, with one or several
    simulator steps per control, also when the speed is clamped at 0 and driven up again."""
    g = torch.Generator().manual_seed(0)
    cfg = PlannerConfig()
    state = torch.cat([torch.rand(6, 3, 3, generator=g, dtype=torch.float64) * 40 - 20,
                       10 + 20 * torch.rand(6, 3, 1, generator=g, dtype=torch.float64),
                       4 + 2 * torch.rand(6, 3, 1, generator=g, dtype=torch.float64)], dim=-1)
    ctrl = torch.stack([torch.rand(6, 3, cfg.horizon, generator=g, dtype=torch.float64) * 4 - 2,
                        torch.rand(6, 3, cfg.horizon, generator=g, dtype=torch.float64) * 8 - 4], dim=-1)
    state[0, 0, 3] = 5.0
    ctrl[0, 0, :8, 0] = -6.0  # brakes to a standstill and beyond, then accelerates: the clamp at 0 matters
    ctrl[0, 0, 8:, 0] = 2.0
    fast = rollout_cumulative(state, ctrl, 0.2, steer_max=cfg.steer_max)
    loop = rollout(state, ctrl, 0.2, 1, steer_max=cfg.steer_max)
    assert (loop[0, 0, :, 3] == 0).any() and loop[0, 0, -1, 3] > 0
    torch.testing.assert_close(fast, loop, rtol=1e-10, atol=1e-9)
    fine = rollout_cumulative(state, ctrl, 0.1, 2, steer_max=cfg.steer_max)
    torch.testing.assert_close(fine, rollout(state, ctrl, 0.1, 2, every_substep=True, steer_max=cfg.steer_max),
                               rtol=1e-10, atol=1e-9)
    # and it is close to the exact (two simulator steps per control) rollout the selection uses
    exact = rollout(state, ctrl, 0.1, 2, steer_max=cfg.steer_max)
    assert (fast[..., :2] - exact[..., :2]).norm(dim=-1).max() < 1.0


def test_lateral_acceleration_is_realised_and_steering_is_limited():
    cfg = PlannerConfig()
    # a steady turn at 10 m/s with 2 m/s^2: yaw rate a / v
    traj = rollout(torch.tensor([[0.0, 0.0, 0.0, 10.0, 5.0]], dtype=torch.float64),
                   torch.tensor([[[0.0, 2.0]] * 20], dtype=torch.float64), 0.1, 2)
    yaw_rate = torch.diff(traj[0, :, 2]) / 0.2
    np.testing.assert_allclose(yaw_rate.numpy(), 0.2, rtol=1e-9)
    # at a crawl the same lateral acceleration would need more than the steering limit: clipped
    d = steering(torch.tensor(8.0), torch.tensor(0.5), torch.tensor(5.0), cfg.steer_max).item()
    assert math.isclose(abs(d), cfg.steer_max, rel_tol=1e-6)


def test_rollout_is_differentiable_and_plans_are_feasible():
    cfg = PlannerConfig()
    ctrl = torch.tensor([[[9.0, 20.0], [-20.0, -30.0]]], requires_grad=True)
    clipped = clip_controls(ctrl, cfg)
    assert clipped[0, 0, 0] == cfg.accel_max and clipped[0, 1, 0] == cfg.accel_min
    assert clipped[0, 0, 1] == cfg.lat_acc_max and clipped[0, 1, 1] == -cfg.lat_acc_max
    state = torch.tensor([[0.0, 0.0, 0.0, 0.5, 5.0]])
    traj = rollout(state, clipped, 0.1, 2)
    assert traj[..., 3].min() >= 0.0  # braking never reverses
    ctrl2 = torch.zeros(1, 20, 2, requires_grad=True)
    out = rollout(torch.tensor([[0.0, 0.0, 0.0, 10.0, 5.0]]), ctrl2, 0.1, 2)
    (out[..., 0].sum() + out[..., 1].sum()).backward()
    assert torch.isfinite(ctrl2.grad).all()
    assert ctrl2.grad[..., 0].abs().sum() > 0 and ctrl2.grad[..., 1].abs().sum() > 0
