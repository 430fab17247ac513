"""Off-road checks against the drivable area's signed-distance grid."""

from __future__ import annotations

import math

from drivediff.sim.jit import kernel
from drivediff.sim.layout import SDF_RES, SDF_X0, SDF_Y0


@kernel
def sdf_sample(sdf, meta, x, y):
    """Bilinear signed distance at (x, y); outside the grid, the nearest edge value plus the overshoot."""
    ny, nx = sdf.shape
    res = meta[SDF_RES]
    u = (x - meta[SDF_X0]) / res
    w = (y - meta[SDF_Y0]) / res
    extra = 0.0
    if u < 0.0:
        extra += -u * res
        u = 0.0
    elif u > nx - 1:
        extra += (u - (nx - 1)) * res
        u = nx - 1.0
    if w < 0.0:
        extra += -w * res
        w = 0.0
    elif w > ny - 1:
        extra += (w - (ny - 1)) * res
        w = ny - 1.0
    i = min(int(u), nx - 2)
    j = min(int(w), ny - 2)
    tu = u - i
    tw = w - j
    v = ((1 - tu) * (1 - tw) * sdf[j, i] + tu * (1 - tw) * sdf[j, i + 1]
         + (1 - tu) * tw * sdf[j + 1, i] + tu * tw * sdf[j + 1, i + 1])
    return v + extra


@kernel
def sdf_sample_many(sdf, meta, xs, ys, out):
    for k in range(xs.shape[0]):
        out[k] = sdf_sample(sdf, meta, xs[k], ys[k])


@kernel
def box_max_sdf(sdf, meta, x, y, yaw, length, width):
    """Largest signed distance over the four corners of a box (> 0: a corner is off the road)."""
    c = math.cos(yaw)
    s = math.sin(yaw)
    hl = 0.5 * length
    hw = 0.5 * width
    best = -math.inf
    for sl in (-1.0, 1.0):
        for sw in (-1.0, 1.0):
            cx = x + sl * hl * c - sw * hw * s
            cy = y + sl * hl * s + sw * hw * c
            best = max(best, sdf_sample(sdf, meta, cx, cy))
    return best
