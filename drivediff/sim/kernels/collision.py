"""Oriented-box geometry: separating-axis overlap test and a sweep-and-prune broadphase."""

from __future__ import annotations

import math

from drivediff.sim.jit import kernel
from drivediff.sim.kernels.sort import sort_pairs


@kernel
def box_overlap(xa, ya, yawa, la, wa, xb, yb, yawb, lb, wb):
    """True when two oriented rectangles overlap; touching counts as overlap.

    Separating-axis test over the four edge normals. Boxes are given by centre, heading [rad] and full
    length/width [m].
    """
    ca = math.cos(yawa)
    sa = math.sin(yawa)
    cb = math.cos(yawb)
    sb = math.sin(yawb)
    dx = xb - xa
    dy = yb - ya
    hla = 0.5 * la
    hwa = 0.5 * wa
    hlb = 0.5 * lb
    hwb = 0.5 * wb
    # axes of A: (ca, sa) and (-sa, ca)
    cab = ca * cb + sa * sb  # ua . ub
    cav = -ca * sb + sa * cb  # ua . vb
    cva = -sa * cb + ca * sb  # va . ub
    cvv = sa * sb + ca * cb  # va . vb
    if abs(dx * ca + dy * sa) > hla + hlb * abs(cab) + hwb * abs(cav):
        return False
    if abs(-dx * sa + dy * ca) > hwa + hlb * abs(cva) + hwb * abs(cvv):
        return False
    # axes of B: (cb, sb) and (-sb, cb)
    if abs(dx * cb + dy * sb) > hlb + hla * abs(cab) + hwa * abs(cva):
        return False
    if abs(-dx * sb + dy * cb) > hwb + hla * abs(cav) + hwa * abs(cvv):
        return False
    return True


@kernel
def box_overlap_many(a, b, out):
    """``out[k] = box_overlap(a[k], b[k])`` for (K, 5) arrays of ``[x, y, yaw, length, width]``."""
    for k in range(a.shape[0]):
        out[k] = box_overlap(a[k, 0], a[k, 1], a[k, 2], a[k, 3], a[k, 4],
                             b[k, 0], b[k, 1], b[k, 2], b[k, 3], b[k, 4])


@kernel
def detect_collisions(x, y, yaw, length, width, valid, order, key, rad, collided, partner):
    """Flag every valid vehicle whose box overlaps another's (one world).

    Sweep and prune along the axis with the larger spread: vehicles are sorted by the lower end of their
    bounding-circle interval, and only pairs whose intervals overlap reach the exact test, so the cost is
    O(N log N + pairs) rather than O(N^2).

    Args:
        x, y, yaw, length, width: (N,) vehicle boxes.
        valid: (N,) bool.
        order, key, rad: (>= N,) int64 / float64 / float64 scratch.
        collided: (N,) bool, set True for colliding vehicles (never cleared here).
        partner: (N,) int64, one vehicle each collided vehicle hit this step (-1 where none).

    Returns:
        Number of overlapping pairs.
    """
    n = x.shape[0]
    m = 0
    xmin = math.inf
    xmax = -math.inf
    ymin = math.inf
    ymax = -math.inf
    for i in range(n):
        partner[i] = -1
        if valid[i]:
            order[m] = i
            m += 1
            xmin = min(xmin, x[i])
            xmax = max(xmax, x[i])
            ymin = min(ymin, y[i])
            ymax = max(ymax, y[i])
    if m < 2:
        return 0
    use_x = (xmax - xmin) >= (ymax - ymin)
    for k in range(m):
        i = order[k]
        key[k] = (x[i] if use_x else y[i]) - 0.5 * math.sqrt(length[i] * length[i] + width[i] * width[i])
    sort_pairs(key, order, 0, m)
    for k in range(m):
        i = order[k]
        rad[k] = 0.5 * math.sqrt(length[i] * length[i] + width[i] * width[i])
    pairs = 0
    for p in range(m):
        i = order[p]
        ri = rad[p]
        hi = key[p] + 2.0 * ri
        for q in range(p + 1, m):
            if key[q] > hi:
                break
            j = order[q]
            rj = rad[q]
            dx = x[j] - x[i]
            dy = y[j] - y[i]
            rr = ri + rj
            if dx * dx + dy * dy > rr * rr:
                continue
            if box_overlap(x[i], y[i], yaw[i], length[i], width[i], x[j], y[j], yaw[j], length[j], width[j]):
                collided[i] = True
                collided[j] = True
                if partner[i] < 0:
                    partner[i] = j
                if partner[j] < 0:
                    partner[j] = i
                pairs += 1
    return pairs


@kernel
def box_corners(x, y, yaw, length, width, out):
    """Write the four corners of one box into ``out`` (4, 2), counter-clockwise from front-left."""
    c = math.cos(yaw)
    s = math.sin(yaw)
    hl = 0.5 * length
    hw = 0.5 * width
    out[0, 0] = x + hl * c - hw * s
    out[0, 1] = y + hl * s + hw * c
    out[1, 0] = x - hl * c - hw * s
    out[1, 1] = y - hl * s + hw * c
    out[2, 0] = x - hl * c + hw * s
    out[2, 1] = y - hl * s - hw * c
    out[3, 0] = x + hl * c + hw * s
    out[3, 1] = y + hl * s - hw * c
