"""``drivediff experiment platoon``: platoon coordination with classical car-following controllers.

Scenarios (``SCENARIOS``; catalog files in ``scenarios/catalog``):

=========  ===============  ====================================================================================
name       catalog          what happens
=========  ===============  ====================================================================================
braking    platoon          8 vehicles at 100 km/h; the leader brakes at -8 m/s^2 to 50 km/h at t = 5 s
sine       platoon-sine     8 vehicles; the leader's speed oscillates +-10 km/h at 0.2 Hz from t = 5 s
cut-in     platoon-cut-in   a car from the next lane cuts in between the 3rd and 4th follower at t = 1 s
join       platoon-join     the 4th follower opens a gap (t = 1-6 s), a car joins it at t = 15 s and then
                            drives with the platoon's controller; the 4th follower closes up behind it
ring       ring             Sugiyama ring: 22 vehicles on 230 m, IDM with noise; the method drives
                            ``penetration`` of them (1: the Stern et al. setting, 22: all)
merge      merge            on-ramp merge with inflows; a ``share`` of the main-road vehicles is equipped
                            with the method (each vehicle decided once, by its id, when first on a main lane)
=========  ===============  ====================================================================================

Methods (``METHODS``, a registry: name -> :class:`Method`): ``idm`` (human drivers, the baseline), ``acc``
(Milanes & Shladover), ``cacc`` (Ploeg, V2V with delay and packet loss). The platoon members are placed at
the method's equilibrium spacing for the cell's time gap (overrides of the catalog file's ``vehicles``), so
every run starts in steady state and only the manoeuvre disturbs it.

Sweep: methods x scenarios x time gap h x V2V delay x packet loss over seeds, where it makes sense: IDM has
no time gap, ACC no V2V. On ``braking`` and ``sine`` (``grid_scenarios``) CACC runs the full h x delay x
loss grid; on the others a one-at-a-time sweep around the nominal point (h 0.6 s, delay 0.1 s, no loss: the
setting of the issue's planner target). Every world of a scenario gets the same seed whatever the method
(paired comparisons).

Per world (``experiments.platoon_metrics``): string stability (amplification ratios of acceleration, speed
deviation and spacing error in L2 and L-inf along the platoon, max and head-to-tail; ``string_stable``:
max L2 ratio of acceleration <= 1 and no collision), min gap, min TTC, collisions, RMS / max jerk, mean
speed, speed spread across vehicles, throughput (Edie flow; crossings per hour on the merge), tractive
energy per vehicle-km. The theory section gives the frequency-domain h_min of CACC (``platoon_theory``).

Writes RUN/config.json, RUN/cells/*.json (resumable), RUN/runs.csv (one row per world), RUN/metrics.json
(means with 95% t-intervals over seeds), RUN/plots/*.png and RUN/report.md.

Adding a method (e.g. the diffusion planner with communication): add a :class:`Method` to ``METHODS`` in
this module (worker processes import this module, so an entry registered elsewhere must be registered at
import time of a module this one imports)::

    METHODS["diffusion-comm"] = Method(
        name="diffusion-comm", description="diffusion planner, communication mode",
        axes=("time_gap", "delay", "loss"),
        vehicle=lambda ctx, driver: {"controlled": True, "behavior": "idm", "idm": driver["idm"],
                                     "mobil": {"enabled": False}},
        gap=constant_time_gap,              # placement and spacing error: r + h v
        policy=make_diffusion_policy,       # (world, slots, ctx) -> a Policy driving ``slots``
        adopt=None)                         # joiners / merge vehicles stay human-driven
        # uses_checkpoint=True (the default): its cells record ctx.checkpoint and its digest; False for a
        # method that never loads the planner, whose cells then survive a new checkpoint

Nothing else changes: cells, metrics, plots and the report pick the method up by name. ``vehicle`` gives the
scenario fields of the vehicles the method drives (marking them ``controlled`` makes them the world's
controlled slots, which a planner policy takes over in ``reset``); ``policy`` returns the policy that drives
``slots`` (None: the in-kernel behaviour set by ``vehicle`` drives them); ``adopt`` (optional) hands a
vehicle to the method during a run (the joiner, equipped merge vehicles). The V2V settings of the cell are
in the world (``world.params.v2v_delay_steps``, ``v2v_loss``) and in ``ctx``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from drivediff.agents.platoon import ACCPolicy, CACCPolicy, CCParams, IDMPolicy, write_cc_params
from drivediff.errors import DrivediffError
from drivediff.experiments import platoon_metrics as pm
from drivediff.experiments.runner import (
    Cell,
    cell_seed,
    check_backend,
    checkpoint_digest,
    find_cell,
    run_cells,
    t95,
    write_json,
)
from drivediff.io import atomic_write
from drivediff.sim import Behavior
from drivediff.sim import layout as L

AXES = ("time_gap", "delay", "loss")


# ---------------------------------------------------------------------------------------------- context
@dataclass(frozen=True)
class CellContext:
    """What a method needs to configure one cell."""

    time_gap: float = 0.6  # h [s] (methods without a time gap ignore it)
    delay: float = 0.0  # V2V delay [s]
    loss: float = 0.0  # V2V packet loss probability
    standstill: float = 2.0  # r [m]
    kp: float = 0.2
    kd: float = 0.7
    lag: float = 0.5  # actuator lag [s]
    in_kernel: bool = True  # classical controllers as in-kernel behaviours (False: their numpy policies)
    seed: int = 0
    checkpoint: str | None = None  # planner methods: the checkpoint (None: the shipped one)
    kind: str = "platoon"  # the scenario's kind (platoon | ring | merge): the planner's objective follows it

    @property
    def cc(self) -> CCParams:
        return CCParams(self.time_gap, self.standstill, self.kp, self.kd, self.lag)


# ---------------------------------------------------------------------------------------------- methods
def constant_time_gap(speed, fields: dict, ctx: CellContext) -> np.ndarray:
    """Desired bumper gap r + h v of a constant time-gap controller [m]."""
    cc = fields.get("cc", {})
    return cc.get("standstill", ctx.standstill) + cc.get("time_gap", ctx.time_gap) * np.asarray(speed, float)


def idm_gap(speed, fields: dict, ctx: CellContext) -> np.ndarray:
    """IDM equilibrium gap at the given speed [m] (the vehicle's ``idm`` fields; delta must be a number)."""
    idm = fields["idm"]
    v0 = idm["desired_speed"]
    v0 = v0[0] if isinstance(v0, list | tuple) else v0
    delta = idm.get("delta", 4.0)
    delta = delta[0] if isinstance(delta, list | tuple) else delta
    return pm.idm_equilibrium_gap(speed, v0, idm.get("time_gap", 1.5), idm.get("s0", 5.0), delta)


def _cc_vehicle(behavior: str):
    def vehicle(ctx: CellContext, driver: dict) -> dict:
        return {"behavior": behavior, "cc": ctx.cc.overrides(), "idm": {"desired_speed": driver["cruise"]},
                "mobil": {"enabled": False}}

    return vehicle


def _idm_vehicle(ctx: CellContext, driver: dict) -> dict:
    return {"behavior": "idm", "idm": dict(driver["idm"]), "mobil": {"enabled": False}}


def _classic_policy(kind):
    def policy(world, slots, ctx: CellContext):
        if ctx.in_kernel:
            return None  # the scenario overrides made them IDM / ACC / CACC vehicles already
        if kind is IDMPolicy:
            return IDMPolicy(slots, seed=ctx.seed)
        return kind(slots, params=ctx.cc, seed=ctx.seed)

    return policy


def _cc_adopt(behavior: Behavior):
    def adopt(world, policy, b: int, slots, ctx: CellContext) -> None:
        if policy is not None:
            policy.adopt(world, b, slots)
            return
        write_cc_params(world, slots, ctx.cc, worlds=[b])
        world.state.cc_cmd[b, slots] = 0.0
        world.set_behavior(behavior, slots, worlds=[b])

    return adopt


@dataclass(frozen=True)
class Method:
    """A way to drive the platoon vehicles (see the module docstring for how to add one)."""

    name: str
    description: str
    axes: tuple[str, ...]  # which of AXES (time_gap, delay, loss) the method responds to
    vehicle: Callable[[CellContext, dict], dict]  # scenario fields of a vehicle it drives
    gap: Callable  # (speed, vehicle fields, ctx) -> desired bumper gap [m]: placement and spacing error
    policy: Callable  # (world, slots, ctx) -> Policy | None (None: in-kernel behaviour)
    adopt: Callable | None = None  # (world, policy, b, slots, ctx): take over vehicles during a run
    time_gap_fields: tuple[str, str] = ("cc_gap", "cc_standstill")  # state fields of (h, r), for gap opening
    # drives with the planner checkpoint: its cells record the checkpoint's path and digest (a run folder
    # resumed with other weights recomputes them). True unless a method says otherwise: a planner method
    # that forgot the flag would otherwise run the shipped weights instead of --checkpoint
    uses_checkpoint: bool = True

    def __post_init__(self):
        bad = set(self.axes) - set(AXES)
        if bad:
            raise ValueError(f"method {self.name}: unknown axes {sorted(bad)} (choose from {AXES})")


# weight of the spacing objective r + h v in the planner's guidance (against collision 10, road 5): the
# platoon objective is a guidance cost, not a controller coded into the planner
PLATOON_GAP_WEIGHT = 4.0
# the ring road's objective (jam absorption, guidance costs as well), after Stern et al.'s PI controller with
# saturation: hold the vehicle's own speed averaged over 30 s, plus up to 1 m/s more while the gap ahead is
# open (7-30 m), the leader's speed instead within 4-6 m of it (the saturation), and let the gap breathe between
# r + h v and 45 m instead of copying the leader's swings.
# Measured before (torch guidance costs; 375 s, 3 worlds, speed spread after the 75 s warm-up, against
# all-IDM 2.77 m/s at 2.16 m/s mean speed) with the leader's average speed as the cruise speed and weight 3:
# the platoon set point alone 2.33-2.65; a 25 m band 2.04-2.25 (mean 2.34); 35 m 1.26-1.33 (1.65); 45 m
# 1.08-1.12 (1.44): the wider the band, the smaller the spread and the slower the ring. Around a ring the
# leader's average speed follows the planner vehicle's own slowdown back to it, and a stronger pull to it
# made the ring slower still (weight 10: 1.34-1.40 m/s); the own average with the catch-up term holds the
# ring near its IDM speed (README, docs/platoon.md)
RING_OBJECTIVE = {"gap_max": 45.0, "w_cruise": 10.0, "w_smooth": 0.2, "cruise_reference": "own", "cruise_catch": 1.0,
                  "cruise_follow_gap": 4.0, "cruise_follow_band": 2.0}


def _planner_vehicle(ctx: CellContext, driver: dict) -> dict:
    """A vehicle the planner drives: a controlled slot (IDM only until the policy takes it over)."""
    return {"controlled": True, "behavior": "idm", "idm": {"desired_speed": driver["cruise"]},
            "mobil": {"enabled": False}}


def _planner_policy(mode: str):
    def policy(world, slots, ctx: CellContext):
        from drivediff.agents.diffusion import DiffusionPolicy
        from drivediff.planner.guidance import GuidanceConfig

        # a single 4 m lane leaves 1 m either side of a 2 m car: the default 0.1 m off-road tolerance made 23% of
        # the plans at 28 m/s infeasible (emergency braking); 0.5 m keeps the hard check for real excursions.
        # A plan that only leaves the road is replaced by the least-leaving candidate, not a brake (road_fallback:
        # on the ring every brake was of this kind and each started a wave)
        guidance = GuidanceConfig(w_gap=PLATOON_GAP_WEIGHT, time_gap=ctx.time_gap, standstill=ctx.standstill,
                                  offroad_tol=0.5, road_fallback=True,
                                  **(RING_OBJECTIVE if ctx.kind == "ring" else {}))
        # the planner's default sampling (10 steps, 4 candidates): 5 steps and 2 candidates left the leader
        # braking scenario without a feasible candidate 20 times in 3 worlds, and each emergency brake
        # amplified down the platoon (gamma 0.99-1.16 against 0.97-0.99)
        return DiffusionPolicy(ctx.checkpoint, mode=mode, v2v_delay=ctx.delay, v2v_loss=ctx.loss, guidance=guidance,
                               seed=ctx.seed)

    return policy


METHODS: dict[str, Method] = {
    "idm": Method("idm", "human drivers: Intelligent Driver Model", (), _idm_vehicle, idm_gap,
                  _classic_policy(IDMPolicy), None, ("time_gap", "s0"), uses_checkpoint=False),
    "acc": Method("acc", "ACC, constant time gap (Milanes & Shladover)", ("time_gap",), _cc_vehicle("acc"),
                  constant_time_gap, _classic_policy(ACCPolicy), _cc_adopt(Behavior.ACC), uses_checkpoint=False),
    "cacc": Method("cacc", "CACC (Ploeg), predecessor's command over V2V", ("time_gap", "delay", "loss"),
                   _cc_vehicle("cacc"), constant_time_gap, _classic_policy(CACCPolicy), _cc_adopt(Behavior.CACC),
                   uses_checkpoint=False),
    # the shipped diffusion planner with the spacing objective as a guidance cost (not in the default sweep:
    # --methods idm,cacc,diffusion,diffusion-comm)
    "diffusion": Method("diffusion", "diffusion planner, decentralised, spacing guidance r + h v", ("time_gap",),
                        _planner_vehicle, constant_time_gap, _planner_policy("decentralized"), None),
    "diffusion-comm": Method("diffusion-comm", "diffusion planner, shared plans over V2V, spacing guidance",
                             ("time_gap", "delay", "loss"), _planner_vehicle, constant_time_gap,
                             _planner_policy("communication"), None),
}


def register_method(method: Method) -> None:
    """Add (or replace) a method of the sweep."""
    METHODS[method.name] = method


# -------------------------------------------------------------------------------------------- scenarios
# human drivers of the platoon scenarios (IDM method): platoon.yaml's drivers, delta fixed so that the
# equilibrium spacing is known before the draw
PLATOON_HUMAN = {"desired_speed": 33.0, "time_gap": 1.5, "s0": 5.0, "a": 3.0, "b": 5.0, "delta": 4.0}


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    catalog: str
    kind: str  # platoon | ring | merge
    description: str
    event: str = ""  # "", "cut-in", "join"


SCENARIOS: dict[str, ScenarioSpec] = {s.name: s for s in (
    ScenarioSpec("braking", "platoon", "platoon", "leader brakes at -8 m/s^2 from 100 to 50 km/h at t = 5 s"),
    ScenarioSpec("sine", "platoon-sine", "platoon", "leader speed +-10 km/h at 0.2 Hz around 100 km/h"),
    ScenarioSpec("cut-in", "platoon-cut-in", "platoon", "a car cuts in behind the 3rd follower at t = 1 s",
                 "cut-in"),
    ScenarioSpec("join", "platoon-join", "platoon", "the 4th follower opens a gap, a car joins at t = 15 s",
                 "join"),
    ScenarioSpec("ring", "ring", "ring", "Sugiyama ring, 22 vehicles on 230 m, IDM with noise"),
    ScenarioSpec("merge", "merge", "merge", "on-ramp merge with inflows; a share of equipped vehicles"),
)}
JOIN_OPEN_START = 1.0  # [s] the gap-opening follower starts widening its time gap
JOIN_OPEN_RAMP = 5.0  # [s] ... linearly over this long
MERGE_CHECK_EVERY = 10  # steps between equipping new merge vehicles
MERGE_X_REF_AFTER = 100.0  # [m] throughput counted this far past the end of the acceleration lane


@dataclass
class Layout:
    """The vehicles of a built world: slots (same in every world) and their roles."""

    overrides: dict
    method_slots: np.ndarray  # vehicles the method drives from the start
    string: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # platoon order for ratios
    member_fields: list = field(default_factory=list)  # scenario fields of string[1:] (spacing error)
    joiner: int = -1
    opener: int = -1
    ring_length: float = 0.0
    adopt_lanes: tuple = ()


def _slots_of(vehicles: list[dict]) -> np.ndarray:
    """Slot of each entry of a ``vehicles`` list after reset (controlled vehicles take the first slots)."""
    ctrl = np.array([bool(v.get("controlled", False)) for v in vehicles])
    order = np.argsort(~ctrl, kind="stable")
    slots = np.empty(len(vehicles), np.int64)
    slots[order] = np.arange(len(vehicles))
    return slots


def _dump_vehicles(cfg) -> list[dict]:
    return [v.model_dump(mode="python") for v in cfg.vehicles]


def platoon_layout(spec: ScenarioSpec, method: Method, ctx: CellContext) -> Layout:
    """Re-place the catalog file's platoon at the method's equilibrium spacing; other vehicles keep their
    place relative to the two platoon vehicles around them."""
    from drivediff.scenarios import load_scenario

    cfg = load_scenario(spec.catalog)
    vehicles = _dump_vehicles(cfg)
    lead_i = next(i for i, v in enumerate(vehicles) if v["behavior"] == "profile")
    lane = vehicles[lead_i]["lane"]
    chain = [lead_i] + sorted((i for i, v in enumerate(vehicles) if v["lane"] == lane and i != lead_i),
                              key=lambda i: -vehicles[i]["s"])
    extras = [i for i in range(len(vehicles)) if i not in chain]
    old_s = {i: vehicles[i]["s"] for i in range(len(vehicles))}
    limit = cfg.road.speed_limit
    driver = {"idm": PLATOON_HUMAN, "cruise": limit}
    fields = method.vehicle(ctx, driver)
    new_s = {lead_i: old_s[lead_i]}
    for prev, i in zip(chain[:-1], chain[1:], strict=True):
        v = vehicles[i]
        gap = float(method.gap(v["speed"], fields, ctx))
        if not math.isfinite(gap):
            raise DrivediffError(f"{method.name}: no equilibrium spacing at {v['speed']} m/s on {spec.name}")
        new_s[i] = new_s[prev] - 0.5 * (vehicles[prev]["size"]["length"] + v["size"]["length"]) - gap
        vehicles[i] = {**v, **fields}
    for x in extras:  # same fraction of the way between the same two platoon vehicles
        k = next((k for k in range(len(chain) - 1) if old_s[chain[k]] >= old_s[x] >= old_s[chain[k + 1]]), None)
        if k is None:
            ref = chain[-1] if old_s[x] < old_s[chain[-1]] else chain[0]
            new_s[x] = new_s[ref] + old_s[x] - old_s[ref]
        else:
            a, b = chain[k], chain[k + 1]
            frac = (old_s[a] - old_s[x]) / max(old_s[a] - old_s[b], 1e-9)
            new_s[x] = new_s[a] - frac * (new_s[a] - new_s[b])
    shift = max(0.0, 50.0 - min(new_s.values()))  # keep the tail on the road
    for i, v in enumerate(vehicles):
        v["s"] = round(new_s[i] + shift, 4)
    slots = _slots_of(vehicles)
    method_slots = slots[chain[1:]]
    lay = Layout(overrides={"vehicles": vehicles}, method_slots=method_slots)
    members = list(chain[1:])
    if spec.event in ("cut-in", "join") and extras:
        x = extras[0]
        k = next(k for k in range(len(chain) - 1) if new_s[chain[k]] >= new_s[x] >= new_s[chain[k + 1]] - 1e-6)
        behind = chain[k + 1:]
        # the string starts where the disturbance enters: the follower the intruder lands in front of, or
        # the follower that opens the gap for the joiner
        lay.string = slots[behind]
        lay.member_fields = [fields] * (len(behind) - 1)
        if spec.event == "join":
            lay.joiner, lay.opener = int(slots[x]), int(slots[behind[0]])
    else:
        lay.string = slots[chain]
        lay.member_fields = [fields] * len(members)
    return lay


def ring_layout(spec: ScenarioSpec, method: Method, ctx: CellContext, penetration: int) -> Layout:
    """The ring's vehicles as an explicit list (evenly spaced at rest); ``penetration`` of them, spread
    evenly, take the method's fields, the others keep the file's drivers."""
    from drivediff.scenarios import load_scenario

    cfg = load_scenario(spec.catalog)
    tr = cfg.traffic
    n = tr.count
    length = cfg.road.length
    human = {"behavior": "idm", "idm": tr.idm.model_dump(mode="python"), "mobil": tr.mobil.model_dump(mode="python")}
    k = n if method.name == "idm" else min(max(int(penetration), 0), n)
    chosen = set(np.round(np.arange(k) * n / max(k, 1)).astype(int).tolist()) if k else set()
    fields = method.vehicle(ctx, {"idm": human["idm"], "cruise": cfg.road.speed_limit})
    vehicles = []
    for i in range(n):
        base = {"lane": "ring", "s": length * i / n, "speed": tr.speed[0]}
        vehicles.append({**base, **(fields if i in chosen else human)})
    slots = _slots_of(vehicles)
    return Layout(overrides={"vehicles": vehicles, "traffic": {"count": 0}},
                  method_slots=np.sort(slots[sorted(chosen)]), ring_length=length)


def merge_layout(spec: ScenarioSpec, method: Method, ctx: CellContext) -> Layout:
    return Layout(overrides={"controlled": {"count": 0}}, method_slots=np.zeros(0, np.int64))


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class PlatoonConfig:
    """The sweep. Times in seconds, speeds in m/s."""

    scenarios: tuple[str, ...] = ("braking", "sine", "cut-in", "join", "ring", "merge")
    methods: tuple[str, ...] = ("idm", "acc", "cacc")
    time_gaps: tuple[float, ...] = (0.3, 0.6, 0.9, 1.2, 1.5)  # h [s]
    delays: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)  # V2V delay [s]
    losses: tuple[float, ...] = (0.0, 0.25, 0.5)  # packet loss probability
    grid_scenarios: tuple[str, ...] = ("braking", "sine")  # full h x delay x loss grid here
    nominal_time_gap: float = 0.6
    nominal_delay: float = 0.1
    nominal_loss: float = 0.0
    seeds: int = 5  # worlds per cell
    dt: float = 0.1  # simulation step [s]
    standstill: float = 2.0  # r [m]
    kp: float = 0.2
    kd: float = 0.7
    lag: float = 0.5  # actuator lag [s] (Plexe)
    ring_penetration: tuple[int, ...] = (1, 22)  # vehicles of 22 the method drives on the ring
    ring_duration: float = 375.0  # [s] (Flow: 750 + 3000 steps)
    ring_warmup: float = 75.0  # [s] excluded from the ring metrics
    merge_share: float = 0.5  # share of equipped main-road vehicles on the merge
    merge_duration: float = 240.0  # [s]
    merge_warmup: float = 30.0  # [s]
    in_kernel: bool = True  # classical controllers in-kernel (False: their numpy policies; same numbers)
    checkpoint: str | None = None  # planner methods: the checkpoint (None: the shipped one)
    seed: int = 0
    quick: bool = False

    def __post_init__(self):
        for names, allowed, what in ((self.scenarios, SCENARIOS, "scenario"), (self.methods, METHODS, "method"),
                                     (self.grid_scenarios, SCENARIOS, "grid scenario")):
            bad = [n for n in names if n not in allowed]
            if bad:
                raise DrivediffError(f"unknown {what} {', '.join(map(repr, bad))}; choose from "
                                     f"{', '.join(allowed)}")
        if not self.scenarios or not self.methods:
            raise DrivediffError("choose at least one scenario and one method")
        if self.seeds < 1:
            raise DrivediffError(f"seeds must be at least 1, got {self.seeds}")
        for h in (*self.time_gaps, self.nominal_time_gap):
            if not h > 0:
                raise DrivediffError(f"time gaps must be > 0 s, got {h}")
        for d in (*self.delays, self.nominal_delay):
            if d < 0:
                raise DrivediffError(f"V2V delays must be >= 0 s, got {d}")
        for p in (*self.losses, self.nominal_loss, self.merge_share):
            if not 0 <= p <= 1:
                raise DrivediffError(f"packet loss and merge share must be in [0, 1], got {p}")
        if not 0 < self.dt <= 0.2:
            raise DrivediffError(f"dt must be in (0, 0.2] s, got {self.dt}")
        if self.ring_warmup >= self.ring_duration or self.merge_warmup >= self.merge_duration:
            raise DrivediffError("warm-up must be shorter than the duration (ring, merge)")

    @classmethod
    def quick_config(cls, **kw) -> PlatoonConfig:
        """A small sweep (well under 2 minutes on 2 cores with a warm Numba cache)."""
        base = {"time_gaps": (0.6, 1.2), "delays": (0.0, 0.2), "losses": (0.0, 0.5), "grid_scenarios": ("braking",),
                "seeds": 2, "ring_penetration": (1,), "ring_duration": 300.0, "ring_warmup": 100.0,
                "merge_duration": 60.0, "merge_warmup": 15.0, "quick": True}
        return cls(**{**base, **kw})


