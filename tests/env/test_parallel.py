"""PettingZoo environments: PettingZoo's own API and seed tests on every catalog scenario, long-horizon
determinism, agent life cycle (collision, goal, truncation), meta-actions, rewards and bad input."""

import warnings

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test

from drivediff.env import env as aec_env
from drivediff.env import parallel_env
from drivediff.env.rewards import TERMS
from drivediff.errors import ActionError, DrivediffError
from drivediff.scenarios import catalog_names, compile_scenario
from drivediff.scenarios.loader import parse_scenario

CATALOG = catalog_names()


def _api_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [str(w.message) for w in caught if "agent" in str(w.message).lower()]


@pytest.mark.parametrize("scenario", CATALOG)
def test_pettingzoo_parallel_api_and_seed(scenario):
    env = parallel_env(scenario=scenario)
    assert _api_warnings(parallel_api_test, env, num_cycles=400) == []
    parallel_seed_test(lambda: parallel_env(scenario=scenario))


@pytest.mark.parametrize("scenario", ["intersection", "highway"])
def test_pettingzoo_api_discrete_and_several_agents(scenario):
    env = parallel_env(scenario=scenario, num_agents=3, action_type="discrete")
    assert len(env.possible_agents) == 3
    assert _api_warnings(parallel_api_test, env, num_cycles=300) == []
    parallel_seed_test(lambda: parallel_env(scenario=scenario, num_agents=3, action_type="discrete"))


def test_aec_through_pettingzoo_converter():
    env = aec_env(scenario="merge", num_agents=2)
    api_test(env, num_cycles=200)
    env.reset(seed=1)
    assert env.possible_agents == ["agent_0", "agent_1"]


def _rollout(env, seed, steps, action_seed):
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    trace = [np.stack([obs[a] for a in env.agents])]
    for _ in range(steps):
        if not env.agents:
            break
        acts = {a: np.array([rng.uniform(-1, 1), rng.normal(0, 0.02)]) for a in env.agents}
        obs, rew, term, trunc, info = env.step(acts)
        trace.append(np.concatenate([np.stack(list(obs.values())).ravel(), list(rew.values()),
                                     list(term.values()), list(trunc.values())]))
    state = env.world.state
    return trace, (state.x.copy(), state.speed.copy(), state.valid.copy())


def test_long_horizon_determinism():
    """Two environments with one seed give the same 300-step episode, bit for bit (the whole world, not only
    the agents' observations); another seed gives another one."""
    a = _rollout(parallel_env(scenario="intersection", num_agents=4, offroad_terminal=False), 5, 300, 9)
    b = _rollout(parallel_env(scenario="intersection", num_agents=4, offroad_terminal=False), 5, 300, 9)
    c = _rollout(parallel_env(scenario="intersection", num_agents=4, offroad_terminal=False), 6, 300, 9)
    assert len(a[0]) == len(b[0]) > 100
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a[1], b[1], strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0][0], c[0][0])


def test_reset_without_seed_continues_the_seeded_sequence():
    e1, e2 = parallel_env(scenario="merge"), parallel_env(scenario="merge")
    e1.reset(seed=3)
    e2.reset(seed=3)
    o1, _ = e1.reset()
    o2, _ = e2.reset()
    np.testing.assert_array_equal(o1["agent_0"], o2["agent_0"])


def test_spaces_are_cached_and_observations_inside():
    env = parallel_env(scenario="roundabout", num_agents=2)
    obs, infos = env.reset(seed=0)
    for a in env.possible_agents:
        assert env.observation_space(a) is env.observation_space(a)
        assert env.action_space(a) is env.action_space(a)
        assert obs[a] in env.observation_space(a)
    assert env.state().shape == env.state_space.shape


def _two_agents_one_lane(gap, **kwargs):
    raw = {"name": "pair", "duration": 20.0, "road": {"type": "highway", "lanes": 1, "length": 300},
           "vehicles": [{"lane": "lane0", "s": 50.0, "speed": 20.0, "controlled": True},
                        {"lane": "lane0", "s": 50.0 + gap, "speed": 5.0, "controlled": True}]}
    return parallel_env(scenario=compile_scenario(parse_scenario(raw, "pair")), **kwargs)


