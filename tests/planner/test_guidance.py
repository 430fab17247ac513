"""Safety guidance costs and layers."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from drivediff.planner.config import PlannerConfig
from drivediff.planner.dynamics import rollout
from drivediff.planner.guidance import (
    Guidance,
    GuidanceConfig,
    GuidanceContext,
    box_penetration,
    cost_terms,
    road_sdf_tensor,
    safe_selection,
)
from drivediff.planner.normalizer import Normalizer
from drivediff.sim.geometry import boxes_overlap
from drivediff.sim.road import RoadBuilder, Straight

CFG = PlannerConfig()
H = CFG.horizon


def ctx_for(road, states, guided=None, limit=30.0):
    """One query: agents at (x, y, yaw, speed) in a world frame equal to the focal frame."""
    s = torch.tensor([[list(v) + [5.0] for v in states]], dtype=torch.float32)
    a = s.shape[1]
    sdf, meta = road_sdf_tensor(road)
    g = torch.zeros(1, a, dtype=torch.bool)
    g[0, guided if guided is not None else [0]] = True
    return GuidanceContext(agent_state=s, agent_mask=torch.ones(1, a, dtype=torch.bool), guided=g,
                           frame=torch.zeros(1, 3), speed_limit=torch.tensor([limit]), sdf=sdf, sdf_meta=meta,
                           widths=torch.full((1, a), 2.0), sim_dt=0.1, substeps=2, cfg=CFG)


def ctrl(a, accel=0.0, lat=0.0):
    c = torch.zeros(1, a, H, 2)
    c[..., 0] = accel
    c[..., 1] = lat
    return c


GC = GuidanceConfig()


def test_every_cost_is_zero_on_a_feasible_plan(road):
    ctx = ctx_for(road, [(0, 0, 0, 20), (60, 0, 0, 20), (0, 4, 0, 20)])
    t = cost_terms(ctrl(3), ctx, GC)
    for name in ("collision", "road", "speed", "comfort", "ttc", "total"):
        assert t[name].item() == 0.0, name
    assert bool(t["feasible"])


def test_cost_subsets_equal_the_full_computation(road):
    """The gradient layer asks for the weighted costs only and the correction for the barrier only; both
    must be what the full computation gives (a collision, a turn off the road and a fast closing)."""
    ctx = ctx_for(road, [(0, 0, 0, 20), (12, 0, 0, 0), (0, 4, 0, 25)])
    c = ctrl(3, lat=-1.5)
    for exact in (True, False):
        full = cost_terms(c, ctx, GC, exact=exact)
        assert full["total"].item() > 0 and full["barrier"].item() < 0
        total = cost_terms(c, ctx, GC, exact=exact, parts="total")
        assert "barrier" not in total
        for name in ("collision", "road", "speed", "comfort", "ttc", "total"):
            torch.testing.assert_close(total[name], full[name])
        torch.testing.assert_close(cost_terms(c, ctx, GC, exact=exact, parts="barrier")["barrier"], full["barrier"])
    with pytest.raises(ValueError, match="parts"):
        cost_terms(c, ctx, GC, parts="everything")


@pytest.mark.parametrize("states, c, name", [
    ([(0, 0, 0, 20), (12, 0, 0, 0)], dict(), "collision"),  # drives into a stopped vehicle
    ([(0, 0, 0, 20), (35, 0, 0, 10)], dict(), "ttc"),  # closes fast on a slower one, no contact yet
    ([(0, 0, 0, 20), (300, 4, 0, 20)], dict(lat=-2.0), "road"),  # turns off the right edge
    ([(0, 0, 0, 28), (300, 4, 0, 20)], dict(accel=2.0), "speed"),  # over the 30 m/s limit
    ([(0, 0, 0, 20), (300, 4, 0, 20)], dict(accel=-6.0), "comfort"),  # brakes harder than 4.05 m/s^2
])
def test_each_cost_is_positive_on_a_violating_plan(road, states, c, name):
    ctx = ctx_for(road, states)
    t = cost_terms(ctrl(len(states), **c), ctx, GC)
    assert t[name].item() > 0.0
    if name in ("collision", "road"):
        assert not bool(t["feasible"])


def test_collision_depth_agrees_with_boxes_overlap():
    """With margin 0 the penetration depth is positive exactly where the simulator's boxes overlap."""
    rng = np.random.default_rng(0)
    n = 20000
    st = torch.tensor(np.column_stack([rng.uniform(-8, 8, n), rng.uniform(-5, 5, n), rng.uniform(-np.pi, np.pi, n),
                                       np.zeros(n)]), dtype=torch.float32)
    st0 = torch.zeros_like(st)
    both = torch.stack([st0, st], dim=1)[:, :, None]  # (n, 2, T=1, 4)
    length, width = torch.full((n, 2), 5.0), torch.full((n, 2), 2.0)
    pen = box_penetration(both.double(), length.double(), width.double(), torch.ones(n, 2, dtype=torch.bool),
                          torch.tensor([[True, False]]).repeat(n, 1), 0.0)[:, 0, 0].numpy()
    a = np.column_stack([np.zeros((n, 3)), np.full(n, 5.0), np.full(n, 2.0)])
    b = np.column_stack([st[:, :3].numpy(), np.full(n, 5.0), np.full(n, 2.0)])
    overlap = boxes_overlap(a, b)
    assert overlap.sum() > 1000 and (pen == 0).sum() > 1000
    np.testing.assert_array_equal(overlap, pen > 0)
    # and with a margin the cost says "clear" only where the boxes are at least the margin apart
    pen_m = box_penetration(both.double(), length.double(), width.double(), torch.ones(n, 2, dtype=torch.bool),
                            torch.tensor([[True, False]]).repeat(n, 1), 0.3)[:, 0, 0].numpy()
    grown = boxes_overlap(np.column_stack([a[:, :3], a[:, 3:] + 0.6]), np.column_stack([b[:, :3], b[:, 3:] + 0.6]))
    np.testing.assert_array_equal(grown, pen_m > 0)