# ------------------------------------------------------------------------------------------------ cells
def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _num(x: float) -> str:
    """A number in a cell key: two decimals, more when needed (keys must stay distinct)."""
    s = f"{x:.2f}"
    return s if float(s) == x else f"{x:.6g}"


def _points(cfg: PlatoonConfig, sc: str, method: Method) -> list[tuple[float | None, float, float]]:
    """(h, delay, loss) points of one scenario and method."""
    ax = method.axes
    hs = cfg.time_gaps if "time_gap" in ax else (None,)
    ds = cfg.delays if "delay" in ax else (0.0,)
    ps = cfg.losses if "loss" in ax else (0.0,)
    hn = cfg.nominal_time_gap if "time_gap" in ax else None
    dn = cfg.nominal_delay if "delay" in ax else 0.0
    pn = cfg.nominal_loss if "loss" in ax else 0.0
    if sc in cfg.grid_scenarios:
        pts = [(h, d, p) for h in hs for d in ds for p in ps]
    else:
        pts = [(h, dn, pn) for h in hs] + [(hn, d, pn) for d in ds] + [(hn, dn, p) for p in ps]
    return list(dict.fromkeys([(hn, dn, pn)] + pts))  # the nominal point first, always


def make_cells(cfg: PlatoonConfig) -> list[Cell]:
    """Every cell of the sweep. A cell's params hold everything its rows depend on: a rerun in the same run
    folder reuses a finished cell exactly when they match. Cells of methods that load the planner checkpoint
    record it and its digest (weights retrained in place); the others do not, so a new checkpoint leaves them be."""
    cells = []
    common = {k: getattr(cfg, k) for k in ("seeds", "dt", "standstill", "kp", "kd", "lag", "ring_duration",
                                           "ring_warmup", "merge_share", "merge_duration", "merge_warmup",
                                           "in_kernel")}
    digest = {}  # the checkpoint's, computed once and only if a method loads it
    for sc in cfg.scenarios:
        spec = SCENARIOS[sc]
        base_seed = cell_seed(cfg.seed, f"world-{sc}")
        for m in cfg.methods:
            method = METHODS[m]
            weights = {}
            if method.uses_checkpoint:
                if "sha256" not in digest:
                    digest["sha256"] = checkpoint_digest(cfg.checkpoint)
                weights = {"checkpoint": cfg.checkpoint, "checkpoint_sha256": digest["sha256"]}
            pens = cfg.ring_penetration if spec.kind == "ring" and m != "idm" else (0,)
            for h, d, p in _points(cfg, sc, method):
                for k in pens:
                    key = f"{sc}__{m}"
                    key += f"__h{_num(h)}" if h is not None else ""
                    key += f"__d{_num(d)}__p{_num(p)}" if "delay" in method.axes or "loss" in method.axes else ""
                    key += f"__k{k}" if spec.kind == "ring" and m != "idm" else ""
                    nominal = (h in (None, cfg.nominal_time_gap) and d == (cfg.nominal_delay if "delay" in
                               method.axes else 0.0) and p == (cfg.nominal_loss if "loss" in method.axes else 0.0))
                    cells.append(Cell(key, {"scenario": sc, "method": m, "time_gap": h, "delay": d, "loss": p,
                                            "penetration": k, "base_seed": base_seed, "trace": bool(nominal),
                                            **common, **weights}))
    return cells


