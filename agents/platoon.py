"""Car-following controllers for platoons, as policies and as in-kernel behaviours.

    IDMPolicy    Intelligent Driver Model (Enhanced IDM when the vehicle's coolness > 0)
    ACCPolicy    adaptive cruise control, constant time gap, Milanes & Shladover gains:
                 a = 0.23 e + 0.07 (v_prev - v), e = gap - (r + h v)
    CACCPolicy   Ploeg's cooperative ACC: h du/dt = -u + kp e + kd de/dt + u_prev, with u_prev received from
                 the predecessor over the simulator's V2V channel (delay, packet loss)

Each policy drives the vehicle slots it is given (default: the world's controlled vehicles) and follows the
protocol of ``drivediff.agents.base.Policy``: ``reset(world)`` then ``act(world)`` -> (B, N, 2) actions.

* ``in_kernel=False`` (the policy path): the slots become EXTERNAL and ``act`` computes acceleration and
  lane-keeping steering in numpy from the world state, exactly as the simulator's kernels do, including the
  first-order actuator lag ``cc_lag`` (the action is the lagged acceleration).
* ``in_kernel=True`` (the fast path): ``reset`` writes the parameters and switches the slots to the
  simulator's own IDM / ACC / CACC behaviour; ``act`` returns zeros and ``World.run`` may be used instead
  of stepping (hundreds of times faster).

Both paths read the same per-vehicle parameters from the state (``cc_gap``, ``cc_standstill``, ``cc_kp``,
``cc_kd``, ``cc_lag``; IDM's ``v0``, ``time_gap``, ...), which ``reset`` overwrites when ``params`` are given,
and give the same trajectories (tests/experiments/test_platoon.py).

V2V in the policy path: the CACC policy uses the simulator's channel settings (``world.params.v2v_delay_steps``,
``v2v_loss``) and its ring buffer ``world.state.v2v``. The simulator records an EXTERNAL vehicle's realised
acceleration in that buffer; the policy overwrites its own vehicles' entries with their controller command
u (what an in-kernel CACC vehicle broadcasts) before anyone reads them, so in-kernel CACC vehicles behind a
policy vehicle receive u too (exactly, for a delay of at least one step; with no delay they receive the
realised acceleration). Packet loss is drawn from the policy's own generator (the simulator's draws are not
exposed): the loss statistics are the same, the lost packets are not. Without loss the two paths agree to
float rounding.

The IDM policy reproduces the kernel's car following on a lane (leader, desired speed, speed limit,
acceleration noise from its own generator); the kernel's lane-end, yielding, merge-cooperation and MOBIL
terms are not part of it (platoon scenarios have no use for them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivediff.errors import DrivediffError
from drivediff.sim import Behavior
from drivediff.sim import layout as L

__all__ = ["CCParams", "IDMPolicy", "ACCPolicy", "CACCPolicy", "CONTROLLERS", "make_controller", "write_cc_params",
           "lane_keeping_steer", "ACC_K1", "ACC_K2"]

# Milanes & Shladover ACC gains (drivediff.sim.kernels.step.ACC_K1 / ACC_K2)
ACC_K1 = 0.23
ACC_K2 = 0.07


@dataclass(frozen=True)
class CCParams:
    """ACC / CACC parameters (Ploeg CACC with Plexe defaults, shared/REFERENCES.md)."""

    time_gap: float = 0.5  # h [s]
    standstill: float = 2.0  # r [m]
    kp: float = 0.2  # CACC gain on the spacing error [1/s^2]
    kd: float = 0.7  # CACC gain on its rate [1/s]
    lag: float = 0.5  # actuator lag tau [s] (0: none)

    def __post_init__(self):
        if not self.time_gap > 0:
            raise DrivediffError(f"time_gap must be > 0 s, got {self.time_gap}")
        for name in ("standstill", "kp", "kd", "lag"):
            if not getattr(self, name) >= 0:
                raise DrivediffError(f"{name} must be >= 0, got {getattr(self, name)}")

    def overrides(self) -> dict:
        """The ``cc`` section of a scenario vehicle."""
        return {"time_gap": self.time_gap, "standstill": self.standstill, "kp": self.kp, "kd": self.kd,
                "lag": self.lag}


def write_cc_params(world, slots, params: CCParams, worlds=None) -> None:
    """Write ACC/CACC parameters into the state of the given vehicle slots (of the given worlds, default all)."""
    st = world.state
    w = slice(None) if worlds is None else np.asarray(worlds, dtype=np.int64).reshape(-1, 1)
    for name, value in (("cc_gap", params.time_gap), ("cc_standstill", params.standstill), ("cc_kp", params.kp),
                        ("cc_kd", params.kd), ("cc_lag", params.lag)):
        getattr(st, name)[w, slots] = value


# ------------------------------------------------------------------------------ lane geometry (numpy)
def _not_zero(x):
    return np.where(np.abs(x) > 1e-2, x, np.where(x >= 0.0, 1e-2, -1e-2))


def _lane_heading(road, lane, s):
    """Heading of the centreline at arc length s (clamped), as the kernels interpolate it."""
    i0 = road.lane_i[lane, L.L_PT]
    n = road.lane_i[lane + 1, L.L_PT] - i0
    u = s / road.lane_f[lane, L.L_DS]
    k = np.clip(np.floor(u).astype(np.int64), 0, None)
    last = k >= n - 1
    j = i0 + np.minimum(k, n - 2)
    t = u - k
    h = road.pts[j, L.P_H] + t * (road.pts[j + 1, L.P_H] - road.pts[j, L.P_H])
    h = np.where(last, road.pts[i0 + n - 1, L.P_H], h)
    return np.where(u <= 0.0, road.pts[i0, L.P_H], h)


def _next_lane(road, route, lane, rp):
    """The kernels' ``next_lane`` for arrays: the route entry ``rp`` if it is a successor, else the first
    successor; -1 at a road end."""
    a = road.lane_i[lane, L.L_SUCC]
    e = road.lane_i[lane + 1, L.L_SUCC]
    has = a < e
    first = np.where(has, road.links[np.minimum(a, len(road.links) - 1)], -1) if len(road.links) else \
        np.full(lane.shape, -1)
    rlen = route.shape[-1]
    ok_rp = (rp >= 0) & (rp < rlen)
    r = np.take_along_axis(route, np.clip(rp, 0, rlen - 1)[..., None], axis=-1)[..., 0]
    r = np.where(ok_rp, r, -1)
    out = first
    max_deg = int(np.max(road.lane_i[1:, L.L_SUCC] - road.lane_i[:-1, L.L_SUCC])) if road.lane_i.shape[0] > 1 else 0
    for q in range(max_deg):
        idx = a + q
        inside = has & (idx < e) & (r >= 0)
        cand = road.links[np.clip(idx, 0, max(len(road.links) - 1, 0))] if len(road.links) else np.full(lane.shape,
                                                                                                         -1)
        out = np.where(inside & (cand == r), r, out)
    return np.where(has, out, -1)


def lane_keeping_steer(world) -> np.ndarray:
    """(B, N) steering [rad] that tracks each vehicle's own lane centreline: the kernels' ``steer_to_lane``
    for a vehicle in its target lane (highway-env's ``steering_control``), in numpy. 0 where no lane."""
    st, prm = world.state, world.params
    road = world.road.arrays
    has_lane = st.valid & (st.lane >= 0)
    ln = np.where(has_lane, st.lane, 0)
    v = st.speed
    s = st.s + v * prm.tau_pursuit
    rp = st.route_pos.copy()
    for _ in range(3):  # follow lane ends along the route, as _heading_ahead does
        length = road.lane_f[ln, L.L_LEN]
        beyond = s > length
        nxt = _next_lane(road, st.route, ln, rp)
        go = beyond & (nxt >= 0)
        s = np.where(go, s - length, s)
        ln = np.where(go, nxt, ln)
        rp = np.where(go & (rp >= 0), rp + 1, rp)
    h_future = _lane_heading(road, ln, s)
    lat_cmd = -prm.kp_lateral * st.d
    vc = np.where(v < 0.0, -1.0, 1.0) * np.maximum(np.abs(v), prm.steer_speed_floor)  # SimParams.steer_speed_floor
    h_cmd = np.arcsin(np.clip(lat_cmd / _not_zero(vc), -1.0, 1.0))
    h_ref = h_future + np.clip(h_cmd, -0.25 * math.pi, 0.25 * math.pi)
    err = np.mod(h_ref - st.yaw + math.pi, 2.0 * math.pi) - math.pi
    rate = prm.kp_heading * err
    u = np.clip(0.5 * st.length / _not_zero(vc) * rate, -0.999999, 0.999999)
    steer = np.clip(np.arctan(2.0 * u / np.sqrt(1.0 - u * u)), -prm.steer_max, prm.steer_max)
    return np.where(has_lane, steer, 0.0)


def _desired_speed(world) -> np.ndarray:
    """(B, N) v0 clipped to the speed limit of the vehicle's lane."""
    st = world.state
    limit = world.road.arrays.lane_f[np.where(st.lane >= 0, st.lane, 0), L.L_SPEED]
    return np.where(st.lane >= 0, np.minimum(st.v0, limit), st.v0)


def _leader_values(st, field: np.ndarray) -> np.ndarray:
    """(B, N) ``field`` of each vehicle's leader (0 where none)."""
    j = np.where(st.leader >= 0, st.leader, 0)
    return np.where(st.leader >= 0, np.take_along_axis(field, j, axis=1), 0.0)


# ---------------------------------------------------------------------------------------- IDM (numpy)
def idm_accel(v, v0, time_gap, s0, a, b, delta, gap, v_lead, center_gap: bool):
    """The kernels' ``idm_accel`` on arrays (gap = inf: no leader)."""
    v0e = np.where(np.abs(v0) > 1e-2, v0, 1e-2)
    acc = a * (1.0 - np.power(np.maximum(v, 0.0) / np.abs(v0e), delta))
    finite = np.isfinite(gap)
    dyn = v * time_gap + v * (v - v_lead) / (2.0 * np.sqrt(a * b))
    s_star = s0 + dyn if center_gap else s0 + np.maximum(0.0, dyn)
    g = np.where(np.abs(gap) > 1e-2, gap, 1e-2)
    g = np.where((g < 0.0) | ~finite, 1e-2, g)
    return acc - np.where(finite, a * (s_star / g) ** 2, 0.0)


def cah_accel(v, v_lead, a_lead, gap, a):
    """The kernels' constant-acceleration heuristic on arrays."""
    al = np.minimum(a_lead, a)
    g = np.maximum(gap, 1e-2)
    first = v_lead * (v - v_lead) < -2.0 * g * al
    with np.errstate(divide="ignore", invalid="ignore"):
        a1 = v * v * al / (v_lead * v_lead - 2.0 * g * al)
    dv = v - v_lead
    a2 = al - np.where(dv > 0.0, dv * dv, 0.0) / (2.0 * g)
    return np.where(first, a1, a2)


def eidm_accel(v, v0, time_gap, s0, a, b, delta, gap, v_lead, a_lead, coolness, center_gap: bool):
    """The kernels' Enhanced IDM on arrays (coolness 0: plain IDM)."""
    a_idm = idm_accel(v, v0, time_gap, s0, a, b, delta, gap, v_lead, center_gap)
    use = (coolness > 0.0) & np.isfinite(gap)
    a_cah = cah_accel(v, v_lead, a_lead, np.where(np.isfinite(gap), gap, 1.0), a)
    blend = (1.0 - coolness) * a_idm + coolness * (a_cah + b * np.tanh((a_idm - a_cah) / b))
    return np.where(use & (a_idm < a_cah), blend, a_idm)


# ------------------------------------------------------------------------------------------- policies
class _CarFollowingPolicy:
    """Shared machinery: slots, behaviour switch, actions with lane keeping and the actuator lag."""

    name = ""
    behavior = Behavior.IDM
    uses_lag = False

    def __init__(self, slots=None, params: CCParams | None = None, in_kernel: bool = False, seed: int = 0):
        self._slots_arg = None if slots is None else np.asarray(slots, dtype=np.int64).reshape(-1)
        self.params = params
        self.in_kernel = bool(in_kernel)
        self.seed = int(seed)
        self.slots = np.zeros(0, np.int64)
        self._mine = np.zeros(0, bool)

    def reset(self, world) -> None:
        slots = np.arange(world.num_controlled) if self._slots_arg is None else self._slots_arg
        self._check_slots(world, slots)
        self.slots = slots
        self._mine = np.zeros((world.num_worlds, world.max_vehicles), bool)
        self._mine[:, slots] = True
        if self.params is not None:
            write_cc_params(world, slots, self.params)
        world.set_behavior(self.behavior if self.in_kernel else Behavior.EXTERNAL, slots)
        self._rng = [np.random.default_rng([self.seed, int(s) & 0x7FFFFFFF, k])
                     for k, s in enumerate(world.seeds)]
        self._reset_state(world, slice(None), slots)

    def adopt(self, world, b: int, slots) -> None:
        """Take over more vehicle slots of world ``b`` (a vehicle that joined the platoon, an equipped
        vehicle that entered the road); the policy's parameters, when given, are written into them."""
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        self._check_slots(world, slots)
        self._mine[b, slots] = True
        self.slots = np.union1d(self.slots, slots)
        if self.params is not None:
            write_cc_params(world, slots, self.params, worlds=[b])
        world.set_behavior(self.behavior if self.in_kernel else Behavior.EXTERNAL, slots, worlds=[b])
        self._reset_state(world, b, slots)

    def _check_slots(self, world, slots) -> None:
        if slots.size and (slots.min() < 0 or slots.max() >= world.max_vehicles):
            raise DrivediffError(f"{self.name}: vehicle slots must be in [0, {world.max_vehicles}), got "
                                 f"{slots.tolist()}")

    def _reset_state(self, world, worlds, slots) -> None:
        """Controller state of newly driven slots (``worlds``: a world index or ``slice(None)``)."""

    def _command(self, world) -> np.ndarray:
        raise NotImplementedError

    def act(self, world) -> np.ndarray:
        actions = np.zeros((world.num_worlds, world.max_vehicles, 2))
        if self.in_kernel or not self.slots.size:
            return actions
        st = world.state
        drive = self._mine & st.valid & (st.behavior == Behavior.EXTERNAL)
        a = self._command(world)
        if self.uses_lag:  # first-order actuator lag, as the kernel applies it to ACC/CACC
            lag = st.cc_lag
            with np.errstate(divide="ignore", invalid="ignore"):
                lagged = st.accel + world.dt / lag * (a - st.accel)
            a = np.where((lag > 0.0) & ~st.collided, lagged, a)
        actions[..., 0] = np.where(drive, a, 0.0)
        actions[..., 1] = np.where(drive, lane_keeping_steer(world), 0.0)
        return actions

    def _cruise(self, world) -> np.ndarray:
        return world.params.kp_speed * (_desired_speed(world) - world.state.speed)


class IDMPolicy(_CarFollowingPolicy):
    """(Enhanced) IDM car following. ``time_gap`` [s], when given, replaces the vehicles' IDM T at reset."""

    name = "idm"
    behavior = Behavior.IDM

    def __init__(self, slots=None, time_gap: float | None = None, in_kernel: bool = False, seed: int = 0):
        super().__init__(slots, None, in_kernel, seed)
        self.time_gap = time_gap

    def _reset_state(self, world, worlds, slots) -> None:
        if self.time_gap is not None:
            world.state.time_gap[worlds, slots] = self.time_gap

    def _command(self, world) -> np.ndarray:
        st, prm = world.state, world.params
        has = st.leader >= 0
        gap = np.where(has, st.gap, np.inf)
        if prm.center_gap:
            gap = gap + 0.5 * (st.length + _leader_values(st, st.length))
        a = eidm_accel(st.speed, _desired_speed(world), st.time_gap, st.s0, st.a_comf, st.b_comf, st.delta, gap,
                       _leader_values(st, st.speed), _leader_values(st, st.accel), st.coolness, prm.center_gap)
        if np.any(st.noise[:, self.slots] > 0):
            z = np.stack([r.standard_normal(world.max_vehicles) for r in self._rng])
            a = a + st.noise * z
        return a


class ACCPolicy(_CarFollowingPolicy):
    """Milanes & Shladover ACC: a = min(cruise, k1 (gap - r - h v) + k2 (v_prev - v)), then the lag."""

    name = "acc"
    behavior = Behavior.ACC
    uses_lag = True

    def _command(self, world) -> np.ndarray:
        st = world.state
        cruise = self._cruise(world)
        acc = ACC_K1 * (st.gap - st.cc_standstill - st.cc_gap * st.speed) + ACC_K2 * (
            _leader_values(st, st.speed) - st.speed)
        return np.where(st.leader >= 0, np.minimum(cruise, acc), cruise)


class CACCPolicy(_CarFollowingPolicy):
    """Ploeg's CACC with the predecessor's command received over the simulator's V2V channel."""

    name = "cacc"
    behavior = Behavior.CACC
    uses_lag = True

    def _reset_state(self, world, worlds, slots) -> None:
        if isinstance(worlds, slice):
            self._sent = np.zeros((world.num_worlds, world.max_vehicles))  # my u as broadcast at the last step
            self._sent_by = np.zeros((world.num_worlds, world.max_vehicles), bool)  # ... by my vehicles then
            self._has_sent = False
        world.state.cc_cmd[worlds, slots] = 0.0
        world.state.cc_pred_accel[worlds, slots] = 0.0

    def _receive(self, world) -> np.ndarray:
        """(B, N) the predecessor's command as the channel delivers it in the coming step (kept on loss)."""
        st, prm = world.state, world.params
        bidx = np.arange(world.num_worlds)
        depth = st.v2v.shape[1]
        k = st.step.astype(np.int64)
        if self._has_sent:  # publish my vehicles' u of the last step in place of their realised acceleration
            prev = (k - 1) % depth
            row = st.v2v[bidx, prev]
            row = np.where(self._sent_by, self._sent, row)
            st.v2v[bidx, prev] = row
        d = prm.v2v_delay_steps
        driven = self._mine & st.valid & (st.behavior == Behavior.EXTERNAL)  # not a new vehicle in a reused slot
        now = np.where((st.behavior == Behavior.CACC) | driven, st.cc_cmd, st.accel)
        sent = now if d == 0 else st.v2v[bidx, (k - d) % depth]
        sent = np.where((k >= d)[:, None], sent, 0.0)
        value = _leader_values(st, sent)
        got = np.ones(value.shape, bool)
        if prm.v2v_loss > 0:
            got = np.stack([r.random(world.max_vehicles) for r in self._rng]) >= prm.v2v_loss
        pred = np.where(st.leader < 0, 0.0, np.where(got, value, st.cc_pred_accel))
        self._sent = st.cc_cmd.copy()
        self._sent_by = driven
        self._has_sent = True
        return pred

    def _command(self, world) -> np.ndarray:
        st = world.state
        pred = self._receive(world)
        mine = self._mine & st.valid & (st.behavior == Behavior.EXTERNAL)
        st.cc_pred_accel[...] = np.where(mine, pred, st.cc_pred_accel)
        cruise = self._cruise(world)
        h = np.maximum(st.cc_gap, 1e-3)
        v = st.speed
        e = st.gap - (st.cc_standstill + h * v)
        e_dot = _leader_values(st, st.speed) - v - h * st.accel
        u = st.cc_cmd + world.dt / h * (-st.cc_cmd + st.cc_kp * e + st.cc_kd * e_dot + pred)
        u = np.where(st.leader >= 0, np.minimum(u, cruise), cruise)
        st.cc_cmd[...] = np.where(mine, u, st.cc_cmd)
        return u


CONTROLLERS = {"idm": IDMPolicy, "acc": ACCPolicy, "cacc": CACCPolicy}


def make_controller(name: str, slots=None, params: CCParams | None = None, in_kernel: bool = False,
                    seed: int = 0, time_gap: float | None = None):
    """A controller policy by name (``idm``, ``acc``, ``cacc``). IDM takes ``time_gap``, ACC/CACC ``params``."""
    if name not in CONTROLLERS:
        raise DrivediffError(f"unknown controller {name!r} ({', '.join(CONTROLLERS)})")
    if name == "idm":
        return IDMPolicy(slots, time_gap=time_gap, in_kernel=in_kernel, seed=seed)
    return CONTROLLERS[name](slots, params=params, in_kernel=in_kernel, seed=seed)
