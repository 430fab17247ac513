"""The world step: decide, integrate, update lane frames, detect events, spawn, index, measure.

One step of a world (``step_chunk`` steps a chunk of worlds phase by phase):

1. decide every vehicle's acceleration and steering from the state and the occupancy index built at
   the end of the previous step (IDM + MOBIL + lane tracking + yielding for background traffic; the
   caller's actions for EXTERNAL vehicles; the simulator's controllers for META, PROFILE, ACC, CACC);
2. integrate the kinematic bicycle model under acceleration, steering and speed limits;
3. update lane coordinates (lane ends, lane-change completion, exits at open road ends);
4. flag collisions (oriented boxes, sweep-and-prune broadphase) and off-road vehicles (box corners
   against the signed-distance grid of the drivable area);
5. spawn vehicles at inflow points;
6. rebuild the occupancy index and the surrogate safety metrics (leader, gap, TTC, headway).

Random numbers (acceleration noise, arrivals, V2V packet loss) are drawn in Python and passed in, so a
world's rollout depends on its seed only, not on the thread count or on the other worlds.
"""

from __future__ import annotations

import math

import numba

from drivediff.sim.jit import kernel
from drivediff.sim.kernels.collision import detect_collisions
from drivediff.sim.kernels.frenet import lane_pose, lane_pose_hot, project, project_hot, wrap_angle
from drivediff.sim.kernels.idm import acc_accel, eidm_accel
from drivediff.sim.kernels.kinematics import bicycle_step
from drivediff.sim.kernels.neighbors import (
    build_occupancy,
    entry_after,
    find_follower,
    find_leader,
    find_leader_hot,
    next_lane,
)
from drivediff.sim.kernels.offroad import box_max_sdf
from drivediff.sim.kernels.views import Occupancy, WorldView
from drivediff.sim.kernels.yielding import yield_constraint
from drivediff.sim.layout import (
    A_COMF,
    ACCEL,
    B_COMF,
    BEHAVIOR,
    CC_CMD,
    CC_GAP,
    CC_KD,
    CC_KP,
    CC_LAG,
    CC_PRED_ACCEL,
    CC_STANDSTILL,
    COLLIDED,
    CONTROLLED,
    COOLNESS,
    DELTA,
    GAP,
    HEADWAY,
    L_EXIT,
    L_LC_LEFT,
    L_LC_RIGHT,
    L_LEFT,
    L_LEN,
    L_PRED,
    L_RIGHT,
    L_SPEED,
    L_SUCC,
    L_WIDTH,
    LANE,
    LC_BRAKE,
    LC_FORCE_DIR,
    LC_FORCE_TIME,
    LC_GAIN,
    LC_TIMER,
    LEADER,
    LENGTH,
    NEXT_VID,
    NOISE,
    OFFROAD,
    POLITENESS,
    ROUTE_POS,
    S0,
    SPEED,
    STEER,
    STEP,
    TARGET_LANE,
    TARGET_SPEED,
    TIME_GAP,
    TTC,
    V0,
    VALID,
    VID,
    WIDTH,
    YAW,
    D,
    S,
    X,
    Y,
)

# Behavior codes (drivediff.sim.state.Behavior)
IDM = 0
CONSTANT_SPEED = 1
EXTERNAL = 2
META = 3
PROFILE = 4
ACC = 5
CACC = 6

INSIDE_MARGIN = 0.3  # [m] lateral margin (curvature over half a vehicle length) for the off-road shortcut
COOP_BRAKE = 1.5  # [m/s^2] braking a vehicle accepts to let a merging vehicle in
MANDATORY_BRAKE = 4.0  # [m/s^2] MOBIL safe braking limit b_safe for mandatory lane changes (Treiber)
STANDING_SPEED = 0.5  # [m/s] a vehicle this slow counts as standing for the path check (_standing_in_path)
STANDING_LOOK = 40.0  # [m] how far along its lanes a driver looks for a standing vehicle in its path
# [m] lateral clearance of that check: on a junction's curves a vehicle's corners and its steering lag take
# it this far off the centreline corridor (measured: a box 3.2 m off a connector's centreline, 0.4 m
# outside the two half widths, was hit by the driver on it)
STANDING_MARGIN = 1.0
MANDATORY_DISTANCE = 60.0  # [m] before the end of a dead-end lane, harder braking is imposed
MERGE_ROOM = 3.0  # [m] beyond a vehicle length, kept before the end of a dead end to steer out of it
COOP_DISTANCE = 40.0  # [m] mergers at most this far ahead (centre to centre) are let in

# ACC gains, Milanes & Shladover (shared/REFERENCES.md): a = 0.23 e + 0.07 (v_prev - v)
ACC_K1 = 0.23
ACC_K2 = 0.07

# inflow columns (drivediff.sim.state.INFLOW_COLUMNS)
IN_RATE, IN_SPEED_LO, IN_SPEED_HI, IN_V0_LO, IN_V0_HI, IN_DELTA_LO, IN_DELTA_HI, IN_T, IN_S0, IN_A, IN_B, \
    IN_POLITE, IN_GAIN, IN_BRAKE, IN_LC, IN_LENGTH, IN_WIDTH, IN_COOL = range(18)


# ------------------------------------------------------------------------------------------- longitudinal


@kernel(inline=True)
def _idm_for(prm, f, i, v0, gap_bumper, v_lead, lead_len, a_lead):
    """(Enhanced) IDM acceleration of vehicle i (desired speed v0) behind an obstacle at bumper gap
    ``gap_bumper`` (inf: none) moving at ``v_lead`` with acceleration ``a_lead``."""
    if gap_bumper == math.inf:
        g = math.inf
    elif prm.center_gap:
        g = gap_bumper + 0.5 * (f[LENGTH, i] + lead_len)
    else:
        g = gap_bumper
    return eidm_accel(f[SPEED, i], v0, f[TIME_GAP, i], f[S0, i], f[A_COMF, i], f[B_COMF, i], f[DELTA, i], g,
                      v_lead, a_lead, f[COOLNESS, i], prm.center_gap)


@kernel(inline=True)
def _desired_speed(road, w, i, lane):
    """IDM target speed on ``lane``: the vehicle's v0 clipped to the speed limit (highway-env)."""
    v0 = w.f[V0, i]
    if lane >= 0:
        v0 = min(v0, road.lane_f[lane, L_SPEED])
    return v0