# -------------------------------------------------------------------------------------------- rollouts
def _context(p: dict, seed: int) -> CellContext:
    return CellContext(time_gap=p["time_gap"] if p["time_gap"] is not None else 0.6, delay=p["delay"],
                       loss=p["loss"], standstill=p["standstill"], kp=p["kp"], kd=p["kd"], lag=p["lag"],
                       in_kernel=p["in_kernel"], seed=seed, checkpoint=p.get("checkpoint"),
                       kind=SCENARIOS[p["scenario"]].kind)


def build(p: dict, seed: int):
    """(world, layout, method, ctx, steps) of a cell, reset."""
    from drivediff.sim import World

    spec = SCENARIOS[p["scenario"]]
    method = METHODS[p["method"]]
    ctx = _context(p, seed)
    if spec.kind == "platoon":
        lay = platoon_layout(spec, method, ctx)
        duration = None
    elif spec.kind == "ring":
        lay = ring_layout(spec, method, ctx, p["penetration"])
        duration = p["ring_duration"]
    else:
        lay = merge_layout(spec, method, ctx)
        duration = p["merge_duration"]
    ov = {**lay.overrides, "dt": p["dt"], "sim": {"v2v_delay": ctx.delay, "v2v_loss": ctx.loss}}
    if duration is not None:
        ov["duration"] = duration
    world = World(spec.catalog, num_worlds=p["seeds"], overrides=ov)
    world.reset(seed=[p["base_seed"] + k for k in range(p["seeds"])])
    if spec.kind == "merge":
        lay.adopt_lanes = tuple(i for i, n in enumerate(world.road.lane_names) if n.startswith("main"))
    return world, lay, method, ctx, world.scenario.num_steps