def test_guidance_moves_only_guided_rows_and_lowers_the_cost(road):
    # closing at 8 m/s on a slower leader 25 m ahead: contact after 2.5 s unless the ego brakes
    ctx = ctx_for(road, [(0, 0, 0, 20), (25, 0, 0, 12), (0, 4, 0, 20)])
    norm = Normalizer((0.0, 0.0), (1.0, 0.1), CFG.control_basis())
    x0 = norm.encode(ctrl(3, accel=0.0))
    g = Guidance(GuidanceConfig(scale=0.2, inner_steps=10, correction=False), ctx, norm, 100, 10)
    before = g.cost(x0).item()
    x1 = g(x0.clone(), 10, 5, {})
    after = g.cost(x1).item()
    assert after < 0.5 * before
    torch.testing.assert_close(x1[:, 1:], x0[:, 1:])  # neighbours' rows (predictions) are untouched
    assert torch.equal(ctx.agent_state, ctx_for(road, [(0, 0, 0, 20), (25, 0, 0, 12), (0, 4, 0, 20)]).agent_state)
    assert norm.decode(x1)[0, 0, :, 0].mean() < -0.5  # by braking
    # the barrier correction alone restores feasibility of a colliding plan
    gc = Guidance(GuidanceConfig(gradient=False, correction=True, correction_steps=1), ctx, norm, 100, 10)
    x2 = gc(x0.clone(), 0, 9, {})
    b0 = cost_terms(norm.decode(x0), ctx, GC)["barrier"].item()
    t2 = cost_terms(norm.decode(x2), ctx, GC)
    assert b0 < 0 and t2["barrier"].item() > 0.5 * b0


