"""Lane-frame geometry on sampled centrelines: point lookup and projection."""

from __future__ import annotations

import math

import numpy as np

from drivediff.sim.jit import kernel
from drivediff.sim.layout import L_DS, L_LEN, L_PT, P_H, P_X, P_Y


@kernel(inline=True)
def point_at(pts, i0, last, u):
    """World (x, y, heading) at fractional point index ``u`` of the centreline ``pts[i0 : i0 + last + 1]``,
    clamped to its ends (``u = s / spacing``)."""
    if u <= 0.0:
        return pts[i0, P_X], pts[i0, P_Y], pts[i0, P_H]
    k = int(u)
    if k >= last:
        j = i0 + last
        return pts[j, P_X], pts[j, P_Y], pts[j, P_H]
    t = u - k
    j = i0 + k
    return (pts[j, P_X] + t * (pts[j + 1, P_X] - pts[j, P_X]),
            pts[j, P_Y] + t * (pts[j + 1, P_Y] - pts[j, P_Y]),
            pts[j, P_H] + t * (pts[j + 1, P_H] - pts[j, P_H]))


def _lane_pose(road, lane, s):
    """World (x, y, heading) of the centreline point at arc length ``s`` (clamped to the lane)."""
    i0 = road.lane_i[lane, L_PT]
    return point_at(road.pts, i0, road.lane_i[lane + 1, L_PT] - i0 - 1, s / road.lane_f[lane, L_DS])


lane_pose = kernel(_lane_pose)
lane_pose_hot = kernel(inline=True)(_lane_pose)


def _project(road, lane, x, y, s_hint):
    """(s, d) of point (x, y) on a lane; local search starting at ``s_hint``.

    Walks segment by segment from the hint towards the nearest segment, so the cost is O(1) when the hint
    is close (vehicles move a fraction of a metre per step). Beyond the ends, ``s`` is extrapolated along
    the first/last segment (``s < 0`` or ``s > length``), which is how lane ends are detected.
    """
    pts = road.pts
    i0 = road.lane_i[lane, L_PT]
    n = road.lane_i[lane + 1, L_PT] - i0
    ds = road.lane_f[lane, L_DS]
    k = int(s_hint / ds)
    if k < 0:
        k = 0
    if k > n - 2:
        k = n - 2
    t = 0.0
    direction = 0  # never turn back: at a convex vertex the walk would oscillate
    for _ in range(n + 1):
        j = i0 + k
        ex = pts[j + 1, P_X] - pts[j, P_X]
        ey = pts[j + 1, P_Y] - pts[j, P_Y]
        t = ((x - pts[j, P_X]) * ex + (y - pts[j, P_Y]) * ey) / (ex * ex + ey * ey)
        if t < 0.0 and k > 0 and direction <= 0:
            k -= 1
            direction = -1
        elif t > 1.0 and k < n - 2 and direction >= 0:
            k += 1
            direction = 1
        else:
            break
    j = i0 + k
    ax = pts[j, P_X]
    ay = pts[j, P_Y]
    ex = pts[j + 1, P_X] - ax
    ey = pts[j + 1, P_Y] - ay
    if 0.0 <= t <= 1.0 or (t < 0.0 and k == 0) or (t > 1.0 and k == n - 2):
        d = (ex * (y - ay) - ey * (x - ax)) / math.sqrt(ex * ex + ey * ey)
    else:  # stopped at a convex vertex: the nearest point is the vertex itself
        t = 0.0 if t < 0.0 else 1.0
        qx = ax + t * ex
        qy = ay + t * ey
        dist = math.sqrt((x - qx) ** 2 + (y - qy) ** 2)
        d = dist if ex * (y - ay) - ey * (x - ax) >= 0.0 else -dist
    return (k + t) * ds, d


project = kernel(_project)
project_hot = kernel(inline=True)(_project)


@kernel
def lane_length(road, lane):
    return road.lane_f[lane, L_LEN]


@kernel(inline=True)
def wrap_angle(a):
    """Angle in [-pi, pi)."""
    while a >= math.pi:
        a -= 2.0 * math.pi
    while a < -math.pi:
        a += 2.0 * math.pi
    return a


@kernel(exact=True, nrt=True)
def interp_centrelines(cols, first, lane_len, lanes, s, out):
    """``np.interp`` of centreline columns at many lanes' arc lengths in one call, NumPy's numbers exactly.

    Args:
        cols: (4, P) s, x, y, heading of every centreline point (``Road._pt_columns``).
        first: (num_lanes + 1,) index of each lane's first point in ``cols``.
        lane_len: (num_lanes,) lane lengths; each ``s`` is clamped to its lane first.
        lanes, s: (n,) lane and arc length of each point.
        out: (3, n) x, y, heading.
    """
    for i in range(lanes.shape[0]):
        ln = lanes[i]
        lo, hi = first[ln], first[ln + 1]
        si = min(max(s[i], 0.0), lane_len[ln])
        for r in range(3):
            out[r, i] = np.interp(si, cols[0, lo:hi], cols[r + 1, lo:hi])
