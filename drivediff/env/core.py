"""The array engine under every environment API: B worlds x A agents, numpy arrays in and out.

:class:`EnvCore` owns a :class:`~drivediff.sim.World`, turns validated agent actions into simulator
inputs, steps the world, and fills (B, A, ...) arrays of observations, rewards, reward terms, events and
truncations with one kernel call. The PettingZoo and Gymnasium environments wrap one world; the batched
:class:`~drivediff.env.vector.VectorEnv` wraps many. No per-agent Python objects on this path.

Agents are the scenario's controlled vehicles. Agent ``a`` of world ``b`` drives vehicle slot
``slots[b, a]`` (slot ``a`` for scenarios with controlled vehicles; for scenarios without, e.g. ``ring``,
the last ``num_agents`` vehicles placed at reset are promoted to agents). An agent leaves the episode when
it collides, goes off-road (``offroad_terminal``) or reaches the end of its route (its vehicle leaves the
road through an exit), and is never revived; all remaining agents are truncated after ``max_steps``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np

from drivediff.env.config import EnvConfig
from drivediff.env.kernels import (
    META_ACTIONS,
    MODE_OBSERVE,
    MODE_RESET,
    MODE_STEP,
    NOT_CONTROLLED,
    TOO_FEW_VEHICLES,
    TOOK_CONTROL,
    agent_status,
    apply_meta,
    step_envs,
    step_envs_serial,
    take_control,
    update_worlds,
    update_worlds_serial,
    write_continuous,
)
from drivediff.env.observation import ObservationLayout, obs_dim, obs_params
from drivediff.env.rewards import TERMS, reward_params
from drivediff.errors import ActionError, DrivediffError
from drivediff.sim import Behavior, World
from drivediff.sim.kernels.step import chunk_count
from drivediff.sim.world import SERIAL_WORLDS

__all__ = ["EnvCore", "default_target_speeds", "resolve_agents"]



@contextmanager
def _serial(enabled: bool):
    """Run Numba's parallel entry points on the calling thread only: for one or two worlds a parallel region
    gains nothing and, when the machine's cores are busy, waiting for its threads costs milliseconds."""
    if not enabled:
        yield
        return
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def default_target_speeds(road) -> np.ndarray:
    """Speeds [m/s] of the discrete meta-actions: highway-env's (20, 25, 30) scaled to the road's top speed
    limit on open roads; (0, v/2, v) on roads with junctions, where stopping must be possible
    (highway-env's intersection uses (0, 4.5, 9))."""
    vmax = float(np.max(road.lane_speed))
    if road.arrays.conf_i.shape[0] > 0:
        return np.linspace(0.0, vmax, 3)
    return np.linspace(2.0 / 3.0 * vmax, vmax, 3)


def resolve_agents(scenario, num_agents: int | None):
    """The compiled scenario with ``num_agents`` controlled vehicles.

    Returns:
        (CompiledScenario, number of agents, promote) where ``promote`` means that the scenario has no
        controlled vehicles and the last vehicles placed at reset become the agents.

    When ``num_agents`` differs from the scenario's count, ``controlled.count`` is changed and
    ``traffic.count`` by the opposite amount (down to 0), so the scene keeps its number of vehicles.
    """
    from drivediff.scenarios import get_scenario

    cs = get_scenario(scenario)
    base = cs.num_controlled
    n = int(num_agents) if num_agents is not None else (base or 1)
    if base == 0:
        if cs.initial_count < n:
            raise DrivediffError(f"scenario {cs.source!r} places {cs.initial_count} vehicles at reset, fewer than "
                                 f"num_agents={n}")
        return cs, n, True
    if n == base:
        return cs, n, False
    if getattr(cs, "fixed_agents", False):
        raise DrivediffError(f"scenario {cs.source!r} has exactly {base} controlled vehicles; "
                             f"num_agents={n} cannot change that")
    explicit = sum(v.controlled for v in cs.config.vehicles)
    if n < explicit:
        raise DrivediffError(f"scenario {cs.source!r} places {explicit} controlled vehicles explicitly; "
                             f"num_agents must be at least {explicit}, got {n}")
    traffic = max(0, cs.config.traffic.count - (n - base))
    return get_scenario(cs, {"controlled": {"count": n - explicit}, "traffic": {"count": traffic}}), n, False


