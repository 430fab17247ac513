"""PettingZoo environments: ``parallel_env(...)`` (ParallelEnv) and ``env(...)`` (AEC, PettingZoo's converter).

    >>> from drivediff.env import parallel_env
    >>> env = parallel_env(scenario="merge", num_agents=4)
    >>> obs, infos = env.reset(seed=0)
    >>> while env.agents:
    ...     actions = {a: env.action_space(a).sample() for a in env.agents}
    ...     obs, rewards, terminations, truncations, infos = env.step(actions)

===================  ==========================================================================================
agents               ``agent_0`` .. ``agent_{A-1}``: the scenario's controlled vehicles (``possible_agents`` is
                     fixed by the scenario and ``num_agents``); everything else is background traffic
                     (IDM/MOBIL, yielding, inflows) stepped by the simulator's kernels
observation space    ``Box(-1, 1, (D,), float32)`` per agent, D = 135 by default (table in
                     ``drivediff.env.observation``); the same object on every call
action space         continuous (default): ``Box(-1, 1, (2,), float32)`` = [acceleration, steering], mapped
                     linearly to ``accel_range`` (-5, 5) m/s^2 and ``steer_range`` (-pi/4, pi/4) rad;
                     ``action_type="discrete"``: ``Discrete(5)`` highway-env meta-actions (0 lane left,
                     1 idle, 2 lane right, 3 faster, 4 slower) executed by the simulator's lane-tracking and
                     speed controllers
rewards              per agent, weighted terms (progress, collision, offroad, comfort, goal; table in
                     ``drivediff.env.rewards``); ``infos[agent]["reward_terms"]`` holds the terms
termination          the agent collides, leaves the drivable area (``offroad_terminal``) or leaves the road
                     through an exit (its goal); ``infos[agent]["event"]`` names it. It leaves ``agents``
                     and is never revived; its vehicle is removed from the road (``remove_departed``)
truncation           every remaining agent after ``max_steps`` environment steps (default: the scenario's
                     duration / (dt x action_repeat))
step                 ``action_repeat`` simulation steps (dt of the scenario, 0.1 s for most) with the action
                     held
===================  ==========================================================================================

Actions for agents that are no longer in ``agents`` are ignored; an unknown agent name, a missing action
for a live agent, a wrong shape or a NaN raises :class:`drivediff.errors.ActionError`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from drivediff.env.config import EnvConfig, make_config
from drivediff.env.core import EnvCore
from drivediff.env.kernels import EVENT_NAMES, META_ACTIONS
from drivediff.env.rendering import EnvRenderer
from drivediff.env.rewards import TERMS
from drivediff.errors import ActionError, DrivediffError

__all__ = ["DrivediffParallelEnv", "env", "parallel_env"]


def observation_box(dim: int) -> spaces.Box:
    return spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)


def action_box(discrete: bool) -> spaces.Space:
    return spaces.Discrete(len(META_ACTIONS)) if discrete else spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


def agent_info(core: EnvCore, b: int, k: int) -> dict:
    """The info dict of agent k of world b after the last step."""
    return {"reward_terms": dict(zip(TERMS, core.terms[b, k].tolist(), strict=True)),
            "event": EVENT_NAMES[int(core.event[b, k])]}


def check_agent_action(agent: str, action, discrete: bool):
    """One agent's action as the engine wants it; raises ActionError naming the agent."""
    if discrete:
        a = np.asarray(action)
        if a.ndim != 0 or not (np.issubdtype(a.dtype, np.integer) or
                               (np.issubdtype(a.dtype, np.floating) and np.isfinite(a) and a == np.round(a))):
            raise ActionError(f"action of {agent} must be one integer 0..4 ({', '.join(META_ACTIONS)}), "
                              f"got {action!r}")
        if not 0 <= int(a) < len(META_ACTIONS):
            raise ActionError(f"action of {agent} is {int(a)}; meta-actions are 0..4 ({', '.join(META_ACTIONS)})")
        return int(a)
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ActionError(f"action of {agent} must be 2 numbers [acceleration, steering], got {action!r}") from None
    if a.shape != (2,):
        raise ActionError(f"action of {agent} must have shape (2,) [acceleration, steering] in [-1, 1]; "
                          f"got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ActionError(f"action of {agent} is not finite: {a.tolist()}")
    return a


class DrivediffParallelEnv(ParallelEnv):
    """PettingZoo ParallelEnv over one drivediff world (see the module docstring)."""

    metadata = {"name": "drivediff_parallel_v0", "render_modes": ["human", "rgb_array"], "is_parallelizable": True,
                "render_fps": 10}

    def __init__(self, config: EnvConfig):
        self.config = config
        self.core = EnvCore(config, num_worlds=1)
        self.possible_agents = [f"agent_{k}" for k in range(self.core.num_agents)]
        self.agent_name_mapping = {a: k for k, a in enumerate(self.possible_agents)}
        self.agents: list[str] = []
        self.observation_spaces = {a: observation_box(self.core.obs_dim) for a in self.possible_agents}
        self.action_spaces = {a: action_box(self.core.discrete) for a in self.possible_agents}
        self.state_space = spaces.Box(-1.0, 1.0, shape=(self.core.num_agents * self.core.obs_dim,), dtype=np.float32)
        self.render_mode = config.render_mode
        self.metadata = dict(self.metadata, render_fps=1.0 / self.core.period)
        self._renderer = EnvRenderer(config.render_mode, config.render_size, 1.0 / self.core.period)
        self._rng = np.random.default_rng()

    @property
    def world(self):
        """The underlying :class:`drivediff.sim.World` (one world)."""
        return self.core.world

    @property
    def layout(self):
        """:class:`~drivediff.env.observation.ObservationLayout` of the observations."""
        return self.core.layout

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[self._known(agent)]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[self._known(agent)]

    def _known(self, agent: str) -> str:
        if agent not in self.agent_name_mapping:
            raise ActionError(f"unknown agent {agent!r}; agents are {self.possible_agents}")
        return agent

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode. ``seed`` seeds the world (the same seed gives the same episode); without a
        seed, the next seed comes from the generator of the last seeded reset."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            world_seed = int(seed)
        else:
            world_seed = int(self._rng.integers(2**31 - 1))
        self.core.reset(seed=world_seed)
        self.agents = self.possible_agents[:]
        obs = self.core.obs[0].copy()
        return ({a: obs[k] for k, a in enumerate(self.agents)},
                {a: {"reward_terms": dict.fromkeys(TERMS, 0.0), "event": None} for a in self.agents})

    def step(self, actions: Mapping):
        """Advance one environment step; returns (observations, rewards, terminations, truncations, infos)
        for the agents that were live before the step."""
        if not self.core.is_reset:
            raise DrivediffError("call reset() before step()")
        if not self.agents:
            raise DrivediffError("every agent is done: call reset() to start a new episode")
        self.core.step(self._to_array(actions))
        live = self.agents
        obs = self.core.obs[0].copy()
        out = ({}, {}, {}, {}, {})
        for a in live:
            k = self.agent_name_mapping[a]
            out[0][a] = obs[k]
            out[1][a] = float(self.core.rewards[0, k])
            out[2][a] = bool(self.core.terminated[0, k])
            out[3][a] = bool(self.core.truncated[0, k])
            out[4][a] = agent_info(self.core, 0, k)
        self.agents = [a for a in live if self.core.alive[0, self.agent_name_mapping[a]]]
        return out

    def _to_array(self, actions: Mapping) -> np.ndarray:
        if not isinstance(actions, Mapping):
            raise ActionError(f"actions must be a dict {{agent: action}}, got {type(actions).__name__}")
        for a in actions:
            self._known(a)
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ActionError(f"no action for live agent(s) {missing}")
        discrete = self.core.discrete
        arr = np.zeros((1, self.core.num_agents) if discrete else (1, self.core.num_agents, 2),
                       dtype=np.int64 if discrete else np.float64)
        for a in self.agents:
            arr[0, self.agent_name_mapping[a]] = check_agent_action(a, actions[a], discrete)
        return arr

    def state(self) -> np.ndarray:
        """Global state: every agent's observation, concatenated (zeros for agents out of the episode)."""
        return self.core.obs[0].reshape(-1).copy()

    def save_log(self, path, meta: dict | None = None):
        """Write the current episode to ``path`` for ``drivediff replay`` (needs ``record_log=True``)."""
        return self.core.save_log(path, meta)

    def render(self):
        follow = next((int(self.core.slots[0, self.agent_name_mapping[a]]) for a in self.agents), None)
        return self._renderer.render(self.core.world, 0, follow)

    def close(self):
        self._renderer.close()


def parallel_env(config: EnvConfig | None = None, **kwargs) -> DrivediffParallelEnv:
    """A PettingZoo ParallelEnv for a catalog scenario or scenario file.

    Args:
        config: an :class:`~drivediff.env.config.EnvConfig` (keyword arguments override its fields).
        **kwargs: the fields of EnvConfig, e.g. ``scenario="merge", num_agents=4, action_type="discrete"``.
    """
    return DrivediffParallelEnv(make_config(config, **kwargs))


def env(config: EnvConfig | None = None, **kwargs):
    """The AEC version of :func:`parallel_env`, through PettingZoo's ``parallel_to_aec`` converter."""
    from pettingzoo.utils.conversions import parallel_to_aec

    return parallel_to_aec(parallel_env(config, **kwargs))
