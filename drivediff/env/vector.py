"""Batched environment for RL throughput: B worlds x A agents per call, numpy arrays in and out.

    >>> from drivediff.env import VectorEnv
    >>> envs = VectorEnv("intersection", num_worlds=256, num_agents=4)
    >>> obs, info = envs.reset(seed=0)                      # (256, 4, D) float32
    >>> obs, rew, term, trunc, info = envs.step(actions)    # actions (256, 4, 2) in [-1, 1]

==============  ===========================================================================================
observations    (B, A, D) float32, the per-agent observation of ``drivediff.env.observation``; zeros for
                agents out of the episode
actions         (B, A, 2) float in [-1, 1] (continuous) or (B, A) int meta-actions (``action_type=
                "discrete"``); entries of agents out of the episode are ignored
rewards         (B, A) float32; ``info["reward_terms"]`` (B, A, 5) the terms (``drivediff.env.rewards``)
terminations    (B, A) bool: the agent collided, went off-road or arrived this step (``info["event"]``)
truncations     (B, A) bool: the world reached ``max_steps`` this step
info            ``alive`` (B, A) agents in the episode after this call (after auto-reset: the new
                episode's); ``final_obs`` (B, A, D) the last observation of worlds that finished this step,
                valid where ``_final_obs`` (B,); ``episode_return`` (B, A) and ``episode_length`` (B,) of
                those episodes (same mask)
auto-reset      a world whose agents are all done is reset in the same call (Gymnasium's
                ``AutoresetMode.SAME_STEP``); its k-th episode (k >= 1) is seeded with
                ``episode_seed(first seed of the world, k)``
==============  ===========================================================================================

With one agent and ``squeeze_agents=True`` (what ``gym.make_vec("drivediff/<name>-v0", ...,
vectorization_mode="vector_entry_point")`` builds) the agent axis is dropped: (B, D) observations,
(B, 2) or (B,) actions, (B,) rewards, as Gymnasium's single-agent vector environments expect.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space
from gymnasium.vector.vector_env import AutoresetMode

from drivediff.env.config import EnvConfig, make_config
from drivediff.env.core import EnvCore
from drivediff.env.kernels import META_ACTIONS
from drivediff.env.rendering import EnvRenderer
from drivediff.errors import DrivediffError

__all__ = ["VectorEnv", "episode_seed", "gym_vector_env"]


def episode_seed(first_seed: int, k: int) -> int:
    """Seed of a world's k-th automatic reset, from the seed of its first episode."""
    return int(np.random.SeedSequence([int(first_seed), int(k)]).generate_state(1)[0])