class EnvCore:
    """B worlds x A agents of one scenario (see the module docstring).

    Args:
        config: the environment options.
        num_worlds: B.

    After :meth:`reset` and :meth:`step` the arrays below describe the last step (B = worlds, A = agents):
        obs: (B, A, D) float32 observations (zeros for agents out of the episode).
        rewards: (B, A) float64; terms: (B, A, 5) reward terms (``rewards.TERMS``).
        event: (B, A) int64 event that ended the agent's episode this step (``kernels.EVENT_NAMES``).
        terminated, truncated: (B, A) bool, this step.
        alive: (B, A) bool, agents still in the episode.
        steps: (B,) environment steps since each world's reset.
    """

    def __init__(self, config: EnvConfig, num_worlds: int = 1):
        self.config = config
        scenario, self.num_agents, self._promote = resolve_agents(config.scenario, config.num_agents)
        self.world = World(scenario, num_worlds=num_worlds)
        self.road = self.world.road
        self.num_worlds = b = self.world.num_worlds
        a = self.num_agents
        self.period = self.world.dt * config.action_repeat
        self.max_steps = config.max_steps or max(1, int(round(scenario.config.duration / self.period)))
        self.obs_params = obs_params(config.observation, config.steer_range)
        self.reward_params = reward_params(config.reward, self.period)
        self.layout = ObservationLayout.build(self.obs_params, half_width=0.5 * float(np.max(self.road.lane_width)))
        self.obs_dim = obs_dim(self.obs_params)
        self.discrete = config.action_type == "discrete"
        ts = config.target_speeds
        self.target_speeds = np.asarray(ts, dtype=np.float64) if ts else default_target_speeds(self.road)
        self._behavior = Behavior.META if self.discrete else Behavior.EXTERNAL
        self.slots = np.tile(np.arange(a, dtype=np.int64), (b, 1))
        self.alive = np.zeros((b, a), dtype=np.bool_)
        self.terminated = np.zeros((b, a), dtype=np.bool_)
        self.truncated = np.zeros((b, a), dtype=np.bool_)
        self.event = np.zeros((b, a), dtype=np.int64)
        self.rewards = np.zeros((b, a))
        self.terms = np.zeros((b, a, len(TERMS)))
        self.obs = np.zeros((b, a, self.obs_dim), dtype=np.float32)
        self.steps = np.zeros(b, dtype=np.int64)
        self._rem0 = np.zeros((b, a))
        self._prev_acc = np.zeros((b, a))
        self._kd = np.zeros((b, self.obs_params.k))
        self._kj = np.zeros((b, self.obs_params.k), dtype=np.int64)
        self._acts = np.zeros((b, self.world.max_vehicles, 2))
        self._all = np.ones(b, dtype=np.bool_)
        self._small = b <= SERIAL_WORLDS
        self._is_reset = False
        if config.record_log and b != 1:
            raise DrivediffError("record_log records one world: use it with parallel_env / gymnasium, not a "
                                 f"VectorEnv of {b} worlds")
        self._log: list[dict] = []  # record_log: the steps of the current episode, (1, T, N) chunks
        # one kernel per step (step_envs), unless recording or World.run would split the action repeat into
        # chunks: then the actions, the world and the agents are stepped one after the other
        self._fused = not config.record_log and config.action_repeat <= self.world.steps_per_chunk
        self._no_meta = np.zeros((0, a), dtype=np.int64)  # continuous: no meta-actions
        self._no_acts = np.zeros_like(self._acts)  # discrete: EXTERNAL vehicles (none are agents) get zeros

    @property
    def is_reset(self) -> bool:
        """Whether ``reset`` has run (successfully): ``step`` refuses to run before."""
        return self._is_reset

    # ------------------------------------------------------------------------------------------- reset
    def reset(self, seed=None, worlds=None) -> None:
        """Reset the given worlds (default all): place vehicles, hand the agents their vehicles, observe.

        Args:
            seed: as :meth:`drivediff.sim.World.reset` (one seed, world b gets ``seed + b``; or one per world).
            worlds: indices of the worlds to reset.
        """
        idx = np.arange(self.num_worlds) if worlds is None else np.asarray(worlds, dtype=np.int64).reshape(-1)
        self.world.reset(seed=seed, worlds=idx)  # one or two worlds: no parallel region (SERIAL_WORLDS)
        self._take_control(idx)
        which = np.zeros(self.num_worlds, dtype=np.bool_)
        which[idx] = True
        self._update(which, MODE_RESET, serial=idx.size <= SERIAL_WORLDS)
        self._is_reset = True
        if self.config.record_log:
            snap = self.world.snapshot(0)
            t0 = np.array([self.world.state.step[0] * self.world.dt])
            self._log = [{**{k: v[None] for k, v in snap.items()}, "t": t0}]

    def _take_control(self, idx: np.ndarray) -> None:
        """Hand the agents of the reset worlds ``idx`` their vehicles (``kernels.take_control``)."""
        st = self.world.state
        code = take_control(st.f, st.iv, st.m, idx, self.slots, self._promote, int(self._behavior), self.discrete,
                            self.target_speeds, self.alive, self.terminated, self.truncated, self.steps, self._acts)
        if code != TOOK_CONTROL:
            self._is_reset = False  # the reset worlds have no agents: step() must not run on them
        if code == TOO_FEW_VEHICLES:
            raise DrivediffError(f"the scenario placed fewer than {self.num_agents} vehicles to make agents of")
        if code == NOT_CONTROLLED:
            raise DrivediffError("the scenario did not place its controlled vehicles in the first slots")

    # -------------------------------------------------------------------------------------------- step
    def step(self, actions) -> None:
        """Apply validated actions of every agent, advance ``action_repeat`` simulation steps, then fill
        observations, rewards, events, terminations and truncations.

        Args:
            actions: continuous (B, A, 2) [acceleration, steering] in [-1, 1] (clipped), or discrete (B, A)
                meta-action indices. Entries of agents out of the episode are ignored.
        """
        if not self._is_reset:
            raise DrivediffError("call reset() before step()")
        if self._fused:
            self._step_fused(actions)
            return
        self._apply(actions)
        acts = None if self.discrete else self._acts
        with _serial(self._small):
            if self.config.record_log:
                self._log.append(self.world.run(self.config.action_repeat, record=True, actions=acts))
            elif self.config.action_repeat == 1:
                self.world.step(acts)
            else:
                self.world.run(self.config.action_repeat, actions=acts)
        self.steps += 1
        self._update(self._all, MODE_STEP)  # with remove_departed, also takes crashed agents off the road
        agent_status(self.event, self.steps, self.max_steps, self.alive, self.terminated, self.truncated)

    def _step_fused(self, actions) -> None:
        """``step`` as one kernel call (``kernels.step_envs``): the same numbers as applying the actions,
        running the world and updating the agents one after the other."""
        w = self.world
        if self.discrete:
            meta, acts = self.check_discrete(actions), self._no_acts
        else:
            self._write_continuous(actions)
            meta, acts = self._no_meta, self._acts
        repeat = self.config.action_repeat
        noise, spawn, loss = w.step_inputs(repeat)
        kernel, chunks = (step_envs_serial, 1) if self._small else (step_envs, chunk_count(self.num_worlds))
        kernel(self.road.arrays, w.state.packed, w.scratch, w.params, w.inflow, acts, noise, spawn, loss, repeat, meta,
               self.target_speeds, self.slots, self.alive, self._rem0, self._prev_acc, self.obs_params,
               self.reward_params, self.config.offroad_terminal, self.obs, self.terms, self.rewards, self.event,
               self._kd, self._kj, self.config.remove_departed, self.steps, self.max_steps, self.terminated,
               self.truncated, self._all, chunks)

    def episode_log(self, meta: dict | None = None):
        """The current episode (``record_log``) as an :class:`~drivediff.sim.log.EpisodeLog`."""
        from drivediff.sim.log import EpisodeLog

        if not self.config.record_log:
            raise DrivediffError("this environment does not record its episodes: create it with record_log=True")
        if not self._log:
            raise DrivediffError("nothing recorded yet: call reset() first")
        arrays = {k: np.concatenate([c[k][0] for c in self._log], axis=0) for k in self._log[0] if k != "t"}
        t = np.concatenate([np.asarray(c["t"]) for c in self._log])
        info = {"scenario": self.world.config.name, "source": self.world.scenario.source, "dt": self.world.dt,
                "policy": "environment", "agents": self.slots[0].tolist(), **(meta or {})}
        return EpisodeLog(t=t, arrays=arrays, road=self.road, meta=info)

    def save_log(self, path, meta: dict | None = None):
        """Write the current episode (``record_log``) to ``path`` (.npz, atomically) for the replay viewer."""
        from drivediff.sim.log import write_log

        return write_log(path, self.episode_log(meta))

    def observe(self, worlds=None) -> np.ndarray:
        """Recompute the observations of the live agents from the world's current state (after editing it
        by hand and ``world.refresh()``); returns ``obs``."""
        which = self._all if worlds is None else np.isin(np.arange(self.num_worlds), worlds)
        self._update(which, MODE_OBSERVE)
        return self.obs

    def _update(self, which: np.ndarray, mode: int, serial: bool = False) -> None:
        st = self.world.state
        kernel = update_worlds_serial if (self._small or serial) else update_worlds
        kernel(self.road.arrays, st.f, st.iv, st.m, st.route, self.slots, self.alive, self._rem0, self._prev_acc,
               self.obs_params, self.reward_params, which, mode, self.config.offroad_terminal, self.obs, self.terms,
               self.rewards, self.event, self._kd, self._kj, st.packed, self.world.scratch, self.world.params,
               self.config.remove_departed)  # the kernel removes after steps only (MODE_STEP)

    # ------------------------------------------------------------------------------------------ actions
    def _apply(self, actions) -> None:
        if self.discrete:
            act = self.check_discrete(actions)
            st = self.world.state
            apply_meta(self.road.arrays, st.f, st.iv, act, self.slots, self.alive, self.target_speeds)
        else:
            self._write_continuous(actions)

    def _write_continuous(self, actions) -> None:
        """Validated normalised actions into the agents' slots of the (B, N, 2) action buffer."""
        u = self.check_continuous(actions)
        lo, hi = self.config.accel_range
        dlo, dhi = self.config.steer_range
        write_continuous(u, self.slots, self.alive, float(lo), float(hi), float(dlo), float(dhi), self._acts)

    def check_continuous(self, actions) -> np.ndarray:
        """(B, A, 2) float64 actions; raises ActionError on a wrong shape or a non-finite live agent's action."""
        want = (self.num_worlds, self.num_agents, 2)
        try:
            u = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError):
            raise ActionError(f"actions must be numbers of shape {want}, got {type(actions).__name__}") from None
        if u.shape != want:
            raise ActionError(f"actions must have shape {want} (worlds, agents, [acceleration, steering] in "
                              f"[-1, 1]); got {u.shape}")
        bad = self.alive & ~np.isfinite(u).all(axis=-1)
        if bad.any():
            b, a = np.argwhere(bad)[0]
            raise ActionError(f"action of world {b}, agent {a} is not finite: {u[b, a].tolist()}")
        return u

    def check_discrete(self, actions) -> np.ndarray:
        """(B, A) int64 meta-actions; raises ActionError on a wrong shape, type or value."""
        want = (self.num_worlds, self.num_agents)
        a = np.asarray(actions)
        if a.shape != want:
            raise ActionError(f"discrete actions must have shape {want} (worlds, agents); got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            if not np.issubdtype(a.dtype, np.floating):
                raise ActionError(f"discrete actions must be integers, got dtype {a.dtype}")
            whole = np.isfinite(a) & (a == np.round(np.nan_to_num(a)))
            if (self.alive & ~whole).any():
                raise ActionError("discrete actions must be whole numbers 0..4, got a fraction, NaN or inf")
            a = np.where(whole, a, 0)
        a = a.astype(np.int64)
        bad = self.alive & ((a < 0) | (a >= len(META_ACTIONS)))
        if bad.any():
            b, k = np.argwhere(bad)[0]
            raise ActionError(f"action of world {b}, agent {k} is {a[b, k]}; meta-actions are 0..4 "
                              f"({', '.join(META_ACTIONS)})")
        return a
