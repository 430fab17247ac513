"""Ego-centric observations of the controlled vehicles (Numba kernels) and their layout.

Every agent observes a flat float32 vector in ``[-1, 1]`` (a ``gymnasium.spaces.Box``), computed by a
kernel for all agents of all worlds at once. Positions and velocities are in the ego frame: x forward
along the ego's heading, y to its left. Features are divided by the scale in the last column and
clipped to [-1, 1] (``ObservationLayout.scale`` holds the divisor of every entry, so
``obs * scale`` recovers metres, m/s, ... for unclipped values).

Default sizes: K = 8 neighbours, M = 8 lane points: 12 + 8 x 9 + 3 x 17 = 135 features.

=========  ===============  ==================================================================  =================
block      feature          meaning                                                             scale
=========  ===============  ==================================================================  =================
ego        speed            ego speed                                                           speed_scale (40)
ego        speed_limit      speed limit of the ego's lane                                       speed_scale
ego        lateral_offset   offset d from the lane centre, left positive                        half lane width
ego        heading_sin      sin of (ego yaw - lane heading)                                     1
ego        heading_cos      cos of (ego yaw - lane heading)                                     1
ego        accel            acceleration in the last simulation step                            accel_scale (5)
ego        steer            steering angle applied in the last simulation step                  steer_range max
ego        progress         route progress since reset: 1 - remaining / remaining at reset      1
ego        remaining        distance to the end of the route (lane ends followed along it)      goal_scale (1000)
ego        leader_gap       bumper gap to the vehicle ahead in lane (1 when none in range)      neighbor_range
ego        can_go_left      a lane change to the left is allowed                                1
ego        can_go_right     a lane change to the right is allowed                               1
neighbour  presence         1 for an observed vehicle, 0 for an empty row                       1
neighbour  x, y             relative position of its centre in the ego frame                    neighbor_range (80)
neighbour  vx, vy           relative velocity (its velocity - ego velocity) in the ego frame    speed_scale
neighbour  cos_h, sin_h     cos, sin of (its yaw - ego yaw)                                     1
neighbour  length, width    its size                                                            10 m, 5 m
lane       presence         1 if the lane exists (current lane; left / right neighbour lane)    1
lane       x_k, y_k         centreline point k = 0..M-1 at arc length s + k * lane_spacing,      neighbor_range
                            following the route through lane ends, in the ego frame
=========  ===============  ==================================================================  =================

Neighbour rows hold the K nearest other vehicles (centre distance, ties by slot) within
``neighbor_range``, nearest first; missing rows are zeros. Lane blocks come in the order current, left,
right; the neighbour lanes start at the ego's arc length scaled to their length (as the simulator maps
positions across lanes) and continue through their first successor; points past a road end repeat the
end point. An agent that has left the simulation (crashed, off-road, arrived, truncated) observes zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from drivediff.env.config import ObservationConfig
from drivediff.sim.jit import kernel
from drivediff.sim.kernels.frenet import lane_pose_hot, point_at, wrap_angle
from drivediff.sim.kernels.neighbors import next_lane
from drivediff.sim.layout import (
    ACCEL,
    GAP,
    L_DS,
    L_LC_LEFT,
    L_LC_RIGHT,
    L_LEFT,
    L_LEN,
    L_PT,
    L_RIGHT,
    L_SPEED,
    L_WIDTH,
    LANE,
    LENGTH,
    ROUTE_POS,
    SPEED,
    STEER,
    VALID,
    WIDTH,
    YAW,
    D,
    S,
    X,
    Y,
)

__all__ = ["EGO_FEATURES", "LANE_NAMES", "NEIGHBOR_FEATURES", "ObsParams", "ObservationLayout", "obs_params"]

EGO_FEATURES = ("speed", "speed_limit", "lateral_offset", "heading_sin", "heading_cos", "accel", "steer",
                "progress", "remaining", "leader_gap", "can_go_left", "can_go_right")
NEIGHBOR_FEATURES = ("presence", "x", "y", "vx", "vy", "cos_h", "sin_h", "length", "width")
LANE_NAMES = ("current", "left", "right")
NUM_EGO = len(EGO_FEATURES)
NUM_NB = len(NEIGHBOR_FEATURES)
LENGTH_SCALE = 10.0  # [m]
WIDTH_SCALE = 5.0  # [m]
REMAINING_CAP = 20000.0  # [m] the route walk stops here (closed loops have no end)


class ObsParams(NamedTuple):
    """Scalars the observation kernel needs (from :class:`ObservationConfig` and the action ranges)."""

    k: int  # neighbours
    r: float  # neighbour range and position scale [m]
    m: int  # lane points per lane
    spacing: float  # [m]
    v_scale: float  # [m/s]
    a_scale: float  # [m/s^2]
    steer_scale: float  # [rad]
    goal_scale: float  # [m]


def obs_params(cfg: ObservationConfig, steer_range: tuple[float, float]) -> ObsParams:
    return ObsParams(int(cfg.num_neighbors), float(cfg.neighbor_range), int(cfg.lane_points),
                     float(cfg.lane_spacing), float(cfg.speed_scale), float(cfg.accel_scale),
                     float(max(abs(steer_range[0]), abs(steer_range[1]))), float(cfg.goal_scale))


@dataclass(frozen=True)
class ObservationLayout:
    """Names, slices and scales of the entries of one agent's observation vector."""

    num_neighbors: int
    lane_points: int
    names: tuple[str, ...]
    scale: np.ndarray  # (D,) divisor of every entry (1 for flags and unitless entries)

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def ego(self) -> slice:
        return slice(0, NUM_EGO)

    @property
    def neighbors(self) -> slice:
        return slice(NUM_EGO, NUM_EGO + NUM_NB * self.num_neighbors)

    @property
    def lanes(self) -> slice:
        return slice(self.neighbors.stop, self.dim)

    def split(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Blocks of (..., D) observations: ego (..., 12), neighbors (..., K, 9), lanes (..., 3, 1 + 2M)."""
        lead = obs.shape[:-1]
        return {"ego": obs[..., self.ego],
                "neighbors": obs[..., self.neighbors].reshape(*lead, self.num_neighbors, NUM_NB),
                "lanes": obs[..., self.lanes].reshape(*lead, 3, 1 + 2 * self.lane_points)}

    @classmethod
    def build(cls, prm: ObsParams, half_width: float = 2.0) -> ObservationLayout:
        names, scale = [], []
        ego_scale = {"speed": prm.v_scale, "speed_limit": prm.v_scale, "lateral_offset": half_width,
                     "accel": prm.a_scale, "steer": prm.steer_scale, "remaining": prm.goal_scale,
                     "leader_gap": prm.r}
        for n in EGO_FEATURES:
            names.append(f"ego.{n}")
            scale.append(ego_scale.get(n, 1.0))
        nb_scale = {"x": prm.r, "y": prm.r, "vx": prm.v_scale, "vy": prm.v_scale, "length": LENGTH_SCALE,
                    "width": WIDTH_SCALE}
        for k in range(prm.k):
            for n in NEIGHBOR_FEATURES:
                names.append(f"neighbor{k}.{n}")
                scale.append(nb_scale.get(n, 1.0))
        for lane in LANE_NAMES:
            names.append(f"lane_{lane}.presence")
            scale.append(1.0)
            for k in range(prm.m):
                names += [f"lane_{lane}.x{k}", f"lane_{lane}.y{k}"]
                scale += [prm.r, prm.r]
        return cls(prm.k, prm.m, tuple(names), np.asarray(scale, dtype=np.float32))


def obs_dim(prm: ObsParams) -> int:
    return NUM_EGO + NUM_NB * prm.k + 3 * (1 + 2 * prm.m)


# ------------------------------------------------------------------------------------------------ kernels


@kernel(inline=True)
def _clip1(v):
    return min(max(v, -1.0), 1.0)


@kernel(inline=True)
def remaining_distance(road, route_row, lane, s, rp):
    """Distance from arc length ``s`` on ``lane`` to the end of the route [m], following ``route_row``
    from entry ``rp`` (-1: first successors) through lane ends; capped at ``REMAINING_CAP``."""
    rem = road.lane_f[lane, L_LEN] - s
    cur = lane
    for _ in range(64):
        if rem >= REMAINING_CAP:
            return REMAINING_CAP
        nxt = next_lane(road, route_row, cur, rp)
        if nxt < 0:
            break
        rem += road.lane_f[nxt, L_LEN]
        cur = nxt
        if rp >= 0:
            rp += 1
    return max(rem, 0.0)


@kernel(inline=True)
def _ego(road, f, iv, route, b, i, rem0, prm, o):
    """The ego block into ``o`` (the agent's observation row)."""
    ln = iv[b, LANE, i]
    lh = lane_pose_hot(road, ln, f[b, S, i])[2]
    herr = wrap_angle(f[b, YAW, i] - lh)
    o[0] = _clip1(f[b, SPEED, i] / prm.v_scale)
    o[1] = _clip1(road.lane_f[ln, L_SPEED] / prm.v_scale)
    o[2] = _clip1(f[b, D, i] / (0.5 * road.lane_f[ln, L_WIDTH]))
    o[3] = math.sin(herr)
    o[4] = math.cos(herr)
    o[5] = _clip1(f[b, ACCEL, i] / prm.a_scale)
    o[6] = _clip1(f[b, STEER, i] / prm.steer_scale)
    rem = remaining_distance(road, route[b, i], ln, f[b, S, i], iv[b, ROUTE_POS, i])
    o[7] = _clip1(1.0 - rem / rem0) if rem0 > 0.0 else 0.0
    o[8] = _clip1(rem / prm.goal_scale)
    gap = f[b, GAP, i]
    o[9] = _clip1(gap / prm.r) if gap < prm.r else 1.0
    o[10] = 1.0 if road.lane_i[ln, L_LC_LEFT] != 0 else 0.0
    o[11] = 1.0 if road.lane_i[ln, L_LC_RIGHT] != 0 else 0.0


@kernel(inline=True)
def _nearest(f, m, b, i, prm, kd, kj):
    """The K nearest valid vehicles to vehicle i within range into kd (squared distances) and kj (slots),
    nearest first, ties by slot; returns how many."""
    x = f[b, X, i]
    y = f[b, Y, i]
    r2 = prm.r * prm.r
    cnt = 0
    for j in range(f.shape[2]):
        if j == i or not m[b, VALID, j]:
            continue
        dx = f[b, X, j] - x
        dy = f[b, Y, j] - y
        d2 = dx * dx + dy * dy
        if d2 >= r2:
            continue
        if cnt < prm.k:
            pos = cnt
            cnt += 1
        elif d2 < kd[prm.k - 1]:
            pos = prm.k - 1
        else:
            continue
        while pos > 0 and kd[pos - 1] > d2:
            kd[pos] = kd[pos - 1]
            kj[pos] = kj[pos - 1]
            pos -= 1
        kd[pos] = d2
        kj[pos] = j
    return cnt


@kernel(inline=True)
def _neighbors(f, m, b, i, prm, c, s, o, kd, kj):
    """The neighbour block (K rows of NUM_NB features) into ``o``; ``c``, ``s``: cos, sin of the ego's yaw.

    One ``sincos`` per row: with h = (its yaw - ego yaw), the relative velocity in the ego frame is
    (v_j cos h - v, v_j sin h), the rotation of (v_j cos yaw_j - v cos yaw, v_j sin yaw_j - v sin yaw).
    """
    cnt = _nearest(f, m, b, i, prm, kd, kj)
    x = f[b, X, i]
    y = f[b, Y, i]
    yaw = f[b, YAW, i]
    v = f[b, SPEED, i]
    for k in range(prm.k):
        base = NUM_EGO + NUM_NB * k
        if k >= cnt:
            for q in range(NUM_NB):
                o[base + q] = 0.0
            continue
        j = kj[k]
        dx = f[b, X, j] - x
        dy = f[b, Y, j] - y
        ch = math.cos(f[b, YAW, j] - yaw)
        sh = math.sin(f[b, YAW, j] - yaw)
        vj = f[b, SPEED, j]
        o[base] = 1.0
        o[base + 1] = _clip1((c * dx + s * dy) / prm.r)
        o[base + 2] = _clip1((-s * dx + c * dy) / prm.r)
        o[base + 3] = _clip1((vj * ch - v) / prm.v_scale)
        o[base + 4] = _clip1(vj * sh / prm.v_scale)
        o[base + 5] = ch
        o[base + 6] = sh
        o[base + 7] = _clip1(f[b, LENGTH, j] / LENGTH_SCALE)
        o[base + 8] = _clip1(f[b, WIDTH, j] / WIDTH_SCALE)


@kernel(inline=True)
def _lane_block(road, f, iv, route, b, i, prm, c, sn, lane, s0, rp, o, base):
    """Presence and M centreline points of ``lane`` from arc length ``s0`` into ``o[base:]``; ``c``, ``sn``:
    cos, sin of the ego's yaw. The points are ``lane_pose``'s (``point_at``)."""
    if lane < 0:
        for q in range(1 + 2 * prm.m):
            o[base + q] = 0.0
        return
    o[base] = 1.0
    x = f[b, X, i]
    y = f[b, Y, i]
    pts = road.pts
    route_row = route[b, i]
    cur = lane
    # the lane's lookups and reciprocals, out of the per-point loop (LLVM does not hoist the divisions)
    length = road.lane_f[cur, L_LEN]
    inv_ds = 1.0 / road.lane_f[cur, L_DS]
    i0 = road.lane_i[cur, L_PT]
    last = road.lane_i[cur + 1, L_PT] - i0 - 1
    inv_r = 1.0 / prm.r
    off = 0.0  # arc length of the lanes passed
    for k in range(prm.m):
        sk = s0 + k * prm.spacing - off
        while sk > length:
            nxt = next_lane(road, route_row, cur, rp)
            if nxt < 0:
                break
            sk -= length
            off += length
            cur = nxt
            length = road.lane_f[cur, L_LEN]
            inv_ds = 1.0 / road.lane_f[cur, L_DS]
            i0 = road.lane_i[cur, L_PT]
            last = road.lane_i[cur + 1, L_PT] - i0 - 1
            if rp >= 0:
                rp += 1
        px, py, _ = point_at(pts, i0, last, sk * inv_ds)
        o[base + 1 + 2 * k] = _clip1((c * (px - x) + sn * (py - y)) * inv_r)
        o[base + 2 + 2 * k] = _clip1((-sn * (px - x) + c * (py - y)) * inv_r)


@kernel(inline=True)
def _lanes(road, f, iv, route, b, i, prm, c, sn, o):
    """The three lane blocks (current, left, right) into ``o``."""
    ln = iv[b, LANE, i]
    s = f[b, S, i]
    base = NUM_EGO + NUM_NB * prm.k
    width = 1 + 2 * prm.m
    _lane_block(road, f, iv, route, b, i, prm, c, sn, ln, s, iv[b, ROUTE_POS, i], o, base)
    for side in range(2):
        nb = road.lane_i[ln, L_LEFT] if side == 0 else road.lane_i[ln, L_RIGHT]
        s_nb = s * road.lane_f[nb, L_LEN] / road.lane_f[ln, L_LEN] if nb >= 0 else 0.0
        _lane_block(road, f, iv, route, b, i, prm, c, sn, nb, s_nb, -1, o, base + (side + 1) * width)


@kernel(inline=True)
def observe_agent(road, f, iv, m, route, b, i, rem0, prm, o, kd, kj):
    """Observation of vehicle slot i of world b into ``o`` (D,) float32; ``kd``, ``kj`` (K,) scratch.

    The vehicle must be valid and on a lane; ``rem0`` is its remaining route distance at reset [m].
    """
    _ego(road, f, iv, route, b, i, rem0, prm, o)
    c = math.cos(f[b, YAW, i])
    sn = math.sin(f[b, YAW, i])
    _neighbors(f, m, b, i, prm, c, sn, o, kd, kj)
    _lanes(road, f, iv, route, b, i, prm, c, sn, o)


@kernel(inline=True)
def zero_row(o):
    for q in range(o.shape[0]):
        o[q] = 0.0