@kernel(inline=True)
def _lane_end_gap(road, f, i, lane, s):
    """Bumper gap to the wall at the end of a dead-end lane, inf otherwise."""
    if road.lane_i[lane, L_SUCC] != road.lane_i[lane + 1, L_SUCC] or road.lane_i[lane, L_EXIT] != 0:
        return math.inf
    return road.lane_f[lane, L_LEN] - s - 0.5 * f[LENGTH, i]


@kernel(inline=True)
def _wall_accel(v, gap, b_comf):
    """Deceleration to stop 1 m before the end of a dead-end lane, once it reaches b; else inf.

    Drivers on an acceleration lane keep their speed to merge and brake for its end only when they must
    (treating the end as a stopped IDM leader would brake a 24 m/s vehicle at 4 m/s^2 from 100 m out).
    """
    d = gap - 1.0
    if d <= 0.0:
        return -9.0
    need = v * v / (2.0 * d)
    if need < b_comf:
        return math.inf
    return -need


@kernel(inline=True)
def _speed_limit_ahead(road, w, i):
    """Acceleration bound from a lower speed limit on the next lane of the route (inf: no bound)."""
    f = w.f
    ln = w.iv[LANE, i]
    v = f[SPEED, i]
    nxt = next_lane(road, w.route[i], ln, w.iv[ROUTE_POS, i])
    if nxt < 0:
        return math.inf
    vl = min(f[V0, i], road.lane_f[nxt, L_SPEED])
    if v <= vl:
        return math.inf
    dist = road.lane_f[ln, L_LEN] - f[S, i]
    need = (v * v - vl * vl) / (2.0 * max(dist, 1.0))
    if need < 0.5 * f[B_COMF, i]:
        return math.inf
    return -need


@kernel(inline=True)
def idm_decision(road, w, occ, prm, i, has_conflicts, standing, num_standing):
    """IDM acceleration of vehicle i with every obstacle: leader, lane end, yielding, speed limit ahead."""
    f, iv = w.f, w.iv
    ln = iv[LANE, i]
    v0 = _desired_speed(road, w, i, ln)
    j = iv[LEADER, i]
    if j >= 0:
        acc = _idm_for(prm, f, i, v0, f[GAP, i], f[SPEED, j], f[LENGTH, j], f[ACCEL, j])
    else:
        acc = _idm_for(prm, f, i, v0, math.inf, 0.0, 0.0, 0.0)
    g_end = _lane_end_gap(road, f, i, ln, f[S, i])
    if g_end < math.inf:
        # a vehicle waiting to merge keeps room to steer into a gap; once changing lanes it may use it
        tl0 = iv[TARGET_LANE, i]
        room = 0.0 if (tl0 >= 0 and tl0 != ln) else f[LENGTH, i] + MERGE_ROOM
        acc = min(acc, _wall_accel(f[SPEED, i], g_end - room, f[B_COMF, i]))
    if has_conflicts:
        gy, vy = yield_constraint(road, w, occ, prm, i)
        if gy < math.inf:
            acc = min(acc, _idm_for(prm, f, i, v0, gy, vy, 0.0, 0.0))
        gs = _standing_in_path(road, w, i, standing, num_standing)
        if gs < math.inf:
            acc = min(acc, _idm_for(prm, f, i, v0, gs, 0.0, 0.0, 0.0))
    tl = iv[TARGET_LANE, i]
    if tl >= 0 and tl != ln:  # mid lane change: respect the target lane's leader too
        s_t = f[S, i] * road.lane_f[tl, L_LEN] / road.lane_f[ln, L_LEN]
        jt, dist = find_leader(road, w, occ, i, tl, s_t, prm.lookahead)
        if jt >= 0:
            acc = min(acc, _idm_for(prm, f, i, v0, dist - 0.5 * (f[LENGTH, i] + f[LENGTH, jt]), f[SPEED, jt],
                                    f[LENGTH, jt], f[ACCEL, jt]))
    if _is_dead_end(road, road.lane_i[ln, L_LEFT]) or _is_dead_end(road, road.lane_i[ln, L_RIGHT]):
        acc = min(acc, _cooperate(road, w, occ, prm, i, v0))
    if acc > 0.0:
        acc = min(acc, _speed_limit_ahead(road, w, i))
    return acc


@kernel
def _standing_in_path(road, w, i, standing, num_standing):
    """Bumper gap [m] to the nearest standing vehicle whose box reaches into vehicle i's path: its lane and
    the lanes of its route ahead, within ``STANDING_LOOK`` metres; inf if none. ``standing[:num_standing]``:
    the slots of the standing vehicles in increasing order (``_list_standing``).

    Lane leaders and yielding cover vehicles that follow the lanes. A vehicle standing inside a junction
    box, across or beside the connector it is tracked on (a stalled or skewed vehicle driven by a policy),
    is neither the leader in any lane nor approaching a conflict point, and drivers drove into it. Only
    worlds with junction conflicts run this check.
    """
    f, iv = w.f, w.iv
    ln = iv[LANE, i]
    x, y, s0 = f[X, i], f[Y, i], f[S, i]
    half_w = 0.5 * f[WIDTH, i]
    best = math.inf
    for q in range(num_standing):
        j = standing[q]
        if j == i:
            continue
        dx = f[X, j] - x
        dy = f[Y, j] - y
        if dx * dx + dy * dy > (STANDING_LOOK + f[LENGTH, j]) ** 2:
            continue
        # walk i's path lane by lane: the first lane along which j lies (between its ends) decides
        cur = ln
        off = -s0  # path distance of the start of `cur` from vehicle i
        rp = iv[ROUTE_POS, i]
        for _ in range(4):
            length = road.lane_f[cur, L_LEN]
            sj, dj = project(road, cur, f[X, j], f[Y, j], 0.5 * length)
            if sj < 0.0:
                break  # behind the start of this part of the path
            if sj <= length:
                along = off + sj
                if along <= 0.0:
                    break
                hh = lane_pose(road, cur, sj)[2]  # the lane heading there
                rel = f[YAW, j] - hh
                ca, sa = abs(math.cos(rel)), abs(math.sin(rel))
                reach = 0.5 * (f[LENGTH, j] * sa + f[WIDTH, j] * ca)  # j's half extent across the lane
                if abs(dj) < half_w + reach + STANDING_MARGIN:
                    gap = along - 0.5 * f[LENGTH, i] - 0.5 * (f[LENGTH, j] * ca + f[WIDTH, j] * sa)
                    if gap < best:
                        best = gap
                break
            off += length
            if off > STANDING_LOOK:
                break
            nxt = next_lane(road, w.route[i], cur, rp)
            if nxt < 0:
                break
            rp += 1
            cur = nxt
    return best


