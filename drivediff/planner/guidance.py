"""Safety-constraint guidance during denoising.

Named differentiable costs on the rolled-out states of a candidate plan (each with a weight):

============  ================================================================================
collision     squared separating-axis penetration depth of the box of a guided row into the box
              of every other agent of the query (the other controlled vehicles' plans and the
              predicted neighbours), boxes grown by a margin; counted from the first contact on
road          squared depth by which the box leaves the drivable area (signed-distance grid at
              three points along the vehicle, plus half its width)
speed         squared excess over the speed limit of the lane under the vehicle
comfort       squared excess over the nuPlan comfort bounds: longitudinal acceleration in
              [-4.05, 2.40] m/s^2, |lateral acceleration| < 4.89 m/s^2, |yaw rate| < 0.95 rad/s,
              |longitudinal jerk| < 4.13 m/s^3 (shared/REFERENCES.md)
ttc           collision cost of constant-velocity projections ``ttc`` seconds ahead of every planned
              state: positive when the time to collision drops below the threshold (nuPlan: 0.95 s)
============  ================================================================================

Layers, each switchable for ablations (:class:`GuidanceConfig`):

1. gradient steps on the model's clean estimate x0 inside a noise-level window, with step clipping
   (no backpropagation through the denoiser), or, as an option, classifier guidance through it;
2. a closed-form barrier correction on the last denoising steps (SafeDiffuser-style: project x0 onto the
   linearised constraint ``grad b . dx + b >= 0`` of the worst hard constraint);
3. candidate selection: discard candidates that violate a hard constraint (collision, leaving the road),
   keep the cheapest; when none is feasible, an emergency-braking plan.

The context (road grid, frames, which rows are guided) is a dataclass passed explicitly, not a global.

On CPU tensors the gradient and barrier layers evaluate their costs with the Numba kernels of
:mod:`drivediff.planner.guidance_fast`: the same numbers with a hand-written exact gradient, 16x (gradient
layer) and 12x (barrier) faster than the torch code here, which stays the reference and runs the selection
(:attr:`GuidanceConfig.backend`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from drivediff.planner.config import PlannerConfig
from drivediff.planner.dynamics import clip_controls, rollout_cumulative

# nuPlan comfort bounds (shared/REFERENCES.md)
LON_ACC_MIN, LON_ACC_MAX = -4.05, 2.40
LAT_ACC_MAX = 4.89
YAW_RATE_MAX = 0.95
LON_JERK_MAX = 4.13


@dataclass(frozen=True)
class GuidanceConfig:
    """Every layer can be switched off (ablations)."""

    gradient: bool = True  # layer 1: cost gradients on x0
    classifier: bool = False  # layer 1 through the denoiser instead (full classifier guidance)
    correction: bool = True  # layer 2: barrier correction on the last steps
    selection: bool = True  # layer 3: discard infeasible candidates, keep the cheapest, brake if none
    scale: float = 1.0  # gradient step size (in normalised units per unit of cost gradient)
    inner_steps: int = 2  # gradient steps per denoising step
    clip: float = 0.5  # max norm of one step per agent row
    window: float = 0.6  # guide while t <= window * T (the lower noise levels)
    correction_steps: int = 2  # last denoising steps that get the correction
    margin: float = 0.3  # [m] the vehicle boxes are grown by this for the collision cost
    ttc: float = 0.95  # [s] time-to-collision threshold
    w_collision: float = 10.0
    w_road: float = 5.0
    w_speed: float = 0.5
    w_comfort: float = 0.2
    w_ttc: float = 2.0
    offroad_tol: float = 0.1  # [m] a box this far beyond the edge (beyond where it starts) is a hard violation
    # collision, TTC and spacing gradients act on the accelerations only: avoiding a vehicle means braking
    # (or speeding up), not swerving; steering answers to the road, speed and comfort costs. With True they
    # steer too, and in a single lane the deepest-overlap axis of a rear-end conflict is sideways: measured
    # on the platoon braking scenario, their gradients doubled the candidates leaving the road (7% -> 15%)
    lateral_avoidance: bool = False
    # selection: a candidate's score is its cost minus w_progress x its progress relative to the query's
    # most progressive candidate (nuPlan's ego-progress ratio); many candidates cost exactly 0, and the
    # choice among them is otherwise the first. Off by default: 0.5 gave 4-10% more progress on merge,
    # intersection and dense highway but one more colliding episode in 10 on cut-in and lead braking
    w_progress: float = 0.0
    # selection: when every candidate is infeasible but some keep clear of the other vehicles (they only
    # leave the road somewhere along the plan), take the one that leaves it least instead of braking. The
    # emergency brake holds the wheel straight, which on a bend leaves the road too; with replanning every
    # 0.2-0.4 s an excursion seconds ahead is corrected long before it happens. Measured on the ring road:
    # every fallback was of this kind (12 in 120 s), each a -6 m/s^2 stop that started a wave of its own.
    # Off by default (the safety evaluation's figures were measured with the brake); the platoon methods
    # turn it on
    road_fallback: bool = False
    # platoon objective (off by default): keep the constant-time-gap spacing r + h v behind the vehicle ahead
    w_gap: float = 0.0
    time_gap: float = 0.6  # [s] h
    standstill: float = 2.0  # [m] r
    # > 0: the spacing objective is a band instead of a set point: a cost only below r + h v or beyond gap_max
    # [m]; in between the gap may breathe (jam absorption: a vehicle that lets its gap take up the leader's
    # speed swings instead of copying them)
    gap_max: float = 0.0
    # smoothness: weight of the squared longitudinal acceleration (sum of a^2 dt over the plan)
    w_smooth: float = 0.0
    # cruise: weight of the squared deviation from the speed U of the traffic ahead, the leader's speed
    # averaged exponentially over cruise_window seconds (sum of (v - U)^2 dt); with the spacing band this is
    # how one vehicle damps a ring's stop-and-go wave: it holds the average speed and lets its gap take up
    # the swings (Stern et al. 2018: a command speed from a speed history, shared/REFERENCES.md)
    w_cruise: float = 0.0
    cruise_window: float = 30.0  # [s]
    # whose speed the cruise objective averages: "leader" (the vehicle ahead in the lane) or "own" (the vehicle's
    # own speed, as in Stern et al.'s PI controller with saturation). Around a ring the leader's average
    # follows the planner vehicle's own slowdown back to it, and the objective then held the ring slow
    cruise_reference: str = "leader"
    # > 0: the cruise speed is U + cruise_catch * clip((gap - g_l) / (g_u - g_l), 0, 1) with (g_l, g_u) =
    # cruise_gaps [m]: a vehicle with an open gap ahead is asked to catch up (Stern et al. 2018: v_catch 1 m/s,
    # g_l 7 m, g_u 30 m)
    cruise_catch: float = 0.0  # [m/s]
    cruise_gaps: tuple = (7.0, 30.0)  # [m]
    # > 0: the saturation of Stern et al.'s controller: close behind the vehicle ahead the cruise speed is that
    # vehicle's speed, blending back to the target over cruise_follow_band metres of gap above
    # max(cruise_follow_gap, 2 dv) (dv: the leader's speed minus the vehicle's; the paper's 4 m and gamma = 2 m).
    # Before the simulator's low-speed steering fix, the cruise objective without it pulled a car crawling up to a
    # queue towards the ring's average speed (it closed to 0.2 m and touched a wagging car); since the fix it makes
    # no measurable difference on the ring (README, platoon)
    cruise_follow_gap: float = 0.0  # [m]
    cruise_follow_band: float = 2.0  # [m]
    # how the gradient and barrier layers evaluate their costs: "auto" the Numba kernels of
    # drivediff.planner.guidance_fast for CPU tensors (the torch code below for other devices), "torch" the
    # torch code always (the reference). The selection always runs the torch code
    backend: str = "auto"

    def __post_init__(self):
        if self.backend not in ("auto", "torch"):
            raise ValueError(f"backend must be 'auto' or 'torch', not {self.backend!r}")
        if self.cruise_reference not in ("leader", "own"):
            raise ValueError(f"cruise_reference must be 'leader' or 'own', not {self.cruise_reference!r}")
        if not 0.0 <= self.cruise_gaps[0] < self.cruise_gaps[1]:
            raise ValueError(f"cruise_gaps must be (g_l, g_u) with 0 <= g_l < g_u, not {self.cruise_gaps!r}")
        if self.cruise_follow_gap < 0.0 or not self.cruise_follow_band > 0.0:
            raise ValueError("cruise_follow_gap must be >= 0 and cruise_follow_band > 0, not "
                             f"{self.cruise_follow_gap!r}, {self.cruise_follow_band!r}")


@dataclass
class GuidanceContext:
    """What the costs need besides the plan, for a batch of B = queries x candidates rows."""

    agent_state: torch.Tensor  # (B, A, 5) x, y, yaw, speed, length in the focal frame
    agent_mask: torch.Tensor  # (B, A) bool
    guided: torch.Tensor  # (B, A) bool rows the guidance may change (the controlled vehicles)
    frame: torch.Tensor  # (B, 3) focal x, y, yaw in the world
    speed_limit: torch.Tensor  # (B,) [m/s] speed limit near the focal vehicle
    sdf: torch.Tensor  # (1, 1, H, W) signed distance of the drivable area [m], < 0 inside
    sdf_meta: tuple  # (x0, y0, res)
    widths: torch.Tensor  # (B, A) [m]
    sim_dt: float
    substeps: int
    cfg: PlannerConfig = field(default_factory=PlannerConfig)
    # the vehicle ahead in each row's lane as the simulator's lane tracking (the vehicle's radar) sees it, for
    # the spacing objective: (B, A) its row in the query (-1: not in the query, e.g. beyond the sensor range),
    # the bumper-to-bumper gap along the lane now [m] (inf: no leader) and its speed [m/s]
    leader: torch.Tensor | None = None
    leader_gap: torch.Tensor | None = None
    leader_speed: torch.Tensor | None = None
    cruise_speed: torch.Tensor | None = None  # (B, A) [m/s] the cruise objective's speed U per row

    def repeat(self, c: int) -> GuidanceContext:
        rep = {k: getattr(self, k).repeat_interleave(c, 0) for k in ("agent_state", "agent_mask", "guided", "frame",
                                                                     "speed_limit", "widths")}
        for k in ("leader", "leader_gap", "leader_speed", "cruise_speed"):
            rep[k] = None if getattr(self, k) is None else getattr(self, k).repeat_interleave(c, 0)
        return GuidanceContext(**rep, sdf=self.sdf, sdf_meta=self.sdf_meta, sim_dt=self.sim_dt,
                               substeps=self.substeps, cfg=self.cfg)


# ------------------------------------------------------------------------------------------------- geometry


def disc_centres(states: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Centres (..., T, 3, 2) of three discs along each vehicle, at -L/3, 0 and +L/3 along its heading.

    states (..., T, 4) x, y, yaw, speed; length (...). The road cost adds W/2 to the signed distance at
    these centres: across the heading the box reaches exactly that far from each of them.
    """
    c, s = torch.cos(states[..., 2]), torch.sin(states[..., 2])
    off = torch.stack([-length / 3, torch.zeros_like(length), length / 3], dim=-1)[..., None, :]  # (..., 1, 3)
    cx = states[..., 0:1] + off * c[..., None]
    cy = states[..., 1:2] + off * s[..., None]
    return torch.stack([cx, cy], dim=-1)


