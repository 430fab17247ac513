"""highway-env bridge: run a highway-env scene in drivediff, and drivediff policies in highway-env.

* :func:`scenario_from_highway_env` converts a highway-env environment (after ``reset``) into a drivediff
  scenario: its road network (``StraightLane``, ``CircularLane``, ``SineLane`` and their connections) and
  its vehicles (positions, speeds, IDM/MOBIL parameters, routes), so the same scene runs in both.
* :class:`HighwayEnvDriver` wraps a highway-env environment whose controlled vehicles take
  ``ContinuousAction`` (or ``MultiAgentAction`` of them): its observations are drivediff observations of
  those vehicles and its actions drivediff's normalised [acceleration, steering]; :meth:`HighwayEnvDriver.act`
  also runs world-based drivediff policies (``drivediff.agents``) on a mirror of the highway-env scene.
* :func:`lane_center_errors`, :func:`highway_env_traffic`, :func:`drivediff_traffic` compare the two.

Frames. highway-env draws y downwards, so its coordinates, read in drivediff's y-up frame, describe a
mirrored scene (left-hand traffic). The bridge mirrors: drivediff (x, y) = highway-env (x, -y), yaw and
steering change sign, and highway-env's lane ``id + 1`` (its right) is drivediff's right neighbour.

What is converted, and how (see the README for the measured differences):

* lanes: one drivediff lane per highway-env lane, named ``"from:to:id"``, same width, speed limit,
  priority. Lane changes are allowed between side lanes of one road unless the target lane is
  ``forbidden`` (highway-env's MOBIL ignores painted lines; so does the conversion).
* connections: lane (a, b, i) continues on the lane of each next road (b, c) that highway-env's
  ``RoadNetwork.next_lane`` would pick (same id when the roads have as many lanes, else the closest).
  Where highway-env leaves a gap between connected lanes (roundabout-v0's entries and exits, up to 8 m),
  a Bezier connector lane ``"a:b:i>b:c:j"`` bridges it. A lane ending at an ``Obstacle`` (merge-v0's
  acceleration lane) is a dead end; connections that turn back by more than 90 degrees are dropped
  (intersection-v0's exits lead into the entries; highway-env removes vehicles before they get there), so
  those lanes are exits.
* vehicles: IDM target speed, time gap, jam distance (highway-env measures gaps centre to centre: the
  scenario sets ``sim.center_gap``), comfort acceleration/deceleration, exponent delta, MOBIL politeness,
  gain and braking, lane changes on/off, size and route; accelerations are limited to +-6 m/s^2 as in
  highway-env. Controlled vehicles become drivediff's controlled vehicles (slots 0..A-1) or are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from drivediff.env.config import EnvConfig, make_config
from drivediff.env.kernels import MODE_RESET
from drivediff.errors import ActionError, DrivediffError
from drivediff.scenarios import CompiledScenario
from drivediff.sim.road import Arc as ArcGeometry
from drivediff.sim.road import LineType, Polyline, Road, RoadBuilder, Sine, Straight
from drivediff.sim.state import ROUTE_LEN

__all__ = ["BridgedScenario", "HighwayEnvDriver", "drivediff_traffic", "highway_env_traffic", "lane_center_errors",
           "road_from_highway_env", "scenario_from_highway_env"]

CONTIGUOUS = 0.05  # [m] lanes whose end and start are closer than this connect directly
OBSTACLE_REACH = 10.0  # [m] an obstacle this close to a lane's end makes it a dead end
REVERSAL = 0.5 * math.pi  # [rad] a "connection" turning back more than this is not followed (U-turn)
HE_ACC_MAX = 6.0  # [m/s^2] highway-env IDMVehicle.ACC_MAX


def mirror_xy(p) -> tuple[float, float]:
    """drivediff (x, y) of a highway-env position."""
    return float(p[0]), -float(p[1])


def _lane_name(index) -> str:
    return f"{index[0]}:{index[1]}:{index[2]}"


def _line(he_line) -> LineType:
    # highway-env LineType: NONE 0, STRIPED 1, CONTINUOUS 2, CONTINUOUS_LINE 3
    return {0: LineType.NONE, 1: LineType.DASHED}.get(int(he_line), LineType.SOLID)


def _geometry(index, lane):
    """drivediff geometry of a highway-env lane (mirrored)."""
    from highway_env.road.lane import CircularLane, SineLane, StraightLane

    if isinstance(lane, SineLane):  # before StraightLane: a SineLane is one
        return Sine(mirror_xy(lane.start), mirror_xy(lane.end), amplitude=-float(lane.amplitude),
                    pulsation=float(lane.pulsation), phase=float(lane.phase))
    if isinstance(lane, StraightLane):
        return Straight(mirror_xy(lane.start), mirror_xy(lane.end))
    if isinstance(lane, CircularLane):  # angle(s) = start_phase + s / r * direction; mirrored: -angle
        return ArcGeometry(mirror_xy(lane.center), float(lane.radius), -float(lane.start_phase),
                           -float(lane.end_phase))
    raise DrivediffError(f"highway-env lane {index} is a {type(lane).__name__}; the bridge converts StraightLane, "
                         "CircularLane and SineLane")


def _bezier(p0, h0, p3, h3, n: int = 40) -> Polyline:
    p0, p3 = np.asarray(p0, float), np.asarray(p3, float)
    t0, t3 = np.array([math.cos(h0), math.sin(h0)]), np.array([math.cos(h3), math.sin(h3)])
    h = np.linalg.norm(p3 - p0) / 3.0
    u = np.linspace(0.0, 1.0, n)[:, None]
    p1, p2 = p0 + h * t0, p3 - h * t3
    pts = (1 - u) ** 3 * p0 + 3 * (1 - u) ** 2 * u * p1 + 3 * (1 - u) * u ** 2 * p2 + u ** 3 * p3
    return Polyline(tuple(map(tuple, pts)))


def _he_lanes(network) -> list[tuple[tuple, Any]]:
    return [((f, t, i), lane) for f, tos in network.graph.items() for t, lanes in tos.items()
            for i, lane in enumerate(lanes)]


def _next_index(network, index, nxt, pos) -> tuple:
    """highway-env ``next_lane_given_next_road``: the lane of road (to, nxt) a vehicle continues on."""
    f, t, i = index
    if len(network.graph[f][t]) == len(network.graph[t][nxt]):
        return (t, nxt, i)
    lanes = range(len(network.graph[t][nxt]))
    return (t, nxt, min(lanes, key=lambda j: network.get_lane((t, nxt, j)).distance(pos)))


def _ends_at_obstacle(lane, objects) -> bool:
    for obj in objects:
        s, lat = lane.local_coordinates(np.asarray(obj.position, float))
        if abs(lat) < 0.5 * lane.width_at(s) and lane.length - OBSTACLE_REACH <= s <= lane.length + 1.0:
            return True
    return False


@dataclass
class _LaneSpec:
    index: tuple | None  # highway-env lane index; None for a connector
    name: str
    geometry: Any
    width: float
    speed: float
    left: LineType
    right: LineType
    priority: int
    dead_end: bool = False
    junction: bool = False


def _side_lines(network, index, lane) -> tuple[LineType, LineType]:
    """Line types on the driver's left and right; between side lanes, dashed unless the target lane is
    forbidden (highway-env's lane-change rule)."""
    left, right = _line(lane.line_types[0]), _line(lane.line_types[1])
    f, t, i = index
    for j in (i - 1, i + 1):
        if 0 <= j < len(network.graph[f][t]):
            other = network.get_lane((f, t, j))
            _, lat = lane.local_coordinates(other.position(0.5 * other.length, 0.0))
            kind = LineType.SOLID if other.forbidden else LineType.DASHED
            if lat > 0:  # highway-env lateral > 0: its right, drivediff's right
                right = kind
            else:
                left = kind
    return left, right


def road_from_highway_env(network, objects=(), ds: float = 0.5) -> tuple[Road, list]:
    """A drivediff Road from a highway-env RoadNetwork.

    Returns:
        (road, he_index) where ``he_index[l]`` is the highway-env lane index of drivediff lane ``l``
        (None for connector lanes).
    """
    he = _he_lanes(network)
    specs: dict[tuple, _LaneSpec] = {}
    for index, lane in he:
        left, right = _side_lines(network, index, lane)
        specs[index] = _LaneSpec(index, _lane_name(index), _geometry(index, lane), float(lane.width_at(0.0)),
                                 float(lane.speed_limit or 40.0), left, right, int(getattr(lane, "priority", 0)))
    links, connectors = _connections(network, he, specs, objects)
    b = RoadBuilder()
    for spec in list(specs.values()) + connectors:
        b.add_lane(spec.name, spec.geometry, width=spec.width, speed_limit=spec.speed, left_line=spec.left,
                   right_line=spec.right, priority=spec.priority, junction=spec.junction, dead_end=spec.dead_end)
    for src, dst in links:
        b.connect(src, dst)
    for (f, t, i), lane in he:
        j = i + 1
        if j < len(network.graph[f][t]):
            _, lat = lane.local_coordinates(network.get_lane((f, t, j)).position(0.5 * lane.length, 0.0))
            pair = ((f, t, i), (f, t, j)) if lat > 0 else ((f, t, j), (f, t, i))
            b.neighbors(_lane_name(pair[0]), _lane_name(pair[1]))
    road = b.build(ds=ds, sdf_res=_sdf_res(b))
    index_of = {s.name: s.index for s in list(specs.values()) + connectors}
    return road, [index_of[n] for n in road.lane_names]


def _sdf_res(builder: RoadBuilder) -> float:
    pts = np.concatenate([ln.geometry.dense(5.0) for ln in builder._lanes])
    extent = float(np.max(pts.max(0) - pts.min(0)))
    return 0.25 if extent < 200 else (0.5 if extent < 5000 else 1.0)


def _connections(network, he, specs, objects):
    """Links (src name, dst name) and connector lanes between highway-env's connected lanes."""
    links, connectors = [], []
    for index, lane in he:
        f, t, i = index
        if _ends_at_obstacle(lane, objects):
            specs[index].dead_end = True
            continue
        end = lane.position(lane.length, 0.0)
        for nxt in network.graph.get(t, {}):
            dst_index = _next_index(network, index, nxt, end)
            dst = network.get_lane(dst_index)
            start = dst.position(0.0, 0.0)
            turn = (dst.heading_at(0.0) - lane.heading_at(lane.length) + math.pi) % (2 * math.pi) - math.pi
            if abs(turn) > REVERSAL:  # intersection-v0's exits lead back into the entries: an exit here
                continue
            if np.linalg.norm(np.asarray(start) - np.asarray(end)) < CONTIGUOUS:
                links.append((specs[index].name, specs[dst_index].name))
                continue
            geom = _bezier(mirror_xy(end), -lane.heading_at(lane.length), mirror_xy(start), -dst.heading_at(0.0))
            c = _LaneSpec(None, f"{specs[index].name}>{specs[dst_index].name}", geom,
                          specs[dst_index].width, min(specs[index].speed, specs[dst_index].speed), LineType.NONE,
                          LineType.NONE, specs[index].priority, junction=True)
            connectors.append(c)
            links += [(specs[index].name, c.name), (c.name, specs[dst_index].name)]
    return links, connectors


# ------------------------------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class BridgedScenario(CompiledScenario):
    """A CompiledScenario built from a highway-env scene; ``he_index[l]`` is drivediff lane l's highway-env
    lane index (None for connector lanes). Its number of agents is fixed (no overrides)."""

    he_index: tuple = ()
    fixed_agents = True


class _Locator:
    """drivediff (lane, s, d) of highway-env vehicles, and their routes as drivediff lanes."""

    def __init__(self, road: Road, he_index: list):
        self.road = road
        self.he = list(he_index)
        self.lane_of = {idx: k for k, idx in enumerate(he_index) if idx is not None}

    def lane(self, index) -> int:
        try:
            return self.lane_of[tuple(index)]
        except KeyError:
            raise DrivediffError(f"highway-env lane {index} is not in the converted road") from None

    def _through(self, lane: int) -> int:
        """The highway-env lane a drivediff lane is or leads into (a connector's one successor)."""
        return lane if self.he[lane] is not None else self.road.successors(lane)[0]

    def locate(self, vehicle) -> tuple[int, float, float]:
        """(lane, s, d): the vehicle's lane or a lane leading into it (connectors, predecessors), whichever
        holds its centre (s within the lane) nearest to the centreline."""
        x, y = mirror_xy(vehicle.position)
        home = self.lane(vehicle.lane_index)
        cands = [home] + self.road.predecessors(home)
        cands += [p for c in cands[1:] if self.he[c] is None for p in self.road.predecessors(c)]
        best = None
        for ln in cands:
            s, d = self.road.project(ln, x, y)
            key = (not -1e-6 <= s <= self.road.lane_len[ln] + 1e-6, abs(d))
            if best is None or key < best[0]:
                best = (key, ln, s, d)
        _, ln, s, d = best
        return ln, float(min(max(s, 0.0), self.road.lane_len[ln])), float(d)

    def route(self, vehicle, start: int) -> list[int]:
        """The vehicle's highway-env route after lane ``start``, as drivediff lanes (connectors included)."""
        out, prev = [], start
        for f, t, i in (getattr(vehicle, "route", None) or []):
            if self.he[self._through(prev)][:2] == (f, t):
                continue  # the current road
            step = self._follow(prev, f, t, i)
            if step is None:
                break
            out += step
            prev = step[-1]
        return out[:ROUTE_LEN]

    def _follow(self, prev: int, f, t, i) -> list[int] | None:
        """[connector,] lane: the successor of ``prev`` on highway-env road (f, t), lane i (None: any)."""
        for c in self.road.successors(prev):
            lane = self._through(c)
            he = self.he[lane]
            if he[:2] == (f, t) and (i is None or he[2] == i):
                return [c, lane] if lane != c else [c]
        return None


def _idm(v) -> dict:
    ts = max(float(getattr(v, "target_speed", v.speed) or 0.0), 0.1)
    return {"desired_speed": ts, "time_gap": float(v.TIME_WANTED), "s0": float(v.DISTANCE_WANTED),
            "a": float(v.COMFORT_ACC_MAX), "b": float(-v.COMFORT_ACC_MIN), "delta": float(v.DELTA)}


def _vehicle_config(v, loc: _Locator, controlled: bool) -> dict:
    ln, s, d = loc.locate(v)
    row = {"lane": loc.road.lane_names[ln], "s": s, "d": d, "speed": max(float(v.speed), 0.0),
           "route": [loc.road.lane_names[k] for k in loc.route(v, ln)],
           "size": {"length": float(v.LENGTH), "width": float(v.WIDTH)}}
    if controlled:
        row.update(controlled=True, behavior="controlled")
    if hasattr(v, "TIME_WANTED"):  # IDM/MOBIL drivers (IDMVehicle and subclasses)
        row["idm"] = _idm(v)
        row["mobil"] = {"enabled": bool(getattr(v, "enable_lane_change", True)),
                        "politeness": float(v.POLITENESS), "min_gain": float(v.LANE_CHANGE_MIN_ACC_GAIN),
                        "max_braking": float(v.LANE_CHANGE_MAX_BRAKING_IMPOSED)}
    else:  # a controlled vehicle's type: when it drives itself here, IDM with highway-env's defaults
        row["idm"] = {"desired_speed": max(float(v.speed), 0.1), "s0": 10.0}
    return row


_ROAD_CACHE: dict = {}


def _cached_road(network, objects):
    key = _network_key(network, objects)
    if key not in _ROAD_CACHE:
        _ROAD_CACHE.clear()  # one road at a time: scenes are usually reset on the same network
        _ROAD_CACHE[key] = road_from_highway_env(network, objects)
    return _ROAD_CACHE[key]


def _network_key(network, objects) -> tuple:
    rows = []
    for index, lane in _he_lanes(network):
        rows.append((index, type(lane).__name__, round(float(lane.length), 6),
                     tuple(np.round(lane.position(0, 0), 6)), tuple(np.round(lane.position(lane.length, 0), 6)),
                     tuple(int(x) for x in lane.line_types), bool(lane.forbidden), lane.speed_limit,
                     int(getattr(lane, "priority", 0)), float(lane.width_at(0))))
    rows.append(tuple(tuple(np.round(np.asarray(o.position, float), 6)) for o in objects))
    return tuple(rows)


def scenario_from_highway_env(env, include_controlled: bool = True, extra_slots: int = 0, name: str | None = None,
                              duration: float | None = None):
    """The current scene of a highway-env environment (after ``reset``) as a drivediff scenario.

    Args:
        env: a highway-env environment (wrapped or not).
        include_controlled: its controlled vehicles become drivediff's controlled vehicles (agents, slots
            0..A-1); False leaves them out (traffic only).
        extra_slots: vehicle slots beyond the scene's vehicles (for scenes that grow, see HighwayEnvDriver).
        name: scenario name (default: the environment id).
        duration: episode length [s] (default: highway-env's ``duration``, or 40 s).

    Returns:
        a CompiledScenario (usable wherever drivediff takes a scenario); ``he_index[l]`` maps drivediff
        lanes to highway-env lane indices.
    """
    from drivediff.scenarios.builders import BuiltRoad
    from drivediff.scenarios.loader import parse_scenario

    u = env.unwrapped
    road, he_index = _cached_road(u.road.network, u.road.objects)
    loc = _Locator(road, he_index)
    ctrl = list(getattr(u, "controlled_vehicles", []))
    ctrl_ids = {id(v) for v in ctrl}
    rows = [_vehicle_config(v, loc, True) for v in ctrl] if include_controlled else []
    rows += [_vehicle_config(v, loc, False) for v in u.road.vehicles if id(v) not in ctrl_ids]
    env_id = u.spec.id if u.spec is not None else type(u).__name__
    freq = float(u.config["simulation_frequency"])
    raw = {"name": name or env_id, "description": f"converted from highway-env {env_id}", "dt": 1.0 / freq,
           "duration": float(duration or u.config.get("duration") or 40.0), "road": {"type": "highway"},
           "vehicles": rows, "max_vehicles": max(1, len(rows) + int(extra_slots)),
           "sim": {"center_gap": True, "max_accel": HE_ACC_MAX, "max_brake": HE_ACC_MAX}}
    cfg = parse_scenario(raw, f"highway-env {env_id}").model_copy(update={"road": None})
    scenario = BridgedScenario(cfg, BuiltRoad(road, {}, {}), f"highway-env {env_id}", tuple(he_index))
    scenario.sample(np.random.default_rng(0))  # checks lanes, routes and positions now
    return scenario


# ---------------------------------------------------------------------------------------------- comparison


def _polyline_distance(pts: np.ndarray, q: np.ndarray, guess: np.ndarray, window: int = 40) -> np.ndarray:
    """Distance of points ``q`` (Q, 2) to the polyline ``pts`` (P, 2), searching the segments within
    ``window`` of each point's guessed segment ``guess`` (Q,)."""
    idx = np.clip(guess[:, None] + np.arange(-window, window + 1), 0, len(pts) - 2)
    a, ab = pts[idx], pts[idx + 1] - pts[idx]
    t = np.clip(((q[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    return np.sqrt(((q[:, None] - a - t[..., None] * ab) ** 2).sum(-1)).min(axis=1)


def lane_center_errors(network, road: Road, he_index: list, step: float = 1.0) -> dict[str, float]:
    """Largest distance [m] between each highway-env lane centre and its drivediff lane centre, both ways:
    highway-env centre points to the drivediff polyline, and drivediff points to highway-env's lane."""
    out = {}
    for k, idx in enumerate(he_index):
        if idx is None:
            continue
        lane = network.get_lane(idx)
        s = np.linspace(0.0, lane.length, max(2, int(lane.length / step) + 1))
        he_pts = np.array([mirror_xy(lane.position(v, 0.0)) for v in s])
        ours = road.lane_points(k)
        guess = np.round(s / lane.length * (len(ours) - 2)).astype(np.int64)
        err = float(np.max(_polyline_distance(ours, he_pts, guess)))
        for x, y in ours[:: max(1, int(step / 0.5))]:
            err = max(err, abs(lane.local_coordinates(np.array([x, -y]))[1]))
        out[_lane_name(idx)] = err
    return out


def highway_env_traffic(env, steps: int) -> dict[str, float]:
    """Run highway-env's road (``road.act(); road.step(dt)``) without its controlled vehicles for ``steps``
    simulation steps. Returns mean speed [m/s] over vehicle-steps on the network, lane changes per
    vehicle-minute (changes of lane id within a road), and vehicle-steps."""
    u = env.unwrapped
    road = u.road
    ctrl = {id(v) for v in getattr(u, "controlled_vehicles", [])}
    road.vehicles = [v for v in road.vehicles if id(v) not in ctrl]
    dt = 1.0 / u.config["simulation_frequency"]
    prev = {id(v): v.lane_index for v in road.vehicles}
    speeds, changes = [], 0
    for _ in range(steps):
        road.act()
        road.step(dt)
        for v in road.vehicles:
            li = v.lane_index
            s = v.lane.local_coordinates(v.position)[0]
            if not 0.0 <= s <= v.lane.length:  # past the end of an exit lane: off the network
                continue
            speeds.append(v.speed)
            p = prev.get(id(v))
            if p is not None and p[:2] == li[:2] and p[2] != li[2]:
                changes += 1
            prev[id(v)] = li
    return _stats(speeds, changes, dt)


def _stats(speeds, changes: int, dt: float) -> dict[str, float]:
    n = len(speeds)
    minutes = n * dt / 60.0
    return {"mean_speed": float(np.mean(speeds)) if n else math.nan,
            "lane_changes_per_min": changes / minutes if minutes > 0 else math.nan, "vehicle_steps": n}


def drivediff_traffic(scenario, steps: int, seed: int = 0) -> dict[str, float]:
    """The same statistics as :func:`highway_env_traffic` for a drivediff scenario run by the simulator."""
    from drivediff.sim import World

    world = World(scenario)
    world.reset(seed=seed)
    rec = world.run(steps, record=True)
    valid, lane = rec["valid"][0], rec["lane"][0]
    left, right = world.road.lane_left, world.road.lane_right
    speeds = rec["speed"][0][valid]
    changes = 0
    prev_lane = world.state.lane[0].copy()
    prev_lane[:] = -1
    for t in range(steps):
        cur = lane[t]
        ok = valid[t] & (prev_lane >= 0) & (cur >= 0) & (cur != prev_lane)
        pl = np.where(prev_lane >= 0, prev_lane, 0)
        changes += int(np.sum(ok & ((left[pl] == cur) | (right[pl] == cur))))
        prev_lane = np.where(valid[t], cur, -1)
    return _stats(speeds.tolist(), changes, world.dt)


# ------------------------------------------------------------------------------------------------ driving


def _continuous_types(env) -> list:
    from highway_env.envs.common.action import ContinuousAction, MultiAgentAction

    at = env.unwrapped.action_type
    types = at.agents_action_types if isinstance(at, MultiAgentAction) else [at]
    for t in types:
        if not isinstance(t, ContinuousAction) or not (t.longitudinal and t.lateral):
            raise DrivediffError(
                "HighwayEnvDriver needs highway-env's ContinuousAction with longitudinal and lateral control "
                f"(or a MultiAgentAction of them), got {type(t).__name__}; configure the environment with "
                "config={'action': {'type': 'ContinuousAction'}} (several agents: {'type': 'MultiAgentAction', "
                "'action_config': {'type': 'ContinuousAction'}})")
    return types


class HighwayEnvDriver(gymnasium.Wrapper):
    """Drive highway-env's controlled vehicles with drivediff observations and actions.

    Observations: (A, D) float32 drivediff observations of the A controlled vehicles (``drivediff.env.
    observation``), computed on a mirror of the highway-env scene (``world``, one World whose slots 0..A-1
    are the controlled vehicles). Actions: (A, 2) drivediff normalised [acceleration, steering] in [-1, 1],
    mapped to physical values with ``accel_range`` / ``steer_range`` and then to highway-env's
    ContinuousAction ranges (steering changes sign with the frame). Rewards, terminations and infos are
    highway-env's.

    Args:
        env: a highway-env environment with ContinuousAction (or MultiAgentAction of ContinuousAction).
        config: drivediff environment options (observation, accel_range, steer_range); kwargs override.
        max_vehicles: slots of the mirror world (highway-env may add vehicles during an episode).
    """

    def __init__(self, env, config: EnvConfig | None = None, max_vehicles: int = 128, **kwargs):
        super().__init__(env)
        self._types = _continuous_types(env)
        self.num_agents = len(self._types)
        self.config = make_config(config, **kwargs)
        self.max_vehicles = int(max_vehicles)
        from drivediff.env.observation import obs_dim, obs_params

        d = obs_dim(obs_params(self.config.observation, self.config.steer_range))
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(self.num_agents, d), dtype=np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(self.num_agents, 2), dtype=np.float32)
        self.core = None
        self._key = None

    @property
    def world(self):
        """The mirror World (synchronised with highway-env at every reset and step)."""
        return self.core.world

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        self._build()
        self.sync()
        self.core._update(self.core._all, MODE_RESET)  # the remaining route at reset, for progress
        return self.core.obs[0].copy(), info

    def step(self, actions):
        _, reward, terminated, truncated, info = self.env.step(self.to_highway_action(actions))
        return self.observe(), reward, terminated, truncated, info

    def observe(self) -> np.ndarray:
        """(A, D) drivediff observations of the controlled vehicles in the current highway-env scene."""
        self.sync()
        return self.core.observe()[0].copy()

    def act(self, policy) -> np.ndarray:
        """(A, 2) normalised actions of a world-based drivediff policy (``policy.act(world)`` returning
        (1, N, 2) [acceleration m/s^2, steering rad]) on the mirror of the current scene."""
        phys = np.asarray(policy.act(self.world), dtype=np.float64)[0, :self.num_agents]
        return self.normalise(phys)

    def normalise(self, physical: np.ndarray) -> np.ndarray:
        """(A, 2) physical [acceleration m/s^2, steering rad] -> drivediff normalised actions."""
        lo = np.array([self.config.accel_range[0], self.config.steer_range[0]])
        hi = np.array([self.config.accel_range[1], self.config.steer_range[1]])
        return 2.0 * (np.asarray(physical, dtype=np.float64) - lo) / (hi - lo) - 1.0

    def to_highway_action(self, actions):
        """(A, 2) drivediff normalised actions -> highway-env's action (an array, or a tuple of arrays for
        MultiAgentAction)."""
        u = np.asarray(actions, dtype=np.float64)
        if u.shape != (self.num_agents, 2):
            raise ActionError(f"actions must have shape ({self.num_agents}, 2) (agents, [acceleration, steering] "
                              f"in [-1, 1]); got {u.shape}")
        if not np.isfinite(u).all():
            raise ActionError(f"actions must be finite, got {u.tolist()}")
        u = np.clip(u, -1.0, 1.0)
        (alo, ahi), (dlo, dhi) = self.config.accel_range, self.config.steer_range
        accel = alo + 0.5 * (u[:, 0] + 1.0) * (ahi - alo)
        steer = -(dlo + 0.5 * (u[:, 1] + 1.0) * (dhi - dlo))  # mirrored frame
        out = []
        for k, t in enumerate(self._types):
            (ha, hb), (hc, hd) = t.acceleration_range, t.steering_range
            out.append(np.array([2.0 * (accel[k] - ha) / (hb - ha) - 1.0, 2.0 * (steer[k] - hc) / (hd - hc) - 1.0],
                                dtype=np.float32))
        return tuple(out) if len(self._types) > 1 or _is_multi(self.env) else out[0]

    # ---- the mirror world
    def _build(self) -> None:
        from drivediff.env.core import EnvCore

        u = self.env.unwrapped
        key = _network_key(u.road.network, u.road.objects)
        if self.core is not None and key == self._key:
            return
        n = len(u.road.vehicles)
        scenario = scenario_from_highway_env(self.env, include_controlled=True,
                                             extra_slots=max(0, self.max_vehicles - n))
        self.core = EnvCore(make_config(self.config, scenario=scenario, num_agents=self.num_agents), num_worlds=1)
        self.core.reset(seed=0)
        self._key = key
        self._loc = _Locator(self.core.road, list(scenario.he_index))

    def sync(self) -> None:
        """Copy highway-env's vehicles into the mirror world (controlled vehicles first) and refresh it."""
        u = self.env.unwrapped
        st = self.core.world.state
        ctrl = list(u.controlled_vehicles)
        ctrl_ids = {id(v) for v in ctrl}
        vehicles = (ctrl + [v for v in u.road.vehicles if id(v) not in ctrl_ids])[:self.core.world.max_vehicles]
        for name in ("valid", "controlled", "collided", "offroad"):
            getattr(st, name)[0] = False
        for name in ("lane", "target_lane", "vid", "leader"):
            getattr(st, name)[0] = -1
        st.route[0] = -1
        for k, v in enumerate(vehicles):
            self._put(st, k, v, k < self.num_agents)
        self.core.world.refresh()
        self.core.alive[0] = True

    def _put(self, st, k: int, v, controlled: bool) -> None:
        from drivediff.sim import Behavior

        ln, s, d = self._loc.locate(v)
        st.x[0, k], st.y[0, k] = mirror_xy(v.position)
        st.yaw[0, k] = -float(v.heading)
        st.speed[0, k] = float(v.speed)
        st.length[0, k], st.width[0, k] = float(v.LENGTH), float(v.WIDTH)
        act = getattr(v, "action", None) or {}
        st.accel[0, k] = float(act.get("acceleration", 0.0))
        st.steer[0, k] = -float(act.get("steering", 0.0))
        st.lane[0, k] = st.target_lane[0, k] = ln
        st.s[0, k], st.d[0, k] = s, d
        st.valid[0, k] = True
        st.controlled[0, k] = controlled
        st.behavior[0, k] = int(Behavior.EXTERNAL if controlled else Behavior.IDM)
        st.vid[0, k] = k
        st.route_pos[0, k] = 0
        if controlled:
            r = self._loc.route(v, ln)
            st.route[0, k, :len(r)] = r


def _is_multi(env) -> bool:
    from highway_env.envs.common.action import MultiAgentAction

    return isinstance(env.unwrapped.action_type, MultiAgentAction)


# ------------------------------------------------------------------------------------- scene comparison

COMPARE_IDS = ("highway-v0", "merge-v0", "roundabout-v0", "intersection-v0")


def compare_scene(env_id: str, seeds=(0, 1, 2), seconds: float = 30.0) -> dict:
    """Convert ``env_id``'s scene for each seed and compare both simulators on it, without controlled vehicles.

    Run it in a fresh process per environment id: creating intersection-v0 changes highway-env's IDMVehicle
    class constants for the whole process (:func:`compare_in_subprocess`).

    Returns:
        ``lane_error_max`` [m] (largest lane-centre distance, any lane, seed 0), ``lanes``, ``connectors``,
        and per simulator (``highway_env``, ``drivediff``) the mean speed [m/s] and lane changes per
        vehicle-minute over all seeds, weighted by vehicle-steps.
    """
    import warnings

    import highway_env  # noqa: F401  (registers its environments)

    out: dict = {"env_id": env_id, "seeds": list(seeds), "seconds": seconds}
    runs: dict[str, list] = {"highway_env": [], "drivediff": []}
    for k, seed in enumerate(seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = gymnasium.make(env_id)
            env.reset(seed=int(seed))
        scenario = scenario_from_highway_env(env, include_controlled=False)
        steps = int(round(seconds * env.unwrapped.config["simulation_frequency"]))
        if k == 0:
            errs = lane_center_errors(env.unwrapped.road.network, scenario.road, list(scenario.he_index))
            out.update(lane_error_max=max(errs.values()), lanes=len(errs),
                       connectors=sum(i is None for i in scenario.he_index))
        runs["drivediff"].append(drivediff_traffic(scenario, steps, seed=int(seed)))
        runs["highway_env"].append(highway_env_traffic(env, steps))
        env.close()
    for name, rs in runs.items():
        n = np.array([r["vehicle_steps"] for r in rs], dtype=float)
        out[name] = {key: float(np.average([r[key] for r in rs], weights=n)) if n.sum() else math.nan
                     for key in ("mean_speed", "lane_changes_per_min")}
        out[name]["vehicle_steps"] = int(n.sum())
    return out


def compare_in_subprocess(env_id: str, seeds=(0, 1, 2), seconds: float = 30.0, timeout: float = 1800) -> dict:
    """:func:`compare_scene` in a fresh Python process (returns its result)."""
    import json
    import subprocess
    import sys

    code = ("import json; from drivediff.env.highway_bridge import compare_scene; "
            f"print(json.dumps(compare_scene({env_id!r}, {tuple(int(s) for s in seeds)!r}, {float(seconds)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise DrivediffError(f"comparison of {env_id} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _main(argv=None) -> None:
    """``python -m drivediff.env.highway_bridge [--seeds N] [--seconds S] [ids...]``: the comparison table."""
    import argparse

    p = argparse.ArgumentParser(description=_main.__doc__)
    p.add_argument("ids", nargs="*", default=list(COMPARE_IDS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers its ids)

    for env_id in args.ids:
        try:
            gym.spec(env_id)
        except gym.error.Error as e:
            p.error(f"unknown environment id {env_id!r} ({e})")
    print("| scene | lanes (+connectors) | max lane-centre distance | mean speed highway-env / drivediff [m/s] "
          "| lane changes per vehicle-minute highway-env / drivediff |")
    print("| --- | --- | --- | --- | --- |")
    for env_id in args.ids:
        r = compare_in_subprocess(env_id, tuple(range(args.seeds)), args.seconds)
        h, d = r["highway_env"], r["drivediff"]
        print(f"| {env_id} | {r['lanes']} (+{r['connectors']}) | {100 * r['lane_error_max']:.2f} cm | "
              f"{h['mean_speed']:.2f} / {d['mean_speed']:.2f} | "
              f"{h['lane_changes_per_min']:.2f} / {d['lane_changes_per_min']:.2f} |", flush=True)


if __name__ == "__main__":
    _main()
