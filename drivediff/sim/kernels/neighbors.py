"""Lane-sorted occupancy index and the leader/follower searches built on it.

Each valid vehicle has an entry on its lane; while changing lanes, a second entry on its target lane (so
vehicles cutting in are seen by the vehicles behind them); and while its box sticks out of its lane, an
entry on the neighbouring lane it overlaps (so a vehicle that has just switched lanes, or an agent
driving off-centre, stays visible to the lane it still occupies). Entries are sorted by (lane, s, slot) in
CSR layout, so the leader of a vehicle is a binary search plus a step, and a search across lane ends
follows the vehicle's route through successors: no all-pairs scan.

Order convention: vehicle j is ahead of vehicle i on a lane when ``s_j > s_i`` or ``s_j == s_i and j > i``.
"""

from __future__ import annotations

import math

from drivediff.sim.jit import kernel
from drivediff.sim.kernels.frenet import lane_pose
from drivediff.sim.kernels.sort import sort_pairs
from drivediff.sim.layout import (
    L_LEFT,
    L_LEN,
    L_PRED,
    L_RIGHT,
    L_SUCC,
    L_WIDTH,
    LANE,
    LENGTH,
    ROUTE_POS,
    TARGET_LANE,
    VALID,
    WIDTH,
    YAW,
    D,
    S,
)

DIVERGE_OVERLAP = 12.0  # [m] sibling lanes leaving the same lane overlap this far from their start
STRADDLE_TOL = 0.3  # [m] a box reaching this far over the lane edge occupies the neighbouring lane too


@kernel
def build_occupancy(road, w, occ, buf_i, buf_f, count):
    """Rebuild one world's occupancy index from its current lanes and positions.

    ``buf_i`` (3, 4N), ``buf_f`` (2, 4N) and ``count`` (L+1,) are scratch. Entries of a lane are sorted
    by (s, slot).
    """
    f, iv, m = w.f, w.iv, w.m
    n = f.shape[1]
    nl = road.lane_f.shape[0]
    lane_of = buf_i[0]
    veh_of = buf_i[1]
    s_of = buf_f[0]
    k = 0
    for i in range(n):
        if not m[VALID, i]:
            continue
        ln = iv[LANE, i]
        if ln < 0:
            continue
        lane_of[k] = ln
        s_of[k] = f[S, i]
        veh_of[k] = i
        k += 1
        tl = iv[TARGET_LANE, i]
        if tl >= 0 and tl != ln:
            lane_of[k] = tl
            s_of[k] = f[S, i] * road.lane_f[tl, L_LEN] / road.lane_f[ln, L_LEN]
            veh_of[k] = i
            k += 1
        # straddling: the box reaches over the lane edge into a neighbouring lane
        rel = f[YAW, i] - lane_pose(road, ln, f[S, i])[2]
        half_lat = 0.5 * f[LENGTH, i] * abs(math.sin(rel)) + 0.5 * f[WIDTH, i] * abs(math.cos(rel))
        edge = 0.5 * road.lane_f[ln, L_WIDTH] + STRADDLE_TOL
        for side in range(2):
            over = f[D, i] + half_lat if side == 0 else half_lat - f[D, i]
            nb = road.lane_i[ln, L_LEFT] if side == 0 else road.lane_i[ln, L_RIGHT]
            if over > edge and nb >= 0 and nb != tl:
                lane_of[k] = nb
                s_of[k] = f[S, i] * road.lane_f[nb, L_LEN] / road.lane_f[ln, L_LEN]
                veh_of[k] = i
                k += 1
    # counting sort by lane (stable: equal s stay in slot order), then sort each lane's entries by s
    for ln in range(nl + 1):
        count[ln] = 0
    for q in range(k):
        count[lane_of[q] + 1] += 1
    start = occ.start
    start[0] = 0
    for ln in range(nl):
        start[ln + 1] = start[ln] + count[ln + 1]
        count[ln + 1] = start[ln]
    for q in range(k):
        p = count[lane_of[q] + 1]
        count[lane_of[q] + 1] += 1
        occ.veh[p] = veh_of[q]
        occ.s[p] = s_of[q]
    for ln in range(nl):
        sort_pairs(occ.s, occ.veh, start[ln], start[ln + 1])


@kernel(inline=True)
def entry_after(occ, lane, s, i):
    """Index of the first entry on ``lane`` ahead of (s, slot i), excluding i; -1 if none."""
    lo = occ.start[lane]
    end = occ.start[lane + 1]
    hi = end
    while lo < hi:
        mid = (lo + hi) >> 1
        if occ.s[mid] < s:
            lo = mid + 1
        else:
            hi = mid
    k = lo
    while k < end and (occ.veh[k] == i or (occ.s[k] == s and occ.veh[k] < i)):
        k += 1
    return k if k < end else -1