@kernel(inline=True)
def _list_standing(w, out):
    """Slots of the valid vehicles at most ``STANDING_SPEED`` fast into ``out``; returns how many. Speeds and
    validity do not change while decisions are made, so one list serves every driver of the world."""
    k = 0
    for j in range(w.f.shape[1]):
        if w.m[VALID, j] and w.f[SPEED, j] <= STANDING_SPEED:
            out[k] = j
            k += 1
    return k


@kernel(inline=True)
def _is_dead_end(road, lane):
    return lane >= 0 and road.lane_i[lane, L_SUCC] == road.lane_i[lane + 1, L_SUCC] and \
        road.lane_i[lane, L_EXIT] == 0


@kernel
def _cooperate(road, w, occ, prm, i, v0):
    """Cooperative merging: make room for a moving vehicle ahead on a neighbouring dead-end lane (an
    acceleration lane) when that costs at most ``COOP_BRAKE`` of braking; inf when there is none."""
    f, iv = w.f, w.iv
    ln = iv[LANE, i]
    best = math.inf
    for side in range(2):
        nb = road.lane_i[ln, L_LEFT] if side == 0 else road.lane_i[ln, L_RIGHT]
        if not _is_dead_end(road, nb):
            continue
        s_n = f[S, i] * road.lane_f[nb, L_LEN] / road.lane_f[ln, L_LEN]
        k = entry_after(occ, nb, s_n, i)
        if k < 0:
            continue
        c = occ.veh[k]
        if iv[LANE, c] != nb or f[SPEED, c] < max(3.0, 0.5 * f[SPEED, i]):
            continue  # a stopped or crawling merger waits for a gap instead of stopping the main lane
        if occ.s[k] - s_n > COOP_DISTANCE:
            continue  # only mergers close ahead
        gap = occ.s[k] - s_n - 0.5 * (f[LENGTH, i] + f[LENGTH, c])
        a = _idm_for(prm, f, i, v0, gap, f[SPEED, c], f[LENGTH, c], f[ACCEL, c])
        if a > -COOP_BRAKE:
            best = min(best, a)
    return best


@kernel(inline=True)
def _idm_behind(road, w, prm, fv, gap_center, lead):
    """IDM acceleration of vehicle fv with vehicle ``lead`` (-1: none) ``gap_center`` metres ahead."""
    f = w.f
    v0 = _desired_speed(road, w, fv, w.iv[LANE, fv])
    if lead < 0 or gap_center == math.inf:
        return _idm_for(prm, f, fv, v0, math.inf, 0.0, 0.0, 0.0)
    return _idm_for(prm, f, fv, v0, gap_center - 0.5 * (f[LENGTH, fv] + f[LENGTH, lead]), f[SPEED, lead],
                    f[LENGTH, lead], f[ACCEL, lead])


# ------------------------------------------------------------------------------------------------ MOBIL


@kernel(inline=True)
def _is_succ(road, lane, target):
    for q in range(road.lane_i[lane, L_SUCC], road.lane_i[lane + 1, L_SUCC]):
        if road.links[q] == target:
            return True
    return False


@kernel
def mobil_decision(road, w, occ, prm, i, a_now):
    """MOBIL lane choice for vehicle i (highway-env 1.12 ``IDMVehicle.mobil``); returns a lane or -1.

    Safety: the new follower must not brake harder than ``lc_brake``, nor must vehicle i itself.
    Incentive: own gain + politeness * followers' gains > ``lc_gain``. A dead-end lane, or a route that
    continues only from the neighbour lane, makes the change mandatory: any gap is taken that imposes at
    most 4 m/s^2 on the new follower (Treiber's b_safe), and in the last ``MANDATORY_DISTANCE`` metres of
    a dead end the merging vehicle accepts any braking for itself.
    """
    f, iv = w.f, w.iv
    ln = iv[LANE, i]
    s = f[S, i]
    v = f[SPEED, i]
    li = f[LENGTH, i]
    remaining = road.lane_f[ln, L_LEN] - s
    dead_end = _lane_end_gap(road, f, i, ln, s) < math.inf
    rp = iv[ROUTE_POS, i]
    r_next = w.route[i, rp] if rp < w.route.shape[1] else -1
    best_gain = -math.inf
    best_lane = -1
    # the followers' current accelerations enter only through the politeness term (highway-env's default
    # politeness is 0): skip the old follower's search and those IDM evaluations then (the new follower is
    # still found, for the safety check); every IDM value is finite, so the gain is the same number
    polite = f[POLITENESS, i] != 0.0
    jo, do = find_follower(road, occ, i, ln, s) if polite else (-1, math.inf)
    jl_old = iv[LEADER, i]
    for side in range(2):
        c = road.lane_i[ln, L_LEFT] if side == 0 else road.lane_i[ln, L_RIGHT]
        allowed = road.lane_i[ln, L_LC_LEFT] if side == 0 else road.lane_i[ln, L_LC_RIGHT]
        if c < 0 or allowed == 0:
            continue
        mandatory = dead_end  # a dead-end lane (acceleration lane) exists only to be left
        if r_next >= 0 and remaining < 200.0:
            if not _is_succ(road, c, r_next):
                continue  # leaving the lane the route needs
            if not _is_succ(road, ln, r_next):
                mandatory = True
        if v < 1.0 and not mandatory:
            continue
        s_c = s * road.lane_f[c, L_LEN] / road.lane_f[ln, L_LEN]
        jn, dn = find_leader_hot(road, w, occ, i, c, s_c, prm.lookahead)
        jf, df = find_follower(road, occ, i, c, s_c)
        # the new follower must not brake too hard (b_safe = 4 m/s^2 for forced changes, Treiber)
        urgent = mandatory and remaining < MANDATORY_DISTANCE
        b_safe = max(f[LC_BRAKE, i], MANDATORY_BRAKE) if mandatory else f[LC_BRAKE, i]
        a_f_now = 0.0
        a_f_new = 0.0
        if jf >= 0:
            if df - 0.5 * (li + f[LENGTH, jf]) < 0.5:
                continue
            a_f_new = _idm_behind(road, w, prm, jf, df, i)
            if a_f_new < -b_safe:
                continue
            if polite:
                a_f_now = _idm_behind(road, w, prm, jf, df + dn if jn >= 0 else math.inf, jn)
        # nor vehicle i
        v0_c = _desired_speed(road, w, i, c)
        if jn >= 0:
            g_new = dn - 0.5 * (li + f[LENGTH, jn])
            if g_new < 0.5:
                continue
            a_self = _idm_for(prm, f, i, v0_c, g_new, f[SPEED, jn], f[LENGTH, jn], f[ACCEL, jn])
        else:
            a_self = _idm_for(prm, f, i, v0_c, math.inf, 0.0, 0.0, 0.0)
        g_end = _lane_end_gap(road, f, i, c, s_c)
        if g_end < math.inf:
            a_self = min(a_self, _wall_accel(v, g_end - li - MERGE_ROOM, f[B_COMF, i]))
        if a_self < -b_safe and not urgent:  # near a dead end, staying means braking for the wall anyway
            continue
        # the old follower's gain when i leaves
        a_o_gain = 0.0
        if jo >= 0:
            a_o_now = _idm_behind(road, w, prm, jo, do, i)
            dist_old = do + f[GAP, i] + 0.5 * (li + f[LENGTH, jl_old]) if jl_old >= 0 else math.inf
            a_o_gain = _idm_behind(road, w, prm, jo, dist_old, jl_old) - a_o_now
        gain = a_self - a_now + f[POLITENESS, i] * (a_f_new - a_f_now + a_o_gain)
        threshold = -math.inf if mandatory else f[LC_GAIN, i]
        if gain > threshold and gain > best_gain:
            best_gain = gain
            best_lane = c
    return best_lane


