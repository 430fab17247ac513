"""Environment kernels: actions into the world, then status, rewards and observations of every agent.

Entry points (called by :class:`drivediff.env.core.EnvCore`, which validates their inputs):

* :func:`write_continuous`: normalised [acceleration, steering] of the agents into the world's (B, N, 2)
  action buffer;
* :func:`apply_meta`: highway-env meta-actions into the agents' target lanes and speeds;
* :func:`update_worlds`: per agent, the event of this step (collision, off-road, arrival), the reward
  terms and the observation, and optionally the removal of the vehicles of agents that crashed or went
  off-road; one ``prange`` over worlds;
* :func:`step_envs`: a whole environment step (meta-actions, simulation steps, ``update_worlds``' work and
  the agents' terminated / truncated / alive status) in one ``prange`` over chunks of worlds: one parallel
  region per step instead of two, and each chunk's arrays are observed while still in cache
  (:func:`step_envs_serial`: the same on the calling thread, for one or two worlds).
"""

from __future__ import annotations

import numba

from drivediff.env.observation import observe_agent, remaining_distance, zero_row
from drivediff.env.rewards import COLLISION, GOAL, OFFROAD, rate_terms, weighted
from drivediff.sim.jit import kernel
from drivediff.sim.kernels.step import chunk_bounds, refresh_world, remove_vehicle, step_chunk
from drivediff.sim.layout import (
    ACCEL,
    BEHAVIOR,
    COLLIDED,
    CONTROLLED,
    L_LC_LEFT,
    L_LC_RIGHT,
    L_LEFT,
    L_RIGHT,
    LANE,
    ROUTE_POS,
    SPEED,
    TARGET_LANE,
    TARGET_SPEED,
    VALID,
    S,
)
from drivediff.sim.layout import OFFROAD as OFFROAD_FLAG

# events that end an agent's episode (``EnvCore.event``)
NO_EVENT, EV_COLLISION, EV_OFFROAD, EV_GOAL = 0, 1, 2, 3
EVENT_NAMES = (None, "collision", "offroad", "goal")

# ``take_control`` results
TOOK_CONTROL, TOO_FEW_VEHICLES, NOT_CONTROLLED = 0, 1, 2

# what ``update_worlds`` does
MODE_RESET, MODE_STEP, MODE_OBSERVE = 0, 1, 2

# discrete meta-actions (highway-env DiscreteMetaAction.ACTIONS_ALL)
LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = range(5)
META_ACTIONS = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")


@kernel
def write_continuous(u, slots, alive, a_lo, a_hi, d_lo, d_hi, out):
    """Map (B, A, 2) actions in [-1, 1] (clipped) to acceleration [m/s^2] and steering [rad] of the agents'
    slots in ``out`` (B, N, 2)."""
    for b in range(u.shape[0]):
        for a in range(u.shape[1]):
            if not alive[b, a]:
                continue
            i = slots[b, a]
            u0 = min(max(u[b, a, 0], -1.0), 1.0)
            u1 = min(max(u[b, a, 1], -1.0), 1.0)
            out[b, i, 0] = a_lo + 0.5 * (u0 + 1.0) * (a_hi - a_lo)
            out[b, i, 1] = d_lo + 0.5 * (u1 + 1.0) * (d_hi - d_lo)


@kernel(inline=True)
def speed_index(speeds, v):
    """highway-env ``MDPVehicle.speed_to_index``: the nearest target speed's index (rounded half to even)."""
    n = speeds.shape[0]
    x = (v - speeds[0]) / (speeds[n - 1] - speeds[0])
    return min(max(int(round(x * (n - 1))), 0), n - 1)


