"""The Numba path of the guidance costs against the torch reference: values and gradients to the controls."""

import math
from dataclasses import replace

import pytest
import torch

import drivediff.planner.guidance as G
from drivediff.planner.config import PlannerConfig
from drivediff.planner.guidance import Guidance, GuidanceConfig, GuidanceContext, cost_terms, road_sdf_tensor
from drivediff.planner.guidance_fast import fast_barrier, fast_total
from drivediff.planner.normalizer import Normalizer
from tests.planner.test_guidance import with_leader as leader_context

CFG = PlannerConfig()
H = CFG.horizon
GC = GuidanceConfig()


def reference(c, ctx, gcfg, kind, exact=False):
    """(value, gradient, terms) of the torch reference."""
    x = c.detach().clone().requires_grad_(True)
    if kind == "barrier":
        terms = cost_terms(x, ctx, gcfg, parts="barrier")
        val = terms["barrier"]
    else:
        terms = cost_terms(x, ctx, gcfg, exact=exact, parts="total")
        val = terms["total"]
    (grad,) = torch.autograd.grad(val.sum(), x)
    return val.detach(), grad, {k: v.detach() for k, v in terms.items()}


def fast(c, ctx, gcfg, kind, exact=False):
    x = c.detach().clone().requires_grad_(True)
    val = fast_barrier(x, ctx, gcfg) if kind == "barrier" else fast_total(x, ctx, gcfg, exact=exact)
    assert val is not None and val.dtype == c.dtype and val.shape == c.shape[:1]
    (grad,) = torch.autograd.grad(val.sum(), x)
    return val.detach(), grad


def compare(c, ctx, gcfg, kinds=("total", "barrier"), exact=False) -> dict:
    """Fast against reference for every kind; returns the reference terms of the total."""
    out = {}
    for kind in kinds:
        rv, rg, terms = reference(c, ctx, gcfg, kind, exact)
        fv, fg = fast(c, ctx, gcfg, kind, exact)
        assert torch.isfinite(fv).all() and torch.isfinite(fg).all()
        # float32 reference: relative 1e-4, absolute 1e-5 of the largest entry
        torch.testing.assert_close(fv, rv, rtol=1e-4, atol=1e-5 * max(1.0, rv.abs().max().item()))
        torch.testing.assert_close(fg, rg, rtol=1e-4, atol=1e-5 * max(1.0, rg.abs().max().item()))
        out[kind] = terms
    return out


# ------------------------------------------------------------------------------------------- synthetic


def ctx_for(road, states, guided=(0,), limit=30.0, frame=(0.0, 0.0, 0.0)):
    """One query: agents at (x, y, yaw, speed) (length 5 m, width 2 m) in the focal frame."""
    s = torch.tensor([[list(v) + [5.0] for v in states]], dtype=torch.float32)
    a = s.shape[1]
    sdf, meta = road_sdf_tensor(road)
    g = torch.zeros(1, a, dtype=torch.bool)
    g[0, list(guided)] = True
    return GuidanceContext(agent_state=s, agent_mask=torch.ones(1, a, dtype=torch.bool), guided=g,
                           frame=torch.tensor([frame]), speed_limit=torch.tensor([limit]), sdf=sdf, sdf_meta=meta,
                           widths=torch.full((1, a), 2.0), sim_dt=0.1, substeps=2, cfg=CFG)


def controls(a, accel=0.0, lat=0.0, seed=None, scale=0.0):
    c = torch.zeros(1, a, H, 2)
    c[..., 0] = accel
    c[..., 1] = lat
    if seed is not None:
        c = c + scale * torch.randn(c.shape, generator=torch.Generator().manual_seed(seed))
    return c


def with_leader(ctx, row=-1, gap=math.inf, speed=0.0):
    """test_guidance's leader context, with a cruise speed of 15 m/s for every row."""
    return replace(leader_context(ctx, row, gap, speed), cruise_speed=torch.full(ctx.agent_mask.shape, 15.0))


@pytest.mark.parametrize("lateral", [False, True])
def test_closing_on_stopped_vehicles_with_a_drift(road, lateral):
    """Collision, TTC and road costs with a slight drift (no ties), lateral avoidance off and on: with it
    off the interaction costs' gradient reaches the accelerations only, as in the reference."""
    gcfg = replace(GC, lateral_avoidance=lateral)
    ctx = ctx_for(road, [(0, 0, 0, 20), (30, 0.3, 0.05, 0), (20, 4, 0, 10), (-10, 3.5, 0, 25)], guided=(0, 2))
    c = controls(4, lat=-0.4, seed=0, scale=0.3)
    terms = compare(c, ctx, gcfg)["total"]
    assert terms["collision"].item() > 0 and terms["ttc"].item() > 0 and terms["road"].item() > 0
    assert compare(c, ctx, gcfg, kinds=("total",), exact=True)  # the exact check in the total too