@kernel
def _abort_lane_change(road, w, occ, prm, i):
    """Abort a lane change that became unsafe while the vehicle is still in its own lane (highway-env
    aborts when another vehicle heads into the same lane close by)."""
    f, iv = w.f, w.iv
    tl = iv[TARGET_LANE, i]
    ln = iv[LANE, i]
    if tl < 0 or tl == ln or iv[BEHAVIOR, i] != IDM or abs(f[D, i]) > 1.0:
        return
    s_t = f[S, i] * road.lane_f[tl, L_LEN] / road.lane_f[ln, L_LEN]
    jf, df = find_follower(road, occ, i, tl, s_t)
    if jf >= 0:
        gap = df - 0.5 * (f[LENGTH, i] + f[LENGTH, jf])
        if iv[TARGET_LANE, jf] == tl and iv[LANE, jf] != tl and gap < f[S0, i] + 0.5 * f[SPEED, jf] * \
                f[TIME_GAP, jf]:
            iv[TARGET_LANE, i] = ln
            return
        if gap < 0.5:
            iv[TARGET_LANE, i] = ln
            return
    jn, dn = find_leader(road, w, occ, i, tl, s_t, prm.lookahead)
    if jn >= 0 and dn - 0.5 * (f[LENGTH, i] + f[LENGTH, jn]) < 0.5:
        iv[TARGET_LANE, i] = ln


# --------------------------------------------------------------------------------------------- lateral


@kernel(inline=True)
def _heading_ahead(road, w, i, lane, s_ahead):
    ln = lane
    s = s_ahead
    rp = w.iv[ROUTE_POS, i] if lane == w.iv[LANE, i] else -1
    for _ in range(3):
        if s <= road.lane_f[ln, L_LEN]:
            break
        nxt = next_lane(road, w.route[i], ln, rp)
        if nxt < 0:
            break
        s -= road.lane_f[ln, L_LEN]
        ln = nxt
        if rp >= 0:
            rp += 1
    return lane_pose_hot(road, ln, s)[2]


@kernel(inline=True)
def _not_zero(x):
    if abs(x) > 1e-2:
        return x
    return 1e-2 if x >= 0.0 else -1e-2


@kernel(inline=True)
def steer_to_lane(road, w, prm, i, tl):
    """Steering that tracks the centreline of lane ``tl`` (highway-env ``steering_control``)."""
    f = w.f
    ln = w.iv[LANE, i]
    v = f[SPEED, i]
    if tl == ln:
        s_t = f[S, i]
        d_t = f[D, i]
    else:
        s_t, d_t = project(road, tl, f[X, i], f[Y, i], f[S, i] * road.lane_f[tl, L_LEN] / road.lane_f[ln, L_LEN])
    h_future = _heading_ahead(road, w, i, tl, s_t + v * prm.tau_pursuit)
    lat_cmd = -prm.kp_lateral * d_t
    vc = max(abs(v), prm.steer_speed_floor)  # the controller's speed (SimParams.steer_speed_floor)
    if v < 0.0:
        vc = -vc
    h_cmd = math.asin(min(max(lat_cmd / _not_zero(vc), -1.0), 1.0))
    h_ref = h_future + min(max(h_cmd, -0.25 * math.pi), 0.25 * math.pi)
    rate = prm.kp_heading * wrap_angle(h_ref - f[YAW, i])
    # slip = asin(u), steer = atan(2 tan(slip)) = atan(2 u / sqrt(1 - u^2)), u clipped just inside +-1
    u = min(max(0.5 * f[LENGTH, i] / _not_zero(vc) * rate, -0.999999), 0.999999)
    steer = math.atan(2.0 * u / math.sqrt(1.0 - u * u))
    return min(max(steer, -prm.steer_max), prm.steer_max)


# -------------------------------------------------------------------------------------------- decisions


@kernel(inline=True)
def _mobil_tick(road, w, occ, prm, i, acc):
    """Scripted lane changes, then MOBIL every ``lc_period`` seconds, for a vehicle in its lane."""
    f, iv = w.f, w.iv
    ln = iv[LANE, i]
    forced = f[LC_FORCE_TIME, i]
    if forced >= 0.0 and w.wi[STEP] * prm.dt >= forced:
        f[LC_FORCE_TIME, i] = -1.0
        c = road.lane_i[ln, L_LEFT] if iv[LC_FORCE_DIR, i] > 0 else road.lane_i[ln, L_RIGHT]
        if c >= 0:
            iv[TARGET_LANE, i] = c
    elif f[LC_TIMER, i] > -math.inf:
        f[LC_TIMER, i] -= prm.dt
        # every lc_period seconds; every step on a dead-end lane, where the change is forced
        if f[LC_TIMER, i] <= 0.0 or _is_dead_end(road, ln):
            if f[LC_TIMER, i] <= 0.0:
                f[LC_TIMER, i] += prm.lc_period
            c = mobil_decision(road, w, occ, prm, i, acc)
            if c >= 0:
                iv[TARGET_LANE, i] = c