@kernel(exact=True)
def take_control(f, iv, m, idx, slots, promote, behavior, discrete, speeds, alive, terminated, truncated, steps,
                 acts):
    """Hand the agents of the reset worlds ``idx`` their vehicles: with ``promote``, the last A valid slots
    of each world become its (controlled) agents' slots; every agent's vehicle gets ``behavior``, its own
    lane as target lane and (``discrete``) the target speed nearest its speed; the agents' status, step count
    and actions start over. The numbers of the NumPy code this replaced (no fastmath: the rounding to a
    target speed must match).

    Returns TOOK_CONTROL, or TOO_FEW_VEHICLES (fewer valid vehicles than agents to promote) / NOT_CONTROLLED
    (an agent's slot is not a valid controlled vehicle) before writing anything.
    """
    na = slots.shape[1]
    if promote:
        for k in range(idx.shape[0]):  # check every world before writing anything
            cnt = 0
            for i in range(m.shape[2]):
                cnt += m[idx[k], VALID, i]
            if cnt < na:
                return TOO_FEW_VEHICLES
        for k in range(idx.shape[0]):
            b = idx[k]
            a = na
            for i in range(m.shape[2] - 1, -1, -1):
                if a == 0:
                    break
                if m[b, VALID, i]:
                    a -= 1
                    slots[b, a] = i
            for a in range(na):
                m[b, CONTROLLED, slots[b, a]] = True
    for k in range(idx.shape[0]):
        for a in range(na):
            i = slots[idx[k], a]
            if not (m[idx[k], VALID, i] and m[idx[k], CONTROLLED, i]):
                return NOT_CONTROLLED
    for k in range(idx.shape[0]):
        b = idx[k]
        for a in range(na):
            i = slots[b, a]
            iv[b, BEHAVIOR, i] = behavior
            iv[b, TARGET_LANE, i] = iv[b, LANE, i]
            if discrete:
                f[b, TARGET_SPEED, i] = speeds[speed_index(speeds, f[b, SPEED, i])]
            alive[b, a] = True
            terminated[b, a] = False
            truncated[b, a] = False
        acts[b] = 0.0
        steps[b] = 0
    return TOOK_CONTROL


@kernel(inline=True)
def _apply_meta_world(road, f, iv, act, slots, alive, speeds, b):
    n = speeds.shape[0]
    for a in range(act.shape[1]):
        if not alive[b, a]:
            continue
        i = slots[b, a]
        k = act[b, a]
        tl = iv[b, TARGET_LANE, i]
        if tl < 0:
            tl = iv[b, LANE, i]
        if k == LANE_LEFT or k == LANE_RIGHT:
            nb = road.lane_i[tl, L_LEFT] if k == LANE_LEFT else road.lane_i[tl, L_RIGHT]
            ok = road.lane_i[tl, L_LC_LEFT] if k == LANE_LEFT else road.lane_i[tl, L_LC_RIGHT]
            if nb >= 0 and ok != 0:
                iv[b, TARGET_LANE, i] = nb
        elif k == FASTER or k == SLOWER:
            q = speed_index(speeds, f[b, SPEED, i]) + (1 if k == FASTER else -1)
            f[b, TARGET_SPEED, i] = speeds[min(max(q, 0), n - 1)]


@kernel
def apply_meta(road, f, iv, act, slots, alive, speeds):
    """highway-env meta-actions (B, A) of the agents: lane changes retarget the lane tracked by the
    simulator (when the neighbour exists and the marking allows it); FASTER / SLOWER move the target
    speed one step from the speed nearest to the current one; IDLE keeps both."""
    for b in range(act.shape[0]):
        _apply_meta_world(road, f, iv, act, slots, alive, speeds, b)


@kernel
def _remove_departed(road, slots, event, st, sc, sp, b):
    """Take the vehicles of world b's agents that crashed or went off-road this step off the road, then
    refresh the world's events, occupancy index and metrics (``st``, ``sc``, ``sp``: the World's packed
    state, scratch and SimParams)."""
    removed = False
    for a in range(slots.shape[1]):
        if event[b, a] == EV_COLLISION or event[b, a] == EV_OFFROAD:
            remove_vehicle(st, sc, b, slots[b, a])
            removed = True
    if removed:
        refresh_world(road, st, sc, sp, b)