def test_coincident_vehicles_at_zero_speed_have_finite_gradients(road):
    ctx = ctx_for(road, [(0, 0, 0, 0), (0, 0, 0, 0)], guided=(0, 1))
    terms = compare(torch.zeros(1, 2, H, 2), ctx, GC)
    assert terms["total"]["collision"].item() > 0 and terms["barrier"]["barrier"].item() < 0


def test_braking_to_a_stop_reflects_the_speed_at_zero(road):
    """The speed's running sum reflected at 0 (cummin) and the V_EPS floor of the slip at low speed; the
    accelerations beyond the limits (clipped, no gradient) and the comfort bounds (jerk, braking)."""
    ctx = ctx_for(road, [(0, 0, 0, 5), (14, 0.2, 0, 0), (5, 4, 0, 3)], guided=(0, 2))
    c = controls(3, accel=-4.5, lat=0.6, seed=1, scale=0.5)
    c[0, 0, 10:, 0] = 1.5  # drive on again after the stop
    c[0, 0, 3, 0] = -7.0  # beyond accel_min: clipped
    c[0, 2, :, 0] = 3.0  # beyond the comfort bound 2.4
    terms = compare(c, ctx, GC)["total"]
    assert terms["comfort"].item() > 0
    from drivediff.planner.dynamics import rollout_cumulative

    v = rollout_cumulative(ctx.agent_state, c.clamp(-6, 4), 0.2)[0, 0, :, 3]
    assert (v == 0).any() and v[-1] > 0


def test_rear_exempt_partner_and_speed_limit(road):
    """A follower runs into the guided vehicle from behind (exempt) while a slower one ahead is hit
    (counted); the guided vehicle is over the speed limit."""
    ctx = ctx_for(road, [(0, 0.1, 0.01, 26), (-18, 0, 0, 34), (40, -0.2, -0.02, 8)], limit=25.0)
    c = controls(3, accel=1.0, lat=0.1, seed=2, scale=0.2)
    terms = compare(c, ctx, GC)
    assert terms["total"]["collision"].item() > 0 and terms["total"]["speed"].item() > 0
    # without the vehicle ahead nothing collides: the follower alone is exempt
    alone = ctx_for(road, [(0, 0.1, 0.01, 26), (-18, 0, 0, 34)], limit=25.0)
    t = compare(c[:, :2], alone, GC)
    assert t["total"]["collision"].item() == 0 and t["barrier"]["barrier"].item() == 0


@pytest.mark.parametrize("in_query", [True, False])
@pytest.mark.parametrize("gap_max", [0.0, 20.0])
def test_platoon_terms(road, in_query, gap_max):
    """Spacing error (set point and band), smoothness and cruise speed, with a leader in the query or only
    its speed now."""
    gcfg = replace(GC, w_gap=4.0, gap_max=gap_max, w_smooth=0.5, w_cruise=0.3)
    ctx = with_leader(ctx_for(road, [(0, 0, 0, 14), (20, 0, 0, 12), (5, 4, 0, 15)]),
                      row=1 if in_query else -1, gap=15.0, speed=12.0)
    for accel, seed in ((2.0, 3), (-3.0, 4)):  # closing in below r + h v, falling back beyond gap_max
        c = controls(3, accel=accel, lat=0.05, seed=seed, scale=0.3)
        c[0, 1, :, 0] = 0.1  # the leader keeps its speed
        terms = compare(c, ctx, gcfg, kinds=("total",))["total"]
        assert terms["gap"].item() > 0 and terms["smooth"].item() > 0 and terms["cruise"].item() > 0
    if in_query:  # the leader's plan moves the follower's cost: the leader's row gets a gradient
        x = controls(3, accel=2.0).requires_grad_(True)
        (g,) = torch.autograd.grad(fast_total(x, ctx, gcfg).sum(), x)
        assert g[0, 1, :, 0].abs().sum() > 0


def test_the_road_sdf_border_and_a_rotated_frame(road):
    """A focal frame turned against the world; vehicles beyond either end of the distance grid (border
    padding: no gradient along the clamped coordinate, the other one keeps its gradient)."""
    ctx = ctx_for(road, [(0, 0, 0.3, 20), (10, 40, 1.0, 5)], guided=(0, 1), frame=(30.0, -1.0, 0.2))
    compare(controls(2, lat=1.5, seed=5, scale=0.5), ctx, GC)
    for x in (-1e4, 1e4):
        far = ctx_for(road, [(0, 0, 0, 20)], frame=(x, 0.0, 0.0))
        terms = compare(controls(1, lat=-2.0), far, GC)  # leaves the road sideways
        assert terms["total"]["road"].item() > 0


