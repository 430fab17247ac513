"""Turn a validated ScenarioConfig into what the simulator needs: road, parameters, inflows, and a
sampler of initial vehicles (all randomness from a numpy Generator passed in)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from drivediff.errors import ScenarioError
from drivediff.scenarios import placement as P
from drivediff.scenarios.builders import BuiltRoad, SpawnLane, build_road
from drivediff.scenarios.schema import (
    CCConfig,
    IDMConfig,
    MOBILConfig,
    ScenarioConfig,
    SizeConfig,
)
from drivediff.sim.state import INFLOW_COLUMNS, ROUTE_LEN, Behavior, Inflow, SimParams, empty_inflow

BEHAVIOR_CODES = {
    "idm": Behavior.IDM,
    "constant_speed": Behavior.CONSTANT_SPEED,
    "controlled": Behavior.EXTERNAL,
    "profile": Behavior.PROFILE,
    "acc": Behavior.ACC,
    "cacc": Behavior.CACC,
}

# per-vehicle fields of an initial placement (arrays of shape (n,), route (n, ROUTE_LEN))
VEHICLE_FIELDS = ("lane", "s", "d", "speed", "behavior", "controlled", "length", "width", "v0", "time_gap",
                  "s0", "a_comf", "b_comf", "delta", "coolness", "noise", "politeness", "lc_gain", "lc_brake",
                  "lc_timer",
                  "lc_force_time", "lc_force_dir", "target_speed", "cc_gap", "cc_standstill", "cc_kp",
                  "cc_kd", "cc_lag")


@dataclass
class _Vehicles:
    rows: list[dict] = field(default_factory=list)
    routes: list[list[int]] = field(default_factory=list)

    def add(self, row: dict, route: list[int]) -> None:
        self.rows.append(row)
        self.routes.append(route)

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows as ``sample_columns`` stacks them: (n, len(VEHICLE_FIELDS)) float64, lanes (n,), routes
        (n, ROUTE_LEN)."""
        n = len(self.rows)
        tab = np.array([[float(r[k]) for k in VEHICLE_FIELDS] for r in self.rows]).reshape(n, len(VEHICLE_FIELDS))
        route = np.full((n, ROUTE_LEN), -1, dtype=np.int64)
        for i, r in enumerate(self.routes):
            route[i, :len(r)] = r[:ROUTE_LEN]
        return tab, np.array([r["lane"] for r in self.rows], dtype=np.int64), route


def _draw(rng: np.random.Generator, rng_pair: tuple[float, float]) -> float:
    lo, hi = rng_pair
    return float(lo if hi <= lo else rng.uniform(lo, hi))


_DEFAULT_CC = CCConfig()  # read only: one instance instead of a pydantic model per vehicle


def _span_cdf(lanes) -> list[float]:
    """Cumulative distribution of the spawn lanes' spans, as ``Generator.choice`` computes it."""
    if not lanes:
        return []
    spans = np.array([sl.s_hi - sl.s_lo for sl in lanes])
    cdf = np.cumsum(spans / spans.sum())
    cdf /= cdf[-1]
    return cdf.tolist()


def _fixed_fields(idm: IDMConfig, mobil: MOBILConfig, size: SizeConfig, cc: CCConfig | None, behavior: int,
                  controlled: bool) -> dict:
    """The fields of a vehicle that its block fixes (everything but speed, v0, delta, timer, lane, s)."""
    cc = cc or _DEFAULT_CC
    return dict(
        behavior=int(behavior), controlled=controlled, length=size.length, width=size.width, time_gap=idm.time_gap,
        s0=idm.s0, a_comf=idm.a, b_comf=idm.b, coolness=idm.coolness, noise=idm.noise,
        politeness=mobil.politeness, lc_gain=mobil.min_gain, lc_brake=mobil.max_braking, lc_force_time=-1.0,
        lc_force_dir=0, cc_gap=cc.time_gap, cc_standstill=cc.standstill, cc_kp=cc.kp, cc_kd=cc.kd, cc_lag=cc.lag,
        d=0.0,
    )