@kernel
def decide_all(road, w, occ, prm, actions, noise, dec, has_conflicts, standing):
    """Acceleration and steering of every vehicle of one world this step, limits applied, into ``dec``.
    ``standing`` (N,): scratch for the standing vehicles' slots (junction worlds).

    One call per world and step: the per-vehicle work stays in this loop (helpers taking the world and
    road tuples are inlined or called only on rare paths: MOBIL decisions, aborts, yielding).
    """
    f, iv, m = w.f, w.iv, w.m
    n = f.shape[1]
    has_noise = noise.shape[0] == n
    num_standing = _list_standing(w, standing) if has_conflicts else 0
    for i in range(n):
        if not m[VALID, i]:
            continue
        ln = iv[LANE, i]
        tl = iv[TARGET_LANE, i]
        beh = iv[BEHAVIOR, i]
        v = f[SPEED, i]
        if tl >= 0 and tl != ln and beh == IDM:
            _abort_lane_change(road, w, occ, prm, i)
        steer_needed = True
        a = 0.0
        d = 0.0
        if m[COLLIDED, i]:  # a crashed vehicle brakes to a stop (highway-env: a = -v)
            a = -v / prm.dt
            steer_needed = False
        elif beh == EXTERNAL:
            a = actions[i, 0]
            d = actions[i, 1]
            steer_needed = False
        elif ln < 0:
            steer_needed = False
        elif beh == IDM:
            a = idm_decision(road, w, occ, prm, i, has_conflicts, standing, num_standing)
            if has_noise and f[NOISE, i] > 0.0:
                a += f[NOISE, i] * noise[i]
            if iv[TARGET_LANE, i] == ln:
                _mobil_tick(road, w, occ, prm, i, a)
        elif beh == CONSTANT_SPEED or beh == META:
            a = prm.kp_speed * (f[TARGET_SPEED, i] - v)
        elif beh == PROFILE:
            k = min(w.wi[STEP] + 1, w.prof.shape[0] - 1)
            a = (w.prof[k] - v) / prm.dt
        else:
            a = _cc_accel(road, w, prm, i)
        if steer_needed:
            d = steer_to_lane(road, w, prm, i, iv[TARGET_LANE, i])
        if (beh == ACC or beh == CACC) and f[CC_LAG, i] > 0.0 and not m[COLLIDED, i]:
            a = f[ACCEL, i] + prm.dt / f[CC_LAG, i] * (a - f[ACCEL, i])  # first-order actuator lag
        dec[0, i] = min(max(a, prm.a_min), prm.a_max)
        dec[1, i] = min(max(d, -prm.steer_max), prm.steer_max)


@kernel
def _cc_accel(road, w, prm, i):
    """ACC / CACC command: constant time-gap spacing policy, e = gap - (r + h v)."""
    f, iv = w.f, w.iv
    v = f[SPEED, i]
    j = iv[LEADER, i]
    cruise = prm.kp_speed * (_desired_speed(road, w, i, iv[LANE, i]) - v)
    if iv[BEHAVIOR, i] == ACC:
        if j >= 0:
            return min(cruise, acc_accel(f[GAP, i], v, f[SPEED, j], f[CC_GAP, i], f[CC_STANDSTILL, i], ACC_K1,
                                         ACC_K2))
        return cruise
    # CACC (Ploeg): h du/dt = -u + kp e + kd de/dt + u_prev (u_prev received over V2V)
    h = max(f[CC_GAP, i], 1e-3)
    if j >= 0:
        e = f[GAP, i] - (f[CC_STANDSTILL, i] + h * v)
        e_dot = f[SPEED, j] - v - h * f[ACCEL, i]
        u = f[CC_CMD, i]
        u += prm.dt / h * (-u + f[CC_KP, i] * e + f[CC_KD, i] * e_dot + f[CC_PRED_ACCEL, i])
        u = min(u, cruise)
    else:
        u = cruise
    f[CC_CMD, i] = u
    return u


# ------------------------------------------------------------------------------------------- lane frame


@kernel(inline=True)
def _map_target(road, old_lane, new_lane, tl):
    """Carry a (possibly neighbouring) target lane across a lane end."""
    if tl == old_lane or tl < 0:
        return new_lane
    if tl == road.lane_i[old_lane, L_LEFT] and road.lane_i[new_lane, L_LEFT] >= 0:
        return road.lane_i[new_lane, L_LEFT]
    if tl == road.lane_i[old_lane, L_RIGHT] and road.lane_i[new_lane, L_RIGHT] >= 0:
        return road.lane_i[new_lane, L_RIGHT]
    return new_lane


@kernel(inline=True)
def _nearer_lane(road, c, x, y, s_hint, ln, s, d, between_ends):
    """(lane, s, d): lane c and the point's coordinates on it if the point lies nearer c's centreline than
    ``d`` (and, with ``between_ends``, alongside c, between its ends); else (ln, s, d) unchanged."""
    s_c, d_c = project(road, c, x, y, s_hint)
    if abs(d_c) < abs(d) and (not between_ends or 0.0 <= s_c <= road.lane_f[c, L_LEN]):
        return c, s_c, d_c
    return ln, s, d