@kernel(inline=True)
def entry_before(occ, lane, s, i):
    """Index of the last entry on ``lane`` behind (s, slot i), excluding i; -1 if none."""
    start = occ.start[lane]
    lo = start
    hi = occ.start[lane + 1]
    while lo < hi:  # first entry with s_j > s
        mid = (lo + hi) >> 1
        if occ.s[mid] <= s:
            lo = mid + 1
        else:
            hi = mid
    k = lo - 1
    while k >= start and (occ.veh[k] == i or (occ.s[k] == s and occ.veh[k] > i)):
        k -= 1
    return k if k >= start else -1


@kernel(inline=True)
def first_entry(occ, lane, i):
    """First entry on ``lane`` (lowest s) that is not vehicle i; -1 if none."""
    k = occ.start[lane]
    end = occ.start[lane + 1]
    while k < end and occ.veh[k] == i:
        k += 1
    return k if k < end else -1


@kernel(inline=True)
def last_entry(occ, lane, i):
    """Last entry on ``lane`` (highest s) that is not vehicle i; -1 if none."""
    start = occ.start[lane]
    k = occ.start[lane + 1] - 1
    while k >= start and occ.veh[k] == i:
        k -= 1
    return k if k >= start else -1


@kernel(inline=True)
def next_lane(road, route_row, lane, rp):
    """Lane after ``lane`` for a vehicle with route ``route_row``: its entry ``rp`` if that is a successor,
    else the first successor; -1 at a road end. ``rp < 0`` means no route."""
    a = road.lane_i[lane, L_SUCC]
    e = road.lane_i[lane + 1, L_SUCC]
    if a == e:
        return -1
    if 0 <= rp < route_row.shape[0]:
        r = route_row[rp]
        if r >= 0:
            for k in range(a, e):
                if road.links[k] == r:
                    return r
    return road.links[a]


def _find_leader(road, w, occ, i, lane, s, look):
    """Nearest vehicle ahead of vehicle i standing at (lane, s), following i's route through lane ends.

    Returns (slot, centre distance along the lanes); (-1, inf) if none within ``look`` metres. Near the
    start of a lane, vehicles on sibling lanes (other successors of the same lane) count too: diverging
    lanes overlap for their first metres.
    """
    k = entry_after(occ, lane, s, i)
    if k >= 0:
        return occ.veh[k], occ.s[k] - s
    off = road.lane_f[lane, L_LEN] - s
    cur = lane
    rp = w.iv[ROUTE_POS, i] if lane == w.iv[LANE, i] else -1
    route_row = w.route[i]
    for _ in range(6):
        if off > look:
            break
        nxt = next_lane(road, route_row, cur, rp)
        if nxt < 0:
            break
        if rp >= 0:
            rp += 1
        best = -1
        bestd = math.inf
        k = first_entry(occ, nxt, i)
        if k >= 0:
            best = occ.veh[k]
            bestd = off + occ.s[k]
        for q in range(road.lane_i[cur, L_SUCC], road.lane_i[cur + 1, L_SUCC]):
            sib = road.links[q]
            if sib == nxt:
                continue
            k = first_entry(occ, sib, i)
            if k >= 0 and occ.s[k] < DIVERGE_OVERLAP and off + occ.s[k] < bestd:
                best = occ.veh[k]
                bestd = off + occ.s[k]
        if best >= 0:
            if bestd > look:
                break
            return best, bestd
        off += road.lane_f[nxt, L_LEN]
        cur = nxt
    return -1, math.inf


find_leader = kernel(_find_leader)
find_leader_hot = kernel(inline=True)(_find_leader)  # for the one per-vehicle-per-step call site


@kernel(inline=True)
def find_follower(road, occ, i, lane, s):
    """Nearest vehicle behind (lane, s), looking one lane back through predecessors; (-1, inf) if none."""
    k = entry_before(occ, lane, s, i)
    if k >= 0:
        return occ.veh[k], s - occ.s[k]
    best = -1
    bestd = math.inf
    for q in range(road.lane_i[lane, L_PRED], road.lane_i[lane + 1, L_PRED]):
        p = road.links[q]
        k = last_entry(occ, p, i)
        if k >= 0:
            dd = s + road.lane_f[p, L_LEN] - occ.s[k]
            if dd < bestd:
                best = occ.veh[k]
                bestd = dd
    return best, bestd