def box_penetration(states: torch.Tensor, length: torch.Tensor, width: torch.Tensor, mask: torch.Tensor,
                    guided: torch.Tensor, margin: float, rear_exempt: bool = False) -> torch.Tensor:
    """Separating-axis penetration depth [m] between each guided row's box and every other present agent's.

    states (B, A, T, 4) x, y, yaw, speed; length, width (B, A). For a pair, the overlap of the two boxes
    (grown by ``margin``) projected on each of the four box axes; the depth is the smallest of the four
    (0 when an axis separates them). It grows monotonically as one box moves into the other, and with
    margin 0 it is positive exactly when ``drivediff.sim.geometry.boxes_overlap`` says the boxes overlap.
    rear_exempt: ignore a partner whose centre, at the pair's first contact, is more than half the guided
    vehicle's length behind it (along its heading): being run into from behind is the other driver's fault
    (nuPlan's at-fault rule), and no plan of the guided vehicle short of driving off can avoid a follower
    predicted to keep its speed; counting it made every candidate "infeasible" and the vehicle brake to a
    standstill.

    Returns (B, A, T): max over partners, for guided rows (0 elsewhere).
    """
    b, a, t = states.shape[:3]
    out = states.new_zeros((b, a, t))
    rows = torch.nonzero(guided.any(dim=0)).flatten()  # only rows some query guides (decentralised: the focal)
    if rows.numel() == 0:
        return out
    x, y, yaw = states[..., 0], states[..., 1], states[..., 2]
    c, s = torch.cos(yaw), torch.sin(yaw)
    hl = (0.5 * length + margin)[..., None]  # (B, A, 1)
    hw = (0.5 * width + margin)[..., None]
    # pair axes: i rows (guided) against j columns (everyone)
    ci, si, cj, sj = c[:, rows, None], s[:, rows, None], c[:, None], s[:, None]  # (B, G, A, T) by broadcast
    dx = x[:, None] - x[:, rows, None]
    dy = y[:, None] - y[:, rows, None]
    hli, hwi, hlj, hwj = hl[:, rows, None], hw[:, rows, None], hl[:, None], hw[:, None]
    # |cos| and |sin| of the relative heading: the projections of one box's half-axes on the other's axes
    cab = (ci * cj + si * sj).abs()
    sab = (si * cj - ci * sj).abs()
    o1 = hli + hlj * cab + hwj * sab - (dx * ci + dy * si).abs()
    o2 = hwi + hlj * sab + hwj * cab - (-dx * si + dy * ci).abs()
    o3 = hlj + hli * cab + hwi * sab - (dx * cj + dy * sj).abs()
    o4 = hwj + hli * sab + hwi * cab - (-dx * sj + dy * cj).abs()
    depth = F.relu(torch.minimum(torch.minimum(o1, o2), torch.minimum(o3, o4)))  # (B, G, A, T)
    others = rows[:, None] != torch.arange(a, device=states.device)[None]  # (G, A)
    pair = (guided[:, rows, None] & mask[:, None, :] & others[None])[..., None]  # (B, G, A, 1)
    if rear_exempt:  # fault is decided at the pair's first contact (predicted vehicles drive on through)
        contact = depth > 0
        first = contact & (torch.cumsum(contact.to(torch.int32), dim=-1) == 1)
        behind = (dx * ci + dy * si) < -0.5 * (hli - margin)
        pair = pair & ~(first & behind).any(dim=-1, keepdim=True)
    out[:, rows] = (depth * pair).amax(dim=2)
    return out


