"""Yielding at conflict points (junction crossings and merges).

For each conflict point ahead of a vehicle (within its lookahead, along its route), the vehicles that
approach or occupy the conflict on the other lane (and up to two lanes back along that lane's
predecessors) are checked:

* CROSS: the vehicle stops before the conflict zone if another vehicle is inside it, or will reach it
  before the vehicle has cleared it plus a safety time (``gap_accept``) and has the right of way: a
  higher-priority lane; on equal priority the first to arrive; a lower-priority lane only once that
  vehicle can no longer stop (committed).
* MERGE: a vehicle that will be ahead after the merge point is followed as a virtual leader (the
  zipper); a vehicle on the minor lane also waits at its stop line for major-lane vehicles arriving soon.

A junction traversal is all-or-nothing: before entering, a vehicle that must yield at any of the
conflicts ahead stops at the traversal's first stop line (it never waits inside the junction for a
vehicle that could still stop); once inside a zone, past one, or unable to stop before the first, it is
committed and yields only to vehicles that are in a zone or cannot stop themselves. This rules out the
gridlock of a vehicle waiting mid-junction for a priority vehicle that waits for it.

The result is a stop point or a virtual leader, which IDM then follows.
"""

from __future__ import annotations

import math

from drivediff.sim.jit import kernel
from drivediff.sim.kernels.neighbors import entry_after, next_lane
from drivediff.sim.layout import (
    A_COMF,
    B_COMF,
    C_HALF,
    C_HALF_OTHER,
    C_KIND,
    C_OTHER,
    C_S,
    C_S_OTHER,
    C_YIELD,
    GAP,
    L_CONF,
    L_LEN,
    L_PRED,
    LANE,
    LEADER,
    LENGTH,
    ROUTE_POS,
    SPEED,
    S,
)

CROSS = 0
MERGE = 1
TRAVERSAL = 40.0  # [m] conflicts within this distance of the first stop line belong to one junction crossing


@kernel
def can_stop(dist, v, b_yield):
    """Whether a vehicle at speed v can stop within ``dist`` metres at deceleration b_yield."""
    return dist > v * v / (2.0 * b_yield) + 0.5


@kernel
def time_to_cover(dist, v, a):
    """Time to travel ``dist`` from speed ``v`` at constant acceleration ``a`` >= 0."""
    if dist <= 0.0:
        return 0.0
    if a < 1e-6:
        return dist / max(v, 1e-3)
    return (-v + math.sqrt(v * v + 2.0 * a * dist)) / a


@kernel
def arrival_time(dist, v, a_comf):
    """Estimated time for another vehicle to cover ``dist``: at constant speed when it is moving, with
    its comfortable acceleration when it is (nearly) stopped and may start any moment."""
    return time_to_cover(dist, v, a_comf if v < 3.0 else 0.0)


@kernel
def _judge(prm, f, iv, i, j, kind, yc, dist_c, dist_j, half_j, front_to_zone, ego_stop, t_ego_clear, entered,
           first_stop):
    """Constraint that vehicle j, ``dist_j`` from the conflict point along its lane, imposes on vehicle i.

    ``t_ego_clear`` is the time vehicle i needs to clear the zone (CROSS) or to get its rear past the
    merge point (MERGE). ``entered``: vehicle i is committed to this junction traversal (inside or past
    one of its zones, or unable to stop before the first); it then yields only to vehicles that are in
    a zone or cannot stop. Otherwise a blocked conflict stops it at ``first_stop``, the stop line before
    the traversal's first zone: a vehicle enters the junction only when its whole path is clear.
    Returns (gap, speed) of a stop point or virtual leader in bumper terms, or (inf, 0).
    """
    hl_i = 0.5 * f[LENGTH, i]
    hl_j = 0.5 * f[LENGTH, j]
    v_j = f[SPEED, j]
    if dist_j < -(half_j + hl_j):
        return math.inf, 0.0  # j has left the zone
    jfront = dist_j - half_j - hl_j
    j_in = jfront <= 0.0
    if not j_in and iv[LEADER, j] >= 0 and f[GAP, j] < jfront:
        return math.inf, 0.0  # queued behind a vehicle that reaches the zone first (judged on its own)
    j_committed = j_in or not can_stop(jfront - prm.stop_margin, v_j, prm.b_yield)
    stop_gap = front_to_zone - prm.stop_margin
    entry_gap = first_stop if first_stop < stop_gap and stop_gap - first_stop < TRAVERSAL else stop_gap
    if kind == CROSS:
        if front_to_zone <= 0.0:
            return math.inf, 0.0  # already inside: clear the zone
        if j_in:
            return stop_gap, 0.0
        t_j = arrival_time(jfront, v_j, f[A_COMF, j])
        soon = t_j < t_ego_clear + prm.gap_accept
        if entered or yc == 0:
            block = j_committed and t_j < t_ego_clear
            if block:
                return stop_gap, 0.0
            return math.inf, 0.0
        if yc == 1:
            block = soon
        else:
            t_i = time_to_cover(front_to_zone, f[SPEED, i], f[A_COMF, i])
            block = soon and (t_j < t_i or (t_j == t_i and j < i))
        if block and ego_stop:
            return entry_gap, 0.0
        return math.inf, 0.0
    # MERGE: whoever is nearer the merge point goes first (zipper); a minor-lane vehicle lets major-lane
    # vehicles go first unless it gets its rear past the merge point gap_accept before they arrive
    j_ahead = dist_j < dist_c or (dist_j == dist_c and j < i)
    if j_ahead and (yc != 0 or j_committed):
        return dist_c - dist_j - hl_i - hl_j, v_j
    if not j_ahead and yc == 1 and not entered and ego_stop:
        t_j = arrival_time(max(dist_j - hl_j, 0.0), v_j, f[A_COMF, j])
        if t_j < t_ego_clear + prm.gap_accept:
            return entry_gap, 0.0
    return math.inf, 0.0


