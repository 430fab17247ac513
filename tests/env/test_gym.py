"""Gymnasium environments: registration, Gymnasium's env checker, make_vec."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import drivediff.env  # noqa: F401  (registers the ids)
from drivediff.errors import DrivediffError
from drivediff.scenarios import catalog_names


def test_every_catalog_scenario_is_registered():
    ids = {k for k in gym.registry if k.startswith("drivediff/")}
    assert ids == {f"drivediff/{n}-v0" for n in catalog_names()}


@pytest.mark.parametrize("env_id,action_type", [("drivediff/highway-v0", "continuous"),
                                                ("drivediff/intersection-v0", "discrete"),
                                                ("drivediff/ring-v0", "continuous"),
                                                ("drivediff/merge-v0", "discrete")])
def test_gymnasium_env_checker(env_id, action_type):
    env = gym.make(env_id, action_type=action_type)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert set(info) == {"reward_terms", "event"} and isinstance(r, float)


def test_one_controlled_vehicle_rest_background():
    env = gym.make("drivediff/highway-v0").unwrapped
    env.reset(seed=0)
    st = env.world.state
    assert st.controlled[0].sum() == 1 and st.valid[0].sum() == 51
    with pytest.raises(DrivediffError, match="one agent"):
        gym.make("drivediff/highway-v0", num_agents=2)


def test_make_vec_uses_the_batched_env():
    envs = gym.make_vec("drivediff/intersection-v0", num_envs=4, vectorization_mode="vector_entry_point")
    obs, info = envs.reset(seed=0)
    assert obs.shape == (4, envs.unwrapped.core.obs_dim)
    obs, rew, term, trunc, info = envs.step(envs.action_space.sample())
    assert rew.shape == (4,) and term.shape == (4,)
    single = gym.make("drivediff/intersection-v0").unwrapped
    first, _ = single.reset(seed=2)
    np.testing.assert_array_equal(first, envs.unwrapped.reset(seed=0)[0][2])


def test_env_checker_with_rendering():
    pytest.importorskip("pygame")
    env = gym.make("drivediff/roundabout-v0", render_mode="rgb_array", render_size=(96, 64))
    check_env(env.unwrapped)
    env.reset(seed=0)
    assert env.render().shape == (64, 96, 3)
