"""Gymnasium single-agent environments, registered as ``drivediff/<scenario>-v0`` for every catalog scenario.

    >>> import gymnasium as gym
    >>> import drivediff.env  # registers the ids
    >>> env = gym.make("drivediff/highway-v0")                      # 1 controlled vehicle, 50 background
    >>> env = gym.make("drivediff/intersection-v0", action_type="discrete")
    >>> envs = gym.make_vec("drivediff/highway-v0", num_envs=256, vectorization_mode="vector_entry_point")

One controlled vehicle; the rest of the scene is background traffic driven by the simulator's kernels.
Observation, action, reward, termination and truncation are those of the PettingZoo environment for one
agent (see ``drivediff.env.parallel``): ``Box(-1, 1, (D,), float32)`` observations, ``Box(-1, 1, (2,))``
[acceleration, steering] or ``Discrete(5)`` meta-actions, ``info["reward_terms"]`` and ``info["event"]``.
``gym.make_vec(..., vectorization_mode="vector_entry_point")`` gives the batched
:class:`~drivediff.env.vector.VectorEnv` with (num_envs, D) observations.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium
import numpy as np

from drivediff.errors import DrivediffError

__all__ = ["DrivediffEnv", "register_envs"]

ENV_ENTRY = "drivediff.env.gym:DrivediffEnv"
VECTOR_ENTRY = "drivediff.env.vector:gym_vector_env"


class DrivediffEnv(gymnasium.Env):
    """A Gymnasium environment with one controlled vehicle.

    Args:
        scenario: catalog name, YAML path, ScenarioConfig or CompiledScenario.
        render_mode: None, ``"rgb_array"`` or ``"human"``.
        **kwargs: other :class:`~drivediff.env.config.EnvConfig` fields (``action_type``, ``action_repeat``,
            ``observation``, ``reward``, ...); ``num_agents`` must be 1 if given.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(self, scenario="highway", render_mode: str | None = None, **kwargs):
        from drivediff.env.config import make_config
        from drivediff.env.core import EnvCore
        from drivediff.env.parallel import action_box, observation_box
        from drivediff.env.rendering import EnvRenderer

        if kwargs.get("num_agents", 1) != 1:
            raise DrivediffError("Gymnasium environments have one agent; use drivediff.env.parallel_env or "
                                 "VectorEnv for several")
        kwargs["num_agents"] = 1
        self.config = make_config(scenario=scenario, render_mode=render_mode, **kwargs)
        self.core = EnvCore(self.config, num_worlds=1)
        self.observation_space = observation_box(self.core.obs_dim)
        self.action_space = action_box(self.core.discrete)
        self.render_mode = render_mode
        self.metadata = dict(self.metadata, render_fps=1.0 / self.core.period)
        self._renderer = EnvRenderer(render_mode, self.config.render_size, 1.0 / self.core.period)

    @property
    def world(self):
        return self.core.world

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``seed`` seeds the world, without one the seed comes from ``self.np_random``."""
        super().reset(seed=seed)
        world_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        self.core.reset(seed=world_seed)
        return self.core.obs[0, 0].copy(), {"reward_terms": {}, "event": None}

    def step(self, action):
        from drivediff.env.parallel import agent_info, check_agent_action

        if not self.core.alive[0, 0]:
            raise DrivediffError("the episode is over (terminated or truncated): call reset()")
        a = check_agent_action("the agent", action, self.core.discrete)
        arr = np.array(a, dtype=np.int64 if self.core.discrete else np.float64).reshape(
            (1, 1) if self.core.discrete else (1, 1, 2))
        self.core.step(arr)
        return (self.core.obs[0, 0].copy(), float(self.core.rewards[0, 0]), bool(self.core.terminated[0, 0]),
                bool(self.core.truncated[0, 0]), agent_info(self.core, 0, 0))

    def save_log(self, path, meta: dict | None = None):
        """Write the current episode to ``path`` for ``drivediff replay`` (needs ``record_log=True``)."""
        return self.core.save_log(path, meta)

    def render(self):
        follow = int(self.core.slots[0, 0]) if self.core.alive[0, 0] else None
        return self._renderer.render(self.core.world, 0, follow)

    def close(self):
        self._renderer.close()


def _catalog_names() -> list[str]:
    """Catalog scenario names, read from the installed catalog folder without importing the simulator."""
    spec = importlib.util.find_spec("drivediff.scenarios")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "catalog"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def register_envs() -> list[str]:
    """Register ``drivediff/<name>-v0`` for every catalog scenario (idempotent); returns the ids."""
    ids = []
    for name in _catalog_names():
        env_id = f"drivediff/{name}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=ENV_ENTRY, vector_entry_point=VECTOR_ENTRY,
                               kwargs={"scenario": name}, disable_env_checker=False)
        ids.append(env_id)
    return ids