def test_interaction_costs_brake_rather_than_steer(road):
    """Closing on a stopped vehicle in the same lane: by default the collision and TTC gradients reach the
    accelerations only (the deepest-overlap axis of a rear-end conflict is sideways, and following it
    steered plans off the road); with ``lateral_avoidance`` they steer too. Cost values are the same."""
    ctx = ctx_for(road, [(0, 0, 0, 20), (30, 0, 0, 0)])
    grads = {}
    for lateral in (False, True):
        gc = GuidanceConfig(w_road=0.0, w_speed=0.0, w_comfort=0.0, lateral_avoidance=lateral)
        c = (ctrl(2) + torch.tensor([0.0, 0.2])).requires_grad_(True)  # a slight drift to the left
        cost = cost_terms(c, ctx, gc, exact=False, parts="total")["total"]
        (grads[lateral],) = torch.autograd.grad(cost.sum(), c)
        with torch.no_grad():
            same = cost_terms(c.detach(), ctx, gc, exact=False, parts="total")["total"]
        torch.testing.assert_close(cost.detach(), same)
    lon, lat = grads[False][0, 0], grads[True][0, 0]
    assert (lon[:, 0] > 0).any()  # slow down (the cost grows with the acceleration)
    assert (lon[:, 1] == 0).all()  # and do not steer
    assert lat[:, 1].abs().sum() > 0
    # the barrier of the correction layer follows the same rule
    c = (ctrl(2) + torch.tensor([0.0, 0.2])).requires_grad_(True)
    (g_barrier,) = torch.autograd.grad(cost_terms(c, ctx, GC)["barrier"].sum(), c)
    assert (g_barrier[0, 0, :, 0] != 0).any() and (g_barrier[0, 0, :, 1] == 0).all()


def test_gradients_are_finite_for_coincident_vehicles_at_zero_speed(road):
    ctx = ctx_for(road, [(0, 0, 0, 0), (0, 0, 0, 0)], guided=[0, 1])
    x = torch.zeros(1, 2, H, 2, requires_grad=True)
    t = cost_terms(x, ctx, GC)
    t["total"].sum().backward()
    assert torch.isfinite(x.grad).all() and t["collision"].item() > 0


def test_safe_selection_picks_the_cheapest_feasible_or_brakes():
    terms = {"total": torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0, 6.0]),
             "feasible": torch.tensor([True, False, True, False, False, False])}
    np.testing.assert_array_equal(safe_selection(terms, 3).numpy(), [2, -1])
    assert math.isfinite(terms["total"].min().item())
    # road fallback: a query whose candidates all leave the road takes the one that leaves it least, unless
    # none keeps clear of the others (then it still brakes)
    terms["clearance"] = torch.tensor([0.0, 0.0, 0.0, 0.0, -0.2, 0.0])
    terms["road_excess"] = torch.tensor([0.5, -0.1, -0.1, 0.3, 0.1, 0.2])
    np.testing.assert_array_equal(safe_selection(terms, 3, road_fallback=True).numpy(), [2, 2])  # not 1: it collides
    terms["clearance"][3:] = -0.2
    np.testing.assert_array_equal(safe_selection(terms, 3, road_fallback=True).numpy(), [2, -1])


def test_selection_can_prefer_progress_among_equally_cheap_candidates():
    terms = {"total": torch.tensor([0.0, 0.0, 0.2, 0.0]), "feasible": torch.tensor([True, True, True, False]),
             "progress": torch.tensor([10.0, 40.0, 60.0, 80.0])}
    assert safe_selection(terms, 4).item() == 0  # the cheapest (the first of equals)
    assert safe_selection(terms, 4, w_progress=0.5).item() == 1  # 0 - 0.5*40/80 < 0.2 - 0.5*60/80
    assert safe_selection(terms, 4, w_progress=5.0).item() == 2  # progress outweighs 0.2 of cost
    # progress is the distance the guided row drives
    ctx_terms = cost_terms(ctrl(1, accel=1.0), ctx_for(_road_for_progress(), [(0, 0, 0, 10)]), GC)
    t = CFG.horizon * CFG.plan_dt
    assert ctx_terms["progress"].item() == pytest.approx(10 * t + 0.5 * t * t, rel=0.02)


def _road_for_progress():
    b = RoadBuilder()
    b.add_lane("r", Straight((-100, 0), (400, 0)))
    return b.build()