class VectorEnv(gymnasium.vector.VectorEnv):
    """B worlds x A agents of one scenario (see the module docstring).

    Args:
        scenario: catalog name, YAML path, ScenarioConfig or CompiledScenario.
        num_worlds: B (``num_envs`` in Gymnasium's terms).
        config: base :class:`~drivediff.env.config.EnvConfig`; keyword arguments override its fields.
        copy: return copies of the observation buffer (False: the same array, overwritten by the next call).
        squeeze_agents: with one agent, drop the agent axis.
        **kwargs: EnvConfig fields (``num_agents``, ``action_type``, ``action_repeat``, ``observation``, ...).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["rgb_array", "human"]}

    def __init__(self, scenario="highway", num_worlds: int = 1, config: EnvConfig | None = None, copy: bool = True,
                 squeeze_agents: bool = False, **kwargs):
        self.config = make_config(config, scenario=scenario, **kwargs)
        self.core = EnvCore(self.config, num_worlds=num_worlds)
        self.num_envs = self.core.num_worlds
        self.num_agents = a = self.core.num_agents
        if squeeze_agents and a != 1:
            raise DrivediffError(f"squeeze_agents needs exactly one agent, the scenario has {a}")
        self._squeeze = squeeze_agents
        self._copy = copy
        d = self.core.obs_dim
        obs_shape = (d,) if squeeze_agents else (a, d)
        self.single_observation_space = spaces.Box(-1.0, 1.0, shape=obs_shape, dtype=np.float32)
        if self.core.discrete:
            self.single_action_space = spaces.Discrete(len(META_ACTIONS)) if squeeze_agents else \
                spaces.MultiDiscrete([len(META_ACTIONS)] * a)
        else:
            self.single_action_space = spaces.Box(-1.0, 1.0, shape=(2,) if squeeze_agents else (a, 2),
                                                  dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = self.config.render_mode
        self.metadata = dict(self.metadata, render_fps=1.0 / self.core.period)
        self._renderer = EnvRenderer(self.config.render_mode, self.config.render_size, 1.0 / self.core.period)
        self._first_seed = np.zeros(self.num_envs, dtype=np.int64)
        self._episode = np.zeros(self.num_envs, dtype=np.int64)
        self._return = np.zeros((self.num_envs, a))

    @property
    def world(self):
        """The underlying :class:`drivediff.sim.World` (B worlds)."""
        return self.core.world

    @property
    def layout(self):
        return self.core.layout

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every world. ``seed``: one integer (world b's first episode uses ``seed + b``), one per world,
        or None (fresh entropy). World b's k-th automatic reset is seeded from (its first seed, k)."""
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        seeds = np.asarray(seed)
        if seeds.ndim == 0:
            seeds = seeds + np.arange(self.num_envs)
        if seeds.shape != (self.num_envs,) or not np.issubdtype(seeds.dtype, np.integer) or (seeds < 0).any():
            raise DrivediffError(f"seed must be one non-negative integer or {self.num_envs} of them, got {seed!r}")
        self._first_seed = seeds.astype(np.int64)
        self._np_random, self._np_random_seed = gymnasium.utils.seeding.np_random(int(self._first_seed[0]))
        self._episode[:] = 0
        self._return[:] = 0.0
        self.core.reset(seed=self._first_seed)
        return self._out(self.core.obs), {"alive": self._out(self.core.alive)}

    def step(self, actions):
        """One environment step of every world, then auto-reset of the finished ones."""
        core = self.core
        core.step(self._in(actions))
        self._return += core.rewards
        info = {"alive": None, "reward_terms": core.terms.copy(), "event": core.event.copy()}
        rewards = core.rewards.astype(np.float32)
        terminated = core.terminated.copy()
        truncated = core.truncated.copy()
        done = ~core.alive.any(axis=1)
        info["_final_obs"] = done
        if done.any():
            info["final_obs"] = self._out(core.obs.copy())
            info["episode_return"] = self._out(self._return.copy())
            info["episode_length"] = core.steps.copy()
            self._auto_reset(np.flatnonzero(done))
        info["alive"] = self._out(core.alive.copy())
        obs = core.obs.copy() if self._copy else core.obs
        return (self._out(obs), self._out(rewards), self._out(terminated), self._out(truncated), info)

    def _auto_reset(self, idx: np.ndarray) -> None:
        self._episode[idx] += 1
        seeds = [episode_seed(int(self._first_seed[b]), int(self._episode[b])) for b in idx]
        self.core.reset(seed=seeds, worlds=idx)
        self._return[idx] = 0.0

    def _in(self, actions):
        if not self._squeeze:
            return actions
        a = np.asarray(actions)
        want = (self.num_envs,) if self.core.discrete else (self.num_envs, 2)
        if a.shape != want:
            from drivediff.errors import ActionError

            raise ActionError(f"actions must have shape {want}; got {a.shape}")
        return a[:, None]

    def _out(self, arr: np.ndarray) -> np.ndarray:
        return arr[:, 0] if self._squeeze else arr

    def render(self):
        """World 0, following its first live agent."""
        alive = np.flatnonzero(self.core.alive[0])
        follow = int(self.core.slots[0, alive[0]]) if alive.size else None
        return self._renderer.render(self.core.world, 0, follow)

    def close_extras(self, **kwargs):
        self._renderer.close()


def gym_vector_env(scenario="highway", num_envs: int = 1, render_mode: str | None = None, **kwargs) -> VectorEnv:
    """Vector entry point of the registered Gymnasium ids: one agent per world, agent axis dropped."""
    kwargs.pop("max_episode_steps", None)
    if kwargs.get("num_agents", 1) != 1:
        raise DrivediffError("Gymnasium ids have one agent; use VectorEnv(num_agents=...) for several")
    kwargs["num_agents"] = 1
    return VectorEnv(scenario, num_worlds=num_envs, squeeze_agents=True, render_mode=render_mode, **kwargs)