@kernel(inline=True)
def update_lane_frame(road, w, prm, i):
    """Project vehicle i onto its lanes after integration. Returns False if it left the road."""
    f, iv = w.f, w.iv
    ln = iv[LANE, i]
    if ln < 0:
        return True
    x = f[X, i]
    y = f[Y, i]
    s, d = project_hot(road, ln, x, y, f[S, i] + f[SPEED, i] * prm.dt)
    external = iv[BEHAVIOR, i] == EXTERNAL
    for _ in range(4):
        if s > road.lane_f[ln, L_LEN]:
            over = s - road.lane_f[ln, L_LEN]
            if external:  # a policy steers itself: take the successor it is closest to
                nxt = -1
                bd = math.inf
                for q in range(road.lane_i[ln, L_SUCC], road.lane_i[ln + 1, L_SUCC]):
                    c = road.links[q]
                    dc = project(road, c, x, y, over)[1]
                    if abs(dc) < bd:
                        bd = abs(dc)
                        nxt = c
            else:
                nxt = next_lane(road, w.route[i], ln, iv[ROUTE_POS, i])
            if nxt < 0:
                if road.lane_i[ln, L_EXIT] != 0:
                    return False
                break
            for q in range(iv[ROUTE_POS, i], w.route.shape[1]):
                if w.route[i, q] == nxt:
                    iv[ROUTE_POS, i] = q + 1
                    break
            iv[TARGET_LANE, i] = _map_target(road, ln, nxt, iv[TARGET_LANE, i])
            s, d = project(road, nxt, x, y, over)
            ln = nxt
        elif s < 0.0 and road.lane_i[ln, L_PRED] != road.lane_i[ln + 1, L_PRED]:
            p = road.links[road.lane_i[ln, L_PRED]]
            s, d = project(road, p, x, y, road.lane_f[p, L_LEN] + s)
            if iv[TARGET_LANE, i] == ln:
                iv[TARGET_LANE, i] = p
            ln = p
        else:
            break
    tl = iv[TARGET_LANE, i]
    if tl >= 0 and tl != ln:
        ln, s, d = _nearer_lane(road, tl, x, y, s * road.lane_f[tl, L_LEN] / road.lane_f[ln, L_LEN], ln, s, d, False)
    if external and abs(d) > 0.5 * road.lane_f[ln, L_WIDTH]:
        # off its lane: the neighbours across the markings, and the other branches of the lane end it came
        # from (the other turns through a junction). At a branch point the connectors start together, so the
        # successor taken there is a guess; a policy that then turns the other way was kept on the guessed
        # connector for good, and the drivers on the lanes it really drove on did not see it (measured: the
        # safety suite's intersection collisions were IDM vehicles driving into a planner vehicle tracked on
        # another connector). A branch is taken only between its ends, where the vehicle is alongside it
        ln0 = ln
        for side in range(2):
            c = road.lane_i[ln0, L_LEFT] if side == 0 else road.lane_i[ln0, L_RIGHT]
            if c >= 0:
                ln, s, d = _nearer_lane(road, c, x, y, s * road.lane_f[c, L_LEN] / road.lane_f[ln0, L_LEN], ln, s, d,
                                        False)
        for q in range(road.lane_i[ln0, L_PRED], road.lane_i[ln0 + 1, L_PRED]):
            p = road.links[q]
            for r in range(road.lane_i[p, L_SUCC], road.lane_i[p + 1, L_SUCC]):
                c = road.links[r]
                if c != ln0:
                    ln, s, d = _nearer_lane(road, c, x, y, s * road.lane_f[c, L_LEN] / road.lane_f[ln0, L_LEN], ln, s,
                                            d, True)
    if external:
        iv[TARGET_LANE, i] = ln
    iv[LANE, i] = ln
    f[S, i] = s
    f[D, i] = d
    return True


# ------------------------------------------------------------------------------------------------ inflow


@kernel
def spawn_inflow(road, w, occ, prm, inflow, u):
    """Spawn at most one vehicle per inflow this step. ``u``: (K, 6) uniforms."""
    f, iv, m = w.f, w.iv, w.m
    n = f.shape[1]
    fin = inflow.f
    for k in range(inflow.lane.shape[0]):
        if u[k, 0] >= fin[k, IN_RATE] * prm.dt:
            continue
        ln = inflow.lane[k]
        length = fin[k, IN_LENGTH]
        speed = fin[k, IN_SPEED_LO] + u[k, 1] * (fin[k, IN_SPEED_HI] - fin[k, IN_SPEED_LO])
        s_new = 0.5 * length
        # the entry must be clear. Checked geometrically (vehicles whose centre lies within a lane width of
        # the entry lane's axis, ahead of the entry point) rather than with the occupancy index, which
        # does not yet hold lane changes decided in this step
        x0, y0, h0 = lane_pose(road, ln, s_new)
        ch = math.cos(h0)
        sh = math.sin(h0)
        near = -1
        near_lon = math.inf
        for j in range(n):
            if not m[VALID, j]:
                continue
            lon = (f[X, j] - x0) * ch + (f[Y, j] - y0) * sh
            lat = -(f[X, j] - x0) * sh + (f[Y, j] - y0) * ch
            if abs(lat) < road.lane_f[ln, L_WIDTH] and lon > -0.5 * (length + f[LENGTH, j]) and lon < near_lon:
                near = j
                near_lon = lon
        if near >= 0:
            gap = near_lon - 0.5 * (length + f[LENGTH, near])
            # enter no faster than the IDM equilibrium speed for this gap; skip when that is too slow
            v_gap = (gap - fin[k, IN_S0]) / fin[k, IN_T]
            if v_gap < 0.5 * fin[k, IN_SPEED_LO]:
                continue
            if speed > v_gap:
                speed = min(v_gap, max(f[SPEED, near], 0.5 * fin[k, IN_SPEED_LO]))
        slot = -1
        for i in range(prm.reserved_slots, n):  # agents' slots stay theirs after they leave
            if not m[VALID, i]:
                slot = i
                break
        if slot < 0:
            return
        i = slot
        f[X, i] = x0
        f[Y, i] = y0
        f[YAW, i] = h0
        f[SPEED, i] = speed
        f[ACCEL, i] = 0.0
        f[STEER, i] = 0.0
        f[LENGTH, i] = length
        f[WIDTH, i] = fin[k, IN_WIDTH]
        f[S, i] = s_new
        f[D, i] = 0.0
        f[V0, i] = fin[k, IN_V0_LO] + u[k, 2] * (fin[k, IN_V0_HI] - fin[k, IN_V0_LO])
        f[TIME_GAP, i] = fin[k, IN_T]
        f[S0, i] = fin[k, IN_S0]
        f[A_COMF, i] = fin[k, IN_A]
        f[B_COMF, i] = fin[k, IN_B]
        f[DELTA, i] = fin[k, IN_DELTA_LO] + u[k, 3] * (fin[k, IN_DELTA_HI] - fin[k, IN_DELTA_LO])
        f[COOLNESS, i] = fin[k, IN_COOL]
        f[NOISE, i] = 0.0
        f[POLITENESS, i] = fin[k, IN_POLITE]
        f[LC_GAIN, i] = fin[k, IN_GAIN]
        f[LC_BRAKE, i] = fin[k, IN_BRAKE]
        f[LC_TIMER, i] = u[k, 5] * prm.lc_period if fin[k, IN_LC] > 0.5 else -math.inf
        f[LC_FORCE_TIME, i] = -1.0
        f[TARGET_SPEED, i] = speed
        f[CC_CMD, i] = 0.0
        f[CC_PRED_ACCEL, i] = 0.0
        iv[LANE, i] = ln
        iv[TARGET_LANE, i] = ln
        iv[ROUTE_POS, i] = 0
        iv[BEHAVIOR, i] = IDM
        iv[LC_FORCE_DIR, i] = 0
        iv[VID, i] = w.wi[NEXT_VID]
        w.wi[NEXT_VID] += 1
        for q in range(w.route.shape[1]):
            w.route[i, q] = -1
        nopt = inflow.route_start[k + 1] - inflow.route_start[k]
        if nopt > 0:
            r = inflow.route_start[k] + min(int(u[k, 4] * nopt), nopt - 1)
            for q in range(min(w.route.shape[1], inflow.routes.shape[1])):
                w.route[i, q] = inflow.routes[r, q]
        m[VALID, i] = True
        m[CONTROLLED, i] = False
        m[COLLIDED, i] = False
        m[OFFROAD, i] = False