def test_a_vehicle_already_past_the_edge_may_stay_or_return_but_not_go_further(road):
    """The road limit counts from where the vehicle starts: a box already past the edge (a corner beyond a
    connector, say) may keep that depth, or return; only going further out is infeasible (before, every
    plan of such a vehicle was infeasible, and it braked and stood there)."""
    ctx = ctx_for(road, [(0, -2.3, 0, 10)])  # the road's edge is at y = -2; the 2 m wide box reaches -3.3
    stay = cost_terms(ctrl(1), ctx, GC)
    assert stay["road_depth"].item() > GC.offroad_tol and bool(stay["feasible"])
    assert bool(cost_terms(ctrl(1, lat=0.5), ctx, GC)["feasible"])  # back towards the lane
    out = cost_terms(ctrl(1, lat=-1.0), ctx, GC)  # further out
    assert not bool(out["feasible"]) and out["barrier"].item() < 0
    # from inside the lane the absolute limit holds as before
    assert not bool(cost_terms(ctrl(1, lat=-1.0), ctx_for(road, [(0, 0, 0, 10)]), GC)["feasible"])


def test_being_run_into_from_behind_is_not_the_planners_violation(road):
    """A follower predicted to keep 15 m/s runs into the stopped ego: no plan of the ego can avoid it, and
    it is the follower's fault, so the ego's plan stays feasible; the mirror case (the ego running into a
    stopped vehicle ahead) is a violation."""
    behind = ctx_for(road, [(0, 0, 0, 0), (-20, 0, 0, 15)])
    c = ctrl(2)
    t = cost_terms(c, behind, GC)
    assert bool(t["feasible"].item()) and t["collision"].item() == 0.0 and t["barrier"].item() >= 0.0
    # the geometry itself still sees the overlap (the exemption is a choice of the costs)
    fine = rollout(behind.agent_state, c, 0.1, 2, every_substep=True)
    both = box_penetration(fine, behind.agent_state[..., 4], behind.widths, behind.agent_mask,
                           torch.tensor([[True, False]]), 0.0)
    assert both.max() > 0
    ahead = ctx_for(road, [(0, 0, 0, 15), (20, 0, 0, 0)])
    t2 = cost_terms(c, ahead, GC)
    assert not bool(t2["feasible"].item()) and t2["collision"].item() > 0


def with_leader(ctx, row=-1, gap=math.inf, speed=0.0):
    """Row 0's leader: its row in the query (-1: not in it), the gap now and its speed."""
    a = ctx.agent_state.shape[1]
    lead = torch.full((1, a), -1, dtype=torch.int64)
    lead[0, 0] = row
    g = torch.full((1, a), math.inf)
    g[0, 0] = gap
    sp = torch.zeros(1, a)
    sp[0, 0] = speed
    return replace(ctx, leader=lead, leader_gap=g, leader_speed=sp)