@kernel
def _update_world(road, f, iv, m, route, slots, alive, rem0, prev_acc, op, rp, mode, offroad_terminal, obs,
                  terms, rewards, event, kd, kj, st, sc, sp, remove, b):
    """One world: after a step (MODE_STEP) events, reward terms and observations, then with ``remove`` the
    departed agents' vehicles taken off the road (``_remove_departed``); after a reset (MODE_RESET) the
    bookkeeping (remaining route at reset, acceleration) and observations; MODE_OBSERVE observations only."""
    for a in range(slots.shape[1]):
        o = obs[b, a]
        t = terms[b, a]
        if mode != MODE_OBSERVE:
            for q in range(t.shape[0]):
                t[q] = 0.0
            rewards[b, a] = 0.0
            event[b, a] = NO_EVENT
        if not alive[b, a]:
            zero_row(o)
            continue
        i = slots[b, a]
        if not m[b, VALID, i] or iv[b, LANE, i] < 0:  # left the road through an exit
            zero_row(o)
            if mode == MODE_STEP:
                t[GOAL] = 1.0
                event[b, a] = EV_GOAL
                rewards[b, a] = weighted(rp, t)
            continue
        if mode == MODE_STEP:
            rate_terms(road, f, iv, b, i, prev_acc[b, a], rp, t)
            if m[b, COLLIDED, i]:
                t[COLLISION] = 1.0
                event[b, a] = EV_COLLISION
            if m[b, OFFROAD_FLAG, i]:
                t[OFFROAD] = 1.0
                if offroad_terminal and event[b, a] == NO_EVENT:
                    event[b, a] = EV_OFFROAD
            rewards[b, a] = weighted(rp, t)
        elif mode == MODE_RESET:
            rem0[b, a] = remaining_distance(road, route[b, i], iv[b, LANE, i], f[b, S, i], iv[b, ROUTE_POS, i])
        if mode != MODE_OBSERVE:
            prev_acc[b, a] = f[b, ACCEL, i]
        observe_agent(road, f, iv, m, route, b, i, rem0[b, a], op, o, kd[b], kj[b])
    if mode == MODE_STEP and remove:
        _remove_departed(road, slots, event, st, sc, sp, b)


@kernel(parallel=True)
def update_worlds(road, f, iv, m, route, slots, alive, rem0, prev_acc, op, rp, which, mode, offroad_terminal,
                  obs, terms, rewards, event, kd, kj, st, sc, sp, remove):
    """``_update_world`` for every world with ``which[b]``.

    Args:
        road: RoadArrays; f, iv, m, route: the World's packed state arrays.
        slots: (B, A) int64 vehicle slot of each agent; alive: (B, A) bool agents still in the episode.
        rem0, prev_acc: (B, A) float64 per-agent bookkeeping (updated).
        op: ObsParams; rp: RewardParams; which: (B,) bool; mode: MODE_STEP, MODE_RESET or MODE_OBSERVE.
        obs: (B, A, D) float32; terms: (B, A, 5) float64; rewards: (B, A) float64; event: (B, A) int64
            outputs; kd (B, K) float64, kj (B, K) int64 scratch.
        st, sc, sp: the World's packed state, Scratch and SimParams; remove: after a step, take the vehicles
            of agents that crashed or went off-road off the road (``EnvConfig.remove_departed``).
    """
    for b in numba.prange(f.shape[0]):
        if which[b]:
            _update_world(road, f, iv, m, route, slots, alive, rem0, prev_acc, op, rp, mode, offroad_terminal,
                          obs, terms, rewards, event, kd, kj, st, sc, sp, remove, b)


@kernel
def update_worlds_serial(road, f, iv, m, route, slots, alive, rem0, prev_acc, op, rp, which, mode, offroad_terminal,
                         obs, terms, rewards, event, kd, kj, st, sc, sp, remove):
    """``update_worlds`` without a parallel region, for one or two worlds: launching a parallel region costs
    milliseconds when the machine's cores are busy."""
    for b in range(f.shape[0]):
        if which[b]:
            _update_world(road, f, iv, m, route, slots, alive, rem0, prev_acc, op, rp, mode, offroad_terminal,
                          obs, terms, rewards, event, kd, kj, st, sc, sp, remove, b)


@kernel(inline=True)
def _status_world(event, steps, max_steps, alive, terminated, truncated, b):
    """World b's agents after a step: terminated by their event, truncated at ``max_steps`` if still live,
    out of the episode (``alive`` False) either way."""
    for a in range(alive.shape[1]):
        term = event[b, a] != NO_EVENT
        live = alive[b, a] and not term
        trunc = live and steps[b] >= max_steps
        terminated[b, a] = term
        truncated[b, a] = trunc
        alive[b, a] = live and not trunc


@kernel
def agent_status(event, steps, max_steps, alive, terminated, truncated):
    """``_status_world`` for every world (the step-by-step path of ``EnvCore.step``)."""
    for b in range(alive.shape[0]):
        _status_world(event, steps, max_steps, alive, terminated, truncated, b)