# ----------------------------------------------------------------------------------------------- metrics


@kernel
def refresh_metrics(road, w, occ, prm):
    """Leader, gap, TTC and headway of every vehicle (the occupancy index must be current)."""
    f, iv, m = w.f, w.iv, w.m
    for i in range(f.shape[1]):
        iv[LEADER, i] = -1
        f[GAP, i] = math.inf
        f[TTC, i] = math.inf
        f[HEADWAY, i] = math.inf
        if not m[VALID, i] or iv[LANE, i] < 0:
            continue
        j, dist = find_leader_hot(road, w, occ, i, iv[LANE, i], f[S, i], prm.lookahead)
        if j < 0:
            continue
        gap = dist - 0.5 * (f[LENGTH, i] + f[LENGTH, j])
        iv[LEADER, i] = j
        f[GAP, i] = gap
        closing = f[SPEED, i] - f[SPEED, j]
        if gap <= 0.0:
            f[TTC, i] = 0.0
        elif closing > 1e-9:
            f[TTC, i] = gap / closing
        if f[SPEED, i] > 1e-3:
            f[HEADWAY, i] = max(gap, 0.0) / f[SPEED, i]


@kernel(inline=True)
def _inside_own_lane(road, f, iv, i):
    """Whether vehicle i's box lies inside its lane's strip with a margin for curvature: then it is on the
    road (lane strips are part of the drivable area) and the distance grid need not be sampled."""
    ln = iv[LANE, i]
    if ln < 0:
        return False
    hl = 0.5 * f[LENGTH, i]
    s = f[S, i]
    if s - hl < 0.0 or s + hl > road.lane_f[ln, L_LEN]:
        return False
    rel = f[YAW, i] - lane_pose(road, ln, s)[2]
    half_lat = hl * abs(math.sin(rel)) + 0.5 * f[WIDTH, i] * abs(math.cos(rel))
    return abs(f[D, i]) + half_lat + INSIDE_MARGIN <= 0.5 * road.lane_f[ln, L_WIDTH]


@kernel
def detect_events(road, w, prm, buf_i, buf_f, partner):
    """Collision and off-road flags for the current positions (``buf_*``: scratch)."""
    f, m = w.f, w.m
    detect_collisions(f[X], f[Y], f[YAW], f[LENGTH], f[WIDTH], m[VALID], buf_i[0], buf_f[0], buf_f[1],
                      m[COLLIDED], partner)
    for i in range(f.shape[1]):
        if not m[VALID, i]:
            m[OFFROAD, i] = False
        elif _inside_own_lane(road, f, w.iv, i):
            m[OFFROAD, i] = False
        else:
            m[OFFROAD, i] = box_max_sdf(road.sdf, road.sdf_meta, f[X, i], f[Y, i], f[YAW, i], f[LENGTH, i],
                                        f[WIDTH, i]) > prm.offroad_tol


# -------------------------------------------------------------------------------------------------- step


@kernel
def _remove(w, i):
    w.m[VALID, i] = False
    w.m[CONTROLLED, i] = False
    w.m[COLLIDED, i] = False
    w.m[OFFROAD, i] = False
    w.iv[LANE, i] = -1
    w.iv[TARGET_LANE, i] = -1
    w.iv[VID, i] = -1
    w.iv[LEADER, i] = -1


@kernel
def remove_vehicle(st, sc, b, i):
    """Take vehicle slot i of world b off the road (the occupancy index and metrics still need a refresh)."""
    w, _ = _views(st, sc, b)
    _remove(w, i)


@kernel
def _views(st, sc, b):
    """World b's views. Compiled without NRT: call only from NRT-free kernels (an NRT caller would
    release references it never took)."""
    w = WorldView(st[0][b], st[1][b], st[2][b], st[3][b], st[4][b], st[5][b], st[6][b])
    occ = Occupancy(sc.occ_s[b], sc.occ_veh[b], sc.occ_start[b])
    return w, occ


@kernel
def _refresh(road, w, occ, prm, sc, b):
    build_occupancy(road, w, occ, sc.buf_i[b], sc.buf_f[b], sc.count[b])
    refresh_metrics(road, w, occ, prm)


@kernel
def _v2v_exchange(w, prm, loss_u):
    """V2V: every vehicle broadcasts its command (a CACC vehicle its controller state u, others their
    realised acceleration); each CACC vehicle receives its predecessor's broadcast of ``v2v_delay_steps``
    steps ago, unless the packet is lost, in which case it keeps the last one received."""
    f, iv, m = w.f, w.iv, w.m
    n = f.shape[1]
    depth = w.v2v.shape[0]
    step = w.wi[STEP]
    now = step % depth
    old = (step - prm.v2v_delay_steps) % depth
    for i in range(n):
        w.v2v[now, i] = f[CC_CMD, i] if iv[BEHAVIOR, i] == CACC else f[ACCEL, i]
    has_loss = loss_u.shape[0] == n
    for i in range(n):
        if m[VALID, i] and iv[BEHAVIOR, i] == CACC:
            j = iv[LEADER, i]
            if j < 0:
                f[CC_PRED_ACCEL, i] = 0.0
            elif not has_loss or loss_u[i] >= prm.v2v_loss:
                f[CC_PRED_ACCEL, i] = w.v2v[old, j] if step >= prm.v2v_delay_steps else 0.0


@kernel
def integrate_all(road, w, prm, dec):
    """Bicycle model for every vehicle, then lane coordinates; vehicles past an exit leave the road."""
    f = w.f
    m = w.m
    for i in range(f.shape[1]):
        if not m[VALID, i]:
            continue
        v_old = f[SPEED, i]
        x, y, yaw, v = bicycle_step(f[X, i], f[Y, i], f[YAW, i], v_old, dec[0, i], dec[1, i], f[LENGTH, i],
                                    prm.dt, prm.v_min, prm.v_max)
        f[X, i] = x
        f[Y, i] = y
        f[YAW, i] = yaw
        f[SPEED, i] = v
        f[ACCEL, i] = (v - v_old) / prm.dt
        f[STEER, i] = dec[1, i]
        if not update_lane_frame(road, w, prm, i):
            _remove(w, i)


