"""Road builders: one function per road type of the scenario schema.

Each returns a :class:`BuiltRoad`: the :class:`~drivediff.sim.road.Road`, its named spawn areas (where
vehicles may be placed at reset) and the routes that start at each entry lane. Coordinates are metres in
a right-handed frame (x east, y north, yaw counter-clockwise); traffic drives on the right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from shapely.geometry import box as shapely_box

from drivediff.scenarios.schema import (
    HighwayRoad,
    IntersectionRoad,
    MergeRoad,
    RingRoad,
    RoundaboutRoad,
)
from drivediff.sim.road import Arc, LineType, Polyline, Road, RoadBuilder, Sine, Straight

S, D, N = LineType.SOLID, LineType.DASHED, LineType.NONE


@dataclass(frozen=True)
class SpawnLane:
    lane: int
    s_lo: float
    s_hi: float


@dataclass
class BuiltRoad:
    road: Road
    spawn: dict[str, list[SpawnLane]]
    routes: dict[int, list[list[int]]] = field(default_factory=dict)  # entry lane -> lanes after it

    def routes_from(self, lane: int) -> list[list[int]]:
        return self.routes.get(lane, [])


def build_road(cfg) -> BuiltRoad:
    """Build (and memoise) the road of a road config."""
    return _build_cached(cfg)


@lru_cache(maxsize=64)
def _build_cached(cfg) -> BuiltRoad:
    builder = {
        HighwayRoad: highway,
        MergeRoad: merge,
        IntersectionRoad: intersection,
        RoundaboutRoad: roundabout,
        RingRoad: ring,
    }[type(cfg)]
    return builder(cfg)


# ------------------------------------------------------------------------------------------------ highway


def highway(cfg: HighwayRoad) -> BuiltRoad:
    b = RoadBuilder()
    w = cfg.lane_width
    names = []
    for k in range(cfg.lanes):
        left = S if k == cfg.lanes - 1 else D
        right = S if k == 0 else D
        names.append(b.add_lane(f"lane{k}", Straight((0.0, k * w), (cfg.length, k * w)), width=w,
                                speed_limit=cfg.speed_limit, left_line=left, right_line=right))
    for k in range(cfg.lanes - 1):
        b.neighbors(names[k + 1], names[k])
    road = b.build(sdf_res=0.5 if cfg.length <= 5000 else 1.0)
    spawn = [SpawnLane(k, 10.0, cfg.length - 50.0) for k in range(cfg.lanes)]
    return BuiltRoad(road, {"main": spawn})


# -------------------------------------------------------------------------------------------------- merge


def merge(cfg: MergeRoad) -> BuiltRoad:
    """Highway lanes ``main{k}_{a,b,c}`` (k = 0 rightmost), ramp ``ramp_a`` -> ``ramp_b`` -> ``accel``.

    The acceleration lane ``accel`` runs beside ``main0_b`` and ends in a wall: ramp vehicles must change
    lanes (MOBIL makes that change mandatory as the end approaches).
    """
    b = RoadBuilder()
    w = cfg.lane_width
    x0, x1, x2, x3 = 0.0, cfg.before, cfg.before + cfg.merge_length, cfg.before + cfg.merge_length + cfg.after
    segs = {"a": (x0, x1), "b": (x1, x2), "c": (x2, x3)}
    for k in range(cfg.lanes):
        for seg, (xa, xb) in segs.items():
            left = S if k == cfg.lanes - 1 else D
            right = (D if seg == "b" else S) if k == 0 else D
            b.add_lane(f"main{k}_{seg}", Straight((xa, k * w), (xb, k * w)), width=w,
                       speed_limit=cfg.speed_limit, left_line=left, right_line=right)
        b.connect(f"main{k}_a", f"main{k}_b")
        b.connect(f"main{k}_b", f"main{k}_c")
    for k in range(cfg.lanes - 1):
        for seg in segs:
            b.neighbors(f"main{k + 1}_{seg}", f"main{k}_{seg}")
    amp = 3.25
    y_ramp = -w - 2 * amp
    xr0 = x1 - cfg.ramp_bend - cfg.ramp_length
    b.add_lane("ramp_a", Straight((xr0, y_ramp), (x1 - cfg.ramp_bend, y_ramp)), width=w,
               speed_limit=cfg.ramp_speed_limit, left_line=S, right_line=S)
    b.add_lane("ramp_b", Sine((x1 - cfg.ramp_bend, -w - amp), (x1, -w - amp), amplitude=amp,
                              pulsation=math.pi / cfg.ramp_bend, phase=-math.pi / 2), width=w,
               speed_limit=cfg.ramp_speed_limit, left_line=S, right_line=S)
    b.add_lane("accel", Straight((x1, -w), (x2, -w)), width=w, speed_limit=cfg.speed_limit, left_line=D,
               right_line=S, dead_end=True)
    b.connect("ramp_a", "ramp_b")
    b.connect("ramp_b", "accel")
    b.neighbors("main0_b", "accel")
    road = b.build()
    li = road.lane_index
    spawn = {
        "highway": [SpawnLane(li(f"main{k}_a"), 10.0, cfg.before - 10.0) for k in range(cfg.lanes)],
        "main": [SpawnLane(li(f"main{k}_{seg}"), 5.0, (x1 - x0 if seg == "a" else (x2 - x1 if seg == "b" else
                                                                             x3 - x2)) - 5.0)
                 for k in range(cfg.lanes) for seg in ("a", "b", "c")],
        "ramp": [SpawnLane(li("ramp_a"), 10.0, cfg.ramp_length - 10.0)],
    }
    return BuiltRoad(road, spawn)  # no branches: every lane continues on its default successor


# ------------------------------------------------------------------------------------------- intersection


def _rot(p, k):
    c, s = round(math.cos(k * math.pi / 2)), round(math.sin(k * math.pi / 2))
    return (c * p[0] - s * p[1], s * p[0] + c * p[1])


APPROACH = ("w", "s", "e", "n")  # approach k comes from this side (rotation of the west approach by k*90)
EXIT = ("e", "n", "w", "s")  # exit k leaves towards this side


def intersection(cfg: IntersectionRoad) -> BuiltRoad:
    """Four approaches ``in_{w,s,e,n}``, exits ``out_{e,n,w,s}``, turn lanes ``{from}_{to}``.

    Geometry follows highway-env's intersection-v0 (right turn radius 9 m, left 13 m with 4 m lanes),
    laid out for right-hand traffic. East-west is the major road: its straight and right-turn lanes have
    priority 3, its left turns 2; north-south straight/right 1, left turns 0.
    """
    b = RoadBuilder()
    w = cfg.lane_width
    r_right = cfg.right_turn_radius
    outer = r_right + w / 2
    r_left = outer + w / 2
    acc = cfg.access_length
    for k in range(4):
        a, e = APPROACH[k], EXIT[k]
        major = k % 2 == 0
        b.add_lane(f"in_{a}", Straight(_rot((-outer - acc, -w / 2), k), _rot((-outer, -w / 2), k)), width=w,
                   speed_limit=cfg.speed_limit, left_line=S, right_line=S, priority=3 if major else 1)
        b.add_lane(f"out_{e}", Straight(_rot((outer, -w / 2), k), _rot((outer + acc, -w / 2), k)), width=w,
                   speed_limit=cfg.speed_limit, left_line=S, right_line=S)
    for k in range(4):
        a = APPROACH[k]
        major = k % 2 == 0
        th = k * math.pi / 2
        start = _rot((-outer, -w / 2), k)
        straight_to, right_to, left_to = EXIT[k], EXIT[(k + 3) % 4], EXIT[(k + 1) % 4]
        c_r = _rot((-outer, -outer), k)
        c_l = _rot((-outer, outer), k)
        turns = {
            straight_to: (Straight(start, _rot((outer, -w / 2), k)), 3 if major else 1),
            right_to: (Arc(c_r, r_right, th + math.pi / 2, th), 3 if major else 1),
            left_to: (Arc(c_l, r_left, th - math.pi / 2, th), 2 if major else 0),
        }
        for to, (geom, prio) in turns.items():
            name = f"{a}_{to}"
            b.add_lane(name, geom, width=w, speed_limit=cfg.turn_speed_limit if to != straight_to
                       else cfg.speed_limit, left_line=N, right_line=N, priority=prio, junction=True)
            b.connect(f"in_{a}", name)
            b.connect(name, f"out_{to}")
    b.add_area(shapely_box(-outer, -outer, outer, outer))
    road = b.build(sdf_res=0.25)
    li = road.lane_index
    spawn, routes = {}, {}
    for k in range(4):
        a = APPROACH[k]
        lane = li(f"in_{a}")
        spawn.setdefault("approach", []).append(SpawnLane(lane, 5.0, acc - 15.0))
        routes[lane] = [[li(f"{a}_{to}"), li(f"out_{to}")] for to in (EXIT[k], EXIT[(k + 3) % 4],
                                                                     EXIT[(k + 1) % 4])]
    return BuiltRoad(road, spawn, routes)


# --------------------------------------------------------------------------------------------- roundabout


def _bezier(p0, t0, p3, t3, n=200):
    """Cubic Bezier from p0 (unit tangent t0) to p3 (unit tangent t3), handles a third of the chord."""
    p0, t0, p3, t3 = (np.asarray(v, float) for v in (p0, t0, p3, t3))
    h = np.linalg.norm(p3 - p0) / 3.0
    p1, p2 = p0 + h * t0, p3 - h * t3
    u = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - u) ** 3 * p0 + 3 * (1 - u) ** 2 * u * p1 + 3 * (1 - u) * u ** 2 * p2 + u ** 3 * p3
    return Polyline(tuple(map(tuple, pts)))


def roundabout(cfg: RoundaboutRoad) -> BuiltRoad:
    """Counter-clockwise ring split at every entry/exit point, four legs (east, north, west, south).

    Lanes: approach ``in{k}`` -> connector ``in{k}_c`` -> ring segment ``ring{k}_out`` (entry merges
    there), ring segments ``ring{k}_in`` (past leg k) and ``ring{k}_out`` (to leg k+1), exit connector
    ``out{k}_c`` -> exit ``out{k}``. Circulating traffic has priority over entering traffic.
    """
    b = RoadBuilder()
    w, r = cfg.lane_width, cfg.radius
    alpha = math.radians(22.0)
    conn = 18.0  # radial extent of the connectors beyond the ring
    acc = cfg.access_length
    for k in range(4):
        phi = k * math.pi / 2
        c, s = math.cos(phi), math.sin(phi)
        radial = np.array([c, s])
        lateral = np.array([-s, c])  # to the left of the outward direction

        def at(dist, lat, radial=radial, lateral=lateral):
            return tuple(radial * dist + lateral * lat)

        b.add_lane(f"in{k}", Straight(at(r + conn + acc, w / 2), at(r + conn, w / 2)), width=w,
                   speed_limit=cfg.speed_limit, left_line=S, right_line=S, priority=1)
        pe = (r * math.cos(phi + alpha), r * math.sin(phi + alpha))
        te = (-math.sin(phi + alpha), math.cos(phi + alpha))
        b.add_lane(f"in{k}_c", _bezier(at(r + conn, w / 2), tuple(-radial), pe, te), width=w,
                   speed_limit=cfg.ring_speed_limit, left_line=N, right_line=S, priority=1, junction=True)
        px = (r * math.cos(phi - alpha), r * math.sin(phi - alpha))
        tx = (-math.sin(phi - alpha), math.cos(phi - alpha))
        b.add_lane(f"out{k}_c", _bezier(px, tx, at(r + conn, -w / 2), tuple(radial)), width=w,
                   speed_limit=cfg.ring_speed_limit, left_line=N, right_line=S, junction=True)
        b.add_lane(f"out{k}", Straight(at(r + conn, -w / 2), at(r + conn + acc, -w / 2)), width=w,
                   speed_limit=cfg.speed_limit, left_line=S, right_line=S)
        b.add_lane(f"ring{k}_in", Arc((0.0, 0.0), r, phi - alpha, phi + alpha), width=w,
                   speed_limit=cfg.ring_speed_limit, left_line=S, right_line=S, priority=3, junction=True)
        b.add_lane(f"ring{k}_out", Arc((0.0, 0.0), r, phi + alpha, phi + math.pi / 2 - alpha), width=w,
                   speed_limit=cfg.ring_speed_limit, left_line=S, right_line=D, priority=3, junction=True)
    for k in range(4):
        nk = (k + 1) % 4
        b.connect(f"in{k}", f"in{k}_c")
        b.connect(f"in{k}_c", f"ring{k}_out")
        b.connect(f"ring{k}_in", f"ring{k}_out")
        b.connect(f"ring{k}_out", f"ring{nk}_in")  # first successor: keep circulating
        b.connect(f"ring{k}_out", f"out{nk}_c")
        b.connect(f"out{k}_c", f"out{k}")
    road = b.build(sdf_res=0.25)
    li = road.lane_index
    spawn, routes = {"approach": []}, {}
    for k in range(4):
        lane = li(f"in{k}")
        spawn["approach"].append(SpawnLane(lane, 5.0, acc - 10.0))
        opts = []
        for turns in (1, 2, 3):  # exit at the 1st, 2nd or 3rd leg after the entry
            path = [li(f"in{k}_c"), li(f"ring{k}_out")]
            for q in range(1, turns):
                m = (k + q) % 4
                path += [li(f"ring{m}_in"), li(f"ring{m}_out")]
            m = (k + turns) % 4
            path += [li(f"out{m}_c"), li(f"out{m}")]
            opts.append(path)
        routes[lane] = opts
    return BuiltRoad(road, spawn, routes)


# --------------------------------------------------------------------------------------------------- ring


def ring(cfg: RingRoad) -> BuiltRoad:
    """One closed lane ``ring`` (its own successor), counter-clockwise, starting at the bottom."""
    b = RoadBuilder()
    radius = cfg.length / (2 * math.pi)
    b.add_lane("ring", Arc((0.0, 0.0), radius, -math.pi / 2, 1.5 * math.pi), width=cfg.lane_width,
               speed_limit=cfg.speed_limit, left_line=S, right_line=S)
    b.connect("ring", "ring")
    road = b.build()
    return BuiltRoad(road, {"ring": [SpawnLane(0, 0.0, float(road.lane_len[0]))]})