@kernel
def _step_env_chunk(road, st, sc, sp, inflow, actions, noise, spawn_u, loss_u, num_steps, meta, speeds, slots,
                    alive, rem0, prev_acc, op, rp, offroad_terminal, obs, terms, rewards, event, kd, kj, remove, steps,
                    max_steps, terminated, truncated, active, lo, hi):
    """One environment step of worlds ``lo..hi-1``: their agents' meta-actions (``meta``; none when it has
    no rows), ``num_steps`` simulation steps (``kernels.step.step_chunk``, phase by phase over the chunk),
    then each world's events, rewards, observations and agents' status while the chunk's arrays are still
    in cache. The same numbers as ``apply_meta``, ``step_worlds`` and ``update_worlds`` called one after
    the other over all worlds (worlds are independent); ``active``: (B,) all True."""
    if meta.shape[0] > 0:
        for b in range(lo, hi):
            _apply_meta_world(road, st[0], st[1], meta, slots, alive, speeds, b)
    for t in range(num_steps):
        step_chunk(road, st, sc, sp, inflow, lo, hi, active, actions, noise, spawn_u, loss_u, t)
    for b in range(lo, hi):
        steps[b] += 1
        _update_world(road, st[0], st[1], st[2], st[3], slots, alive, rem0, prev_acc, op, rp, MODE_STEP,
                      offroad_terminal, obs, terms, rewards, event, kd, kj, st, sc, sp, remove, b)
        _status_world(event, steps, max_steps, alive, terminated, truncated, b)


@kernel(parallel=True)
def step_envs(road, st, sc, sp, inflow, actions, noise, spawn_u, loss_u, num_steps, meta, speeds, slots, alive,
              rem0, prev_acc, op, rp, offroad_terminal, obs, terms, rewards, event, kd, kj, remove, steps, max_steps,
              terminated, truncated, active, chunks):
    """One environment step of every world in one parallel region, ``chunks`` chunks of worlds in parallel
    (``_step_env_chunk``; ``kernels.step.chunk_count`` gives the number).

    It compiles the whole simulation step (``kernels.step.step_chunk``) into this file's cache entry:
    after editing a simulator kernel, clear Numba's cache (``make clean-cache``), or environments would
    keep stepping the old simulation while ``World.step`` runs the new one.

    Args:
        road, st, sc, sp, inflow: the World's RoadArrays, packed state, Scratch, SimParams and Inflow.
        actions (B, N, 2), noise, spawn_u, loss_u: as ``step_worlds`` (``num_steps`` steps drawn).
        meta: (B, A) int64 meta-actions, or (0, A) for continuous actions (already in ``actions``).
        speeds: the meta-actions' target speeds. slots ... remove: as ``update_worlds``.
        steps: (B,) environment steps since reset (incremented); max_steps: truncation.
        terminated, truncated: (B, A) bool outputs; alive: (B, A) updated. active: (B,) bool, all True.
    """
    for c in numba.prange(chunks):
        lo, hi = chunk_bounds(c, chunks, slots.shape[0])
        _step_env_chunk(road, st, sc, sp, inflow, actions, noise, spawn_u, loss_u, num_steps, meta, speeds, slots,
                        alive, rem0, prev_acc, op, rp, offroad_terminal, obs, terms, rewards, event, kd, kj, remove,
                        steps, max_steps, terminated, truncated, active, lo, hi)


@kernel
def step_envs_serial(road, st, sc, sp, inflow, actions, noise, spawn_u, loss_u, num_steps, meta, speeds, slots,
                     alive, rem0, prev_acc, op, rp, offroad_terminal, obs, terms, rewards, event, kd, kj, remove, steps,
                     max_steps, terminated, truncated, active, chunks):
    """``step_envs`` on the calling thread (one or two worlds; ``chunks`` is ignored: one chunk)."""
    _step_env_chunk(road, st, sc, sp, inflow, actions, noise, spawn_u, loss_u, num_steps, meta, speeds, slots,
                    alive, rem0, prev_acc, op, rp, offroad_terminal, obs, terms, rewards, event, kd, kj, remove,
                    steps, max_steps, terminated, truncated, active, 0, slots.shape[0])