def sample_sdf(ctx: GuidanceContext, xy_world: torch.Tensor) -> torch.Tensor:
    """Bilinear signed distance at world points (..., 2) (border values outside the grid)."""
    x0, y0, res = ctx.sdf_meta
    h, w = ctx.sdf.shape[-2:]
    gx = 2.0 * (xy_world[..., 0] - x0) / (res * (w - 1)) - 1.0
    gy = 2.0 * (xy_world[..., 1] - y0) / (res * (h - 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2).to(ctx.sdf.dtype)
    out = F.grid_sample(ctx.sdf, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(xy_world.shape[:-1])


def to_world(xy: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """(B, ..., 2) focal-frame points -> world, frame (B, 3)."""
    shape = (-1,) + (1,) * (xy.dim() - 2)
    c, s = torch.cos(frame[:, 2]).reshape(shape), torch.sin(frame[:, 2]).reshape(shape)
    x = xy[..., 0] * c - xy[..., 1] * s + frame[:, 0].reshape(shape)
    y = xy[..., 0] * s + xy[..., 1] * c + frame[:, 1].reshape(shape)
    return torch.stack([x, y], dim=-1)


# --------------------------------------------------------------------------------------------------- costs


def spacing_error(states: torch.Tensor, ctx: GuidanceContext, time_gap: float, standstill: float,
                  dt: float, gap_max: float = 0.0) -> torch.Tensor:
    """Relative spacing error of each guided row behind its leader, (B, A, T): (gap - (r + h v)) / (r + h v).

    states (B, A, T, 4) at steps of ``dt`` seconds. The gap is measured along the lane: the gap now
    (``ctx.leader_gap``) plus the distance the leader drives minus the distance the row drives. The leader's
    distance comes from its row of the plan (predicted, or in communication mode shared) when it is in the
    query, else from its speed now held constant. Along the lane, so exact around bends, where a straight
    line between the two would cut the corner. gap_max > 0: a band; the error is
    the distance outside the band over ``r + h v`` (negative below the near end, positive beyond the far
    end), 0 in between. Rows without a leader get 0.
    """
    if ctx.leader is None or ctx.leader_gap is None or ctx.leader_speed is None:
        raise ValueError("the spacing objective needs the leaders in the guidance context (leader, leader_gap, "
                         "leader_speed)")
    v = states[..., 3]
    travelled = torch.cumsum(v, dim=-1) * dt  # (B, A, T)
    row = ctx.leader.clamp_min(0)
    in_query = (ctx.leader >= 0) & torch.gather(ctx.agent_mask, 1, row)
    t = dt * torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    lead = torch.where(in_query[..., None], torch.gather(travelled, 1, row[..., None].expand_as(travelled)),
                       ctx.leader_speed[..., None] * t)
    has = torch.isfinite(ctx.leader_gap) & ctx.guided & ctx.agent_mask
    gap = torch.where(has, ctx.leader_gap, torch.zeros_like(ctx.leader_gap))[..., None] + lead - travelled
    desired = standstill + time_gap * v
    if gap_max > 0:
        err = (F.relu(gap - gap_max) - F.relu(desired - gap)) / desired.clamp_min(1.0)
    else:
        err = (gap - desired) / desired.clamp_min(1.0)
    return torch.where(has[..., None], err, torch.zeros_like(err))


def held_max(depth: torch.Tensor, tie: float = 1e-4) -> torch.Tensor:
    """Running maximum over the last axis (a contact's depth held from its first step on), with ties
    resolved toward the earliest step. While two boxes overlap by their full width the depth is flat; plain
    ``cummax`` then credits the running maximum to whichever flat step float rounding makes largest, often
    one where the plan is already leaving the other box, and the gradient says "drive through faster".
    Subtracting ``tie`` [m] per step before the maximum credits the first step of the plateau instead (a
    value change below 1 cm over a 6 s plan); the result is >= 0 and 0 exactly where ``depth`` is 0 so far."""
    ramp = tie * torch.arange(depth.shape[-1], device=depth.device, dtype=depth.dtype)
    return F.relu(torch.cummax(depth - ramp, dim=-1).values)


def cost_terms(ctrl: torch.Tensor, ctx: GuidanceContext, gcfg: GuidanceConfig,
               exact: bool = True, parts: str = "all") -> dict[str, torch.Tensor]:
    """Every named cost per row (B,) and the hard-constraint margins, for controls (B, A, H, 2).

    exact: contacts are checked at every simulator step (0.1 s): at planner steps (0.2 s) a vehicle at
    20 m/s moves 4 m, more than a disc, and would seem to pass through another between two samples. The
    gradient layer passes ``exact=False``: the plan is rolled out in one Euler step per planner step and
    checked there, 2-3x less work (forward and backward) for a gradient that points the same way; the
    barrier correction and the selection, which decide feasibility, always use the exact check. Both roll
    out with :func:`rollout_cumulative` (the simulator's Euler steps as cumulative sums).
    parts: ``"all"``; ``"total"`` (the weighted costs and their sum only: the gradient layer); ``"barrier"``
    (the barrier function only: the correction layer). The subsets skip the work the caller does not use.
    """
    if parts not in ("all", "total", "barrier"):
        raise ValueError(f"parts must be 'all', 'total' or 'barrier', not {parts!r}")
    m = ctx.substeps if exact else 1
    clipped = clip_controls(ctrl, ctx.cfg)
    fine = rollout_cumulative(ctx.agent_state, clipped, ctx.sim_dt * ctx.substeps / m, m,
                              steer_max=ctx.cfg.steer_max)  # (B, A, H*m, 4)
    inter = fine  # the states the interaction costs (collision, TTC, spacing) see: equal, but without a
    if clipped.requires_grad and not gcfg.lateral_avoidance:  # gradient path through the steering
        lon_only = torch.stack([clipped[..., 0], clipped[..., 1].detach()], dim=-1)
        inter = rollout_cumulative(ctx.agent_state, lon_only, ctx.sim_dt * ctx.substeps / m, m,
                                   steer_max=ctx.cfg.steer_max)
    length = ctx.agent_state[..., 4].clamp_min(0.5)
    mask = ctx.agent_mask
    guided = ctx.guided & mask
    # road: how far the box of a guided row pokes beyond the drivable area's edge, (B, A, 1 + T) at the start
    # (the state the vehicle is in) and along the plan: three discs along the vehicle against the distance
    # grid, plus W/2 (the box reaches that far sideways from each disc centre, exactly, across the heading)
    depth = fine.new_zeros(fine.shape[:2] + (1 + fine.shape[2],))
    rows = torch.nonzero(guided.any(dim=0)).flatten()
    if rows.numel():
        path = torch.cat([ctx.agent_state[:, rows, None, :4], fine[:, rows]], dim=2)
        centres = disc_centres(path, length[:, rows])
        world = to_world(centres.reshape(centres.shape[0], -1, 2), ctx.frame).reshape(centres.shape)
        depth[:, rows] = (sample_sdf(ctx, world) + 0.5 * ctx.widths[:, rows, None, None]).amax(dim=-1)
    # the hard limit: offroad_tol, or the depth the vehicle starts at plus offroad_tol. A vehicle already
    # poking out (a corner past a connector's edge) would otherwise find every plan infeasible, brake, and
    # stand there for good
    allowed = torch.maximum(depth[..., :1], torch.zeros_like(depth[..., :1])) + gcfg.offroad_tol  # (B, A, 1)
    depth = depth[..., 1:]
    terms = {}
    if parts != "barrier":
        terms.update(_weighted_costs(ctrl, fine, inter, length, depth, ctx, gcfg, m))
        if parts == "total":
            return terms
    # hard constraints: clearance >= 0 (boxes without margin) and depth beyond the road edge <= tol
    touch = box_penetration(inter, length, ctx.widths, mask, guided, 0.0, rear_exempt=True)  # (B, A, T*m)
    # barrier function: >= 0 iff feasible; unlike the worst clearance it keeps a gradient once boxes
    # overlap by more than their width (the accumulated depth from the first contact on)
    terms["barrier"] = -(held_max(touch).sum(dim=(-1, -2)) / m
                         + (F.relu(depth - allowed) * guided[..., None]).sum(dim=(-1, -2)) / m)
    if parts == "barrier":
        return terms
    clear = -touch.amax(dim=(-1, -2))  # (B,) < 0: the boxes overlap somewhere
    road_depth = torch.where(guided[..., None], depth, torch.full_like(depth, -math.inf)).amax(dim=(-1, -2))
    beyond = torch.where(guided[..., None], depth - allowed, torch.full_like(depth, -math.inf)).amax(dim=(-1, -2))
    terms["clearance"] = clear
    terms["road_depth"] = road_depth
    terms["road_excess"] = beyond  # [m] the deepest excursion beyond the allowed depth (<= 0: within it)
    terms["feasible"] = (clear > -1e-6) & (beyond <= 0)
    # distance the guided rows drive along their planned paths (selection's progress term)
    terms["progress"] = (fine[..., 3] * guided[..., None]).sum(dim=(-1, -2)) * (ctx.sim_dt * ctx.substeps / m)
    return terms


def _weighted_costs(ctrl, fine, inter, length, depth, ctx: GuidanceContext, gcfg: GuidanceConfig, m: int) -> dict:
    """The named soft costs of :func:`cost_terms` and their weighted sum ``total`` (``inter``: the states
    of the interaction costs, see :attr:`GuidanceConfig.lateral_avoidance`)."""
    states = fine[..., m - 1::m, :]  # at the planner steps
    mask = ctx.agent_mask
    guided = ctx.guided & mask
    pen = box_penetration(inter, length, ctx.widths, mask, guided, gcfg.margin, rear_exempt=True)  # (B, A, T*m)
    # constant-velocity projections ttc seconds ahead (every agent)
    vf = inter[..., 3:4]
    proj_xy = inter[..., :2] + gcfg.ttc * vf * torch.stack([torch.cos(inter[..., 2]), torch.sin(inter[..., 2])], -1)
    proj = torch.cat([proj_xy, inter[..., 2:]], dim=-1)
    pen_ttc = box_penetration(proj, length, ctx.widths, mask, guided, 0.0, rear_exempt=True)
    out_road = F.relu(depth) * guided[..., None]
    # speed limit, comfort (guided rows)
    v = states[..., 3:4]
    speed_ex = F.relu(v[..., 0] - ctx.speed_limit[:, None, None]) * guided[..., None]
    dt = ctx.cfg.plan_dt
    acc = clip_controls(ctrl, ctx.cfg)[..., 0]
    jerk = torch.diff(acc, dim=-1) / dt
    yaw_rate = torch.diff(states[..., 2], dim=-1, prepend=ctx.agent_state[..., None, 2]) / dt
    lat_acc = v[..., 0] * yaw_rate
    comfort = (F.relu(acc - LON_ACC_MAX) ** 2 + F.relu(LON_ACC_MIN - acc) ** 2).sum(-1) \
        + (F.relu(lat_acc.abs() - LAT_ACC_MAX) ** 2).sum(-1) + (F.relu(yaw_rate.abs() - YAW_RATE_MAX) ** 2).sum(-1) \
        + (F.relu(jerk.abs() - LON_JERK_MAX) ** 2).sum(-1)
    # a contact counts from its first step on: with the penetration itself, a plan that drives through an
    # obstacle quickly would be cheaper than one that brakes into it
    pen = held_max(pen)
    pen_ttc = held_max(pen_ttc)
    terms = {
        "collision": (pen ** 2).sum(dim=(-1, -2)) / m,
        "road": (out_road ** 2).sum(dim=(-1, -2)) / m,
        "speed": (speed_ex ** 2).sum(dim=(-1, -2)) * dt,
        "comfort": (comfort * guided.float()).sum(-1),
        "ttc": (pen_ttc ** 2).sum(dim=(-1, -2)) / m,
    }
    terms["total"] = (gcfg.w_collision * terms["collision"] + gcfg.w_road * terms["road"]
                      + gcfg.w_speed * terms["speed"] + gcfg.w_comfort * terms["comfort"] + gcfg.w_ttc * terms["ttc"])
    if gcfg.w_gap > 0:
        err = spacing_error(inter, ctx, gcfg.time_gap, gcfg.standstill, ctx.sim_dt * ctx.substeps / m,
                            gcfg.gap_max)[..., m - 1::m]
        terms["gap"] = (err ** 2).sum(dim=(-1, -2)) * dt
        terms["total"] = terms["total"] + gcfg.w_gap * terms["gap"]
    if gcfg.w_smooth > 0:
        terms["smooth"] = ((acc ** 2).sum(-1) * guided.float()).sum(-1) * dt
        terms["total"] = terms["total"] + gcfg.w_smooth * terms["smooth"]
    if gcfg.w_cruise > 0:
        if ctx.cruise_speed is None:
            raise ValueError("the cruise objective needs cruise_speed in the guidance context")
        dev = (v[..., 0] - ctx.cruise_speed[..., None]) ** 2
        terms["cruise"] = (dev.sum(-1) * guided.float()).sum(-1) * dt
        terms["total"] = terms["total"] + gcfg.w_cruise * terms["cruise"]
    return terms


# ---------------------------------------------------------------------------------------------- guidance


class Guidance:
    """The sampler hook: ``guidance(x0, t, i, cond) -> x0`` (normalised controls (B, A, D))."""

    def __init__(self, gcfg: GuidanceConfig, ctx: GuidanceContext, normalizer, num_timesteps: int, num_steps: int):
        self.gcfg = gcfg
        self.ctx = ctx
        self.normalizer = normalizer
        self.num_timesteps = num_timesteps
        self.num_steps = num_steps

    def cost(self, x0: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """The weighted total cost (B,) of the gradient layer."""
        return self._evaluate(x0, "total", exact)

    def barrier(self, x0: torch.Tensor) -> torch.Tensor:
        """The barrier function b (B,) of the correction layer (>= 0 iff the plan is feasible)."""
        return self._evaluate(x0, "barrier", True)

    def _evaluate(self, x0: torch.Tensor, part: str, exact: bool) -> torch.Tensor:
        """``cost_terms(decode(x0), parts=part)[part]``: the Numba kernels where they apply (backend "auto"),
        the torch reference otherwise."""
        ctrl = self.normalizer.decode(x0)
        if self.gcfg.backend == "auto":
            from drivediff.planner.guidance_fast import fast_barrier, fast_total

            out = (fast_total(ctrl, self.ctx, self.gcfg, exact=exact) if part == "total"
                   else fast_barrier(ctrl, self.ctx, self.gcfg))
            if out is not None:
                return out
        return cost_terms(ctrl, self.ctx, self.gcfg, exact=exact, parts=part)[part]

    def __call__(self, x0: torch.Tensor, t: int, i: int, cond: dict) -> torch.Tensor:
        g = self.gcfg
        rows = self.ctx.guided[..., None].to(x0.dtype)  # only the controlled rows move
        if g.gradient and not g.classifier and t <= g.window * self.num_timesteps:
            x0 = self._gradient_steps(x0, rows)
        if g.correction and i >= self.num_steps - g.correction_steps:
            x0 = self._barrier(x0, rows)
        return x0.detach()

    def _gradient_steps(self, x0, rows):
        g = self.gcfg
        for _ in range(g.inner_steps):
            x = x0.detach().requires_grad_(True)
            cost = self.cost(x).sum()
            (grad,) = torch.autograd.grad(cost, x)
            step = g.scale * grad * rows
            norm = step.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            x0 = (x - step * torch.clamp(g.clip / norm, max=1.0)).detach()
        return x0

    def _barrier(self, x0, rows):
        """Closed-form projection onto the linearised hard constraint b(x) >= 0 (b: minus the accumulated
        contact and off-road depth), per row: x <- x + max(0, -b) / |grad b|^2 grad b (SafeDiffuser, one
        constraint), twice."""
        for _ in range(2):
            x = x0.detach().requires_grad_(True)
            b = self.barrier(x)  # (B,)
            (grad,) = torch.autograd.grad(b.sum(), x)
            grad = grad * rows
            gnorm2 = (grad ** 2).sum(dim=(-1, -2)).clamp_min(1e-9)
            lam = F.relu(-b) / gnorm2
            x0 = (x + (lam[:, None, None] * grad).clamp(-self.gcfg.clip * 4, self.gcfg.clip * 4)).detach()
        return x0


def classifier_guidance_sample(model, schedule, cond, scfg, generator, guidance: Guidance):
    """Sampling with full classifier guidance: the cost gradient flows through the denoiser to x_t
    (slower: one backward pass through the network per step)."""
    from drivediff.planner.schedulers import make_scheduler

    q = cond["agent_feat"].shape[0]
    c = scfg.candidates
    x = torch.randn((q * c, cond["agent_feat"].shape[1], model.cfg.control_dim), generator=generator)
    sched = make_scheduler(scfg.scheduler, schedule)
    sched.set_timesteps(scfg.steps)
    with torch.no_grad():
        prepared = model.prepare(cond, c)
    g = guidance.gcfg
    rows = guidance.ctx.guided[..., None].float()
    for i, t in enumerate(sched.timesteps):
        if t <= g.window * schedule.num_timesteps:
            xg = x.detach().requires_grad_(True)
            x0 = model(xg, torch.tensor(t), prepared)  # the condition's share does not depend on x
            (grad,) = torch.autograd.grad(guidance.cost(x0).sum(), xg)
            step = g.scale * grad * rows
            norm = step.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            x = (x - step * torch.clamp(g.clip / norm, max=1.0)).detach()
        with torch.no_grad():
            x0 = model(x, torch.tensor(t), prepared)
            if g.correction and i >= len(sched.timesteps) - g.correction_steps:
                with torch.enable_grad():
                    x0 = guidance._barrier(x0, rows)
            x = sched.step(x0, i, x, generator).float()
    return x.reshape(q, c, *x.shape[1:]) * cond["agent_mask"][:, None, :, None]


def emergency_brake(cfg: PlannerConfig, shape) -> torch.Tensor:
    """(…, H, 2) controls: full braking, wheel straight."""
    ctrl = torch.zeros(*shape, cfg.horizon, 2)
    ctrl[..., 0] = cfg.accel_min
    return ctrl


def safe_selection(terms: dict, num_candidates: int, w_progress: float = 0.0,
                   road_fallback: bool = False) -> torch.Tensor:
    """Per query: the cheapest feasible candidate, or -1 when none is feasible. terms: (Q*C,) tensors.

    w_progress: the score is ``total - w_progress * progress / max progress of the query's candidates``.
    road_fallback: when none is feasible but some keep clear of every other vehicle (they only leave the
    road), the one that leaves it least instead of -1 (see :attr:`GuidanceConfig.road_fallback`)."""
    total = terms["total"].reshape(-1, num_candidates)
    if w_progress:
        progress = terms["progress"].reshape(-1, num_candidates)
        total = total - w_progress * progress / progress.amax(dim=1, keepdim=True).clamp_min(1e-3)
    feasible = terms["feasible"].reshape(-1, num_candidates)
    total = torch.where(feasible, total, torch.full_like(total, math.inf))
    best = torch.where(feasible.any(dim=1), total.argmin(dim=1), torch.full_like(total[:, 0], -1, dtype=torch.long))
    if road_fallback:
        clear = terms["clearance"].reshape(-1, num_candidates) > -1e-6
        excess = torch.where(clear, terms["road_excess"].reshape(-1, num_candidates),
                             torch.full_like(total, math.inf))
        use = (best < 0) & clear.any(dim=1)
        best = torch.where(use, excess.argmin(dim=1), best)
    return best


def road_sdf_tensor(road) -> tuple[torch.Tensor, tuple]:
    a = road.arrays
    return torch.as_tensor(np.asarray(a.sdf), dtype=torch.float32)[None, None], tuple(float(v) for v in a.sdf_meta)