def rollout(world, policy, steps: int, hook=None, every: int = 1) -> dict:
    """Record ``steps`` steps: ``World.run`` chunks when no policy drives (the fast path), else step by step.

    ``hook(world, k)`` runs before step k, every ``every`` steps, or at the step it returns (an int)."""
    if policy is None:
        parts = []
        k0 = 0
        while k0 < steps:
            nxt = steps
            if hook is not None:
                ret = hook(world, k0)
                nxt = min(steps, ret if ret is not None else k0 + every)
            parts.append(world.run(max(nxt - k0, 1), record=True))
            k0 = max(nxt, k0 + 1)
        return {k: np.concatenate([q[k] for q in parts], axis=0 if k == "t" else 1) for k in parts[0]}
    rows = {k: [] for k in L.LOG_FIELDS}
    t0 = int(world.state.step[0])
    due = 0
    for k in range(steps):
        if hook is not None and k >= due:
            ret = hook(world, k)
            due = ret if ret is not None else k + every
        world.step(policy.act(world))
        for name in L.LOG_FIELDS:
            rows[name].append(getattr(world.state, name).copy())
    out = {k: np.stack(v, axis=1) for k, v in rows.items()}
    out["t"] = (t0 + 1 + np.arange(steps)) * world.dt
    return out


