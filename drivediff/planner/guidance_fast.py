"""Fast CPU path of the guidance costs: Numba kernels with a hand-written reverse pass.

The gradient and barrier layers of :mod:`drivediff.planner.guidance` evaluate ``cost_terms(...)["total"]``
(``exact=False``) and ``cost_terms(...)["barrier"]`` (``exact=True``) and differentiate them; written as
torch operations that is ~3,000 small ops plus autograd per evaluation. Here the same numbers are computed
per row in float64 by one kernel, which also runs the adjoint (reverse-mode) pass by hand and returns the
exact gradient with respect to the physical controls ``ctrl`` (B, A, H, 2). :class:`_FastCost` wraps it
as a ``torch.autograd.Function``, so autograd chains ``d cost / d ctrl`` back through the decoder.

What the kernel mirrors, step by step (and the gradient torch autograd takes at the kinks): the control clip
(``clamp``: gradient passes on the closed interval), :func:`~drivediff.planner.dynamics.rollout_cumulative`
(the speed as the running sum reflected at 0, ``cummin`` ties credited to the latest step, the upper speed
clamp; the slip with its ``V_EPS`` floor and steering limit), the separating-axis depth of
:func:`~drivediff.planner.guidance.box_penetration` (``minimum`` ties split the gradient in halves, ``abs``
has gradient 0 at 0, the partner maximum splits it evenly among tied partners, rear exemption at the first
contact), :func:`~drivediff.planner.guidance.held_max` (``cummax`` ties to the latest step), the bilinear
border-padded signed-distance lookup (``grid_sample``, align_corners: gradient 0 in a clamped coordinate,
even split among tied discs), the spacing error, and the weighted soft costs. The heading's cosine and sine
are advanced step by step by the rotation of each yaw increment (equal to cos/sin of the summed yaw to
float64 rounding; a third of the trigonometry). Values and gradients agree with the float32 torch reference
to its rounding (measured on simulator contexts: gradients within 3e-6 of their largest entry), and with the
same torch code run in float64 to float64 rounding (tests/planner/test_guidance_fast.py). Near a tie or a
threshold that float32 and float64 resolve differently (boxes exactly touching, a contact at exactly the
rear-exemption offset) the two take different branches, as two float32 runs on different hardware could.

The gradient returned is the full one: every agent's controls that a guided row's cost depends on (the
partners of the pair costs and the leaders of the spacing objective included), like torch's.

Only CPU tensors: :func:`fast_total` and :func:`fast_barrier` return ``None`` when they do not apply (another
device, a context without the leaders or cruise speeds that the configuration asks for), and the callers use
the torch reference then.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from drivediff.planner.dynamics import V_EPS
from drivediff.planner.guidance import LAT_ACC_MAX, LON_ACC_MAX, LON_ACC_MIN, LON_JERK_MAX, YAW_RATE_MAX
from drivediff.sim.jit import kernel

V_MAX = 40.0  # rollout_cumulative's default speed limit (cost_terms does not pass one)
TIE = 1e-4  # held_max's default tie ramp [m per step]

# parameter vector slots (module constants: Numba freezes them at compile time)
P_M, P_DT, P_PLAN_DT, P_AMIN, P_AMAX, P_LATMAX, P_SMAX, P_VMAX = 0, 1, 2, 3, 4, 5, 6, 7
P_MARGIN, P_TTC, P_TIE, P_W_COL, P_W_ROAD, P_W_SPEED, P_W_COMFORT, P_W_TTC = 8, 9, 10, 11, 12, 13, 14, 15
P_W_GAP, P_TIME_GAP, P_STANDSTILL, P_GAP_MAX, P_W_SMOOTH, P_W_CRUISE, P_TOL = 16, 17, 18, 19, 20, 21, 22
P_SDF_X0, P_SDF_Y0, P_SDF_RES, P_MODE, P_LATERAL, P_GRAD, P_VEPS = 23, 24, 25, 26, 27, 28, 29
NUM_PARAMS = 30
MODE_TOTAL, MODE_BARRIER = 0, 1

# float scratch slots (S: (NUM_SLOTS, A, N)): the rollout, its saved intermediates and the adjoints
S_X, S_Y, S_YAW, S_V, S_SB, S_CB, S_VC, S_COS, S_SIN, S_PX, S_PY = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
S_AX, S_AY, S_AYAW, S_AV, S_IX, S_IY, S_IYAW, S_IV, S_TRAV, S_ATRAV, S_DEP = 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21
NUM_SLOTS = 22
# int scratch slots (K: (NUM_ISLOTS, A, N)): cummin index and the pass flags of the clamps
K_IDX, K_VC, K_SB, K_PRE, K_CM = 0, 1, 2, 3, 4
NUM_ISLOTS = 5
# per-step scratch (W: (3, N)): penetration, its gradient, the running-sum adjoint
W_PEN, W_GP, W_RUN = 0, 1, 2


# ------------------------------------------------------------------------------------------------- kernels


@kernel(inline=True)
def _clip(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


@kernel(inline=True)
def _sign(v):
    return 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)


@kernel(inline=True)
def _sincos(d):
    """(sin d, cos d); Taylor polynomials for |d| <= 0.25 (error < 1e-19), about 3x cheaper than libm."""
    if abs(d) > 0.25:
        return math.sin(d), math.cos(d)
    z = d * d
    sn = d * (1.0 + z * (-1.0 / 6.0 + z * (1.0 / 120.0 + z * (-1.0 / 5040.0 + z * (1.0 / 362880.0 + z * (
        -1.0 / 39916800.0 + z * (1.0 / 6227020800.0)))))))
    cs = 1.0 + z * (-0.5 + z * (1.0 / 24.0 + z * (-1.0 / 720.0 + z * (1.0 / 40320.0 + z * (
        -1.0 / 3628800.0 + z * (1.0 / 479001600.0))))))
    return sn, cs


@kernel
def _rollout(b, a, ctrl, st, par, S, K):
    """rollout_cumulative of agent a of row b into S/K (clipped controls, every substep)."""
    m = int(par[P_M])
    dt = par[P_DT]
    amin, amax, latmax = par[P_AMIN], par[P_AMAX], par[P_LATMAX]
    smax, vmax, veps = par[P_SMAX], par[P_VMAX], par[P_VEPS]
    n = S.shape[2]
    x, y, yaw, v = st[b, a, 0], st[b, a, 1], st[b, a, 2], st[b, a, 3]
    hlen = 0.5 * max(st[b, a, 4], 0.5)
    run = v
    cm = math.inf
    idx = 0
    cy, sy = math.cos(yaw), math.sin(yaw)
    c = 0
    for k in range(n):
        if k > 0 and k % m == 0:
            c += 1
        acc = _clip(ctrl[b, a, c, 0], amin, amax)
        lat = _clip(ctrl[b, a, c, 1], -latmax, latmax)
        vc = v if v >= veps else veps
        K[K_VC, a, k] = 1 if v >= veps else 0
        sbr = hlen * lat / (vc * vc)
        K[K_SB, a, k] = 1 if (sbr >= -smax and sbr <= smax) else 0
        sb = _clip(sbr, -smax, smax)
        cb = math.sqrt(1.0 - sb * sb)
        x += v * (cy * cb - sy * sb) * dt
        y += v * (sy * cb + cy * sb) * dt
        dyaw = v * sb / hlen * dt
        yaw += dyaw
        run += acc * dt
        if run <= cm:  # torch's cummin credits ties to the latest step
            cm = run
            idx = k
        K[K_IDX, a, k] = idx
        K[K_CM, a, k] = 1 if cm <= 0.0 else 0
        pre = run - min(cm, 0.0)
        K[K_PRE, a, k] = 1 if pre <= vmax else 0
        v = min(pre, vmax)
        S[S_X, a, k] = x
        S[S_Y, a, k] = y
        S[S_YAW, a, k] = yaw
        S[S_V, a, k] = v
        S[S_SB, a, k] = sb
        S[S_CB, a, k] = cb
        S[S_VC, a, k] = vc
        # the heading of the next step, rotated by dyaw (equal to cos/sin of yaw to float64 rounding)
        sd, cd = _sincos(dyaw)
        cy, sy = cy * cd - sy * sd, sy * cd + cy * sd
        S[S_COS, a, k] = cy
        S[S_SIN, a, k] = sy


@kernel
def _rollout_grad(b, a, ctrl, st, par, S, K, W, ax, ay, ayaw, av, use_lat, G):
    """Adjoint of _rollout: adjoints of the states (slots ax, ay, ayaw, av) -> G[0/1, a, c] (acc, lat)."""
    m = int(par[P_M])
    dt = par[P_DT]
    latmax = par[P_LATMAX]
    n = S.shape[2]
    hlen = 0.5 * max(st[b, a, 4], 0.5)
    for k in range(n):
        W[W_RUN, k] = 0.0
    rx = 0.0
    ry = 0.0
    ryaw = 0.0
    rrun = 0.0
    carry_yaw = 0.0
    carry_v = 0.0
    for k in range(n - 1, -1, -1):
        c = k // m
        rx += S[ax, a, k]
        ry += S[ay, a, k]
        ryaw += S[ayaw, a, k] + carry_yaw
        gva = S[av, a, k] + carry_v
        if k > 0:
            v = S[S_V, a, k - 1]
            cy, sy = S[S_COS, a, k - 1], S[S_SIN, a, k - 1]
        else:
            v = st[b, a, 3]
            cy, sy = math.cos(st[b, a, 2]), math.sin(st[b, a, 2])
        sb, cb, vc = S[S_SB, a, k], S[S_CB, a, k], S[S_VC, a, k]
        gx, gy, gw = rx * dt, ry * dt, ryaw * dt
        ux = cy * cb - sy * sb
        uy = sy * cb + cy * sb
        adj_v = gx * ux + gy * uy + gw * sb / hlen
        adj_yaw = v * (gy * ux - gx * uy)
        adj_cb = v * (gx * cy + gy * sy)
        adj_sb = v * (gy * cy - gx * sy) + gw * v / hlen - adj_cb * sb / cb
        if K[K_SB, a, k] == 0:
            adj_sb = 0.0
        if adj_sb != 0.0:
            lat = _clip(ctrl[b, a, c, 1], -latmax, latmax)
            if use_lat:
                G[1, a, c] += adj_sb * hlen / (vc * vc)
            if K[K_VC, a, k] == 1:
                adj_v += adj_sb * hlen * lat * -2.0 / (vc * vc * vc)
        # the speed after step k: min(run - min(cummin(run), 0), vmax)
        gpre = gva if K[K_PRE, a, k] == 1 else 0.0
        W[W_RUN, k] += gpre
        if K[K_CM, a, k] == 1:
            W[W_RUN, K[K_IDX, a, k]] -= gpre
        rrun += W[W_RUN, k]
        G[0, a, c] += rrun * dt
        carry_v = adj_v
        carry_yaw = adj_yaw


@kernel
def _pair(xi, yi, ci, si, hli, hwi, xj, yj, cj, sj, hlj, hwj):
    """box_penetration of one pair at one step: (depth >= 0, longitudinal offset of j in i's frame)."""
    dx = xj - xi
    dy = yj - yi
    cab = abs(ci * cj + si * sj)
    sab = abs(si * cj - ci * sj)
    p1 = dx * ci + dy * si
    o1 = hli + hlj * cab + hwj * sab - abs(p1)
    o2 = hwi + hlj * sab + hwj * cab - abs(-dx * si + dy * ci)
    o3 = hlj + hli * cab + hwi * sab - abs(dx * cj + dy * sj)
    o4 = hwj + hli * sab + hwi * cab - abs(-dx * sj + dy * cj)
    d = min(min(o1, o2), min(o3, o4))
    return (d if d > 0.0 else 0.0), p1


@kernel(inline=True)
def _split(p, q, g):
    """Gradient of torch.minimum(p, q): to the smaller, halves on a tie."""
    if p < q:
        return g, 0.0
    if p > q:
        return 0.0, g
    return 0.5 * g, 0.5 * g


@kernel
def _pair_grad(xi, yi, ci, si, hli, hwi, xj, yj, cj, sj, hlj, hwj, g):
    """Gradient of g * _pair's depth: (x_i, y_i, yaw_i, x_j, y_j, yaw_j)."""
    dx = xj - xi
    dy = yj - yi
    cc = ci * cj + si * sj
    ss = si * cj - ci * sj
    cab, sab = abs(cc), abs(ss)
    p1 = dx * ci + dy * si
    p2 = -dx * si + dy * ci
    p3 = dx * cj + dy * sj
    p4 = -dx * sj + dy * cj
    o1 = hli + hlj * cab + hwj * sab - abs(p1)
    o2 = hwi + hlj * sab + hwj * cab - abs(p2)
    o3 = hlj + hli * cab + hwi * sab - abs(p3)
    o4 = hwj + hli * sab + hwi * cab - abs(p4)
    m12 = min(o1, o2)
    m34 = min(o3, o4)
    if min(m12, m34) <= 0.0:  # relu
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    u12, u34 = _split(m12, m34, g)
    a1, a2 = _split(o1, o2, u12)
    a3, a4 = _split(o3, o4, u34)
    a_c = (a1 * hlj + a2 * hwj + a3 * hli + a4 * hwi) * _sign(cc)
    a_s = (a1 * hwj + a2 * hlj + a3 * hwi + a4 * hli) * _sign(ss)
    a_p1 = -a1 * _sign(p1)
    a_p2 = -a2 * _sign(p2)
    a_p3 = -a3 * _sign(p3)
    a_p4 = -a4 * _sign(p4)
    g_yaw_i = -a_c * ss + a_s * cc + a_p1 * p2 - a_p2 * p1
    g_yaw_j = a_c * ss - a_s * cc + a_p3 * p4 - a_p4 * p3
    gdx = a_p1 * ci - a_p2 * si + a_p3 * cj - a_p4 * sj
    gdy = a_p1 * si + a_p2 * ci + a_p3 * sj + a_p4 * cj
    return -gdx, -gdy, g_yaw_i, gdx, gdy, g_yaw_j


@kernel
def _add_pose_grad(S, a, k, gx, gy, gw, proj, ttc):
    """Add a gradient on the pose (x, y, yaw) of agent a at step k to the inter adjoints; proj: the pose
    is the TTC projection (x, y) + ttc v (cos yaw, sin yaw)."""
    S[S_IX, a, k] += gx
    S[S_IY, a, k] += gy
    S[S_IYAW, a, k] += gw
    if proj:
        c, s, v = S[S_COS, a, k], S[S_SIN, a, k], S[S_V, a, k]
        S[S_IV, a, k] += ttc * (c * gx + s * gy)
        S[S_IYAW, a, k] += ttc * v * (c * gy - s * gx)


@kernel
def _pair_cost(b, i, st, mask, widths, par, margin, weight, proj, barrier, S, W):
    """Pair cost of guided row i (collision with proj=False, TTC with proj=True, the barrier's contact
    term with barrier=True): held_max(box_penetration) summed (squared unless barrier) / m, times weight;
    its gradient goes to the inter adjoints. Returns the cost."""
    n = S.shape[2]
    na = S.shape[1]
    m = par[P_M]
    tie = par[P_TIE]
    ttc = par[P_TTC]
    hli = 0.5 * max(st[b, i, 4], 0.5) + margin
    hwi = 0.5 * widths[b, i] + margin
    px = S_PX if proj else S_X
    py = S_PY if proj else S_Y
    for k in range(n):
        W[W_PEN, k] = 0.0
        W[W_GP, k] = 0.0
    # partners' depths (S_DEP row j), the rear exemption at the first contact, the maximum over partners
    nvalid = 0
    for j in range(na):
        S[S_DEP, j, 0] = -1.0  # marks an invalid partner
        if j == i or not mask[b, j]:
            continue
        hlj = 0.5 * max(st[b, j, 4], 0.5) + margin
        hwj = 0.5 * widths[b, j] + margin
        exempt = False
        first = True
        for k in range(n):
            d, p1 = _pair(S[px, i, k], S[py, i, k], S[S_COS, i, k], S[S_SIN, i, k], hli, hwi,
                          S[px, j, k], S[py, j, k], S[S_COS, j, k], S[S_SIN, j, k], hlj, hwj)
            S[S_DEP, j, k] = d
            if first and d > 0.0:
                first = False
                exempt = p1 < -0.5 * (hli - margin)
        if exempt:
            S[S_DEP, j, 0] = -1.0
            continue
        nvalid += 1
        for k in range(n):
            if S[S_DEP, j, k] > W[W_PEN, k]:
                W[W_PEN, k] = S[S_DEP, j, k]
    if nvalid == 0:
        return 0.0
    # held_max: cummax (ties to the latest step) of pen - tie * k, then relu
    cost = 0.0
    cm = -math.inf
    idx = 0
    for k in range(n):
        r = W[W_PEN, k] - tie * k
        if r >= cm:
            cm = r
            idx = k
        if cm > 0.0:
            if barrier:
                cost += cm
                W[W_GP, idx] += weight / m
            else:
                cost += cm * cm
                W[W_GP, idx] += 2.0 * cm * weight / m
    if par[P_GRAD] == 0.0:
        return cost * weight / m
    for k in range(n):
        g = W[W_GP, k]
        if g == 0.0:
            continue
        pen = W[W_PEN, k]
        cnt = 0
        for j in range(na):
            if S[S_DEP, j, 0] >= 0.0 and S[S_DEP, j, k] == pen:
                cnt += 1
        g = g / cnt
        for j in range(na):
            if not (S[S_DEP, j, 0] >= 0.0 and S[S_DEP, j, k] == pen):
                continue
            hlj = 0.5 * max(st[b, j, 4], 0.5) + margin
            hwj = 0.5 * widths[b, j] + margin
            gxi, gyi, gwi, gxj, gyj, gwj = _pair_grad(
                S[px, i, k], S[py, i, k], S[S_COS, i, k], S[S_SIN, i, k], hli, hwi,
                S[px, j, k], S[py, j, k], S[S_COS, j, k], S[S_SIN, j, k], hlj, hwj, g)
            _add_pose_grad(S, i, k, gxi, gyi, gwi, proj, ttc)
            _add_pose_grad(S, j, k, gxj, gyj, gwj, proj, ttc)
    return cost * weight / m


@kernel
def _sdf(sdf, x0, y0, res, wx, wy):
    """grid_sample(bilinear, border, align_corners=True) at a world point: (value, d/dwx, d/dwy)."""
    h, w = sdf.shape
    ix = (wx - x0) / res
    iy = (wy - y0) / res
    gxc = 1.0 / res
    gyc = 1.0 / res
    if ix <= 0.0:
        ix = 0.0
        gxc = 0.0
    elif ix >= w - 1:
        ix = float(w - 1)
        gxc = 0.0
    if iy <= 0.0:
        iy = 0.0
        gyc = 0.0
    elif iy >= h - 1:
        iy = float(h - 1)
        gyc = 0.0
    jx = int(math.floor(ix))
    jy = int(math.floor(iy))
    tx = ix - jx
    ty = iy - jy
    nw = float(sdf[jy, jx])
    ne = float(sdf[jy, jx + 1]) if jx + 1 < w else 0.0
    sw = float(sdf[jy + 1, jx]) if jy + 1 < h else 0.0
    se = float(sdf[jy + 1, jx + 1]) if (jx + 1 < w and jy + 1 < h) else 0.0
    val = nw * (1.0 - tx) * (1.0 - ty) + ne * tx * (1.0 - ty) + sw * (1.0 - tx) * ty + se * tx * ty
    dix = (ne - nw) * (1.0 - ty) + (se - sw) * ty
    diy = (sw - nw) * (1.0 - tx) + (se - ne) * tx
    return val, dix * gxc, diy * gyc


@kernel
def _road_depth(sdf, par, cf, sf, fx, fy, x, y, cy, sy, hlen, half_w):
    """Road depth at a pose (x, y, heading (cos, sin)): the deepest of the three discs plus W/2, and its
    gradient (x, y, yaw)."""
    best = -math.inf
    gx = 0.0
    gy = 0.0
    gw = 0.0
    cnt = 0
    third = 2.0 * hlen / 3.0
    for d in range(3):
        off = (d - 1) * third
        cx = x + off * cy
        cyy = y + off * sy
        wx = cx * cf - cyy * sf + fx
        wy = cx * sf + cyy * cf + fy
        val, gwx, gwy = _sdf(sdf, par[P_SDF_X0], par[P_SDF_Y0], par[P_SDF_RES], wx, wy)
        dcx = gwx * cf + gwy * sf
        dcy = -gwx * sf + gwy * cf
        dyaw = -off * sy * dcx + off * cy * dcy
        if val > best:
            best = val
            gx, gy, gw = dcx, dcy, dyaw
            cnt = 1
        elif val == best:  # amax splits the gradient evenly among ties
            gx += dcx
            gy += dcy
            gw += dyaw
            cnt += 1
    return best + half_w, gx / cnt, gy / cnt, gw / cnt


@kernel
def _nonzero(S, a, first):
    """Whether any of the four adjoint slots from ``first`` on is nonzero for agent a."""
    for s in range(first, first + 4):
        for k in range(S.shape[2]):
            if S[s, a, k] != 0.0:
                return True
    return False


@kernel
def _evaluate(ctrl, st, mask, guided, frame, limit, widths, sdf, leader, leader_gap, leader_speed, cruise, par,
              S, K, W, G, out_val, out_grad):
    """Per row: the total soft cost (MODE_TOTAL) or the barrier (MODE_BARRIER), and its gradient."""
    nb, na, nh = ctrl.shape[0], ctrl.shape[1], ctrl.shape[2]
    n = S.shape[2]
    m = int(par[P_M])
    mode = int(par[P_MODE])
    need_grad = par[P_GRAD] != 0.0
    dt = par[P_DT]
    plan_dt = par[P_PLAN_DT]
    amin, amax, latmax = par[P_AMIN], par[P_AMAX], par[P_LATMAX]
    last = S_ATRAV + 1 if par[P_W_GAP] > 0.0 else S_IV + 1
    for b in range(nb):
        for a in range(na):
            if mask[b, a]:
                for s in range(S_AX, last):
                    for k in range(n):
                        S[s, a, k] = 0.0
                for c in range(nh):
                    G[0, a, c] = 0.0
                    G[1, a, c] = 0.0
                _rollout(b, a, ctrl, st, par, S, K)
                if mode == MODE_TOTAL:
                    for k in range(n):
                        tv = par[P_TTC] * S[S_V, a, k]
                        S[S_PX, a, k] = S[S_X, a, k] + tv * S[S_COS, a, k]
                        S[S_PY, a, k] = S[S_Y, a, k] + tv * S[S_SIN, a, k]
        cf, sf = math.cos(frame[b, 2]), math.sin(frame[b, 2])
        fx, fy = frame[b, 0], frame[b, 1]
        total = 0.0
        for i in range(na):
            if not guided[b, i]:
                continue
            hlen = 0.5 * max(st[b, i, 4], 0.5)
            half_w = 0.5 * widths[b, i]
            # road: depth beyond the drivable area at the start and along the plan
            d0, _, _, _ = _road_depth(sdf, par, cf, sf, fx, fy, st[b, i, 0], st[b, i, 1], math.cos(st[b, i, 2]),
                                      math.sin(st[b, i, 2]), hlen, half_w)
            allowed = max(d0, 0.0) + par[P_TOL]
            for k in range(n):
                d, gx, gy, gw = _road_depth(sdf, par, cf, sf, fx, fy, S[S_X, i, k], S[S_Y, i, k], S[S_COS, i, k],
                                            S[S_SIN, i, k], hlen, half_w)
                g = 0.0
                if mode == MODE_BARRIER:
                    if d - allowed > 0.0:
                        total -= (d - allowed) / m
                        g = -1.0 / m
                elif d > 0.0:
                    total += par[P_W_ROAD] * d * d / m
                    g = 2.0 * par[P_W_ROAD] * d / m
                if g != 0.0:
                    S[S_AX, i, k] += g * gx
                    S[S_AY, i, k] += g * gy
                    S[S_AYAW, i, k] += g * gw
            if mode == MODE_BARRIER:
                total += _pair_cost(b, i, st, mask, widths, par, 0.0, -1.0, False, True, S, W)
                continue
            total += _pair_cost(b, i, st, mask, widths, par, par[P_MARGIN], par[P_W_COL], False, False, S, W)
            total += _pair_cost(b, i, st, mask, widths, par, 0.0, par[P_W_TTC], True, False, S, W)
            # speed, comfort, cruise at the planner steps; smoothness on the clipped accelerations
            w_sp, w_cf, w_cr, w_sm = par[P_W_SPEED], par[P_W_COMFORT], par[P_W_CRUISE], par[P_W_SMOOTH]
            prev_yaw = st[b, i, 2]
            for c in range(nh):
                k = c * m + m - 1
                v = S[S_V, i, k]
                ex = v - limit[b]
                if ex > 0.0:
                    total += w_sp * ex * ex * plan_dt
                    S[S_AV, i, k] += 2.0 * w_sp * ex * plan_dt
                if w_cr > 0.0:
                    dv = v - cruise[b, i]
                    total += w_cr * dv * dv * plan_dt
                    S[S_AV, i, k] += 2.0 * w_cr * dv * plan_dt
                acc = _clip(ctrl[b, i, c, 0], amin, amax)
                ga = 0.0
                if w_sm > 0.0:
                    total += w_sm * acc * acc * plan_dt
                    ga += 2.0 * w_sm * acc * plan_dt
                e = acc - LON_ACC_MAX
                if e > 0.0:
                    total += w_cf * e * e
                    ga += 2.0 * w_cf * e
                e = LON_ACC_MIN - acc
                if e > 0.0:
                    total += w_cf * e * e
                    ga -= 2.0 * w_cf * e
                if c + 1 < nh:
                    jerk = (_clip(ctrl[b, i, c + 1, 0], amin, amax) - acc) / plan_dt
                    e = abs(jerk) - LON_JERK_MAX
                    if e > 0.0:
                        total += w_cf * e * e
                        gj = 2.0 * w_cf * e * _sign(jerk) / plan_dt
                        G[0, i, c + 1] += gj
                        ga -= gj
                G[0, i, c] += ga
                yaw = S[S_YAW, i, k]
                yr = (yaw - prev_yaw) / plan_dt
                prev_yaw = yaw
                lat = v * yr
                gyr = 0.0
                e = abs(lat) - LAT_ACC_MAX
                if e > 0.0:
                    total += w_cf * e * e
                    gl = 2.0 * w_cf * e * _sign(lat)
                    S[S_AV, i, k] += gl * yr
                    gyr += gl * v
                e = abs(yr) - YAW_RATE_MAX
                if e > 0.0:
                    total += w_cf * e * e
                    gyr += 2.0 * w_cf * e * _sign(yr)
                if gyr != 0.0:
                    S[S_AYAW, i, k] += gyr / plan_dt
                    if c > 0:
                        S[S_AYAW, i, k - m] -= gyr / plan_dt
            # spacing to the leader (inter rollout)
            if par[P_W_GAP] > 0.0 and math.isfinite(leader_gap[b, i]):
                total += _spacing(b, i, mask, leader, leader_gap, leader_speed, par, S)
        out_val[b] = total
        if not need_grad:
            continue
        if mode == MODE_TOTAL and par[P_W_GAP] > 0.0:
            # travelled = dt cumsum(v): the reverse cumulative sum of its adjoint goes to the speeds
            for a in range(na):
                r = 0.0
                for k in range(n - 1, -1, -1):
                    r += S[S_ATRAV, a, k]
                    S[S_IV, a, k] += r * dt
        lateral = par[P_LATERAL] != 0.0
        for a in range(na):
            if not mask[b, a]:
                continue
            if _nonzero(S, a, S_AX):  # agents no cost reached are skipped
                _rollout_grad(b, a, ctrl, st, par, S, K, W, S_AX, S_AY, S_AYAW, S_AV, True, G)
            if _nonzero(S, a, S_IX):
                _rollout_grad(b, a, ctrl, st, par, S, K, W, S_IX, S_IY, S_IYAW, S_IV, lateral, G)
            for c in range(nh):
                u = ctrl[b, a, c, 0]
                out_grad[b, a, c, 0] = G[0, a, c] if (u >= amin and u <= amax) else 0.0
                u = ctrl[b, a, c, 1]
                out_grad[b, a, c, 1] = G[1, a, c] if (u >= -latmax and u <= latmax) else 0.0


@kernel
def _spacing(b, i, mask, leader, leader_gap, leader_speed, par, S):
    """The spacing objective of guided row i (spacing_error on the inter rollout, at the planner steps):
    w_gap * sum(err^2) * plan_dt; its gradient goes to S_IV (desired gap) and S_ATRAV (travelled)."""
    n = S.shape[2]
    m = int(par[P_M])
    dt = par[P_DT]
    w = par[P_W_GAP] * par[P_PLAN_DT]
    h, r, gmax = par[P_TIME_GAP], par[P_STANDSTILL], par[P_GAP_MAX]
    row = max(leader[b, i], 0)
    in_query = leader[b, i] >= 0 and mask[b, row]
    # travelled = cumsum(v) dt of both rows (S_TRAV)
    for a in (i, row):
        t = 0.0
        for k in range(n):
            t += S[S_V, a, k]
            S[S_TRAV, a, k] = t * dt
    cost = 0.0
    for k in range(m - 1, n, m):
        lead = S[S_TRAV, row, k] if in_query else leader_speed[b, i] * (dt * (k + 1))
        gap = leader_gap[b, i] + lead - S[S_TRAV, i, k]
        v = S[S_V, i, k]
        desired = r + h * v
        den = max(desired, 1.0)
        if gmax > 0.0:
            hi = gap - gmax
            lo = desired - gap
            num = (hi if hi > 0.0 else 0.0) - (lo if lo > 0.0 else 0.0)
            dgap = ((1.0 if hi > 0.0 else 0.0) + (1.0 if lo > 0.0 else 0.0)) / den
            ddes = -(1.0 if lo > 0.0 else 0.0) / den
        else:
            num = gap - desired
            dgap = 1.0 / den
            ddes = -1.0 / den
        err = num / den
        if desired >= 1.0:
            ddes -= num / (den * den)
        cost += err * err
        g = 2.0 * w * err
        S[S_ATRAV, i, k] -= g * dgap
        if in_query:
            S[S_ATRAV, row, k] += g * dgap
        S[S_IV, i, k] += g * ddes * h
    return w * cost


# ------------------------------------------------------------------------------------------------- wrapper


class _Prepared:
    """The context as float64 NumPy arrays (built once per context, checked against its tensors on every
    call: a tensor replaced or edited in place is read again) and the kernel's scratch buffers (one
    evaluation of a context at a time: not for concurrent threads)."""

    def __init__(self, ctx, key):
        self.key = key
        self.cfg = ctx.cfg  # the key holds its id
        f64 = lambda t: np.ascontiguousarray(t.detach().numpy(), dtype=np.float64)  # noqa: E731
        b, a = ctx.agent_mask.shape
        self.state = f64(ctx.agent_state)
        self.mask = np.ascontiguousarray(ctx.agent_mask.numpy())
        self.guided = np.ascontiguousarray((ctx.guided & ctx.agent_mask).numpy())
        self.frame = f64(ctx.frame)
        self.limit = f64(ctx.speed_limit)
        self.widths = f64(ctx.widths)
        self.sdf = np.ascontiguousarray(ctx.sdf.detach()[0, 0].numpy())
        self.leader = (np.full((b, a), -1, np.int64) if ctx.leader is None
                       else np.ascontiguousarray(ctx.leader.numpy(), dtype=np.int64))
        self.leader_gap = np.full((b, a), np.inf) if ctx.leader_gap is None else f64(ctx.leader_gap)
        self.leader_speed = np.zeros((b, a)) if ctx.leader_speed is None else f64(ctx.leader_speed)
        self.cruise = np.zeros((b, a)) if ctx.cruise_speed is None else f64(ctx.cruise_speed)
        self.has_leaders = ctx.leader is not None and ctx.leader_gap is not None and ctx.leader_speed is not None
        self.has_cruise = ctx.cruise_speed is not None
        self.params = {}
        self.scratch = {}

    def buffers(self, a, n, h):
        if (a, n, h) not in self.scratch:
            self.scratch[(a, n, h)] = (np.zeros((NUM_SLOTS, a, n)), np.zeros((NUM_ISLOTS, a, n), np.int64),
                                       np.zeros((3, n)), np.zeros((2, a, h)))
        return self.scratch[(a, n, h)]


_CTX_TENSORS = ("agent_state", "agent_mask", "guided", "frame", "speed_limit", "sdf", "widths", "leader",
                "leader_gap", "leader_speed", "cruise_speed")


def _prepare(ctx) -> _Prepared | None:
    tensors = [getattr(ctx, k) for k in _CTX_TENSORS]
    if any(t is not None and (t.device.type != "cpu" or t.requires_grad) for t in tensors):
        return None
    # the tensors themselves (held by the key, so an id cannot be reused) and their in-place versions
    key = (tuple((t, None if t is None else t._version) for t in tensors), tuple(ctx.sdf_meta), ctx.sim_dt,
           ctx.substeps, id(ctx.cfg))
    prep = ctx.__dict__.get("_fast_prepared")
    if prep is not None and _same_key(prep.key, key):
        return prep
    prep = _Prepared(ctx, key)
    ctx.__dict__["_fast_prepared"] = prep
    return prep


def _same_key(old, new) -> bool:
    if old[1:] != new[1:]:
        return False
    return all(t0 is t1 and v0 == v1 for (t0, v0), (t1, v1) in zip(old[0], new[0], strict=True))


def _params(prep: _Prepared, ctx, gcfg, mode: int, m: int, need_grad: bool) -> np.ndarray:
    key = (gcfg, mode, m, need_grad)
    par = prep.params.get(key)
    if par is None:
        cfg = ctx.cfg
        par = np.zeros(NUM_PARAMS)
        x0, y0, res = ctx.sdf_meta
        vals = {P_M: m, P_DT: ctx.sim_dt * ctx.substeps / m, P_PLAN_DT: cfg.plan_dt, P_AMIN: cfg.accel_min,
                P_AMAX: cfg.accel_max, P_LATMAX: cfg.lat_acc_max,
                P_SMAX: math.sin(math.atan(0.5 * math.tan(cfg.steer_max))), P_VMAX: V_MAX, P_MARGIN: gcfg.margin,
                P_TTC: gcfg.ttc, P_TIE: TIE, P_W_COL: gcfg.w_collision, P_W_ROAD: gcfg.w_road,
                P_W_SPEED: gcfg.w_speed, P_W_COMFORT: gcfg.w_comfort, P_W_TTC: gcfg.w_ttc, P_W_GAP: gcfg.w_gap,
                P_TIME_GAP: gcfg.time_gap, P_STANDSTILL: gcfg.standstill, P_GAP_MAX: gcfg.gap_max,
                P_W_SMOOTH: gcfg.w_smooth, P_W_CRUISE: gcfg.w_cruise, P_TOL: gcfg.offroad_tol, P_SDF_X0: x0,
                P_SDF_Y0: y0, P_SDF_RES: res, P_MODE: mode, P_LATERAL: float(gcfg.lateral_avoidance),
                P_GRAD: float(need_grad), P_VEPS: V_EPS}
        for k, v in vals.items():
            par[k] = v
        prep.params[key] = par
    return par


def _run(ctrl: torch.Tensor, prep: _Prepared, par: np.ndarray, need_grad: bool):
    c = ctrl.detach().numpy()  # as it is (the decoder's output is a strided view: copying it costs more)
    nb, na, nh = c.shape[:3]
    n = nh * int(par[P_M])
    S, K, W, G = prep.buffers(na, n, nh)
    val = np.empty(nb, c.dtype)
    grad = np.zeros(c.shape, c.dtype) if need_grad else np.zeros((0, 0, 0, 0), c.dtype)
    _evaluate(c, prep.state, prep.mask, prep.guided, prep.frame, prep.limit, prep.widths, prep.sdf, prep.leader,
              prep.leader_gap, prep.leader_speed, prep.cruise, par, S, K, W, G, val, grad)
    return val, grad


class _FastCost(torch.autograd.Function):
    """cost (B,) of controls (B, A, H, 2), its gradient computed with the value and saved for backward."""

    @staticmethod
    def forward(fctx, ctrl, prep, par_total, par_nograd):
        need = fctx.needs_input_grad[0]
        val, grad = _run(ctrl, prep, par_total if need else par_nograd, need)
        if need:
            fctx.save_for_backward(torch.from_numpy(grad))
        return torch.from_numpy(val)

    @staticmethod
    def backward(fctx, grad_out):
        (grad,) = fctx.saved_tensors
        return grad_out[:, None, None, None] * grad, None, None, None


def _supported(ctrl: torch.Tensor, ctx, gcfg, prep) -> bool:
    if prep is None or ctrl.device.type != "cpu" or ctrl.dim() != 4 or ctrl.shape[-1] != 2:
        return False
    if ctrl.dtype not in (torch.float32, torch.float64) or ctrl.shape[:2] != ctx.agent_mask.shape:
        return False
    if ctx.sdf.dim() != 4 or ctx.sdf.shape[:2] != (1, 1):
        return False
    if gcfg.w_gap > 0 and not prep.has_leaders:
        return False  # the torch path raises the explanatory error
    return not (gcfg.w_cruise > 0 and not prep.has_cruise)


def _apply(ctrl, ctx, gcfg, mode: int, m: int) -> torch.Tensor | None:
    if ctrl.device.type != "cpu":
        return None
    prep = _prepare(ctx)
    if not _supported(ctrl, ctx, gcfg, prep):
        return None
    par_grad = _params(prep, ctx, gcfg, mode, m, True)
    par_fwd = _params(prep, ctx, gcfg, mode, m, False)
    return _FastCost.apply(ctrl, prep, par_grad, par_fwd)


def fast_total(ctrl: torch.Tensor, ctx, gcfg, exact: bool = False) -> torch.Tensor | None:
    """``cost_terms(ctrl, ctx, gcfg, exact=exact, parts="total")["total"]`` (B,) with its gradient to ``ctrl``
    (autograd), or ``None`` where the fast path does not apply (use the torch reference then)."""
    return _apply(ctrl, ctx, gcfg, MODE_TOTAL, ctx.substeps if exact else 1)


def fast_barrier(ctrl: torch.Tensor, ctx, gcfg) -> torch.Tensor | None:
    """``cost_terms(ctrl, ctx, gcfg, parts="barrier")["barrier"]`` (B,) (exact: every simulator step) with its
    gradient to ``ctrl``, or ``None`` where the fast path does not apply."""
    return _apply(ctrl, ctx, gcfg, MODE_BARRIER, ctx.substeps)
