"""Roads: lanes as sampled centreline polylines, their topology, conflict points and drivable area.

A :class:`Road` is immutable. Kernels see it as :class:`RoadArrays`, a NamedTuple of flat arrays:

* lane points in CSR layout (``lane_start[l]:lane_start[l+1]`` indexes ``px, py, ps, ph``), sampled
  uniformly in arc length every ``lane_ds[l]`` (about ``ds`` metres),
* per-lane width, speed limit, length, left/right neighbour (-1: none), priority, exit flag,
* successors and predecessors in CSR layout,
* conflict points between lanes that cross or merge (for yielding),
* a signed-distance grid of the drivable area (negative inside, positive outside, metres).

Roads are built with :class:`RoadBuilder` from lane geometries (:class:`Straight`, :class:`Arc`,
:class:`Sine`, :class:`Polyline`); shapely computes the drivable-area polygon, centreline crossings and
the distance grid.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

from drivediff.io import atomic_write
from drivediff.sim import layout as L

__all__ = [
    "Arc",
    "ConflictKind",
    "LineType",
    "Polyline",
    "Road",
    "RoadArrays",
    "RoadBuilder",
    "Sine",
    "Straight",
]


class LineType(IntEnum):
    """Lane marking on one side of a lane (for rendering and for lane-change rules)."""

    NONE = 0
    DASHED = 1
    SOLID = 2


class ConflictKind(IntEnum):
    CROSS = 0  # centrelines cross inside a junction
    MERGE = 1  # two lanes end where a common successor starts


# ---------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Straight:
    """Straight lane from ``start`` to ``end`` (metres)."""

    start: tuple[float, float]
    end: tuple[float, float]

    def dense(self, step: float) -> np.ndarray:
        a, b = np.asarray(self.start, float), np.asarray(self.end, float)
        n = max(2, int(math.ceil(np.linalg.norm(b - a) / step)) + 1)
        u = np.linspace(0.0, 1.0, n)[:, None]
        return a + u * (b - a)


@dataclass(frozen=True)
class Arc:
    """Circular lane around ``center`` of ``radius``, from ``start_angle`` to ``end_angle`` [rad].

    Counter-clockwise when ``end_angle > start_angle``, clockwise otherwise.
    """

    center: tuple[float, float]
    radius: float
    start_angle: float
    end_angle: float

    def dense(self, step: float) -> np.ndarray:
        sweep = abs(self.end_angle - self.start_angle) * self.radius
        n = max(2, int(math.ceil(sweep / step)) + 1)
        th = np.linspace(self.start_angle, self.end_angle, n)
        cx, cy = self.center
        return np.stack([cx + self.radius * np.cos(th), cy + self.radius * np.sin(th)], axis=1)


@dataclass(frozen=True)
class Sine:
    """Straight lane from ``start`` to ``end`` with a lateral offset ``amplitude * sin(pulsation * s + phase)``.

    ``s`` is the distance along the straight line (highway-env's SineLane convention).
    """

    start: tuple[float, float]
    end: tuple[float, float]
    amplitude: float
    pulsation: float
    phase: float

    def dense(self, step: float) -> np.ndarray:
        a, b = np.asarray(self.start, float), np.asarray(self.end, float)
        length = float(np.linalg.norm(b - a))
        n = max(2, int(math.ceil(length / step)) + 1)
        s = np.linspace(0.0, length, n)
        t = (b - a) / length
        nrm = np.array([-t[1], t[0]])
        off = self.amplitude * np.sin(self.pulsation * s + self.phase)
        return a + s[:, None] * t + off[:, None] * nrm


@dataclass(frozen=True)
class Polyline:
    """Lane through the given points (at least two, no repeated consecutive points)."""

    points: tuple[tuple[float, float], ...]

    def dense(self, step: float) -> np.ndarray:
        p = np.asarray(self.points, float)
        out = [p[:1]]
        for a, b in zip(p[:-1], p[1:], strict=True):
            n = max(2, int(math.ceil(np.linalg.norm(b - a) / step)) + 1)
            u = np.linspace(0.0, 1.0, n)[1:, None]
            out.append(a + u * (b - a))
        return np.concatenate(out)


Geometry = Straight | Arc | Sine | Polyline


def _resample(dense: np.ndarray, ds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Resample a fine polyline uniformly in arc length; returns (xy, s, heading, length)."""
    seg = np.diff(dense, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    keep = np.concatenate([[True], seglen > 1e-9])
    dense = dense[keep]
    seg = np.diff(dense, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    length = float(cum[-1])
    if length <= 1e-6:
        raise ValueError("lane has zero length")
    n = max(1, int(math.ceil(length / ds)))
    s = np.linspace(0.0, length, n + 1)
    xy = np.stack([np.interp(s, cum, dense[:, 0]), np.interp(s, cum, dense[:, 1])], axis=1)
    seg_heading = np.unwrap(np.arctan2(seg[:, 1], seg[:, 0]))
    mid = 0.5 * (cum[:-1] + cum[1:])
    heading = np.interp(s, mid, seg_heading)
    return xy, s, heading, length


# -------------------------------------------------------------------------------------------- road arrays


class RoadArrays(NamedTuple):
    """A road as kernels see it: eight packed arrays (column indices in ``drivediff.sim.layout``).

    L lanes, P centreline points, E links, C conflict entries.
    """

    lane_f: np.ndarray  # (L, 4) float64: length [m], point spacing [m], width [m], speed limit [m/s]
    lane_i: np.ndarray  # (L+1, 10) int64: point start, left, right, lane change left/right allowed,
    #                     priority, exit flag, successor start, predecessor start, conflict start
    pts: np.ndarray  # (P, 4) float64: x [m], y [m], s [m], heading [rad]
    links: np.ndarray  # (E,) int64 successors then predecessors (CSR targets)
    conf_f: np.ndarray  # (C, 4) float64: s here, s on the other lane, zone half-extent here / there [m]
    conf_i: np.ndarray  # (C, 3) int64: other lane, ConflictKind, yield code (1 yield, 0 priority, 2 FCFS)
    sdf: np.ndarray  # (H, W) float64 signed distance to the drivable-area edge [m], < 0 inside
    sdf_meta: np.ndarray  # (3,) float64: world x of column 0, world y of row 0, grid spacing [m]


# ---------------------------------------------------------------------------------------------- builder


@dataclass
class _LaneDef:
    name: str
    geometry: Geometry
    width: float
    speed_limit: float
    left_line: LineType
    right_line: LineType
    priority: int
    junction: bool
    dead_end: bool


@dataclass
class RoadBuilder:
    """Collects lanes and their topology, then :meth:`build` makes an immutable :class:`Road`."""

    _lanes: list[_LaneDef] = field(default_factory=list)
    _links: list[tuple[str, str]] = field(default_factory=list)
    _pairs: list[tuple[str, str]] = field(default_factory=list)
    _areas: list[Polygon] = field(default_factory=list)

    def add_lane(
        self,
        name: str,
        geometry: Geometry,
        *,
        width: float = 4.0,
        speed_limit: float = 30.0,
        left_line: LineType = LineType.DASHED,
        right_line: LineType = LineType.DASHED,
        priority: int = 0,
        junction: bool = False,
        dead_end: bool = False,
    ) -> str:
        """Add a lane. ``dead_end`` lanes (e.g. an acceleration lane) end in a wall instead of an exit."""
        if any(ln.name == name for ln in self._lanes):
            raise ValueError(f"duplicate lane name {name!r}")
        if not (width > 0 and speed_limit > 0):
            raise ValueError(f"lane {name!r}: width and speed_limit must be positive")
        self._lanes.append(_LaneDef(name, geometry, float(width), float(speed_limit), LineType(left_line),
                                    LineType(right_line), int(priority), bool(junction), bool(dead_end)))
        return name

    def connect(self, src: str, dst: str) -> None:
        """Vehicles at the end of lane ``src`` continue on lane ``dst``."""
        self._links.append((src, dst))

    def neighbors(self, left: str, right: str) -> None:
        """``left`` runs beside ``right``, on its left, in the same direction (lane changes allowed)."""
        self._pairs.append((left, right))

    def add_area(self, polygon: Polygon) -> None:
        """Extra drivable area (a junction box, say) beyond the union of lane strips."""
        self._areas.append(polygon)

    def build(self, ds: float = 0.5, sdf_res: float = 0.5, sdf_margin: float = 6.0) -> Road:
        if not self._lanes:
            raise ValueError("a road needs at least one lane")
        names = [ln.name for ln in self._lanes]
        index = {n: i for i, n in enumerate(names)}
        for a, b in self._links + self._pairs:
            for n in (a, b):
                if n not in index:
                    raise ValueError(f"unknown lane {n!r} in road topology")
        return Road._from_builder(self, index, ds, sdf_res, sdf_margin)


# ------------------------------------------------------------------------------------------------- road


_EXTEND = 10.0  # [m] drivable area beyond the open ends of entry and exit lanes


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _csr(lists: list[list]) -> tuple[np.ndarray, list]:
    start = np.zeros(len(lists) + 1, dtype=np.int64)
    start[1:] = np.cumsum([len(v) for v in lists])
    return start, [x for v in lists for x in v]


def cache_dir() -> Path:
    """Where derived artefacts (distance grids) are cached: ``$DRIVEDIFF_CACHE_DIR`` or ~/.cache/drivediff."""
    env = os.environ.get("DRIVEDIFF_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "drivediff"


class Road:
    """An immutable road network. Use :class:`RoadBuilder` to make one."""

    def __init__(self, arrays: RoadArrays, names: list[str], left_line: np.ndarray, right_line: np.ndarray,
                 junction: np.ndarray, polygon: Polygon):
        self.arrays = arrays
        self.lane_names = list(names)
        self.left_line = left_line  # (L,) LineType
        self.right_line = right_line  # (L,) LineType
        self.junction = junction  # (L,) bool
        self.polygon = polygon
        self._index = {n: i for i, n in enumerate(names)}

    # ---- construction
    @classmethod
    def _from_builder(cls, b: RoadBuilder, index: dict[str, int], ds: float, sdf_res: float,
                      sdf_margin: float) -> Road:
        lanes = b._lanes
        nl = len(lanes)
        pts, ss, hs, lens, dss = [], [], [], [], []
        for ln in lanes:
            xy, s, h, length = _resample(ln.geometry.dense(min(0.05, ds / 4)), ds)
            pts.append(xy)
            ss.append(s)
            hs.append(h)
            lens.append(length)
            dss.append(s[1] - s[0])
        lane_start = np.zeros(nl + 1, dtype=np.int64)
        lane_start[1:] = np.cumsum([len(s) for s in ss])
        px = np.concatenate([p[:, 0] for p in pts])
        py = np.concatenate([p[:, 1] for p in pts])
        succ = [[] for _ in range(nl)]
        pred = [[] for _ in range(nl)]
        for a, c in b._links:
            succ[index[a]].append(index[c])
            pred[index[c]].append(index[a])
        left = np.full(nl, -1, dtype=np.int64)
        right = np.full(nl, -1, dtype=np.int64)
        for lft, rgt in b._pairs:
            left[index[rgt]] = index[lft]
            right[index[lft]] = index[rgt]
        exit_ = np.array([not succ[i] and not lanes[i].dead_end for i in range(nl)], dtype=np.bool_)
        lines = [LineString(p) for p in pts]
        # open ends (entries and exits) continue beyond the road: extend their strips so that a vehicle
        # entering or leaving is not flagged off-road
        strips = []
        for k, (p, d) in enumerate(zip(pts, lanes, strict=True)):
            ext = np.asarray(p)
            if len(ext) > 2 and np.hypot(*(ext[-1] - ext[0])) < 1e-6:
                # a closed lane (a ring): end exactly where it starts, or the strip keeps a seam across the
                # lane (its edge runs through the join, and everything there reads as on the road edge)
                ext = np.vstack([ext[:-1], ext[:1]])
            if not pred[k]:
                ext = np.vstack([ext[0] - _EXTEND * _unit(ext[1] - ext[0]), ext])
            if exit_[k]:
                ext = np.vstack([ext, ext[-1] + _EXTEND * _unit(ext[-1] - ext[-2])])
            strips.append(LineString(ext).buffer(d.width / 2, cap_style="flat", join_style="round"))
        polygon = shapely.union_all(strips + list(b._areas))
        conf = _conflicts(lanes, lines, pts, ss, lens, succ, pred, left, right)
        sdf, x0, y0 = _sdf_grid(polygon, sdf_res, sdf_margin)
        succ_start, succ_flat = _csr(succ)
        pred_start, pred_flat = _csr(pred)
        conf_start, _ = _csr(conf)
        flat_conf = [c for i in range(nl) for c in conf[i]]
        lane_i = np.zeros((nl + 1, 10), dtype=np.int64)
        lane_i[:, L.L_PT] = lane_start
        lane_i[:nl, L.L_LEFT] = left
        lane_i[:nl, L.L_RIGHT] = right
        lane_i[:nl, L.L_LC_LEFT] = [left[i] >= 0 and lanes[i].left_line != LineType.SOLID for i in range(nl)]
        lane_i[:nl, L.L_LC_RIGHT] = [right[i] >= 0 and lanes[i].right_line != LineType.SOLID for i in range(nl)]
        lane_i[:nl, L.L_PRIORITY] = [ln.priority for ln in lanes]
        lane_i[:nl, L.L_EXIT] = exit_
        lane_i[:, L.L_SUCC] = succ_start
        lane_i[:, L.L_PRED] = pred_start + len(succ_flat)
        lane_i[:, L.L_CONF] = conf_start
        lane_f = np.stack([np.array(lens), np.array(dss), np.array([ln.width for ln in lanes]),
                           np.array([ln.speed_limit for ln in lanes])], axis=1)
        arrays = RoadArrays(
            lane_f=lane_f, lane_i=lane_i,
            pts=np.stack([px, py, np.concatenate(ss), np.concatenate(hs)], axis=1),
            links=np.concatenate([succ_flat, pred_flat]).astype(np.int64),
            conf_f=np.array([c[1:5] for c in flat_conf], dtype=np.float64).reshape(-1, 4),
            conf_i=np.array([(c[0], c[5], c[6]) for c in flat_conf], dtype=np.int64).reshape(-1, 3),
            sdf=sdf, sdf_meta=np.array([x0, y0, sdf_res], dtype=np.float64),
        )
        return cls(arrays, [ln.name for ln in lanes],
                   np.array([ln.left_line for ln in lanes], dtype=np.int64),
                   np.array([ln.right_line for ln in lanes], dtype=np.int64),
                   np.array([ln.junction for ln in lanes], dtype=np.bool_), polygon)

    # ---- queries
    @property
    def num_lanes(self) -> int:
        return len(self.lane_names)

    @property
    def lane_len(self) -> np.ndarray:
        return self.arrays.lane_f[:, L.L_LEN]

    @property
    def lane_width(self) -> np.ndarray:
        return self.arrays.lane_f[:, L.L_WIDTH]

    @property
    def lane_speed(self) -> np.ndarray:
        return self.arrays.lane_f[:, L.L_SPEED]

    @property
    def lane_left(self) -> np.ndarray:
        return self.arrays.lane_i[:-1, L.L_LEFT]

    @property
    def lane_right(self) -> np.ndarray:
        return self.arrays.lane_i[:-1, L.L_RIGHT]

    @property
    def lane_priority(self) -> np.ndarray:
        return self.arrays.lane_i[:-1, L.L_PRIORITY]

    @property
    def lane_exit(self) -> np.ndarray:
        return self.arrays.lane_i[:-1, L.L_EXIT].astype(bool)

    def lane_index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no lane named {name!r}; lanes are {self.lane_names}") from None

    def _pt_slice(self, lane: int) -> slice:
        li = self.arrays.lane_i
        return slice(int(li[lane, L.L_PT]), int(li[lane + 1, L.L_PT]))

    def lane_points(self, lane: int) -> np.ndarray:
        """(P_l, 2) centreline points of one lane."""
        return self.arrays.pts[self._pt_slice(lane), :2]

    def lane_headings(self, lane: int) -> np.ndarray:
        return self.arrays.pts[self._pt_slice(lane), L.P_H]

    def successors(self, lane: int) -> list[int]:
        li = self.arrays.lane_i
        return self.arrays.links[li[lane, L.L_SUCC]:li[lane + 1, L.L_SUCC]].tolist()

    def predecessors(self, lane: int) -> list[int]:
        li = self.arrays.lane_i
        return self.arrays.links[li[lane, L.L_PRED]:li[lane + 1, L.L_PRED]].tolist()

    def conflicts(self, lane: int) -> list[dict]:
        """Conflict points of a lane (for inspection and tests)."""
        a = self.arrays
        c0, c1 = a.lane_i[lane, L.L_CONF], a.lane_i[lane + 1, L.L_CONF]
        return [dict(other=int(a.conf_i[c, L.C_OTHER]), s=float(a.conf_f[c, L.C_S]),
                     s_other=float(a.conf_f[c, L.C_S_OTHER]), half=float(a.conf_f[c, L.C_HALF]),
                     half_other=float(a.conf_f[c, L.C_HALF_OTHER]), kind=ConflictKind(int(a.conf_i[c, L.C_KIND])),
                     yield_code=int(a.conf_i[c, L.C_YIELD])) for c in range(c0, c1)]

    @cached_property
    def _pt_columns(self) -> np.ndarray:
        """(4, P) s, x, y, heading of every centreline point, each row contiguous: ``np.interp`` copies strided
        inputs, and on a 3 km lane those copies were most of a reset's placement time."""
        return np.ascontiguousarray(self.arrays.pts[:, [L.P_S, L.P_X, L.P_Y, L.P_H]].T)

    @cached_property
    def _pt_first(self) -> tuple[np.ndarray, np.ndarray]:
        """Each lane's first centreline point (num_lanes + 1) and its length, contiguous."""
        return (np.ascontiguousarray(self.arrays.lane_i[:, L.L_PT]),
                np.ascontiguousarray(self.arrays.lane_f[:, L.L_LEN]))

    def position(self, lane: int, s, d=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x, y, heading) of lane coordinates (s along the lane, d to the left)."""
        s = np.asarray(s, float)
        x, y, h = self.positions(np.full(s.shape, lane, dtype=np.int64), s, d)
        return (x, y, h) if s.ndim else (x[()], y[()], h[()])

    def positions(self, lanes, s, d=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x, y, heading) of lane coordinates of points on different lanes, in one compiled call:
        ``np.interp`` of each lane's centreline at s (clamped to the lane), offset d to the left."""
        from drivediff.sim.kernels.frenet import interp_centrelines

        lanes = np.asarray(lanes, dtype=np.int64)
        if lanes.size and (lanes.min() < 0 or lanes.max() >= self.num_lanes):
            raise IndexError(f"lane indices must be in [0, {self.num_lanes}); got {lanes.min()}..{lanes.max()}")
        s = np.broadcast_to(np.asarray(s, float), lanes.shape)
        out = np.empty((3, lanes.size))
        first, length = self._pt_first
        interp_centrelines(self._pt_columns, first, length, lanes.ravel(), np.ascontiguousarray(s).ravel(), out)
        x, y, h = (v.reshape(lanes.shape) for v in out)
        d = np.asarray(d, float)
        return x - d * np.sin(h), y + d * np.cos(h), h

    def project(self, lane: int, x: float, y: float) -> tuple[float, float]:
        """(s, d) of a point on a lane: nearest point of the centreline polyline (global search)."""
        p = self.lane_points(lane)
        a, b = p[:-1], p[1:]
        ab = b - a
        t = np.clip(((x - a[:, 0]) * ab[:, 0] + (y - a[:, 1]) * ab[:, 1]) / np.maximum((ab ** 2).sum(1), 1e-12),
                    0, 1)
        q = a + t[:, None] * ab
        dist2 = (x - q[:, 0]) ** 2 + (y - q[:, 1]) ** 2
        k = int(np.argmin(dist2))
        s = (k + t[k]) * self.arrays.lane_f[lane, L.L_DS]
        cross = ab[k, 0] * (y - a[k, 1]) - ab[k, 1] * (x - a[k, 0])
        return float(s), float(math.copysign(math.sqrt(dist2[k]), cross))

    def signed_distance(self, x, y) -> np.ndarray:
        """Signed distance to the drivable-area edge from the grid (bilinear), negative inside [m]."""
        from drivediff.sim.kernels.offroad import sdf_sample_many

        x = np.ascontiguousarray(np.broadcast_to(np.asarray(x, float), np.broadcast_shapes(np.shape(x),
                                                                                            np.shape(y))))
        y = np.ascontiguousarray(np.broadcast_to(np.asarray(y, float), x.shape))
        out = np.empty(x.size)
        sdf_sample_many(self.arrays.sdf, self.arrays.sdf_meta, x.ravel(), y.ravel(), out)
        return out.reshape(x.shape)

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in self.polygon.bounds)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Arrays that describe the road completely (for episode logs)."""
        a = self.arrays
        out = {f"road_{k}": np.asarray(v) for k, v in a._asdict().items()}
        out["road_lane_names"] = np.array(self.lane_names)
        out["road_left_line"] = self.left_line
        out["road_right_line"] = self.right_line
        out["road_junction"] = self.junction
        out["road_polygon_wkb"] = np.frombuffer(shapely.to_wkb(self.polygon), dtype=np.uint8)
        return out

    @classmethod
    def from_dict(cls, d) -> Road:
        kw = {}
        for k in RoadArrays._fields:
            kw[k] = np.asarray(d[f"road_{k}"])
        arrays = RoadArrays(**kw)
        polygon = shapely.from_wkb(np.asarray(d["road_polygon_wkb"], dtype=np.uint8).tobytes())
        return cls(arrays, [str(n) for n in d["road_lane_names"]], np.asarray(d["road_left_line"]),
                   np.asarray(d["road_right_line"]), np.asarray(d["road_junction"]), polygon)


# ------------------------------------------------------------------------------------------- conflicts


def _zone_half(pts_i: np.ndarray, s_i: np.ndarray, line_j: LineString, at: float, clearance: float,
               before_only: bool) -> float:
    """Half-extent along lane i, around arc length ``at``, of the stretch where lane i's centreline is
    closer than ``clearance`` to lane j's centreline (where two vehicles' boxes could touch)."""
    win = (s_i >= at - 40.0) & (s_i <= at + (0.0 if before_only else 40.0))
    idx = np.nonzero(win)[0]
    if idx.size == 0:
        return clearance
    dist = shapely.distance(shapely.points(pts_i[idx]), line_j)
    close = dist < clearance
    k0 = int(np.argmin(np.abs(s_i[idx] - at)))
    lo = hi = k0
    while lo > 0 and close[lo - 1]:
        lo -= 1
    while hi < idx.size - 1 and close[hi + 1]:
        hi += 1
    ext = max(at - s_i[idx[lo]], s_i[idx[hi]] - at)
    return float(min(max(ext, 0.5 * clearance), 30.0))


def _conflicts(lanes, lines, pts, svals, lens, succ, pred, left, right):
    """Conflict points per lane: (other lane, s here, s there, half here, half there, kind, yield code)."""
    nl = len(lanes)
    conf: list[list[tuple]] = [[] for _ in range(nl)]

    def yield_code(i, j):
        pi, pj = lanes[i].priority, lanes[j].priority
        return 1 if pi < pj else (0 if pi > pj else 2)

    def add(i, j, si, sj, kind):
        # boxes of two 2 m wide vehicles touch when the centrelines are closer than ~the lane half-widths
        # plus a vehicle half-width; 0.25 m margin
        clearance = 0.5 * lanes[j].width + 1.25 if kind == ConflictKind.CROSS else \
            0.5 * (lanes[i].width + lanes[j].width) * 0.5 + 1.25
        before = kind == ConflictKind.MERGE
        hi = _zone_half(pts[i], svals[i], lines[j], si, clearance, before)
        hj = _zone_half(pts[j], svals[j], lines[i], sj, clearance, before)
        conf[i].append((j, si, sj, hi, hj, int(kind), yield_code(i, j)))
        conf[j].append((i, sj, si, hj, hi, int(kind), yield_code(j, i)))

    # merges: every pair of lanes that feed the same successor
    for k in range(nl):
        ps = sorted(set(pred[k]))
        for a_i, i in enumerate(ps):
            for j in ps[a_i + 1:]:
                add(i, j, lens[i], lens[j], ConflictKind.MERGE)
    # crossings: centrelines that intersect away from shared start/end points
    tree = shapely.STRtree(lines)
    for i in range(nl):
        for j in tree.query(lines[i]):
            j = int(j)
            if j <= i or left[i] == j or right[i] == j:
                continue
            if j in succ[i] or i in succ[j]:
                continue
            inter = lines[i].intersection(lines[j])
            if inter.is_empty:
                continue
            for p in shapely.get_parts(inter):
                if p.geom_type != "Point":
                    continue
                si, sj = lines[i].project(p), lines[j].project(p)
                near_start = si < 1.0 and sj < 1.0
                near_end = si > lens[i] - 1.0 and sj > lens[j] - 1.0
                if near_start or near_end:  # a diverge or a merge, not a crossing
                    continue
                add(i, j, si, sj, ConflictKind.CROSS)
    for c in conf:
        c.sort(key=lambda t: t[1])
    return conf


# ------------------------------------------------------------------------------------------ distance grid


def _sdf_grid(polygon: Polygon, res: float, margin: float) -> tuple[np.ndarray, float, float]:
    """Signed distance to the polygon's boundary on a regular grid, cached on disk by content hash."""
    x0, y0, x1, y1 = polygon.bounds
    x0, y0 = x0 - margin, y0 - margin
    nx = int(math.ceil((x1 + margin - x0) / res)) + 1
    ny = int(math.ceil((y1 + margin - y0) / res)) + 1
    wkb = shapely.to_wkb(polygon)
    key = hashlib.sha256(wkb + np.array([res, margin, x0, y0, nx, ny]).tobytes()).hexdigest()[:24]
    path = cache_dir() / "sdf" / f"{key}.npy"
    if path.exists():
        try:
            grid = np.load(path, allow_pickle=False)
            if grid.shape == (ny, nx):
                return grid, x0, y0
        except (OSError, ValueError):
            pass
    xs = x0 + res * np.arange(nx)
    ys = y0 + res * np.arange(ny)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    inside = shapely.contains_xy(polygon, gx, gy)
    segs = []
    for ring in shapely.get_parts(polygon.boundary):
        c = np.asarray(ring.coords)
        segs.append(np.stack([c[:-1], c[1:]], axis=1))
    tree = shapely.STRtree(shapely.linestrings(np.concatenate(segs)))
    _, dist = tree.query_nearest(shapely.points(gx, gy), return_distance=True, all_matches=False)
    grid = np.where(inside, -dist, dist).reshape(ny, nx).astype(np.float64)
    try:
        atomic_write(path, lambda fh: np.save(fh, grid))
    except OSError:
        pass  # a read-only cache is not an error
    return grid, x0, y0