# worlds per chunk of a parallel step: each phase runs over a chunk's worlds before the next phase starts
CHUNK_WORLDS = 8


@kernel
def step_chunk(road, st, sc, prm, inflow, lo, hi, active, actions, noise, spawn_u, loss_u, t):
    """Advance the active worlds among ``lo..hi-1`` by one step, phase by phase: V2V and decisions of every
    world, then integration of every world, then events, arrivals, occupancy index and metrics.

    Worlds are independent, so this gives the numbers of stepping them one at a time through all phases.
    It is faster for small worlds because each phase's code stays in the instruction cache across the
    chunk's worlds while their state stays in L2 (batched environment, 256 worlds, 2 threads, chunks of
    1 / 8 / 16 worlds: 16-vehicle highway 629-672 / 752-763 / 749-763 k agent-steps/s; catalog highway
    244-254 / 274-279 / 261-283 k; ``World.run`` of 51-vehicle highway worlds is the same with 1 or 8).

    Args:
        st: packed state tuple (f, iv, m, route, wi, profile, v2v); active: (B,) bool.
        actions: (B, N, 2) acceleration, steering of EXTERNAL vehicles.
        noise: (B, T, N) standard normals, or (B, T, 0) when no vehicle has acceleration noise.
        spawn_u: (B, T, K, 6) uniforms for the inflows; loss_u: (B, T, N) uniforms for V2V packet loss, or
            (B, T, 0). t: the step's index into these.
    """
    has_conflicts = road.conf_i.shape[0] > 0
    for b in range(lo, hi):
        if active[b]:
            w, occ = _views(st, sc, b)
            _v2v_exchange(w, prm, loss_u[b, t])
            decide_all(road, w, occ, prm, actions[b], noise[b, t], sc.dec[b], has_conflicts, sc.standing[b])
    for b in range(lo, hi):
        if active[b]:
            w, _ = _views(st, sc, b)
            integrate_all(road, w, prm, sc.dec[b])
            w.wi[STEP] += 1
    for b in range(lo, hi):
        if active[b]:
            w, _ = _views(st, sc, b)
            detect_events(road, w, prm, sc.buf_i[b], sc.buf_f[b], sc.partner[b])
    if inflow.lane.shape[0] > 0:
        for b in range(lo, hi):
            if active[b]:
                w, occ = _views(st, sc, b)
                spawn_inflow(road, w, occ, prm, inflow, spawn_u[b, t])
    for b in range(lo, hi):
        if active[b]:
            w, occ = _views(st, sc, b)
            build_occupancy(road, w, occ, sc.buf_i[b], sc.buf_f[b], sc.count[b])
    for b in range(lo, hi):
        if active[b]:
            w, occ = _views(st, sc, b)
            refresh_metrics(road, w, occ, prm)


def chunk_count(num_worlds: int) -> int:
    """Chunks of a parallel step (``step_worlds``, ``env.kernels.step_envs``): a multiple of Numba's thread
    count (at most one chunk per world) with at most ``CHUNK_WORLDS`` worlds each. Chunk c holds worlds
    ``chunk_bounds(c)``, so the even split of the ``prange`` over chunks gives every thread the same number
    of worlds, give or take one. (Python: ``numba.get_num_threads`` inside a kernel would keep it out of the
    on-disk cache.)"""
    threads = numba.get_num_threads()
    per_thread = -(-num_worlds // threads)
    return max(1, min(num_worlds, threads * -(-per_thread // CHUNK_WORLDS)))


@kernel(inline=True)
def chunk_bounds(c, chunks, num_worlds):
    """Worlds lo..hi-1 of chunk c of ``chunks`` (``chunk_count``)."""
    return c * num_worlds // chunks, (c + 1) * num_worlds // chunks


@kernel
def _record_step(st, rec, b, t):
    """Copy the logged fields of world b's state into ``rec`` at step t."""
    n = st[0].shape[2]
    for k in range(rec.fi.shape[0]):
        for i in range(n):
            rec.f[b, t, k, i] = st[0][b, rec.fi[k], i]
    for k in range(rec.ii.shape[0]):
        for i in range(n):
            rec.iv[b, t, k, i] = st[1][b, rec.ii[k], i]
    for k in range(rec.mi.shape[0]):
        for i in range(n):
            rec.m[b, t, k, i] = st[2][b, rec.mi[k], i]


@kernel(parallel=True)
def step_worlds(road, st, sc, prm, inflow, actions, noise, spawn_u, loss_u, active, num_steps, rec, record,
                chunks):
    """``num_steps`` steps of every active world, ``chunks`` chunks of worlds in parallel (``step_chunk``;
    ``chunk_count`` gives the number).

    actions (B, N, 2) held fixed; noise (B, T, N) or (B, T, 0); spawn_u (B, T, K, 6); loss_u (B, T, N) or
    (B, T, 0); active (B,) bool. With ``record``, the state after each step goes to ``rec`` (T steps).
    """
    nb = st[0].shape[0]
    for c in numba.prange(chunks):
        lo, hi = chunk_bounds(c, chunks, nb)
        for t in range(num_steps):
            step_chunk(road, st, sc, prm, inflow, lo, hi, active, actions, noise, spawn_u, loss_u, t)
            if record:
                for b in range(lo, hi):
                    if active[b]:
                        _record_step(st, rec, b, t)


@kernel
def refresh_world(road, st, sc, prm, b):
    """Events, occupancy index and metrics of world b (after a reset or an edit)."""
    w, occ = _views(st, sc, b)
    detect_events(road, w, prm, sc.buf_i[b], sc.buf_f[b], sc.partner[b])
    _refresh(road, w, occ, prm, sc, b)


@kernel(parallel=True)
def refresh_worlds(road, st, sc, prm, worlds):
    """``refresh_world`` for the listed worlds."""
    for k in numba.prange(worlds.shape[0]):
        refresh_world(road, st, sc, prm, worlds[k])


@kernel
def refresh_worlds_serial(road, st, sc, prm, worlds):
    """``refresh_worlds`` on the calling thread (a reset of one or two worlds)."""
    for k in range(worlds.shape[0]):
        refresh_world(road, st, sc, prm, worlds[k])