def test_collision_ends_both_agents_and_removes_them():
    env = _two_agents_one_lane(12.0)
    env.reset(seed=0)
    events = {}
    for _ in range(30):
        live = list(env.agents)
        obs, rew, term, trunc, info = env.step({a: np.array([1.0, 0.0]) for a in live})
        for a in live:
            if term[a]:
                events[a] = info[a]["event"]
                assert info[a]["reward_terms"]["collision"] == 1.0
                assert rew[a] < -5  # the collision weight dominates
        if not env.agents:
            break
    assert events == {"agent_0": "collision", "agent_1": "collision"}
    assert not env.world.state.valid[0, :2].any()  # their vehicles were taken off the road
    with pytest.raises(DrivediffError, match="reset"):
        env.step({})


def test_goal_at_the_road_end_and_never_revived():
    env = _two_agents_one_lane(200.0)  # agent_1 starts 50 m before the end of the road
    env.reset(seed=0)
    seen_done = set()
    goal_step = None
    for t in range(60):
        live = list(env.agents)
        obs, rew, term, trunc, info = env.step({a: np.array([0.5, 0.0]) for a in live})
        assert not (set(env.agents) & seen_done)
        for a in live:
            if term[a] or trunc[a]:
                seen_done.add(a)
                if a == "agent_1":
                    assert info[a]["event"] == "goal" and info[a]["reward_terms"]["goal"] == 1.0
                    assert not obs[a].any()
                    goal_step = t
    assert goal_step is not None and "agent_0" in env.agents


def test_truncation_after_max_steps():
    env = parallel_env(scenario="highway", max_steps=7, action_type="discrete")
    env.reset(seed=0)
    for _ in range(7):
        obs, rew, term, trunc, info = env.step({"agent_0": 1})
    assert trunc == {"agent_0": True} and term == {"agent_0": False} and env.agents == []


def test_meta_actions_change_lane_and_speed():
    env = parallel_env(scenario="cut-in", action_type="discrete")  # agent on lane0 (right), lane1 on its left
    env.reset(seed=0)
    world = env.world
    road = world.road
    lane0 = world.state.lane[0, 0]
    assert road.lane_left[lane0] >= 0
    env.step({"agent_0": 0})  # LANE_LEFT
    assert world.state.target_lane[0, 0] == road.lane_left[lane0]
    for _ in range(40):
        env.step({"agent_0": 1})  # IDLE: the lane-tracking controller carries out the change
    assert world.state.lane[0, 0] == road.lane_left[lane0]
    assert abs(world.state.d[0, 0]) < 0.3
    speeds = env.core.target_speeds

    def nearest(v):  # highway-env MDPVehicle.speed_to_index
        return int(np.clip(np.round((v - speeds[0]) / (speeds[-1] - speeds[0]) * (len(speeds) - 1)), 0,
                           len(speeds) - 1))

    for action, step in ((3, 1), (4, -1), (4, -1)):  # FASTER, SLOWER, SLOWER
        k = nearest(world.state.speed[0, 0])
        env.step({"agent_0": action})
        assert world.state.target_speed[0, 0] == speeds[int(np.clip(k + step, 0, len(speeds) - 1))]


def test_reward_is_the_weighted_sum_of_its_terms():
    weights = {"progress": 2.0, "collision": -3.0, "offroad": -4.0, "comfort": -5.0, "goal": 6.0}
    env = parallel_env(scenario="merge", num_agents=2, reward=weights)
    env.reset(seed=2)
    for _ in range(20):
        obs, rew, term, trunc, info = env.step({a: np.array([0.2, 0.0]) for a in env.agents})
        for a, r in rew.items():
            terms = info[a]["reward_terms"]
            assert set(terms) == set(TERMS)
            assert r == pytest.approx(sum(weights[k] * terms[k] for k in TERMS))
            assert 0 < terms["progress"] <= env.core.period + 1e-12
        if not env.agents:
            break


