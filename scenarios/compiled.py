"""Turn a validated ScenarioConfig into what the simulator needs: road, parameters, inflows, and a
sampler of initial vehicles (all randomness from a numpy Generator passed in)."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from drivediff.errors import ScenarioError
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

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self.rows)
        out = {}
        for k in VEHICLE_FIELDS:
            vals = [r[k] for r in self.rows]
            if k in ("lane", "behavior", "lc_force_dir"):
                out[k] = np.array(vals, dtype=np.int64).reshape(n)
            elif k == "controlled":
                out[k] = np.array(vals, dtype=np.bool_).reshape(n)
            else:
                out[k] = np.array(vals, dtype=np.float64).reshape(n)
        route = np.full((n, ROUTE_LEN), -1, dtype=np.int64)
        for i, r in enumerate(self.routes):
            route[i, :len(r)] = r[:ROUTE_LEN]
        out["route"] = route
        return out


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


def _driver_row(rng, idm: IDMConfig, mobil: MOBILConfig, size: SizeConfig, cc: CCConfig | None, speed: float,
                behavior: int, controlled: bool, lc_period: float) -> dict:
    v0 = _draw(rng, idm.desired_speed) if idm.desired_speed is not None else max(speed, 1.0)
    cc = cc or _DEFAULT_CC
    return dict(
        speed=speed, behavior=int(behavior), controlled=controlled, length=size.length, width=size.width,
        v0=v0, time_gap=idm.time_gap, s0=idm.s0, a_comf=idm.a, b_comf=idm.b, delta=_draw(rng, idm.delta),
        coolness=idm.coolness, noise=idm.noise, politeness=mobil.politeness, lc_gain=mobil.min_gain,
        lc_brake=mobil.max_braking,
        lc_timer=float(rng.uniform(0.0, lc_period)) if mobil.enabled else -math.inf, lc_force_time=-1.0,
        lc_force_dir=0, target_speed=speed, cc_gap=cc.time_gap, cc_standstill=cc.standstill, cc_kp=cc.kp,
        cc_kd=cc.kd, cc_lag=cc.lag, d=0.0,
    )


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

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Initial vehicles: controlled ones first (slots 0..A-1), then explicit, then traffic."""
        c = self.config
        lc_period = self.params.lc_period
        veh = _Vehicles()
        occupied: dict[int, list[tuple[float, float]]] = {}  # lane -> [(s, half extent incl. gap)]
        explicit_ctrl = [v for v in c.vehicles if v.controlled]
        explicit_other = [v for v in c.vehicles if not v.controlled]
        for k, v in enumerate(explicit_ctrl + explicit_other):
            self._place_explicit(rng, v, k, veh, occupied, lc_period)
        ctrl = c.controlled
        ctrl_lanes = self._spawn_lanes(ctrl.spawn, "controlled.spawn") if ctrl.count else []
        traffic = c.traffic
        tr_lanes = self._spawn_lanes(traffic.spawn, "traffic.spawn") if traffic.count else []
        ctrl_cdf = _span_cdf(ctrl_lanes)
        tr_cdf = _span_cdf(tr_lanes)
        requests = []  # (is_controlled, spawn lanes)
        if traffic.placement == "sequential":  # highway-env: each controlled vehicle followed by its share
            per = np.full(max(ctrl.count, 1), traffic.count // max(ctrl.count, 1))
            per[: traffic.count % max(ctrl.count, 1)] += 1
            for q in range(max(ctrl.count, 1)):
                if q < ctrl.count:
                    requests.append((True, ctrl_lanes))
                requests += [(False, tr_lanes)] * int(per[q])
        else:
            requests = [(True, ctrl_lanes)] * ctrl.count + [(False, tr_lanes)] * traffic.count
        ctrl_cc = getattr(ctrl, "cc", None)  # looked up once: a missing pydantic attribute is slow to miss
        tr_cc = getattr(traffic, "cc", None)
        seq_front = -math.inf
        even_index = 0
        for is_ctrl, lanes in requests:
            cfg = ctrl if is_ctrl else traffic
            speed = _draw(rng, cfg.speed)
            beh = BEHAVIOR_CODES[cfg.behavior]
            row = _driver_row(rng, cfg.idm, cfg.mobil, cfg.size, ctrl_cc if is_ctrl else tr_cc, speed, beh, is_ctrl,
                              lc_period)
            if traffic.placement == "sequential":
                lane_sl, s, seq_front = self._sequential(rng, lanes, speed, seq_front,
                                                         ctrl.spacing if is_ctrl else traffic.spacing)
            elif traffic.placement == "even" and not is_ctrl:
                lane_sl, s = self._even(lanes, even_index, traffic.count)
                even_index += 1
            else:
                cdf = ctrl_cdf if is_ctrl else tr_cdf
                lane_sl, s = self._random(rng, lanes, cdf, row, occupied, "controlled" if is_ctrl else "traffic")
            occupied.setdefault(lane_sl.lane, []).append((s, 0.5 * row["length"]))
            row.update(lane=lane_sl.lane, s=s)
            opts = self.built.routes_from(lane_sl.lane)
            route = opts[int(rng.integers(len(opts)))] if opts else []
            veh.add(row, route)
        # controlled first: reorder so that explicit controlled + auto controlled lead
        arrays = veh.arrays()
        order = np.argsort(~arrays["controlled"], kind="stable")
        return {k: v[order] for k, v in arrays.items()}

    def _place_explicit(self, rng, v, k, veh, occupied, lc_period) -> None:
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
        occupied.setdefault(lane, []).append((v.s, 0.5 * v.size.length))
        veh.add(row, route)

    def _sequential(self, rng, lanes, speed, front, spacing):
        """highway-env ``Vehicle.create_random``: each vehicle ahead of all others on the spawn lanes."""
        sl = lanes[int(rng.integers(len(lanes)))]
        offset = spacing * (12.0 + speed) * math.exp(-5.0 / 40.0 * len(lanes))
        s = (3.0 * offset if front == -math.inf else front) + offset * rng.uniform(0.9, 1.1)
        s = sl.s_lo + s
        if s > sl.s_hi:
            raise ScenarioError(f"{self.source}: sequential placement ran past the end of the road "
                                f"({s:.0f} m > {sl.s_hi:.0f} m): lengthen the road or lower traffic.count")
        return sl, s, s - sl.s_lo

    def _even(self, lanes, k, count):
        total = sum(sl.s_hi - sl.s_lo for sl in lanes)
        pos = total * k / max(count, 1)
        for sl in lanes:
            span = sl.s_hi - sl.s_lo
            if pos < span:
                return sl, sl.s_lo + pos
            pos -= span
        return lanes[-1], lanes[-1].s_hi

    def _random(self, rng, lanes, cdf, row, occupied, who):
        """A lane drawn in proportion to its span and a position on it, clear of ``occupied``. ``cdf``:
        ``_span_cdf(lanes)``; ``bisect_right(cdf, rng.random())`` is the draw of ``rng.choice(len(lanes),
        p=spans / spans.sum())`` without its per-call set-up (the same numbers, checked in the tests)."""
        need = row["s0"] + 0.5 * row["speed"] * row["time_gap"]
        half = 0.5 * row["length"]
        for _ in range(400):
            sl = lanes[bisect.bisect_right(cdf, rng.random())]
            s = float(rng.uniform(sl.s_lo, sl.s_hi))
            for s2, h2 in occupied.get(sl.lane, ()):
                if not abs(s - s2) - h2 - half >= need:
                    break
            else:
                return sl, s
        raise ScenarioError(f"{self.source}: could not place the {who} vehicles with safe gaps after 400 "
                            "tries: the spawn area is too dense (lower the count or lengthen the road)")


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