class JoinEvents:
    """The join manoeuvre: the follower behind the gap widens its time gap (h -> 2h + (L + r) / v over
    ``JOIN_OPEN_RAMP`` s from ``JOIN_OPEN_START``); once the joiner is its leader, it returns to h and the
    joiner is handed to the method (``Method.adopt``)."""

    def __init__(self, world, lay: Layout, method: Method, policy, ctx: CellContext):
        self.lay, self.method, self.policy, self.ctx = lay, method, policy, ctx
        st = world.state
        f_h, f_r = method.time_gap_fields
        o = lay.opener
        self.h0 = getattr(st, f_h)[:, o].copy()
        v = np.maximum(st.speed[:, o], 1.0)
        self.h_open = 2.0 * self.h0 + (st.length[:, lay.joiner] + getattr(st, f_r)[:, o]) / v
        self.done = np.zeros(world.num_worlds, bool)
        dt = world.dt
        self.open_end = int(math.ceil((JOIN_OPEN_START + JOIN_OPEN_RAMP) / dt))
        change = [v.lane_change_at for v in world.config.vehicles if v.lane_change_at is not None]
        self.watch_from = int((min(change) if change else 0.0) / dt)

    def __call__(self, world, k: int) -> int:
        """Update the opener's time gap before step k; returns the next step that needs a call."""
        st = world.state
        lay = self.lay
        h_field = getattr(st, self.method.time_gap_fields[0])
        frac = min(max((k * world.dt - JOIN_OPEN_START) / JOIN_OPEN_RAMP, 0.0), 1.0)
        for b in range(world.num_worlds):
            if self.done[b]:
                continue
            if st.leader[b, lay.opener] == lay.joiner and st.lane[b, lay.joiner] == st.lane[b, lay.opener]:
                h_field[b, lay.opener] = self.h0[b]
                if self.method.adopt is not None:
                    self.method.adopt(world, self.policy, b, np.array([lay.joiner]), self.ctx)
                self.done[b] = True
            else:
                h_field[b, lay.opener] = self.h0[b] + frac * (self.h_open[b] - self.h0[b])
        if k < self.open_end or (k >= self.watch_from and not self.done.all()):
            return k + 1
        return self.watch_from if k < self.watch_from else 1 << 60