@kernel
def _heads_to(road, w, j, lane, target):
    """Whether vehicle j, with an entry on ``lane``, continues onto ``target`` at the lane's end."""
    rp = w.iv[ROUTE_POS, j] if w.iv[LANE, j] == lane else -1
    return next_lane(road, w.route[j], lane, rp) == target


@kernel
def _scan(road, w, occ, prm, i, lane, s_lo, s_hi, to_conflict, heading_to, ctx, best_gap, best_v):
    """Judge the vehicles with an entry on ``lane`` between ``s_lo`` and ``s_hi``; a vehicle at s is
    ``to_conflict - s`` from the conflict point. With ``heading_to >= 0``, only vehicles whose next lane
    is ``heading_to`` count. Returns the tighter of (best_gap, best_v) and what they impose."""
    kind, yc, dist_c, half_m, front_to_zone, ego_stop, t_clear, entered, first_stop = ctx
    k = entry_after(occ, lane, s_lo, -1)
    if k < 0:
        return best_gap, best_v
    end = occ.start[lane + 1]
    while k < end and occ.s[k] <= s_hi:
        j = occ.veh[k]
        if j != i and (heading_to < 0 or _heads_to(road, w, j, lane, heading_to)):
            g, vv = _judge(prm, w.f, w.iv, i, j, kind, yc, dist_c, to_conflict - occ.s[k], half_m, front_to_zone,
                           ego_stop, t_clear, entered, first_stop)
            if g < best_gap:
                best_gap = g
                best_v = vv
        k += 1
    return best_gap, best_v


@kernel
def yield_constraint(road, w, occ, prm, i):
    """Tightest yielding constraint on vehicle i: (bumper gap to stop point / virtual leader, its speed)."""
    f = w.f
    v = f[SPEED, i]
    hl = 0.5 * f[LENGTH, i]
    look = min(max(40.0, v * v / (2.0 * f[B_COMF, i]) + 4.0 * v + 20.0), 150.0)
    best_gap = math.inf
    best_v = 0.0
    cur = w.iv[LANE, i]
    off = -f[S, i]
    rp = w.iv[ROUTE_POS, i]
    entered = False  # inside or past a zone of this traversal, or unable to stop before the first
    first_stop = math.inf
    for _ in range(4):
        for c in range(road.lane_i[cur, L_CONF], road.lane_i[cur + 1, L_CONF]):
            dist_c = off + road.conf_f[c, C_S]
            half = road.conf_f[c, C_HALF]
            if dist_c > look:
                break
            if dist_c < -(half + hl):
                entered = True
                continue
            mo = road.conf_i[c, C_OTHER]
            s_m = road.conf_f[c, C_S_OTHER]
            half_m = road.conf_f[c, C_HALF_OTHER]
            kind = road.conf_i[c, C_KIND]
            yc = road.conf_i[c, C_YIELD]
            front_to_zone = dist_c - half - hl
            ego_stop = can_stop(front_to_zone - prm.stop_margin, v, prm.b_yield)
            if front_to_zone <= 0.0:
                entered = True
            elif first_stop == math.inf:
                first_stop = front_to_zone - prm.stop_margin
                if not can_stop(first_stop, v, prm.b_yield):
                    entered = True
            if kind == CROSS:
                t_clear = time_to_cover(max(front_to_zone, 0.0) + 2.0 * half + 2.0 * hl, v, f[A_COMF, i])
            else:
                t_clear = time_to_cover(max(dist_c + hl, 0.0), v, f[A_COMF, i])
            lookback = min(20.0 + 20.0 * (t_clear + prm.gap_accept), 150.0)
            ctx = (kind, yc, dist_c, half_m, front_to_zone, ego_stop, t_clear, entered, first_stop)
            # vehicles on the conflicting lane itself, then one and two lanes back heading onto it
            best_gap, best_v = _scan(road, w, occ, prm, i, mo, s_m - lookback, s_m + half_m + 4.0, s_m, -1, ctx,
                                     best_gap, best_v)
            reach = lookback - s_m
            if reach <= 0.0:
                continue
            for q in range(road.lane_i[mo, L_PRED], road.lane_i[mo + 1, L_PRED]):
                p = road.links[q]
                if p == mo or p == cur:
                    continue
                lp = road.lane_f[p, L_LEN]
                best_gap, best_v = _scan(road, w, occ, prm, i, p, lp - reach, math.inf, s_m + lp, mo, ctx, best_gap,
                                         best_v)
                for q2 in range(road.lane_i[p, L_PRED], road.lane_i[p + 1, L_PRED]):
                    pp = road.links[q2]
                    if reach - lp <= 0.0 or pp == p or pp == mo or pp == cur:
                        continue
                    lpp = road.lane_f[pp, L_LEN]
                    best_gap, best_v = _scan(road, w, occ, prm, i, pp, lpp - (reach - lp), math.inf,
                                             s_m + lp + lpp, p, ctx, best_gap, best_v)
        off += road.lane_f[cur, L_LEN]
        if off > look:
            break
        nxt = next_lane(road, w.route[i], cur, rp)
        if nxt < 0 or nxt == w.iv[LANE, i]:
            break
        rp += 1
        cur = nxt
    return best_gap, best_v
