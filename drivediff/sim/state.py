"""Simulation state, parameters and inflows.

* :class:`SimState`: struct-of-arrays over (num_worlds, max_vehicles), packed by dtype (see
  ``drivediff.sim.layout``); every field is available by name as a (B, N) view, e.g. ``state.speed``,
  ``state.valid``. Kernels mutate the packed arrays in place.
* :class:`SimParams`: scalars of the simulation (time step, limits, controller gains).
* :class:`Inflow`: where and how vehicles enter open roads.

Invalid slots are ``valid == False``; integer fields use -1 as "none" (no lane, no leader); gaps and
time-to-collision use ``inf`` for "unconstrained". No field is ever NaN.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np

from drivediff.sim import layout as L

__all__ = ["Behavior", "Inflow", "SimParams", "SimState", "Scratch", "alloc_state", "alloc_scratch",
           "ROUTE_LEN", "empty_inflow", "Record", "alloc_record", "NUM_SPAWN_RANDOMS"]

ROUTE_LEN = 12  # lanes a vehicle's route can name ahead of it
NUM_SPAWN_RANDOMS = 6  # uniforms per inflow per step: arrival, speed, v0, delta, route, MOBIL phase


class Behavior(IntEnum):
    """How a vehicle is driven. Values are stored in ``SimState.behavior``."""

    IDM = 0  # IDM longitudinal + MOBIL lane changes + lane tracking + yielding (background traffic)
    CONSTANT_SPEED = 1  # holds its target speed and tracks its lane; ignores other vehicles
    EXTERNAL = 2  # acceleration and steering come from the caller (``actions``)
    META = 3  # target lane and target speed come from the caller; the simulator's controllers execute
    PROFILE = 4  # follows the world's speed profile (platoon leaders, lead braking)
    ACC = 5  # adaptive cruise control (constant time gap; Milanes & Shladover gains)
    CACC = 6  # cooperative ACC (Ploeg): ACC + predecessor's command over V2V


class SimState:
    """Mutable simulation state of B worlds with N vehicle slots.

    Packed arrays (what kernels receive):
        f: (B, NF, N) float64, iv: (B, NI, N) int64, m: (B, NM, N) bool, route: (B, N, R) int64,
        wi: (B, NW) int64, profile: (B, P) float64, v2v: (B, D, N) float64 ring buffer of the commands
        each vehicle broadcast in the last D steps (D = V2V delay in steps + 1).

    Named (B, N) views, one per field of ``layout.FLOAT_FIELDS``, ``INT_FIELDS`` and ``FLAG_FIELDS``
    (units there), plus ``step`` and ``next_vid`` (B,).
    """

    __slots__ = ("f", "iv", "m", "route", "wi", "profile", "v2v")

    def __init__(self, f, iv, m, route, wi, profile, v2v):
        self.f, self.iv, self.m, self.route, self.wi, self.profile, self.v2v = f, iv, m, route, wi, profile, v2v

    @property
    def packed(self) -> tuple:
        return (self.f, self.iv, self.m, self.route, self.wi, self.profile, self.v2v)

    @property
    def num_worlds(self) -> int:
        return self.f.shape[0]

    @property
    def max_vehicles(self) -> int:
        return self.f.shape[2]

    def copy(self) -> SimState:
        return SimState(*(a.copy() for a in self.packed))

    def world(self, b: int) -> dict[str, np.ndarray]:
        """Every per-vehicle field of world b as (N,) copies."""
        return {name: getattr(self, name)[b].copy() for name in ALL_VEHICLE_FIELDS}


def _view(array_name: str, k: int, doc: str):
    return property(lambda self: getattr(self, array_name)[:, k, :], doc=doc)


for _k, _n in enumerate(L.FLOAT_FIELDS):
    setattr(SimState, _n, _view("f", _k, f"(B, N) float64 {_n}"))
for _k, _n in enumerate(L.INT_FIELDS):
    setattr(SimState, _n, _view("iv", _k, f"(B, N) int64 {_n}"))
for _k, _n in enumerate(L.FLAG_FIELDS):
    setattr(SimState, _n, _view("m", _k, f"(B, N) bool {_n}"))
SimState.step = property(lambda self: self.wi[:, L.STEP], doc="(B,) int64 steps since reset")
SimState.next_vid = property(lambda self: self.wi[:, L.NEXT_VID], doc="(B,) int64 next vehicle id")
ALL_VEHICLE_FIELDS = L.FLOAT_FIELDS + L.INT_FIELDS + L.FLAG_FIELDS


class Scratch(NamedTuple):
    """Per-world work arrays of the step kernel: the lane-sorted occupancy index and buffers."""

    occ_s: np.ndarray  # (B, 4N) float64 s of each entry on its lane (sorted within each lane)
    occ_veh: np.ndarray  # (B, 4N) int64 vehicle slot of each entry
    occ_start: np.ndarray  # (B, L+1) int64 entries of lane l: occ_start[l]:occ_start[l+1]
    buf_i: np.ndarray  # (B, 3, 4N) int64 build buffers
    buf_f: np.ndarray  # (B, 2, 4N) float64 build buffers
    count: np.ndarray  # (B, L+1) int64 counting-sort buffer
    dec: np.ndarray  # (B, 2, N) float64 decided acceleration and steering
    partner: np.ndarray  # (B, N) int64 collision partner in the last step (-1: none)
    standing: np.ndarray  # (B, N) int64 slots of the standing vehicles (junction worlds, decision phase)


class SimParams(NamedTuple):
    """Scalars of the simulation. Defaults follow highway-env 1.12 (shared/REFERENCES.md)."""

    dt: float = 0.1  # [s]
    v_min: float = 0.0  # [m/s] no reversing
    v_max: float = 40.0  # [m/s] highway-env MAX_SPEED
    a_min: float = -9.0  # physical braking limit [m/s^2]
    a_max: float = 6.0  # physical acceleration limit [m/s^2] (highway-env ACC_MAX)
    steer_max: float = 1.0471975511965976  # pi/3 [rad] (highway-env MAX_STEERING_ANGLE)
    center_gap: bool = False  # IDM gap centre-to-centre (highway-env) instead of bumper-to-bumper
    lc_period: float = 1.0  # MOBIL decision period [s] (highway-env LANE_CHANGE_DELAY)
    kp_speed: float = 1.0 / 0.6  # speed controller gain [1/s] (highway-env TAU_ACC 0.6 s)
    kp_heading: float = 1.0 / 0.2  # heading gain [1/s] (TAU_HEADING 0.2 s)
    kp_lateral: float = 1.0 / 0.6  # lateral gain [1/s] (TAU_LATERAL 0.6 s)
    tau_pursuit: float = 0.1  # heading lookahead time [s] (TAU_PURSUIT = 0.5 * TAU_HEADING)
    # [m/s] lane tracking divides by the speed twice (lateral command and slip angle); below this speed it divides
    # by this instead. highway-env's controller has no floor. The slip angle moves the vehicle sideways at once
    # (dt L/2 kp_heading kp_lateral / v times the lateral error), and the linearised loop of lateral offset and
    # heading is unstable below ~1.3 m/s at dt = 0.1 s (L = 5 m): the steering flips between its limits every
    # step and the box wags. On the ring, a car crawling 0.2 m behind such a wagging car touched it (README,
    # platoon). With the floor the linearised loop is stable at every speed; above it the steering is highway-env's
    steer_speed_floor: float = 2.0
    b_yield: float = 4.0  # deceleration used to judge whether a vehicle can still stop [m/s^2]
    gap_accept: float = 1.5  # extra time a yielding vehicle wants after the crossing vehicle [s]
    stop_margin: float = 1.0  # distance kept before a conflict zone when yielding [m]
    lookahead: float = 150.0  # leader search distance [m]
    offroad_tol: float = 0.1  # box corner this far outside the drivable area counts as off-road [m]
    v2v_loss: float = 0.0  # CACC: probability that a V2V packet is lost in a step
    v2v_delay_steps: int = 0  # CACC: V2V delay in steps (beyond the one-step beacon period)
    reserved_slots: int = 0  # slots 0..reserved-1 belong to controlled vehicles; inflows never reuse them


class Inflow(NamedTuple):
    """Entry points of open roads: K inflows, M route options in total."""

    f: np.ndarray  # (K, len(INFLOW_COLUMNS)) float64
    lane: np.ndarray  # (K,) int64 entry lane (vehicles appear at its start)
    route_start: np.ndarray  # (K+1,) int64 route options of inflow k: route_start[k]:route_start[k+1]
    routes: np.ndarray  # (M, R) int64 lanes after the entry lane (-1 padded)


INFLOW_COLUMNS = ("rate", "speed_lo", "speed_hi", "v0_lo", "v0_hi", "delta_lo", "delta_hi", "time_gap", "s0",
                  "a_comf", "b_comf", "politeness", "lc_gain", "lc_brake", "lane_change", "length", "width",
                  "coolness")


def empty_inflow() -> Inflow:
    return Inflow(f=np.zeros((0, len(INFLOW_COLUMNS))), lane=np.zeros(0, np.int64),
                  route_start=np.zeros(1, np.int64), routes=np.zeros((0, ROUTE_LEN), np.int64))


class Record(NamedTuple):
    """Per-step recording buffers of a rollout (fields: ``layout.LOG_FLOATS`` etc.)."""

    f: np.ndarray  # (B, T, len(LOG_FLOATS), N)
    iv: np.ndarray  # (B, T, len(LOG_INTS), N)
    m: np.ndarray  # (B, T, len(LOG_FLAGS), N)
    fi: np.ndarray  # indices of LOG_FLOATS in the state's f
    ii: np.ndarray
    mi: np.ndarray


def alloc_record(num_worlds: int, num_steps: int, max_vehicles: int) -> Record:
    b, t, n = num_worlds, num_steps, max_vehicles
    return Record(
        f=np.zeros((b, t, len(L.LOG_FLOATS), n)), iv=np.zeros((b, t, len(L.LOG_INTS), n), np.int64),
        m=np.zeros((b, t, len(L.LOG_FLAGS), n), np.bool_),
        fi=np.array([L.FLOAT_FIELDS.index(k) for k in L.LOG_FLOATS], np.int64),
        ii=np.array([L.INT_FIELDS.index(k) for k in L.LOG_INTS], np.int64),
        mi=np.array([L.FLAG_FIELDS.index(k) for k in L.LOG_FLAGS], np.int64),
    )


def record_to_dict(rec: Record) -> dict[str, np.ndarray]:
    """(B, T, N) array per log field."""
    out = {}
    for k, name in enumerate(L.LOG_FLOATS):
        out[name] = rec.f[:, :, k, :]
    for k, name in enumerate(L.LOG_INTS):
        out[name] = rec.iv[:, :, k, :]
    for k, name in enumerate(L.LOG_FLAGS):
        out[name] = rec.m[:, :, k, :]
    return out


def alloc_state(num_worlds: int, max_vehicles: int, profile_len: int = 1, v2v_delay_steps: int = 0) -> SimState:
    """A state with every slot empty."""
    b, n = num_worlds, max_vehicles
    f = np.zeros((b, L.NF, n))
    f[:, L.LENGTH] = 5.0
    f[:, L.WIDTH] = 2.0
    f[:, [L.GAP, L.TTC, L.HEADWAY]] = np.inf
    f[:, L.LC_FORCE_TIME] = -1.0
    iv = np.full((b, L.NI, n), -1, dtype=np.int64)
    iv[:, L.BEHAVIOR] = Behavior.IDM
    iv[:, L.ROUTE_POS] = 0
    iv[:, L.LC_FORCE_DIR] = 0
    m = np.zeros((b, L.NM, n), dtype=np.bool_)
    route = np.full((b, n, ROUTE_LEN), -1, dtype=np.int64)
    wi = np.zeros((b, L.NW), dtype=np.int64)
    profile = np.zeros((b, max(1, profile_len)))
    v2v = np.zeros((b, v2v_delay_steps + 1, n))
    return SimState(f, iv, m, route, wi, profile, v2v)


def alloc_scratch(num_worlds: int, max_vehicles: int, num_lanes: int) -> Scratch:
    b, n2 = num_worlds, 4 * max_vehicles  # up to four occupancy entries per vehicle
    return Scratch(
        occ_s=np.zeros((b, n2)), occ_veh=np.zeros((b, n2), np.int64),
        occ_start=np.zeros((b, num_lanes + 1), np.int64), buf_i=np.zeros((b, 3, n2), np.int64),
        buf_f=np.zeros((b, 2, n2)), count=np.zeros((b, num_lanes + 1), np.int64),
        dec=np.zeros((b, 2, max_vehicles)), partner=np.full((b, max_vehicles), -1, np.int64),
        standing=np.zeros((b, max_vehicles), np.int64),
    )