@pytest.mark.parametrize("lateral", [False, True])
def test_exact_ties_follow_torch(road, lateral):
    """Ties that torch resolves by rule, reached exactly: aligned boxes of equal size, offset sideways (the
    four axes' overlaps tie pairwise: minimum splits the gradient), and a vehicle standing still (the running
    minimum of its speed sum ties at every step: the latest step is credited) that the guided one runs into
    (the partner's gradient)."""
    gcfg = replace(GC, lateral_avoidance=lateral)
    ctx = ctx_for(road, [(0, 0, 0, 0), (-20, 0.5, 0, 10), (-40, 4, 0, 10)], guided=(1,))
    terms = compare(controls(3), ctx, gcfg)
    assert terms["total"]["collision"].item() > 0


# ------------------------------------------------------------------------------------- the simulator's


@pytest.fixture(scope="module")
def captured():
    """Guidance contexts and the model's x0 of a replanning in closed loop (highway with 8 controlled
    vehicles: 32 rows of 8 agents; merge; intersection)."""
    from drivediff.agents.diffusion import DiffusionPolicy
    from drivediff.sim import World

    out = {}
    orig = G.Guidance.__call__

    def hook(self, x0, t, i, cond):
        out.setdefault(scenario, (self, x0.clone()))
        return orig(self, x0, t, i, cond)

    G.Guidance.__call__ = hook
    try:
        for scenario, count in (("highway", 8), ("merge", 8), ("intersection", 4)):
            world = World(scenario, num_worlds=1, overrides={"controlled": {"count": count}})
            world.reset(seed=0)
            pol = DiffusionPolicy(None, replan_every=0.2, guidance=GuidanceConfig())
            pol.reset(world)
            world.step(pol.act(world))
    finally:
        G.Guidance.__call__ = orig
    return out


def test_simulator_contexts(captured):
    """The model's plans and perturbed ones (random controls, flooring the guided rows' accelerator):
    collisions, off-road excursions, speeding and comfort violations all occur and all agree."""
    seen = dict.fromkeys(("collision", "road", "speed", "comfort", "ttc"), 0.0)
    barrier = 0.0
    assert sorted(captured) == ["highway", "intersection", "merge"]
    for g, x0 in captured.values():
        ctx, gcfg = g.ctx, g.gcfg
        assert ctx.guided.any() and ctx.agent_mask.sum() > ctx.guided.sum()
        base = g.normalizer.decode(x0).detach()  # a strided view, as in the guidance
        gen = torch.Generator().manual_seed(0)
        floored = base.clone()
        floored[..., 0] = torch.where(ctx.guided[..., None], torch.full_like(base[..., 0], 4.0), base[..., 0])
        for c in (base, base + 2.0 * torch.randn(base.shape, generator=gen), floored):
            terms = compare(c, ctx, gcfg)
            for k in seen:
                seen[k] += terms["total"][k].sum().item()
            barrier += terms["barrier"]["barrier"].sum().item()
    assert all(v > 0 for v in seen.values()), seen
    assert barrier < 0


def test_guidance_layers_take_the_same_steps_with_either_backend(captured):
    """The gradient steps and the barrier correction of the Guidance hook, and classifier guidance's
    gradient through a function of x0, with the Numba path and the torch path."""
    g, x0 = captured["merge"]
    fast_g = Guidance(g.gcfg, g.ctx, g.normalizer, g.num_timesteps, g.num_steps)
    torch_g = Guidance(replace(g.gcfg, backend="torch"), g.ctx, g.normalizer, g.num_timesteps, g.num_steps)
    x = x0 + 0.5 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    a = fast_g(x.clone(), 0, g.num_steps - 1, {})
    b = torch_g(x.clone(), 0, g.num_steps - 1, {})
    assert not torch.equal(a, x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    w = torch.linspace(0.5, 1.5, x.shape[-1])
    grads = []
    for guide in (fast_g, torch_g):
        xg = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(guide.cost(xg * w).sum(), xg)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5 * grads[1].abs().max().item())


def test_backend_option_and_fallback(road):
    with pytest.raises(ValueError, match="backend"):
        GuidanceConfig(backend="cuda")
    # the spacing objective without leaders in the context: the fast path steps aside, torch explains
    ctx = ctx_for(road, [(0, 0, 0, 10), (20, 0, 0, 10)])
    gcfg = replace(GC, w_gap=1.0)
    assert fast_total(controls(2), ctx, gcfg) is None
    norm = Normalizer((0.0, 0.0), (1.0, 1.0), CFG.control_basis())
    with pytest.raises(ValueError, match="leaders"):
        Guidance(gcfg, ctx, norm, 100, 10).cost(norm.encode(controls(2)))
    # a context edited in place is read again
    c = controls(2, accel=3.0)
    c[0, 1] = 0.0
    before = fast_total(c, ctx, GC)
    ctx.agent_state[0, 1, 0] = 200.0  # out of reach
    after = fast_total(c, ctx, GC)
    torch.testing.assert_close(after, cost_terms(c, ctx, GC, exact=False, parts="total")["total"])
    assert after.item() < before.item()
