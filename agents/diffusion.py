"""The diffusion planner as a policy: decentralised execution of a centrally trained model (CTDE).

Every ``replan_every`` seconds each controlled vehicle plans; in between it executes its plan's controls
(each planned control is held for ``plan_dt / dt`` simulator steps). All queries of all worlds run as one
batch through the denoiser.

Modes:
    decentralized   each controlled vehicle builds its query from its own observation (itself and its K
                    nearest vehicles, lanes around it), samples a joint plan for itself and its
                    neighbours, and executes its own row.
    centralized     one query per group of up to 1 + K controlled vehicles (the other controlled vehicles
                    forced into the first one's query); one joint plan, every controlled row executed.
                    The upper bound.
    communication   decentralised, but controlled neighbours within ``comm_range`` share their latest plans
                    over V2V (optionally delayed and lossy); the query's rows of those neighbours are held
                    to the shared plans during denoising (inpainting). Plans are controls in each vehicle's
                    own frame, so a shared plan needs only a time shift, not a change of frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from drivediff.errors import DrivediffError
from drivediff.planner.checkpoint import default_checkpoint, load_planner
from drivediff.planner.data import substeps
from drivediff.planner.dynamics import clip_controls, plan_states, steering
from drivediff.planner.features import SNAPSHOT_FIELDS, SPEED_SCALE, LaneIndex, build_queries, to_world
from drivediff.planner.guidance import (
    Guidance,
    GuidanceConfig,
    GuidanceContext,
    classifier_guidance_sample,
    cost_terms,
    emergency_brake,
    road_sdf_tensor,
    safe_selection,
)
from drivediff.planner.sampler import Inpaint, SamplerConfig, sample, select
from drivediff.planner.schedulers import NoiseSchedule
from drivediff.sim import Behavior

MODES = ("decentralized", "centralized", "communication")


@dataclass
class _Plans:
    """Current plans of the controlled vehicles of every world."""

    ctrl: np.ndarray  # (B, N, H, 2) physical controls
    start: np.ndarray  # (B, N) simulator step at which the plan started (-1: none)
    xy: np.ndarray  # (B, N, H, 2) planned positions in the world frame
    shared_ctrl: np.ndarray  # (B, N, H, 2) the plans as last received by neighbours (communication mode)
    shared_start: np.ndarray  # (B, N) simulator step at which the received plan started (-1: none)
    sent_ctrl: np.ndarray  # (B, N, H, 2) the plan in flight (broadcast, not yet received)
    sent_start: np.ndarray  # (B, N) its start step (-1: none in flight)
    sent_arrival: np.ndarray  # (B, N) the step at which it arrives


@dataclass
class PlanRecord:
    """What one replanning produced (for logs and overlays)."""

    step: np.ndarray  # (B,)
    plans: dict = field(default_factory=dict)  # (b, slot) -> (H, 2) world xy
    candidates: dict = field(default_factory=dict)  # (b, slot) -> ((C, H, 2), costs (C,), chosen)
    predictions: dict = field(default_factory=dict)  # (b, slot) -> (M, H, 2)


class DiffusionPolicy:
    """Drive a World's controlled vehicles with the diffusion planner.

    Args:
        checkpoint: planner checkpoint (default: the one shipped with the package).
        mode: decentralized | centralized | communication.
        sampler: scheduler, number of steps and candidates, selector.
        replan_every: seconds between replans (a multiple of the planner step).
        comm_range: [m] communication mode: plans are shared with controlled vehicles this close.
        v2v_delay: [s] communication mode: age of the shared plans on arrival; v2v_loss: packet loss rate.
        guidance: safety guidance (:class:`GuidanceConfig`); None: unguided sampling and the sampler's
            selector.
        record: keep plans, candidates and predictions of every replanning in ``self.records``.
        seed: sampling noise seed.
    """

    name = "diffusion"

    def __init__(self, checkpoint: str | Path | None = None, mode: str = "decentralized",
                 sampler: SamplerConfig | None = None, replan_every: float = 0.4, comm_range: float = 60.0,
                 v2v_delay: float = 0.0, v2v_loss: float = 0.0, guidance: GuidanceConfig | None = None,
                 record: bool = False,
                 device: str = "cpu", seed: int = 0):
        if mode not in MODES:
            raise DrivediffError(f"unknown planner mode {mode!r}; choose from {', '.join(MODES)}")
        self.mode = mode
        self.planner = load_planner(checkpoint or default_checkpoint(), device)
        self.cfg = self.planner.cfg
        self.scfg = sampler or SamplerConfig()
        self.replan_every = replan_every
        self.comm_range = comm_range
        self.v2v_delay = v2v_delay
        self.v2v_loss = v2v_loss
        self.guidance = guidance
        self.record = record
        self.device = torch.device(device)
        self.schedule = NoiseSchedule(self.cfg.train_timesteps, self.cfg.schedule)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.records: list[PlanRecord] = []
        self.latencies: list[float] = []  # seconds per replanning cycle (all queries of all worlds)
        self.queries: list[int] = []  # vehicles planned in each cycle

    # ------------------------------------------------------------------------------------------- set-up
    def reset(self, world) -> None:
        self.m = substeps(world.dt, self.cfg.plan_dt)
        rs = self.replan_every / self.cfg.plan_dt
        if abs(rs - round(rs)) > 1e-6 or round(rs) < 1 or round(rs) > self.cfg.horizon:
            raise DrivediffError(f"replan_every must be a multiple of the planner step {self.cfg.plan_dt} s "
                                 f"between 1 and {self.cfg.horizon} steps")
        self.replan_steps = int(round(rs)) * self.m
        self.dt = world.dt
        self.lanes = LaneIndex.from_road(world.road)
        self.sdf, self.sdf_meta = road_sdf_tensor(world.road)
        self.fallbacks = 0  # replannings that found no feasible candidate and braked
        b, n, h = world.num_worlds, world.max_vehicles, self.cfg.horizon
        self.hist = {k: np.zeros((b, self.cfg.history + 1, n), dtype=getattr(world.state, k).dtype)
                     for k in SNAPSHOT_FIELDS}
        self.hist["vid"][:] = -1
        self.plans = _Plans(np.zeros((b, n, h, 2)), np.full((b, n), -1), np.zeros((b, n, h, 2)),
                            np.zeros((b, n, h, 2)), np.full((b, n), -1), np.zeros((b, n, h, 2)),
                            np.full((b, n), -1), np.full((b, n), -1))
        self.controlled = np.arange(world.num_controlled)
        self.mean_speed = np.zeros((b, len(self.controlled)))  # the cruise objective's average speed U per slot
        self.cruise_target = self.mean_speed  # U, plus the catch-up term for an open gap (cruise_catch)
        self._mean_vid = np.full((b, len(self.controlled)), -1)
        world.set_behavior(Behavior.EXTERNAL, self.controlled)
        self.records.clear()
        self.latencies.clear()
        self.queries.clear()
        self._push_history(world, np.ones(b, dtype=bool))
        self._backfill_history()

    def _backfill_history(self) -> None:
        """At reset there is no past yet: extrapolate every vehicle backwards at constant speed and heading
        (the planner is trained on windows with a whole history; a missing one would be out of
        distribution)."""
        h = self.hist
        for k in range(1, self.cfg.history + 1):
            back = k * self.cfg.plan_dt * h["speed"][:, -1]
            for name in SNAPSHOT_FIELDS:
                h[name][:, -1 - k] = h[name][:, -1]
            h["x"][:, -1 - k] -= back * np.cos(h["yaw"][:, -1])
            h["y"][:, -1 - k] -= back * np.sin(h["yaw"][:, -1])

    def _push_history(self, world, worlds: np.ndarray) -> None:
        """Append the current state to the planner-rate history of the given worlds (B,) bool."""
        for k in SNAPSHOT_FIELDS:
            h = self.hist[k]
            h[worlds, :-1] = h[worlds, 1:]
            h[worlds, -1] = getattr(world.state, k)[worlds]

    # ----------------------------------------------------------------------------------------------- act
    def act(self, world) -> np.ndarray:
        """Actions (B, N, 2) for the next ``world.step``; replans when due."""
        st = world.state
        step = st.step
        tick = (step % self.m == 0) & (step > 0)
        if tick.any():
            self._push_history(world, tick)
        if self.guidance is not None and self.guidance.w_cruise > 0:
            self._track_cruise(st)
        active = st.valid[:, self.controlled] & ~st.collided[:, self.controlled]
        unplanned = (active & (self.plans.start[:, self.controlled] < 0)).any(axis=1)
        due = ((step % self.replan_steps == 0) | unplanned) & active.any(axis=1)
        if due.any():
            self._replan(world, np.nonzero(due)[0])
        return self._actions(world)

    def _track_cruise(self, st) -> None:
        """The cruise objective's speed of each controlled vehicle. U: the speed of the vehicle ahead in its
        lane (its own without one; ``cruise_reference="own"``: always its own), averaged exponentially over
        ``cruise_window`` s: over a wave's period that is the speed of the traffic, without the swings. With
        ``cruise_catch`` > 0 the target is U plus a catch-up speed for an open gap (``cruise_target``); with
        ``cruise_follow_gap`` > 0 it blends into the leader's speed close behind it."""
        g = self.guidance
        c = self.controlled
        own = st.speed[:, c]
        lead = st.leader[:, c]
        v_lead = np.where(lead >= 0, np.take_along_axis(st.speed, np.maximum(lead, 0), axis=1), own)  # own: none
        ref = own if g.cruise_reference == "own" else v_lead
        fresh = st.vid[:, c] != self._mean_vid  # a new vehicle in the slot (or the first step: -1)
        rate = min(1.0, self.dt / g.cruise_window)
        self.mean_speed = np.where(fresh, ref, self.mean_speed + (ref - self.mean_speed) * rate)
        self._mean_vid = st.vid[:, c].copy()
        self.cruise_target = self.mean_speed
        if g.cruise_catch > 0:
            lo, hi = g.cruise_gaps
            gap = np.where(np.isfinite(st.gap[:, c]), st.gap[:, c], hi)  # no leader: the gap is open
            self.cruise_target = self.mean_speed + g.cruise_catch * np.clip((gap - lo) / (hi - lo), 0.0, 1.0)
        if g.cruise_follow_gap > 0:  # saturation: close behind the leader, its speed
            near = np.maximum(g.cruise_follow_gap, 2.0 * (v_lead - own))
            gap = np.where((lead >= 0) & np.isfinite(st.gap[:, c]), st.gap[:, c], np.inf)
            alpha = np.clip((gap - near) / g.cruise_follow_band, 0.0, 1.0)
            self.cruise_target = alpha * self.cruise_target + (1.0 - alpha) * v_lead

    def _actions(self, world) -> np.ndarray:
        act = np.zeros((world.num_worlds, world.max_vehicles, 2))
        step = world.state.step[:, None]
        k = np.clip((step - self.plans.start) // self.m, 0, self.cfg.horizon - 1)  # (B, N)
        ctrl = np.take_along_axis(self.plans.ctrl, k[..., None, None].repeat(2, -1), axis=2)[:, :, 0]
        has = self.plans.start >= 0
        st = world.state
        act[..., 0] = ctrl[..., 0]
        # the planned lateral acceleration becomes a steering angle at the speed the vehicle has now
        act[..., 1] = steering(torch.as_tensor(ctrl[..., 1]), torch.as_tensor(st.speed), torch.as_tensor(st.length),
                               self.cfg.steer_max).numpy()
        act[~has] = 0.0  # a controlled vehicle without a plan (it just appeared) holds its speed and wheel
        return act

    # -------------------------------------------------------------------------------------------- replan
    def _queries(self, world, worlds):
        """Build the queries of the due worlds: list of (b, focal slots (Q,), must_include or None)."""
        out = []
        st = world.state
        for b in worlds:
            ctrl = [int(i) for i in self.controlled if st.valid[b, i] and not st.collided[b, i]]
            if not ctrl:
                continue
            if self.mode == "centralized":
                g = self.cfg.num_agents
                for k in range(0, len(ctrl), g):
                    group = ctrl[k:k + g]
                    inc = np.full((1, len(group) - 1), -1, dtype=np.int64)
                    inc[0] = group[1:]
                    out.append((b, np.array(group[:1]), inc if len(group) > 1 else None, group))
            else:
                for i in ctrl:
                    out.append((b, np.array([i]), None, [i]))
        return out

    def _replan(self, world, worlds) -> None:
        t0 = time.perf_counter()
        specs = self._queries(world, worlds)
        if not specs:
            return
        q = self._build(specs)
        owners = [b for b, *_ in specs]
        cond = {k: torch.as_tensor(q[k], device=self.device) for k in ("agent_feat", "agent_mask", "lane_feat",
                                                                       "lane_mask")}
        inpaint = self._inpaint(world, q, owners) if self.mode == "communication" else None
        state = torch.as_tensor(q["agent_state"], device=self.device)
        c = self.scfg.candidates
        gctx = self._guidance_context(world, specs, q, owners, state, inpaint) if self.guidance else None
        model = self.planner.model
        if gctx is not None and self.guidance.classifier:
            hook = Guidance(self.guidance, gctx.repeat(c), self.planner.normalizer, self.schedule.num_timesteps,
                            self.scfg.steps)
            z = classifier_guidance_sample(model, self.schedule, cond, self.scfg, self.generator, hook)
        else:
            hook = None if gctx is None else Guidance(self.guidance, gctx.repeat(c), self.planner.normalizer,
                                                      self.schedule.num_timesteps, self.scfg.steps)
            z = sample(model, self.schedule, cond, self.scfg, self.generator, inpaint=inpaint, guidance=hook)
        ctrl = clip_controls(self.planner.normalizer.decode(z), self.cfg)  # (Q, C, A, H, 2)
        costs = np.zeros(ctrl.shape[:2])
        if gctx is not None and self.guidance.selection:
            terms = cost_terms(ctrl.reshape(-1, *ctrl.shape[2:]), gctx.repeat(c), self.guidance)
            chosen = safe_selection(terms, c, self.guidance.w_progress, self.guidance.road_fallback)
            costs = terms["total"].reshape(-1, c).detach().numpy()
            brake = chosen < 0
            if brake.any():  # no feasible candidate: emergency braking with the wheel straight
                self.fallbacks += int(brake.sum())
                ctrl[brake, 0] = emergency_brake(self.cfg, ctrl[brake, 0].shape[:-2])
                chosen = torch.where(brake, torch.zeros_like(chosen), chosen)
        else:
            ctx = {"cond": cond, "ctrl": ctrl, "agent_state": state, "query": q}
            chosen = select(self.scfg.selector, z, ctx)
        states = plan_states(state[:, None].expand(-1, ctrl.shape[1], -1, -1), ctrl, self.dt, self.m,
                             steer_max=self.cfg.steer_max)  # (Q, C, A, H, 4)
        self._store(world, specs, q, owners, ctrl, states, chosen, costs)
        self.latencies.append(time.perf_counter() - t0)
        self.queries.append(sum(len(group) for *_, group in specs))

    def _build(self, specs) -> dict:
        """Query tensors of every spec, in order; the decentralised queries of a world in one call."""
        qs, k = [], 0
        while k < len(specs):
            b, focal, inc, _ = specs[k]
            j = k + 1
            while inc is None and j < len(specs) and specs[j][0] == b and specs[j][2] is None:
                j += 1
            snaps = {name: v[b] for name, v in self.hist.items()}
            focal = np.concatenate([sp[1] for sp in specs[k:j]])
            qs.append(build_queries(snaps, focal, self.lanes, self.cfg, must_include=inc))
            k = j
        return {name: np.concatenate([x[name] for x in qs], axis=0) for name in qs[0]}

    def _guidance_context(self, world, specs, q, owners, state, inpaint) -> GuidanceContext:
        """Rows the guidance may move: the focal vehicle (decentralised, communication) or every controlled
        vehicle of the query (centralised); rows fixed by inpainting never move."""
        slots = q["agent_slot"]
        guided = np.zeros(slots.shape, dtype=bool)
        for qi, (_, _, _, group) in enumerate(specs):
            guided[qi, :len(group) if self.mode == "centralized" else 1] = True
        guided &= q["agent_mask"]
        if inpaint is not None:
            guided &= ~inpaint.mask.cpu().numpy()
        widths = np.zeros(slots.shape)
        for qi, b in enumerate(owners):
            ok = slots[qi] >= 0
            widths[qi, ok] = world.state.width[b, slots[qi, ok]]
        limit = np.where(q["lane_mask"][:, 0], q["lane_feat"][:, 0, -2] * SPEED_SCALE, 40.0)
        objective = {}
        if self.guidance.w_gap > 0:  # each row's leader in its lane as the simulator tracks it
            st = world.state
            own, at = np.asarray(owners)[:, None], np.maximum(slots, 0)
            lead_slot = np.where(slots >= 0, st.leader[own, at], -1)  # (Q, A)
            match = (slots[:, None, :] == lead_slot[:, :, None]) & (lead_slot[:, :, None] >= 0)  # (Q, A, A)
            objective["leader"] = torch.as_tensor(np.where(match.any(-1), match.argmax(-1), -1), dtype=torch.int64)
            objective["leader_gap"] = torch.as_tensor(np.where(lead_slot >= 0, st.gap[own, at], np.inf),
                                                      dtype=torch.float32)
            objective["leader_speed"] = torch.as_tensor(
                np.where(lead_slot >= 0, st.speed[own, np.maximum(lead_slot, 0)], 0.0), dtype=torch.float32)
        if self.guidance.w_cruise > 0:
            objective["cruise_speed"] = torch.as_tensor(self._cruise_rows(owners, slots), dtype=torch.float32)
        return GuidanceContext(
            agent_state=state, agent_mask=torch.as_tensor(q["agent_mask"]), guided=torch.as_tensor(guided),
            frame=torch.as_tensor(q["frame"], dtype=torch.float32),
            speed_limit=torch.as_tensor(limit, dtype=torch.float32), sdf=self.sdf, sdf_meta=self.sdf_meta,
            widths=torch.as_tensor(widths, dtype=torch.float32), sim_dt=self.dt, substeps=self.m, cfg=self.cfg,
            **objective)

    def _cruise_rows(self, owners, slots) -> np.ndarray:
        """(Q, A) the cruise speed of each row that is a controlled vehicle (0 elsewhere: not guided); the
        controlled vehicles are the world's first slots."""
        ctrl = (slots >= 0) & (slots < len(self.controlled))
        at = np.clip(slots, 0, len(self.controlled) - 1)
        return np.where(ctrl, self.cruise_target[np.asarray(owners)[:, None], at], 0.0)

    def _inpaint(self, world, q, owners) -> Inpaint | None:
        """Rows of controlled neighbours whose plans reached the focal vehicle (range, delay, loss)."""
        slots = q["agent_slot"]
        qn, a = slots.shape
        h = self.cfg.horizon
        p = self.plans
        now = world.state.step[:, None]
        arrived = (p.sent_start >= 0) & (p.sent_arrival <= now)  # plans in flight that have reached the others
        p.shared_ctrl[arrived] = p.sent_ctrl[arrived]
        p.shared_start[arrived] = p.sent_start[arrived]
        p.sent_start[arrived] = -1
        value = np.zeros((qn, a, h, 2))
        mask = np.zeros((qn, a), dtype=bool)
        ctrl_set = set(int(i) for i in self.controlled)
        for qi in range(qn):
            b = owners[qi]
            for k in range(1, a):
                j = int(slots[qi, k])
                if j < 0 or j not in ctrl_set or self.plans.shared_start[b, j] < 0:
                    continue
                dist = np.hypot(world.state.x[b, j] - world.state.x[b, slots[qi, 0]],
                                world.state.y[b, j] - world.state.y[b, slots[qi, 0]])
                if dist > self.comm_range:
                    continue
                age = (world.state.step[b] - self.plans.shared_start[b, j]) // self.m
                shifted = self.plans.shared_ctrl[b, j][np.minimum(np.arange(h) + age, h - 1)]
                value[qi, k] = shifted
                mask[qi, k] = True
        if not mask.any():
            return None
        v = torch.as_tensor(value, dtype=torch.float32, device=self.device)
        return Inpaint(self.planner.normalizer.encode(v), torch.as_tensor(mask, device=self.device))

    def _store(self, world, specs, q, owners, ctrl, states, chosen, costs) -> None:
        st = world.state
        ctrl_np = ctrl.detach().cpu().numpy()
        states_np = states.detach().cpu().numpy()
        ch = chosen.cpu().numpy()
        rec = PlanRecord(step=st.step.copy()) if self.record else None
        for qi, (b, _, _, group) in enumerate(specs):
            best = ch[qi]
            rows = range(len(group)) if self.mode == "centralized" else [0]
            frame = q["frame"][qi:qi + 1]
            for r in rows:
                slot = int(q["agent_slot"][qi, r])
                if slot < 0:
                    continue
                self.plans.ctrl[b, slot] = ctrl_np[qi, best, r]
                self.plans.start[b, slot] = st.step[b]
                self.plans.xy[b, slot] = to_world(states_np[qi, best, r][None, :, :2], frame)[0]
                if self._delivered(b):  # broadcast: received v2v_delay later (a newer plan supersedes it)
                    self.plans.sent_ctrl[b, slot] = ctrl_np[qi, best, r]
                    self.plans.sent_start[b, slot] = st.step[b]
                    self.plans.sent_arrival[b, slot] = st.step[b] + int(round(self.v2v_delay / self.dt))
                if rec is not None:
                    rec.plans[(b, slot)] = self.plans.xy[b, slot].copy()
                    cands = to_world(states_np[qi, :, r, :, :2], np.repeat(frame, states_np.shape[1], 0))
                    rec.candidates[(b, slot)] = (cands, costs[qi].copy(), int(best))
                    others = [k for k in range(1, q["agent_slot"].shape[1]) if q["agent_mask"][qi, k]]
                    if others and r == 0:
                        rec.predictions[(b, slot)] = to_world(states_np[qi, best, others][..., :2],
                                                              np.repeat(frame, len(others), 0))
        if rec is not None:
            self.records.append(rec)

    def _delivered(self, b: int) -> bool:
        return self.v2v_loss <= 0 or self.rng.random() >= self.v2v_loss

    def with_sampler(self, **kw) -> DiffusionPolicy:
        """The same policy with other sampler settings (shares the loaded model)."""
        self.scfg = replace(self.scfg, **kw)
        return self
