"""Placement of a scenario's generated vehicles (the ``controlled`` and ``traffic`` blocks) in one compiled call.

``CompiledScenario.sample`` used to place them one by one in Python: ~17 us per vehicle, most of an
environment reset (a 16-vehicle highway world: ~270 us of ~600). ``place_generated`` does the same
draws from the same ``numpy.random.Generator`` (Numba calls the generator's own bit generator) in the same
order, so a seed gives the same scene to the last bit: ``tests/scenarios/test_placement.py`` keeps the
Python loop as the reference and compares every array and the generator's state afterwards.

It is compiled ``exact`` (without fastmath, unlike the simulator's kernels): contracting ``lo + (hi - lo) * u``
into a fused multiply-add would move positions by an ulp and break that equality.

Per vehicle, in order (as in highway-env's ``create_random`` and our random placement):

1. speed (``uniform`` over the block's range, no draw when the range is one value), desired speed (the
   same, or ``max(speed, 1)`` when the block has none), IDM delta (the same), lane-change timer
   (``uniform(0, lc_period)`` when MOBIL is on);
2. position: *sequential* (a spawn lane by ``integers``, then ahead of the previous vehicle by
   ``offset * uniform(0.9, 1.1)``), *even* (no draw) or *random* (a lane in proportion to its span by
   ``random()``, a position by ``uniform``, redrawn while closer than a safe gap to an occupied spot);
3. route: one of the routes leaving the lane (``integers``), when there is a choice to make.
"""

from __future__ import annotations

import math

import numpy as np

from drivediff.sim.jit import kernel

# per-kind float parameters (rows of ``kf``)
(SPEED_LO, SPEED_HI, V0_LO, V0_HI, DELTA_LO, DELTA_HI, LC_PERIOD, S0, TIME_GAP, LENGTH, SPACING,
 SEQ_FACTOR) = range(12)
NUM_KIND_F = 12
# per-kind integer parameters (rows of ``ki``)
HAS_V0, MOBIL, MODE, LANES_LO, LANES_HI = range(5)
NUM_KIND_I = 5
# placement modes
SEQUENTIAL, EVEN, RANDOM = range(3)
# columns of the float output
OUT_SPEED, OUT_V0, OUT_DELTA, OUT_LC_TIMER, OUT_S = range(5)
NUM_OUT_F = 5
# error codes
OK, PAST_END, TOO_DENSE = range(3)
MAX_TRIES = 400


@kernel(exact=True, nrt=True, inline=True)
def _draw(rng, lo, hi):
    """A value of the range [lo, hi]: ``uniform(lo, hi)``, or lo without a draw when hi <= lo."""
    if hi <= lo:
        return lo
    return rng.uniform(lo, hi)


@kernel(exact=True, nrt=True)
def place_generated(rng, kinds, kf, ki, sp_lane, sp_lo, sp_hi, sp_cdf, even_count, n_routes, occ_lane, occ_s,
                    occ_half, n_occ, out_f, out_i):
    """Draw every generated vehicle (see the module docstring).

    Args:
        rng: the world's placement generator (advanced in place).
        kinds: (n,) the kind of each vehicle in placement order (0: controlled block, 1: traffic block).
        kf, ki: (2, NUM_KIND_F) and (2, NUM_KIND_I) per-kind parameters.
        sp_lane, sp_lo, sp_hi, sp_cdf: spawn lanes of both kinds (kind k's are ``ki[k, LANES_LO]`` to
            ``ki[k, LANES_HI]``): lane index, span along the lane, cumulative span share within the kind.
        even_count: the traffic count (even placement spreads that many vehicles).
        n_routes: (num_lanes,) number of routes leaving each lane.
        occ_lane, occ_s, occ_half: occupied spots (lane, s, half length); the first ``n_occ`` are the
            explicit vehicles'; room for n more.
        out_f: (n, NUM_OUT_F) speed, desired speed, delta, lane-change timer, s.
        out_i: (n, 2) lane, route option (-1: no route).

    Returns:
        (code, vehicle, value, limit): OK, or PAST_END (sequential placement at s = value beyond the lane end
        ``limit``) or TOO_DENSE (no safe spot after MAX_TRIES draws) for vehicle ``vehicle``.
    """
    front = -math.inf
    even_index = 0
    for r in range(kinds.shape[0]):
        k = kinds[r]
        speed = _draw(rng, kf[k, SPEED_LO], kf[k, SPEED_HI])
        v0 = _draw(rng, kf[k, V0_LO], kf[k, V0_HI]) if ki[k, HAS_V0] else max(speed, 1.0)
        delta = _draw(rng, kf[k, DELTA_LO], kf[k, DELTA_HI])
        lc_timer = rng.uniform(0.0, kf[k, LC_PERIOD]) if ki[k, MOBIL] else -math.inf
        lo, hi = ki[k, LANES_LO], ki[k, LANES_HI]
        mode = ki[k, MODE]
        if mode == SEQUENTIAL:
            q = lo + rng.integers(0, hi - lo)
            offset = kf[k, SPACING] * (12.0 + speed) * kf[k, SEQ_FACTOR]
            base = 3.0 * offset if front == -math.inf else front
            s = sp_lo[q] + (base + offset * rng.uniform(0.9, 1.1))
            if s > sp_hi[q]:
                return PAST_END, r, s, sp_hi[q]
            front = s - sp_lo[q]
        elif mode == EVEN:
            total = 0.0
            for p in range(lo, hi):
                total += sp_hi[p] - sp_lo[p]
            pos = total * even_index / max(even_count, 1)
            even_index += 1
            q = hi - 1
            s = sp_hi[q]
            for p in range(lo, hi):
                span = sp_hi[p] - sp_lo[p]
                if pos < span:
                    q = p
                    s = sp_lo[p] + pos
                    break
                pos -= span
        else:
            need = kf[k, S0] + 0.5 * speed * kf[k, TIME_GAP]
            half = 0.5 * kf[k, LENGTH]
            placed = False
            q = lo
            s = 0.0
            for _ in range(MAX_TRIES):
                u = rng.random()
                q = lo
                while q < hi - 1 and sp_cdf[q] <= u:  # bisect_right over the kind's cumulative shares
                    q += 1
                s = rng.uniform(sp_lo[q], sp_hi[q])
                clear = True
                for e in range(n_occ):
                    if occ_lane[e] == sp_lane[q] and not abs(s - occ_s[e]) - occ_half[e] - half >= need:
                        clear = False
                        break
                if clear:
                    placed = True
                    break
            if not placed:
                return TOO_DENSE, r, 0.0, 0.0
        lane = sp_lane[q]
        occ_lane[n_occ] = lane
        occ_s[n_occ] = s
        occ_half[n_occ] = 0.5 * kf[k, LENGTH]
        n_occ += 1
        out_i[r, 0] = lane
        out_i[r, 1] = rng.integers(0, n_routes[lane]) if n_routes[lane] > 0 else -1
        out_f[r, OUT_SPEED] = speed
        out_f[r, OUT_V0] = v0
        out_f[r, OUT_DELTA] = delta
        out_f[r, OUT_LC_TIMER] = lc_timer
        out_f[r, OUT_S] = s
    return OK, -1, 0.0, 0.0


def empty_outputs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((n, NUM_OUT_F)), np.empty((n, 2), dtype=np.int64)