class MergeEquipping:
    """Hand each vehicle on a main lane to the method with probability ``share``, decided once per vehicle id
    (the same vehicles are equipped whatever the method: the draw depends on the world's seed and the id)."""

    def __init__(self, world, lay: Layout, method: Method, policy, ctx: CellContext, share: float):
        self.lay, self.method, self.policy, self.ctx, self.share = lay, method, policy, ctx, share
        self.decided = [set() for _ in range(world.num_worlds)]
        self.equipped = np.zeros(world.num_worlds, np.int64)
        self.seeds = world.seeds

    def __call__(self, world, k: int) -> None:
        st = world.state
        on_main = np.isin(st.lane, self.lay.adopt_lanes) & st.valid & (st.target_lane == st.lane) & \
            (st.behavior == Behavior.IDM)
        for b in range(world.num_worlds):
            slots = []
            for i in np.flatnonzero(on_main[b]):
                vid = int(st.vid[b, i])
                if vid in self.decided[b]:
                    continue
                self.decided[b].add(vid)
                if np.random.default_rng([int(self.seeds[b]), vid]).random() < self.share:
                    slots.append(i)
            if slots:
                self.method.adopt(world, self.policy, b, np.array(slots), self.ctx)
                self.equipped[b] += len(slots)


def _rollout_cell(p: dict, seed: int):
    """Run one cell's worlds: (world, layout, method, ctx, policy, recording, equipping hook, initial
    snapshots per world)."""
    world, lay, method, ctx, steps = build(p, seed)
    spec = SCENARIOS[p["scenario"]]
    policy = method.policy(world, lay.method_slots, ctx)
    if policy is not None:
        policy.reset(world)
    hook, every, equip = None, 1, None
    if spec.event == "join":
        hook = JoinEvents(world, lay, method, policy, ctx)
    elif spec.kind == "merge" and method.adopt is not None and p["merge_share"] > 0:
        hook = equip = MergeEquipping(world, lay, method, policy, ctx, p["merge_share"])
        every = MERGE_CHECK_EVERY
    initial = [world.snapshot(b) for b in range(world.num_worlds)]
    rec = rollout(world, policy, steps, hook, every)
    return world, lay, method, ctx, policy, rec, equip, initial


def platoon_cell(cell: Cell, seed: int) -> list[dict]:
    """Run one cell (its seeds as a batch of worlds); one row per world."""
    p = cell.params
    world, lay, method, ctx, policy, rec, equip, _ = _rollout_cell(p, seed)
    spec = SCENARIOS[p["scenario"]]
    rows = []
    for b in range(world.num_worlds):
        row = {"scenario": p["scenario"], "method": p["method"], "time_gap": p["time_gap"], "delay": p["delay"],
               "loss": p["loss"], "penetration": p["penetration"], "world": b, "seed": int(world.seeds[b])}
        if spec.kind == "platoon":
            row.update(platoon_world_metrics(rec, b, lay, method, ctx, world.dt))
        elif spec.kind == "ring":
            row.update(ring_world_metrics(rec, b, lay, world.dt, p["ring_warmup"]))
        else:
            row.update(merge_world_metrics(rec, b, world, p["merge_warmup"]))
            row["equipped"] = int(equip.equipped[b]) if equip is not None else 0
        rows.append(row)
    if p.get("trace"):
        rows[0]["trace"] = _trace(rec, lay, method, ctx, spec, world.dt, p)
    return rows


# --------------------------------------------------------------------------------------------- metrics
def _string_signals(rec, b, lay: Layout, method: Method, ctx: CellContext):
    s = lay.string
    acc = rec["accel"][b][:, s]
    spd = rec["speed"][b][:, s]
    gap = rec["gap"][b][:, s[1:]]
    desired = np.stack([method.gap(spd[:, 1 + i], f, ctx) for i, f in enumerate(lay.member_fields)], axis=1) \
        if len(s) > 1 else np.zeros((acc.shape[0], 0))
    return acc, spd - spd[:1], gap - desired


def platoon_world_metrics(rec, b, lay: Layout, method: Method, ctx: CellContext, dt: float) -> dict:
    acc, dv, err = _string_signals(rec, b, lay, method, ctx)
    out = {}
    for name, z in (("accel", acc), ("speed", dv), ("spacing", err)):
        ss = pm.string_stability(z, dt)
        out[f"gamma_max_l2_{name}"] = ss["max_l2"]
        out[f"gamma_max_linf_{name}"] = ss["max_linf"]
        out[f"head_to_tail_l2_{name}"] = ss["head_to_tail_l2"]
        out[f"head_to_tail_linf_{name}"] = ss["head_to_tail_linf"]
        out[f"gamma_l2_{name}"] = ss["gamma_l2"]
    valid = rec["valid"][b]
    out.update(pm.safety(rec["gap"][b], rec["ttc"][b], rec["collided"][b], valid, rec["vid"][b]))
    out["string_stable"] = bool(out["gamma_max_l2_accel"] <= 1.0 and out["collisions"] == 0)
    drive = np.union1d(lay.method_slots, [lay.joiner] if lay.joiner >= 0 else []).astype(np.int64)
    out.update(pm.comfort(rec["accel"][b][:, drive], dt))
    out["mean_speed"] = pm.mean_speed(rec["speed"][b], valid)
    out["speed_spread"] = pm.speed_spread(rec["speed"][b][:, lay.string])
    x = rec["x"][b][:, lay.string]
    length = np.abs(x[:, 0] - x[:, -1]) + rec["length"][b][:, lay.string[[0, -1]]].mean(axis=1)
    out["throughput"] = pm.edie_flow(rec["speed"][b][:, lay.string], length)
    out["energy"] = pm.energy_per_km(rec["speed"][b][:, drive], rec["accel"][b][:, drive], dt)
    return out


def _ring_position(rec, b) -> np.ndarray:
    """(T, N) unwrapped distance travelled along the ring from the bottom point, counter-clockwise [m]."""
    x, y = rec["x"][b], rec["y"][b]
    radius = np.sqrt(x * x + y * y).mean()
    ang = np.unwrap(np.arctan2(y, x) + 0.5 * math.pi, axis=0)
    return ang * radius


def ring_world_metrics(rec, b, lay: Layout, dt: float, warmup: float) -> dict:
    w0 = int(round(warmup / dt))
    spd = rec["speed"][b][w0:]
    valid = rec["valid"][b][w0:]
    out = {"mean_speed": pm.mean_speed(spd, valid), "speed_spread": pm.speed_spread(spd, valid),
           "stopped_share": float((spd[valid] < 1.0).mean()) if valid.any() else math.nan,
           "throughput": pm.edie_flow(spd, lay.ring_length, valid),
           "energy": pm.energy_per_km(spd, rec["accel"][b][w0:], dt, valid)}
    out.update(pm.safety(rec["gap"][b][w0:], rec["ttc"][b][w0:], rec["collided"][b][w0:], valid, rec["vid"][b][w0:]))
    out.update(pm.comfort(rec["accel"][b][w0:], dt, valid))
    out["string_stable"] = None
    return out


