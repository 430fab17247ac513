"""Writing a reset world's placement into the state in one call (``World.reset``)."""

from __future__ import annotations

import numpy as np

from drivediff.sim.jit import kernel
from drivediff.sim.kernels.frenet import interp_centrelines
from drivediff.sim.layout import LANE, NEXT_VID, TARGET_LANE, VALID, VID, YAW, X

BAD_LANE = -1  # returned when a placed lane does not exist


@kernel(exact=True, nrt=True)
def write_world(st, fresh, b, cols, rows, s_row, lanes, route, pts, first, lane_len):
    """World b gets the fresh state (``fresh``: the packed arrays of one empty world), then the placed
    vehicles in its first slots: ``cols`` (fields, n) placement columns written to the state rows ``rows``
    (float, int and flag rows and their column indices, ``world._column_rows``), their lanes, targets and
    routes, and the centreline point at each one's arc length (row ``s_row``; the lateral offset is left to
    the caller). The order of the writes, and the numbers, are those of the NumPy assignments this replaced.

    Returns the number of vehicles written, or ``BAD_LANE`` (nothing written) if a lane does not exist.
    """
    n = lanes.shape[0]
    for k in range(n):
        if lanes[k] < 0 or lanes[k] >= lane_len.shape[0]:
            return BAD_LANE
    f, iv, m = st[0], st[1], st[2]
    f[b] = fresh[0][0]
    iv[b] = fresh[1][0]
    m[b] = fresh[2][0]
    st[3][b] = fresh[3][0]
    st[4][b] = fresh[4][0]
    st[5][b] = fresh[5][0]
    st[6][b] = fresh[6][0]
    st[4][b, NEXT_VID] = n
    f_rows, f_cols, i_rows, i_cols, m_rows, m_cols = rows
    for r in range(f_rows.shape[0]):
        for k in range(n):
            f[b, f_rows[r], k] = cols[f_cols[r], k]
    for r in range(i_rows.shape[0]):
        for k in range(n):
            iv[b, i_rows[r], k] = np.int64(cols[i_cols[r], k])
    for r in range(m_rows.shape[0]):
        for k in range(n):
            m[b, m_rows[r], k] = cols[m_cols[r], k] != 0.0
    interp_centrelines(pts, first, lane_len, lanes, cols[s_row], f[b, X:YAW + 1, :n])  # rows x, y, yaw
    for k in range(n):
        ln = lanes[k]
        iv[b, LANE, k] = ln
        iv[b, TARGET_LANE, k] = ln
        st[3][b, k] = route[k]
        m[b, VALID, k] = True
        iv[b, VID, k] = k
    return n