def _driver_row(rng, idm: IDMConfig, mobil: MOBILConfig, size: SizeConfig, cc: CCConfig | None, speed: float,
                behavior: int, controlled: bool, lc_period: float) -> dict:
    """An explicit vehicle's fields; draws v0, delta and the lane-change timer in the order of
    ``placement.place_generated``."""
    row = _fixed_fields(idm, mobil, size, cc, behavior, controlled)
    row["v0"] = _draw(rng, idm.desired_speed) if idm.desired_speed is not None else max(speed, 1.0)
    row["delta"] = _draw(rng, idm.delta)
    row["lc_timer"] = float(rng.uniform(0.0, lc_period)) if mobil.enabled else -math.inf
    row["speed"] = row["target_speed"] = speed
    return row


# VEHICLE_FIELDS columns that place_generated draws, and its output column for each
_RANDOM_COLUMNS = tuple((VEHICLE_FIELDS.index(f), out) for f, out in (
    ("speed", P.OUT_SPEED), ("target_speed", P.OUT_SPEED), ("v0", P.OUT_V0), ("delta", P.OUT_DELTA),
    ("lc_timer", P.OUT_LC_TIMER), ("s", P.OUT_S)))
_CONTROLLED = VEHICLE_FIELDS.index("controlled")
_FIELD_DTYPES = {"lane": np.int64, "behavior": np.int64, "lc_force_dir": np.int64, "controlled": np.bool_}


@dataclass(frozen=True)
class _Generated:
    """The controlled and traffic blocks as ``placement.place_generated`` takes them (see its docstring),
    with ``const`` (2, len(VEHICLE_FIELDS)): each block's fixed fields, and the routes leaving each lane
    (``routes[first[lane] + option]``; the last row of ``routes`` is "no route")."""

    kinds: np.ndarray
    kf: np.ndarray
    ki: np.ndarray
    sp_lane: np.ndarray
    sp_lo: np.ndarray
    sp_hi: np.ndarray
    sp_cdf: np.ndarray
    even_count: int
    n_routes: np.ndarray
    const: np.ndarray
    routes: np.ndarray
    first: np.ndarray