def merge_world_metrics(rec, b, world, warmup: float) -> dict:
    dt = world.dt
    w0 = int(round(warmup / dt))
    valid = rec["valid"][b][w0:]
    vid = rec["vid"][b][w0:]
    spd = rec["speed"][b][w0:]
    cfg = world.config.road
    x_ref = cfg.before + cfg.merge_length + MERGE_X_REF_AFTER
    hours = (rec["valid"][b].shape[0] - w0) * dt / 3600.0
    same = valid[1:] & valid[:-1] & (vid[1:] == vid[:-1])
    out = {"mean_speed": pm.mean_speed(spd, valid), "speed_spread": pm.speed_spread(spd, valid),
           "throughput": pm.crossings(rec["x"][b][w0:], valid, x_ref) / hours,
           "energy": pm.energy_per_km(spd, rec["accel"][b][w0:], dt, valid)}
    out.update(pm.safety(rec["gap"][b][w0:], rec["ttc"][b][w0:], rec["collided"][b][w0:], valid, vid))
    out.update(pm.comfort(rec["accel"][b][w0:], dt, same))
    out["string_stable"] = None
    return out


def _trace(rec, lay: Layout, method: Method, ctx: CellContext, spec: ScenarioSpec, dt: float, p: dict) -> dict:
    """Time series of world 0 for the plots (rounded, and thinned on the ring)."""
    if spec.kind == "platoon":
        acc, dv, err = _string_signals(rec, 0, lay, method, ctx)
        return {"t": np.round(rec["t"], 3).tolist(), "accel": np.round(acc, 3).tolist(),
                "spacing": np.round(np.where(np.isfinite(err), err, np.nan), 3).tolist()}
    if spec.kind == "ring":
        every = max(1, int(round(0.5 / dt)))
        pos = np.mod(_ring_position(rec, 0), lay.ring_length)[::every]
        return {"t": np.round(rec["t"][::every], 2).tolist(), "pos": np.round(pos, 1).tolist(),
                "speed": np.round(rec["speed"][0][::every], 2).tolist(),
                "method": [bool(method.name != "idm" and i in set(lay.method_slots.tolist()))
                           for i in range(pos.shape[1])],
                "ring_length": lay.ring_length}
    return {}


# --------------------------------------------------------------------------------------------- summary
SCALARS = ("string_stable", "gamma_max_l2_accel", "gamma_max_linf_accel", "head_to_tail_l2_accel",
           "gamma_max_l2_speed", "gamma_max_l2_spacing", "gamma_max_linf_spacing", "head_to_tail_l2_spacing",
           "collisions", "min_gap", "min_ttc", "jerk_rms", "jerk_max", "mean_speed", "speed_spread", "stopped_share",
           "throughput", "energy", "equipped")