def test_bad_actions_raise_clear_errors():
    env = parallel_env(scenario="merge", num_agents=2)
    with pytest.raises(DrivediffError, match=r"call reset\(\) before step\(\)"):
        env.step({})
    env.reset(seed=0)
    good = np.zeros(2)
    with pytest.raises(ActionError, match="not finite"):
        env.step({"agent_0": np.array([np.nan, 0.0]), "agent_1": good})
    with pytest.raises(ActionError, match=r"shape \(2,\)"):
        env.step({"agent_0": np.zeros(3), "agent_1": good})
    with pytest.raises(ActionError, match="unknown agent 'agent_7'"):
        env.step({"agent_0": good, "agent_1": good, "agent_7": good})
    with pytest.raises(ActionError, match="no action for live agent"):
        env.step({"agent_0": good})
    with pytest.raises(ActionError, match="dict"):
        env.step([good, good])
    denv = parallel_env(scenario="merge", action_type="discrete")
    denv.reset(seed=0)
    with pytest.raises(ActionError, match="0..4"):
        denv.step({"agent_0": 7})
    with pytest.raises(ActionError, match="one integer"):
        denv.step({"agent_0": 1.5})
    with pytest.raises(ActionError, match="unknown agent"):
        denv.observation_space("nobody")


def test_bad_options_raise():
    with pytest.raises(DrivediffError, match="unknown environment option"):
        parallel_env(scenario="merge", num_agent=2)
    with pytest.raises(DrivediffError, match="unknown observation option"):
        parallel_env(scenario="merge", observation={"neighbours": 3})
    with pytest.raises(DrivediffError, match="action_type"):
        parallel_env(scenario="merge", action_type="joystick")
    pair = _two_agents_one_lane(20.0).world.scenario  # two controlled vehicles placed explicitly
    with pytest.raises(DrivediffError, match="explicitly"):
        parallel_env(scenario=pair, num_agents=1)


def test_num_agents_keeps_the_scene_size_and_promotes_on_scenarios_without_agents():
    base = parallel_env(scenario="highway")
    more = parallel_env(scenario="highway", num_agents=4)
    base.reset(seed=0)
    more.reset(seed=0)
    assert more.possible_agents == [f"agent_{k}" for k in range(4)]
    assert base.world.state.valid.sum() == more.world.state.valid.sum()
    assert more.world.state.controlled[0, :4].all() and more.world.state.controlled.sum() == 4
    ring = parallel_env(scenario="ring", num_agents=2)
    ring.reset(seed=0)
    slots = ring.core.slots[0]
    assert list(slots) == [20, 21] and ring.world.state.controlled[0].sum() == 2
    assert (ring.world.state.behavior[0, slots] == 2).all()  # EXTERNAL


def test_rgb_array_rendering_follows_an_agent():
    pytest.importorskip("pygame")
    env = parallel_env(scenario="intersection", num_agents=2, render_mode="rgb_array", render_size=(160, 120))
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8 and frame.std() > 0
    assert parallel_env(scenario="merge").render() is None  # no render_mode: a warning, no frame


def test_offroad_ends_the_episode_and_progress_grows():
    env = parallel_env(scenario="highway", num_agents=1)
    obs, _ = env.reset(seed=0)
    progress = [obs["agent_0"][7]]
    for _ in range(5):
        obs, *_ = env.step({"agent_0": np.array([0.0, 0.0])})
        progress.append(obs["agent_0"][7])
    assert np.all(np.diff(progress) > 0)  # driving along the route
    event = None
    for _ in range(100):
        obs, rew, term, trunc, info = env.step({"agent_0": np.array([0.0, -1.0])})  # full right lock
        if term["agent_0"]:
            event = info["agent_0"]["event"]
            assert info["agent_0"]["reward_terms"]["offroad"] == 1.0 or event == "collision"
            break
    assert event in ("offroad", "collision") and env.agents == []


def test_comfort_term_penalises_jerk():
    env = parallel_env(scenario="highway", num_agents=1)
    env.reset(seed=0)
    smooth, jerky = [], []
    for _ in range(10):
        _, _, _, _, info = env.step({"agent_0": np.array([0.1, 0.0])})
        smooth.append(info["agent_0"]["reward_terms"]["comfort"])
    for t in range(10):
        _, _, _, _, info = env.step({"agent_0": np.array([0.8 * (-1) ** t, 0.0])})
        jerky.append(info["agent_0"]["reward_terms"]["comfort"])
    assert max(smooth[2:]) < 1e-9 and min(jerky) > 0.02
