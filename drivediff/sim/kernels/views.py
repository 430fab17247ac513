"""Per-world views that kernels pass around (small NamedTuples of array views)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class WorldView(NamedTuple):
    """The state of one world: rows of the packed state arrays (see ``drivediff.sim.layout``)."""

    f: np.ndarray  # (NF, N) float64
    iv: np.ndarray  # (NI, N) int64
    m: np.ndarray  # (NM, N) bool
    route: np.ndarray  # (N, R) int64
    wi: np.ndarray  # (NW,) int64
    prof: np.ndarray  # (P,) float64
    v2v: np.ndarray  # (D, N) float64 commands broadcast in the last D steps


class Occupancy(NamedTuple):
    """The lane-sorted occupancy index of one world."""

    s: np.ndarray  # (4N,) float64 s of each entry on its lane
    veh: np.ndarray  # (4N,) int64 vehicle slot of each entry
    start: np.ndarray  # (L+1,) int64 entries of lane l: start[l]:start[l+1], sorted by (s, slot)