def test_spacing_error_follows_the_leader_ahead(road):
    """The platoon objective: (gap - (r + h v)) / (r + h v) behind the vehicle ahead in the lane."""
    from drivediff.planner.guidance import spacing_error

    v, h, r, dt = 20.0, 0.6, 2.0, 0.2
    gap = r + h * v  # bumper to bumper; boxes are 5 m long
    ctx = with_leader(ctx_for(road, [(0, 0, 0, v), (gap + 5.0, 0, 0, v), (60, 0, 0, v), (10, 4, 0, v)]), 1, gap)
    states = rollout(ctx.agent_state, ctrl(4), 0.1, 2)
    err = spacing_error(states, ctx, h, r, dt)
    torch.testing.assert_close(err[0, 0], torch.zeros(H), atol=1e-4, rtol=0)  # at the desired spacing
    assert (err[0, 1:] == 0).all()  # only guided rows
    close = with_leader(ctx_for(road, [(0, 0, 0, v), (0.5 * gap + 5.0, 0, 0, v), (10, 4, 0, v)]), 1, 0.5 * gap)
    e2 = spacing_error(rollout(close.agent_state, ctrl(3), 0.1, 2), close, h, r, dt)
    assert torch.allclose(e2[0, 0], torch.full((H,), -0.5), atol=1e-4)  # half the gap: -50%
    # the leader's planned motion counts: it brakes at 2 m/s^2, so the gap shrinks by t^2 (Euler, 0.2 s steps)
    c = ctrl(4)
    c[0, 1, :, 0] = -2.0
    e3 = spacing_error(rollout(ctx.agent_state, c, 0.1, 2), ctx, h, r, dt)
    assert e3[0, 0, -1] < -0.3 and (torch.diff(e3[0, 0]) < 0).all()
    # and as a guidance cost it makes the follower brake when too close
    g = GuidanceConfig(w_gap=4.0, time_gap=h, standstill=r)
    x = ctrl(3).requires_grad_(True)
    cost_terms(x, close, g)["gap"].sum().backward()
    assert (x.grad[0, 0, :5, 0] > 0).all()  # more acceleration, more cost
    with pytest.raises(ValueError, match="leaders"):
        cost_terms(ctrl(3), ctx_for(road, [(0, 0, 0, v), (20, 0, 0, v), (10, 4, 0, v)]), g)


def test_spacing_leader_beyond_the_query_and_the_band(road):
    """A leader not in the query drives on at its speed now; with ``gap_max`` only the band's ends cost."""
    from drivediff.planner.guidance import spacing_error

    v, h, r, dt = 10.0, 0.6, 2.0, 0.2
    far = with_leader(ctx_for(road, [(0, 0, 0, v), (10, 4, 0, v)]), -1, 70.0, v - 2.0)
    err = spacing_error(rollout(far.agent_state, ctrl(2), 0.1, 2), far, h, r, dt)
    t = dt * torch.arange(1, H + 1)
    expected = (70.0 - 2.0 * t - (r + h * v)) / (r + h * v)  # the gap closes at 2 m/s
    torch.testing.assert_close(err[0, 0], expected, atol=1e-4, rtol=0)
    band = spacing_error(rollout(far.agent_state, ctrl(2), 0.1, 2), far, h, r, dt, gap_max=40.0)
    gap = 70.0 - 2.0 * t
    torch.testing.assert_close(band[0, 0], (gap - 40.0).clamp_min(0) / (r + h * v), atol=1e-4, rtol=0)
    mid = with_leader(far, -1, 20.0, v)  # inside the band [8, 40]: no cost
    assert (spacing_error(rollout(mid.agent_state, ctrl(2), 0.1, 2), mid, h, r, dt, gap_max=40.0) == 0).all()
    near = with_leader(far, -1, 4.0, v)  # below r + h v = 8: the set point's error
    e = spacing_error(rollout(near.agent_state, ctrl(2), 0.1, 2), near, h, r, dt, gap_max=40.0)
    torch.testing.assert_close(e[0, 0], torch.full((H,), -0.5), atol=1e-4, rtol=0)
    # far beyond the band, the cost pulls the vehicle forward (more acceleration, less cost)
    g = GuidanceConfig(w_gap=4.0, time_gap=h, standstill=r, gap_max=40.0)
    x = ctrl(2).requires_grad_(True)
    cost_terms(x, far, g)["gap"].sum().backward()
    assert (x.grad[0, 0, :5, 0] < 0).all()


def test_smoothness_cost_is_the_squared_acceleration(road):
    ctx = ctx_for(road, [(0, 0, 0, 15), (10, 4, 0, 15)])
    g = GuidanceConfig(w_smooth=2.0)
    assert cost_terms(ctrl(2), ctx, g)["smooth"].item() == 0.0
    t = cost_terms(ctrl(2, accel=1.0), ctx, g)
    assert t["smooth"].item() == pytest.approx(H * CFG.plan_dt)  # sum of a^2 dt over the guided row
    t0 = cost_terms(ctrl(2, accel=1.0), ctx, GC)
    assert t["total"].item() == pytest.approx(t0["total"].item() + 2.0 * H * CFG.plan_dt, rel=1e-5)