def mean_ci(values) -> dict:
    """Mean and 95% t-interval over seeds (finite values only)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return {"mean": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    m = float(x.mean())
    if x.size < 2:
        return {"mean": m, "ci95": [math.nan, math.nan], "n": 1}
    h = t95(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return {"mean": m, "ci95": [m - h, m + h], "n": int(x.size)}


def theory(cfg: PlatoonConfig) -> dict:
    from drivediff.experiments.platoon_theory import acc_low_frequency_bound, min_time_gap

    out = {"lag": cfg.lag, "kp": cfg.kp, "kd": cfg.kd, "dt": cfg.dt, "cacc_h_min": {}}
    for d in sorted(set(cfg.delays) | {cfg.nominal_delay}):
        out["cacc_h_min"][_fmt(d)] = {
            "continuous": min_time_gap("cacc", d, cfg.lag, cfg.kp, cfg.kd),
            "simulator": min_time_gap("cacc", d, cfg.lag, cfg.kp, cfg.kd, dt=cfg.dt)}
    out["acc_h_min"] = {"continuous": min_time_gap("acc", tau=cfg.lag),
                        "simulator": min_time_gap("acc", tau=cfg.lag, dt=cfg.dt),
                        "low_frequency_bound": acc_low_frequency_bound()}
    return out


def summarize(rows: list[dict], cells: list[Cell], cfg: PlatoonConfig) -> dict:
    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(r["cell"], []).append(r)
    out = {"theory": theory(cfg), "cells": {}}
    for c in cells:
        rs = by_cell.get(c.key, [])
        p = c.params
        entry = {k: p[k] for k in ("scenario", "method", "time_gap", "delay", "loss", "penetration")}
        entry["seeds"] = len(rs)
        entry["metrics"] = {m: mean_ci([r.get(m) for r in rs]) for m in SCALARS if any(r.get(m) is not None
                                                                                          for r in rs)}
        entry["collision_rate"] = float(np.mean([r["collisions"] > 0 for r in rs])) if rs else math.nan
        gam = [r["gamma_l2_accel"] for r in rs if r.get("gamma_l2_accel")]
        if gam and len({len(g) for g in gam}) == 1:
            entry["gamma_l2_accel"] = np.nanmean(np.asarray(gam, float), axis=0).tolist()
        out["cells"][c.key] = entry
    return out


# ---------------------------------------------------------------------------------------------- report
def _v(entry: dict, m: str, digits: int = 2, ci: bool = False) -> str:
    s = entry["metrics"].get(m)
    if s is None or not np.isfinite(s["mean"]):
        return "-"
    txt = f"{s['mean']:.{digits}f}"
    if ci and np.isfinite(s["ci95"][0]):
        txt += f" [{s['ci95'][0]:.{digits}f}, {s['ci95'][1]:.{digits}f}]"
    return txt


def _setting(e: dict) -> str:
    parts = []
    if e["time_gap"] is not None:
        parts.append(f"h {_num(e['time_gap'])}")
    if e["method"] in METHODS and "delay" in METHODS[e["method"]].axes:
        parts.append(f"delay {_num(e['delay'])}")
    if e["method"] in METHODS and "loss" in METHODS[e["method"]].axes:
        parts.append(f"loss {_num(e['loss'])}")
    if e["scenario"] == "ring" and e["method"] != "idm":
        parts.append(f"{e['penetration']}/22")
    return ", ".join(parts) or "-"


def report(metrics: dict, cfg: PlatoonConfig, plots: list[str]) -> str:
    th = metrics["theory"]
    lines = ["# Platoon coordination experiments", "",
             f"{cfg.seeds} seeds (worlds) per cell, dt {cfg.dt} s, CACC gains kp {cfg.kp}, kd {cfg.kd}, actuator lag "
             f"{cfg.lag} s, standstill distance {cfg.standstill} m. Means over seeds, 95% t-intervals in brackets. "
             "gamma: largest per-vehicle L2 amplification ratio of acceleration along the platoon; stable: share "
             "of seeds with gamma <= 1 and no collision.", "",
             "## Theory: smallest string-stable time gap of CACC", "",
             "| V2V delay [s] | h_min continuous [s] | h_min of the simulator's update at dt [s] |", "|---|---|---|"]
    for d, v in th["cacc_h_min"].items():
        lines.append(f"| {d} | {v['continuous']:.3f} | {v['simulator']:.3f} |")
    a = th["acc_h_min"]
    lines += ["", f"ACC (Milanes & Shladover gains, lag {th['lag']} s): h_min {a['continuous']:.2f} s "
              f"(simulator {a['simulator']:.2f} s; low-frequency bound {a['low_frequency_bound']:.2f} s): string "
              "unstable at every time gap of the sweep.", ""]
    cells = metrics["cells"]
    for sc in cfg.scenarios:
        spec = SCENARIOS[sc]
        es = [e for e in cells.values() if e["scenario"] == sc]
        lines += [f"## {sc}: {spec.description}", ""]
        if spec.kind == "platoon":
            lines += ["| method | setting | gamma accel | head-to-tail | gamma spacing | stable | collisions | "
                      "min gap [m] | min TTC [s] | jerk RMS [m/s^3] | throughput [veh/h] | energy [J/kg/km] |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for e in es:
                lines.append(f"| {e['method']} | {_setting(e)} | {_v(e, 'gamma_max_l2_accel', 3, True)} | "
                             f"{_v(e, 'head_to_tail_l2_accel', 3)} | {_v(e, 'gamma_max_l2_spacing', 3)} | "
                             f"{_v(e, 'string_stable')} | {_v(e, 'collisions')} | {_v(e, 'min_gap', 1)} | "
                             f"{_v(e, 'min_ttc', 1)} | {_v(e, 'jerk_rms', 2)} | {_v(e, 'throughput', 0)} | "
                             f"{_v(e, 'energy', 0)} |")
        else:
            extra = "stopped share" if spec.kind == "ring" else "equipped vehicles"
            key = "stopped_share" if spec.kind == "ring" else "equipped"
            lines += [f"| method | setting | mean speed [m/s] | speed spread [m/s] | throughput [veh/h] | {extra} | "
                      "collisions | min gap [m] | min TTC [s] | jerk RMS [m/s^3] | energy [J/kg/km] |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for e in es:
                lines.append(f"| {e['method']} | {_setting(e)} | {_v(e, 'mean_speed', 2, True)} | "
                             f"{_v(e, 'speed_spread', 2, True)} | {_v(e, 'throughput', 0)} | {_v(e, key, 2)} | "
                             f"{_v(e, 'collisions')} | {_v(e, 'min_gap', 1)} | {_v(e, 'min_ttc', 1)} | "
                             f"{_v(e, 'jerk_rms', 2)} | {_v(e, 'energy', 0)} |")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(q).stem}]({q})" for q in plots] + [""]
    lines += ["Throughput: Edie flow of the platoon region (platoon scenarios) or of the ring; vehicles crossing a "
              "point 100 m past the acceleration lane per hour (merge). Energy: positive tractive power per unit mass "
              "(rolling 0.01, drag 3e-4 1/m), per vehicle-km. Spacing error: gap - (r + h v) (IDM: gap - its "
              "equilibrium gap at the current speed)."]
    return "\n".join(lines) + "\n"


def headline(metrics: dict, cfg: PlatoonConfig) -> list[dict]:
    """One line per scenario and method at the nominal point (for the console)."""
    out = []
    for e in metrics["cells"].values():
        m = METHODS.get(e["method"])
        if m is None:
            continue
        nominal = (e["time_gap"] in (None, cfg.nominal_time_gap)
                   and e["delay"] == (cfg.nominal_delay if "delay" in m.axes else 0.0)
                   and e["loss"] == (cfg.nominal_loss if "loss" in m.axes else 0.0)
                   and (e["scenario"] != "ring" or e["method"] == "idm"
                        or e["penetration"] == min(cfg.ring_penetration)))
        if nominal:
            out.append({"scenario": e["scenario"], "method": e["method"], "setting": _setting(e),
                        "gamma": _v(e, "gamma_max_l2_accel", 3), "stable": _v(e, "string_stable"),
                        "collisions": _v(e, "collisions"), "mean speed": _v(e, "mean_speed", 1),
                        "spread": _v(e, "speed_spread", 2)})
    return out


# ------------------------------------------------------------------------------------------------- main
def _write_csv(path: Path, rows: list[dict]) -> None:
    flat = [{k: v for k, v in r.items() if not isinstance(v, list | dict)} for r in rows]
    if not flat:
        return
    names = list(dict.fromkeys(k for r in flat for k in r))

    def write(fh):
        w = csv.DictWriter(fh, fieldnames=names)
        w.writeheader()
        w.writerows(flat)

    atomic_write(path, write, binary=False)


def episode_log(cfg: PlatoonConfig, key: str, world_index: int, path: Path) -> Path:
    """Rerun one cell of a run in this process and write one of its worlds as a log for the replay viewer;
    the cell is deterministic given the run seed and its key."""
    from drivediff.agents.rollout import write_episode_log

    p = find_cell(make_cells(cfg), key, world_index, "seeds").params
    world, _, _, _, policy, rec, _, initial = _rollout_cell(p, cell_seed(cfg.seed, key))
    meta = {"experiment": "platoon", "cell": key, "episode": world_index, "method": p["method"],
            "policy": p["method"]}
    return write_episode_log(path, world, policy, rec, initial[world_index], world_index, meta)


def load_config(run_dir: Path) -> PlatoonConfig:
    """The configuration a run folder was made with (its ``config.json``)."""
    from drivediff.experiments.runner import load_run_config

    return load_run_config(run_dir, PlatoonConfig, "platoon")


def main(cfg: PlatoonConfig, out: Path, workers: int | None = 1, backend: str = "local", progress=None,
         address: str | None = None, plot: bool = True) -> dict:
    """Run (or resume) the sweep in ``out`` and write the run folder; returns the metrics."""
    out = Path(out)
    check_backend(backend)  # before anything is written to the run folder
    cells = make_cells(cfg)
    write_json(out / "config.json", {**asdict(cfg), "cells": len(cells),
                                     "methods_described": {m: METHODS[m].description for m in cfg.methods},
                                     "scenarios_described": {s: asdict(SCENARIOS[s]) for s in cfg.scenarios}})
    # every setting that shapes a cell is in its params (and the run seed): the context only tells the
    # experiments apart
    rows = run_cells(out, cells, platoon_cell, cfg.seed, backend=backend, workers=workers, progress=progress,
                     ray_address=address, context={"experiment": "platoon"})
    traces = {r["cell"]: r.pop("trace") for r in rows if "trace" in r}
    _write_csv(out / "runs.csv", rows)
    metrics = summarize(rows, cells, cfg)
    write_json(out / "metrics.json", metrics)
    plots = []
    if plot:
        from drivediff.experiments.platoon_plots import make_plots

        plots = [str(p.relative_to(out)) for p in make_plots(metrics, traces, cfg, out / "plots")]
    atomic_write(out / "report.md", lambda fh: fh.write(report(metrics, cfg, plots)), binary=False)
    return metrics


__all__ = ["PlatoonConfig", "Method", "METHODS", "SCENARIOS", "CellContext", "register_method", "make_cells",
           "platoon_cell", "main", "summarize", "report", "headline", "mean_ci", "constant_time_gap", "idm_gap"]