@dataclass(frozen=True)
class CompiledScenario:
    """A scenario ready to simulate. ``sample(rng)`` places the initial vehicles."""

    config: ScenarioConfig
    built: BuiltRoad
    source: str

    @property
    def road(self):
        return self.built.road

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    @cached_property
    def params(self) -> SimParams:
        c = self.config
        return SimParams(dt=c.dt, v_min=-40.0 if c.sim.allow_reverse else 0.0, a_min=-c.sim.max_brake,
                         a_max=c.sim.max_accel, center_gap=c.sim.center_gap, offroad_tol=c.sim.offroad_tol,
                         v2v_loss=c.sim.v2v_loss, v2v_delay_steps=int(round(c.sim.v2v_delay / c.dt)),
                         reserved_slots=self.num_controlled)

    @cached_property
    def num_controlled(self) -> int:
        return self.config.controlled.count + sum(v.controlled for v in self.config.vehicles)

    @cached_property
    def initial_count(self) -> int:
        return self.num_controlled + sum(not v.controlled for v in self.config.vehicles) + \
            self.config.traffic.count

    @cached_property
    def max_vehicles(self) -> int:
        c = self.config
        if c.max_vehicles is not None:
            if c.max_vehicles < self.initial_count:
                raise ScenarioError(f"{self.source}: max_vehicles ({c.max_vehicles}) is below the "
                                    f"{self.initial_count} vehicles placed at reset")
            return c.max_vehicles
        rate = sum(f.rate for f in c.inflows) / 3600.0
        headroom = max(16, int(rate * 120)) if c.inflows else 0
        return max(1, self.initial_count + headroom)

    def _lane(self, name: str, where: str) -> int:
        try:
            return self.road.lane_index(name)
        except KeyError:
            raise ScenarioError(f"{self.source}: {where}: no lane named {name!r}; lanes are "
                                f"{', '.join(self.road.lane_names)}") from None

    def _route(self, start: int, names: tuple[str, ...], where: str) -> list[int]:
        lanes = [self._lane(n, where) for n in names]
        prev = start
        for ln in lanes:
            if ln not in self.road.successors(prev):
                raise ScenarioError(f"{self.source}: {where}: route lane {self.road.lane_names[ln]!r} does "
                                    f"not follow {self.road.lane_names[prev]!r}")
            prev = ln
        if len(lanes) > ROUTE_LEN:
            raise ScenarioError(f"{self.source}: {where}: routes are limited to {ROUTE_LEN} lanes")
        return lanes

    @cached_property
    def inflow(self) -> Inflow:
        c = self.config
        if not c.inflows:
            return empty_inflow()
        rows, lanes, route_start, routes = [], [], [0], []
        for k, fl in enumerate(c.inflows):
            where = f"inflows[{k}]"
            lane = self._lane(fl.lane, where)
            if self.road.predecessors(lane):
                raise ScenarioError(f"{self.source}: {where}: lane {fl.lane!r} has predecessors; inflows enter "
                                    "at the start of a lane without predecessors")
            if fl.rate / 3600.0 * c.dt > 1.0:
                raise ScenarioError(f"{self.source}: {where}: rate {fl.rate} veh/h exceeds one vehicle per step")
            opts = [self._route(lane, r, where) for r in fl.routes] if fl.routes is not None \
                else self.built.routes_from(lane)
            routes += opts
            route_start.append(len(routes))
            v0 = fl.idm.desired_speed if fl.idm.desired_speed is not None else fl.speed
            vals = dict(rate=fl.rate / 3600.0, speed_lo=fl.speed[0], speed_hi=fl.speed[1], v0_lo=v0[0],
                        v0_hi=v0[1], delta_lo=fl.idm.delta[0], delta_hi=fl.idm.delta[1], time_gap=fl.idm.time_gap,
                        s0=fl.idm.s0, a_comf=fl.idm.a, b_comf=fl.idm.b, politeness=fl.mobil.politeness,
                        lc_gain=fl.mobil.min_gain, lc_brake=fl.mobil.max_braking,
                        lane_change=float(fl.mobil.enabled), length=fl.size.length, width=fl.size.width,
                        coolness=fl.idm.coolness)
            rows.append([vals[col] for col in INFLOW_COLUMNS])
            lanes.append(lane)
        arr = np.full((len(routes), ROUTE_LEN), -1, dtype=np.int64)
        for i, r in enumerate(routes):
            arr[i, :len(r)] = r
        return Inflow(f=np.array(rows, dtype=np.float64), lane=np.array(lanes, dtype=np.int64),
                      route_start=np.array(route_start, dtype=np.int64), routes=arr)

    @cached_property
    def profile(self) -> np.ndarray:
        """Speed of PROFILE vehicles at every step (num_steps + 2 values)."""
        c = self.config
        t = np.arange(c.num_steps + 2) * c.dt
        p = c.profile
        if p is None:
            return np.zeros(1)
        if p.type == "sinusoid":
            phase = np.clip(t - p.start, 0.0, None)
            return np.maximum(p.mean + p.amplitude * np.sin(2 * math.pi * p.frequency * phase), 0.0)
        if not p.knots:
            raise ScenarioError(f"{self.source}: profile: 'knots' profiles need at least one knot")
        kt = np.array([k[0] for k in p.knots])
        kv = np.array([k[1] for k in p.knots])
        return np.interp(t, kt, kv)

    # ------------------------------------------------------------------------------------------ placement
    def _spawn_lanes(self, names: tuple[str, ...] | None, where: str) -> list[SpawnLane]:
        areas = self.built.spawn
        if names is None:
            return [sl for v in areas.values() for sl in v]
        out = []
        for n in names:
            if n not in areas:
                raise ScenarioError(f"{self.source}: {where}: unknown spawn area {n!r}; this road has "
                                    f"{', '.join(areas)}")
            out += areas[n]
        return out

    @cached_property
    def _generated(self) -> _Generated:
        """What ``sample`` needs for the controlled and traffic blocks; fixed by the config."""
        c = self.config
        ctrl, traffic = c.controlled, c.traffic
        lc_period = self.params.lc_period
        kinds = []  # 0: controlled block, 1: traffic block, in placement order
        if traffic.placement == "sequential":  # highway-env: each controlled vehicle followed by its share
            per = np.full(max(ctrl.count, 1), traffic.count // max(ctrl.count, 1))
            per[: traffic.count % max(ctrl.count, 1)] += 1
            for q in range(max(ctrl.count, 1)):
                kinds += [0] * (q < ctrl.count) + [1] * int(per[q])
        else:
            kinds = [0] * ctrl.count + [1] * traffic.count
        kf = np.zeros((2, P.NUM_KIND_F))
        ki = np.zeros((2, P.NUM_KIND_I), dtype=np.int64)
        const = np.zeros((2, len(VEHICLE_FIELDS)))
        sp_lane, sp_lo, sp_hi, sp_cdf = [], [], [], []
        for k, (cfg, name) in enumerate(((ctrl, "controlled"), (traffic, "traffic"))):
            lanes = self._spawn_lanes(cfg.spawn, f"{name}.spawn") if cfg.count else []
            if cfg.count and not lanes:
                raise ScenarioError(f"{self.source}: {name}.spawn: no spawn lanes to place {cfg.count} vehicles on")
            spans = [sl.s_hi - sl.s_lo for sl in lanes]
            if cfg.count and (min(spans) < 0.0 or sum(spans) <= 0.0):
                raise ScenarioError(f"{self.source}: {name}.spawn: the spawn lanes leave no room to place vehicles "
                                    f"(spans {', '.join(f'{x:.1f}' for x in spans)} m): the road is too short")
            idm = cfg.idm
            v0 = idm.desired_speed or (0.0, 0.0)
            kf[k, [P.SPEED_LO, P.SPEED_HI, P.V0_LO, P.V0_HI, P.DELTA_LO, P.DELTA_HI]] = [*cfg.speed, *v0, *idm.delta]
            kf[k, [P.LC_PERIOD, P.S0, P.TIME_GAP, P.LENGTH, P.SPACING]] = \
                [lc_period, idm.s0, idm.time_gap, cfg.size.length, cfg.spacing]
            kf[k, P.SEQ_FACTOR] = math.exp(-5.0 / 40.0 * len(lanes))
            if traffic.placement == "sequential":
                mode = P.SEQUENTIAL
            else:
                mode = P.EVEN if traffic.placement == "even" and k == 1 else P.RANDOM
            ki[k] = [idm.desired_speed is not None, cfg.mobil.enabled, mode, len(sp_lane), len(sp_lane) + len(lanes)]
            sp_lane += [sl.lane for sl in lanes]
            sp_lo += [sl.s_lo for sl in lanes]
            sp_hi += [sl.s_hi for sl in lanes]
            sp_cdf += _span_cdf(lanes)
            row = _fixed_fields(idm, cfg.mobil, cfg.size, getattr(cfg, "cc", None), BEHAVIOR_CODES[cfg.behavior],
                                k == 0)
            const[k] = [row.get(f, 0.0) for f in VEHICLE_FIELDS]
        num_lanes = self.road.num_lanes
        opts = [self.built.routes_from(ln) for ln in range(num_lanes)]
        routes = np.full((sum(map(len, opts)) + 1, ROUTE_LEN), -1, dtype=np.int64)  # last row: no route
        first = np.zeros(num_lanes, dtype=np.int64)
        row_k = 0
        for ln, lane_opts in enumerate(opts):
            first[ln] = row_k
            for r in lane_opts:
                routes[row_k, :len(r)] = r[:ROUTE_LEN]
                row_k += 1
        return _Generated(np.array(kinds, dtype=np.int64), kf, ki, np.array(sp_lane, dtype=np.int64),
                          np.array(sp_lo, dtype=np.float64), np.array(sp_hi, dtype=np.float64),
                          np.array(sp_cdf, dtype=np.float64), int(traffic.count),
                          np.array([len(o) for o in opts], dtype=np.int64), const, routes, first)

    @property
    def vehicle_fields(self) -> tuple[str, ...]:
        """Names of the rows of ``sample_columns`` (``VEHICLE_FIELDS``)."""
        return VEHICLE_FIELDS

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Initial vehicles: controlled ones first (slots 0..A-1), then explicit, then traffic. A dict of
        (n,) arrays, one per ``VEHICLE_FIELDS`` name, and ``route`` (n, ROUTE_LEN); ``sample_columns`` in
        another form."""
        cols, lanes, route = self.sample_columns(rng)
        out = {f: cols[k] if f not in _FIELD_DTYPES else cols[k].astype(_FIELD_DTYPES[f])
               for k, f in enumerate(VEHICLE_FIELDS)}
        out["lane"] = lanes
        out["route"] = route
        return out

    def sample_columns(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``sample`` as (len(VEHICLE_FIELDS), n) float64 columns, lanes (n,) and routes (n, ROUTE_LEN): what
        ``World.reset`` writes (it calls this, not ``sample``). The ``lane`` row of the columns is not kept
        up to date: the lanes are the second array.

        The explicit vehicles are placed here in Python, the controlled and traffic blocks by the compiled
        ``placement.place_generated`` (the same draws from ``rng``, in the same order)."""
        c = self.config
        veh = _Vehicles()
        n_exp = len(c.vehicles)
        n = c.controlled.count + c.traffic.count
        occ_lane = np.empty(n_exp + n, dtype=np.int64)
        occ_s = np.empty(n_exp + n)
        occ_half = np.empty(n_exp + n)
        if n_exp:
            lc_period = self.params.lc_period
            explicit = [v for v in c.vehicles if v.controlled] + [v for v in c.vehicles if not v.controlled]
            for k, v in enumerate(explicit):
                lane = self._place_explicit(rng, v, k, veh, lc_period)
                occ_lane[k], occ_s[k], occ_half[k] = lane, v.s, 0.5 * v.size.length
        g = self._generated  # after the explicit vehicles: their errors are reported first, as they are placed
        out_f, out_i = P.empty_outputs(n)
        code, r, value, limit = P.place_generated(rng, g.kinds, g.kf, g.ki, g.sp_lane, g.sp_lo, g.sp_hi, g.sp_cdf,
                                                  g.even_count, g.n_routes, occ_lane, occ_s, occ_half, n_exp,
                                                  out_f, out_i)
        if code == P.PAST_END:
            raise ScenarioError(f"{self.source}: sequential placement ran past the end of the road "
                                f"({value:.0f} m > {limit:.0f} m): lengthen the road or lower traffic.count")
        if code == P.TOO_DENSE:
            who = "controlled" if g.kinds[r] == 0 else "traffic"
            raise ScenarioError(f"{self.source}: could not place the {who} vehicles with safe gaps after "
                                f"{P.MAX_TRIES} tries: the spawn area is too dense (lower the count or lengthen "
                                "the road)")
        tab = g.const[g.kinds]
        for col, out in _RANDOM_COLUMNS:
            tab[:, col] = out_f[:, out]
        lanes, opt = out_i[:, 0], out_i[:, 1]
        route = g.routes[np.where(opt >= 0, g.first[lanes] + opt, -1)]
        if n_exp:
            exp_tab, exp_lanes, exp_route = veh.table()
            tab = np.concatenate([exp_tab, tab])
            lanes = np.concatenate([exp_lanes, lanes])
            route = np.concatenate([exp_route, route])
        order = np.argsort(tab[:, _CONTROLLED] == 0.0, kind="stable")  # controlled first, otherwise as placed
        return np.ascontiguousarray(tab[order].T), lanes[order], route[order]

    def _place_explicit(self, rng, v, k, veh, lc_period) -> int:
        where = f"vehicles[{k}]"
        lane = self._lane(v.lane, where)
        length = float(self.road.lane_len[lane])
        if not (0.0 <= v.s <= length):
            raise ScenarioError(f"{self.source}: {where}: s = {v.s} is outside lane {v.lane!r} (0 to "
                                f"{length:.1f} m)")
        row = _driver_row(rng, v.idm, v.mobil, v.size, v.cc, v.speed, BEHAVIOR_CODES[v.behavior], v.controlled,
                          lc_period)
        row.update(lane=lane, s=float(v.s), d=float(v.d))
        if v.lane_change_at is not None:
            row["lc_force_time"] = float(v.lane_change_at)
            row["lc_force_dir"] = 1 if v.lane_change_to == "left" else -1
        route = self._route(lane, v.route, where) if v.route else []
        veh.add(row, route)
        return lane


def compile_scenario(config: ScenarioConfig, source: str | None = None) -> CompiledScenario:
    """Build the road and check cross-references (lane names, routes, spawn areas, inflows)."""
    src = source or config.name
    try:
        built = build_road(config.road)
    except ValueError as e:
        raise ScenarioError(f"{src}: road: {e}") from None
    cs = CompiledScenario(config, built, src)
    _ = cs.inflow, cs.max_vehicles, cs.profile  # validate eagerly
    cs.sample(np.random.default_rng(0))  # lanes, routes and spawn areas of the placement, and its density
    return cs
