"""The batched API: shapes, equivalence with the PettingZoo environment world by world, auto-reset, errors."""

import numpy as np
import pytest

from drivediff.env import VectorEnv, parallel_env
from drivediff.env.vector import episode_seed
from drivediff.errors import ActionError, DrivediffError


def test_shapes_and_spaces():
    v = VectorEnv("intersection", num_worlds=5, num_agents=4)
    obs, info = v.reset(seed=0)
    d = v.core.obs_dim
    assert obs.shape == (5, 4, d) and obs.dtype == np.float32 and obs in v.observation_space
    assert v.action_space.shape == (5, 4, 2) and v.single_action_space.shape == (4, 2)
    obs, rew, term, trunc, info = v.step(v.action_space.sample())
    assert rew.shape == term.shape == trunc.shape == info["alive"].shape == (5, 4)
    assert info["reward_terms"].shape == (5, 4, 5) and info["_final_obs"].shape == (5,)
    assert rew.dtype == np.float32 and term.dtype == np.bool_
    dv = VectorEnv("highway", num_worlds=3, action_type="discrete", num_agents=2)
    dv.reset(seed=0)
    assert dv.action_space.shape == (3, 2)
    dv.step(dv.action_space.sample())


def test_each_world_equals_a_parallel_env_with_its_seed():
    """World b of a batch seeded s is the PettingZoo environment seeded s + b, step for step."""
    rng = np.random.default_rng(4)
    steps = 60
    acts = rng.uniform(-1, 1, (steps, 3, 3, 2)) * np.array([1.0, 0.03])
    v = VectorEnv("roundabout", num_worlds=3, num_agents=3, offroad_terminal=False)
    obs, _ = v.reset(seed=20)
    vec = [(obs.copy(), None)]
    for t in range(steps):
        o, r, te, tr, info = v.step(acts[t])
        assert not info["_final_obs"].any()
        vec.append((o.copy(), r.copy()))
    for b in range(3):
        env = parallel_env(scenario="roundabout", num_agents=3, offroad_terminal=False)
        obs, _ = env.reset(seed=20 + b)
        np.testing.assert_array_equal(np.stack([obs[a] for a in env.possible_agents]), vec[0][0][b])
        for t in range(steps):
            live = list(env.agents)
            obs, rew, *_ = env.step({a: acts[t, b, k] for k, a in enumerate(env.possible_agents) if a in live})
            for k, a in enumerate(env.possible_agents):
                if a in live:
                    np.testing.assert_array_equal(obs[a], vec[t + 1][0][b, k])
                    assert rew[a] == pytest.approx(vec[t + 1][1][b, k], rel=1e-6)
                else:
                    assert not vec[t + 1][0][b, k].any()


def test_auto_reset_same_step_and_episode_seeds():
    v = VectorEnv("merge", num_worlds=4, num_agents=2, max_steps=5)
    v.reset(seed=7)
    zeros = np.zeros((4, 2, 2))
    for _ in range(4):
        obs, rew, term, trunc, info = v.step(zeros)
        assert not info["_final_obs"].any() and not trunc.any()
    last = v.core.obs.copy()
    obs, rew, term, trunc, info = v.step(zeros)
    assert trunc.all() and info["_final_obs"].all()
    assert info["episode_length"].tolist() == [5] * 4 and info["episode_return"].shape == (4, 2)
    assert info["alive"].all() and not np.array_equal(info["final_obs"], obs)
    assert not np.array_equal(last, info["final_obs"])
    # world 2's second episode is the PettingZoo env seeded with episode_seed(7 + 2, 1)
    seed = episode_seed(9, 1)
    env = parallel_env(scenario="merge", num_agents=2, max_steps=5)
    ref, _ = env.reset(seed=seed)
    np.testing.assert_array_equal(np.stack([ref["agent_0"], ref["agent_1"]]), obs[2])


def test_seed_list_and_bad_seed():
    v = VectorEnv("merge", num_worlds=3)
    obs, _ = v.reset(seed=[5, 6, 7])
    again, _ = v.reset(seed=5)
    np.testing.assert_array_equal(obs, again)
    with pytest.raises(DrivediffError, match="seed"):
        v.reset(seed=[1, 2])


def test_squeezed_single_agent():
    v = VectorEnv("highway", num_worlds=3, squeeze_agents=True)
    obs, _ = v.reset(seed=0)
    assert obs.shape == (3, v.core.obs_dim)
    obs, rew, term, trunc, info = v.step(np.zeros((3, 2)))
    assert rew.shape == term.shape == (3,)
    with pytest.raises(ActionError, match=r"shape \(3, 2\)"):
        v.step(np.zeros((3, 1, 2)))


def test_bad_batched_actions():
    v = VectorEnv("intersection", num_worlds=2, num_agents=2)
    v.reset(seed=0)
    with pytest.raises(ActionError, match=r"shape \(2, 2, 2\)"):
        v.step(np.zeros((2, 2)))
    a = np.zeros((2, 2, 2))
    a[1, 0, 1] = np.inf
    with pytest.raises(ActionError, match="world 1, agent 0 is not finite"):
        v.step(a)
    d = VectorEnv("intersection", num_worlds=2, num_agents=2, action_type="discrete")
    d.reset(seed=0)
    with pytest.raises(ActionError, match="world 0, agent 1 is 5"):
        d.step(np.array([[0, 5], [1, 1]]))
    with pytest.raises(ActionError, match="whole numbers"):
        d.step(np.array([[0.5, 1], [1, 1]]))


def test_results_do_not_depend_on_the_thread_count():
    import numba

    def run(threads):
        numba.set_num_threads(threads)
        try:
            v = VectorEnv("intersection", num_worlds=6, num_agents=4, action_type="discrete")
            v.reset(seed=2)
            rng = np.random.default_rng(0)
            out = []
            for _ in range(80):
                o, r, *_ = v.step(rng.integers(0, 5, (6, 4)))
                out.append((o.copy(), r.copy()))
            return out
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    one, many = run(1), run(numba.config.NUMBA_NUM_THREADS)
    for (o1, r1), (o2, r2) in zip(one, many, strict=True):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)


def test_departed_vehicles_are_removed_and_their_worlds_refreshed():
    """The update kernel takes the vehicles of crashed agents off the road and refreshes those worlds (the
    occupancy index, leaders, gaps): a second refresh by hand changes nothing."""
    v = VectorEnv("highway", num_worlds=8, num_agents=4, action_type="discrete")
    v.reset(seed=1)
    st = v.world.state
    removed = 0
    for _ in range(200):
        _, _, term, _, info = v.step(np.full((8, 4), 3))  # FASTER: agents run into their leaders
        crashed = term & (info["event"] == 1) & ~info["_final_obs"][:, None]  # worlds not reset at once
        if crashed.any():
            for b, a in zip(*np.nonzero(crashed), strict=True):
                i = v.core.slots[b, a]
                assert not st.valid[b, i] and st.lane[b, i] == -1
                assert not (st.leader[b] == i).any()
            before = [arr.copy() for arr in st.packed]
            v.world.refresh()
            for x, y in zip(before, st.packed, strict=True):
                np.testing.assert_array_equal(x, y)
            removed += int(crashed.sum())
    assert removed > 0


def test_departed_vehicles_stay_with_remove_departed_off():
    """remove_departed=False: a crashed agent leaves the episode, but its vehicle stays on the road, collided."""
    v = VectorEnv("highway", num_worlds=8, num_agents=4, action_type="discrete", remove_departed=False)
    v.reset(seed=1)
    st = v.world.state
    kept = 0
    for _ in range(200):
        _, _, term, _, info = v.step(np.full((8, 4), 3))
        crashed = term & (info["event"] == 1) & ~info["_final_obs"][:, None]
        for b, a in zip(*np.nonzero(crashed), strict=True):
            i = v.core.slots[b, a]
            assert st.valid[b, i] and st.collided[b, i] and st.lane[b, i] >= 0
            assert not info["alive"][b, a]
            kept += 1
    assert kept > 0


@pytest.mark.parametrize("scenario, worlds, repeat, action_type", [
    ("intersection", 6, 10, "discrete"),  # highway-env's 1 s period
    ("merge", 5, 1, "continuous"),
    ("roundabout", 2, 3, "continuous"),  # two worlds: the kernel without a parallel region
    ("highway", 2, 5, "discrete"),  # meta-actions on the serial kernel (PettingZoo / Gymnasium at 1 s)
    ("ring", 4, 1, "continuous"),  # acceleration noise: drawn ahead per world in both paths
])
def test_one_kernel_step_equals_the_step_by_step_path(scenario, worlds, repeat, action_type):
    """``EnvCore`` steps in one kernel (actions, simulation, observations, status); the path it replaced
    (still used to record episodes) applies the actions, runs the World and updates the agents in turn.
    Both give the same arrays, step for step, across auto-resets."""
    envs = []
    for fused in (True, False):
        v = VectorEnv(scenario, num_worlds=worlds, num_agents=2, action_type=action_type, action_repeat=repeat,
                      max_steps=40)
        v.core._fused = fused
        v.reset(seed=31)
        envs.append(v)
    assert envs[0].core._fused and not envs[1].core._fused
    rng = np.random.default_rng(1)
    resets = 0
    for _ in range(70):
        acts = rng.integers(0, 5, (worlds, 2)) if action_type == "discrete" else rng.uniform(-1, 1, (worlds, 2, 2))
        a, b = (v.step(acts) for v in envs)
        for x, y in zip(a[:4], b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        for key in ("alive", "event", "reward_terms"):
            np.testing.assert_array_equal(a[4][key], b[4][key])
        resets += int(a[4]["_final_obs"].sum())
        for x, y in zip(envs[0].world.state.packed, envs[1].world.state.packed, strict=True):
            np.testing.assert_array_equal(x, y)
    assert resets > 0


def test_which_step_path_an_environment_takes():
    """One kernel per step, except when recording the episode or when World.run would draw an action
    repeat in several chunks (then the step-by-step path, with the same numbers)."""
    assert VectorEnv("merge", num_worlds=3).core._fused
    assert not parallel_env(scenario="merge", record_log=True).core._fused
    v = VectorEnv("intersection", num_worlds=2, num_agents=2, action_type="discrete", action_repeat=10)
    repeat = v.world.steps_per_chunk + 1
    long = VectorEnv("intersection", num_worlds=2, num_agents=2, action_type="discrete", action_repeat=repeat)
    assert v.core._fused and not long.core._fused
    long.core.reset(seed=3)  # the core: no auto-reset after this long step
    long.core.step(np.ones((2, 2), dtype=np.int64))
    assert (long.world.state.step == repeat).all() and (long.core.steps == 1).all()


def test_one_kernel_step_leaks_no_references():
    """``step_envs`` (NRT parallel entry point) calls NRT-free kernels: the state arrays' Python reference
    counts must not drift over many steps and auto-resets (the World-level twin is in tests/sim)."""
    import sys

    v = VectorEnv("intersection", num_worlds=4, num_agents=4, action_type="discrete", max_steps=15)
    v.reset(seed=0)
    core = v.core
    arrays = core.world.state.packed + tuple(core.world.scratch) + (core.obs, core.alive, core.slots, core.steps)
    before = [sys.getrefcount(a) for a in arrays]
    rng = np.random.default_rng(0)
    for _ in range(60):
        v.step(rng.integers(0, 5, (4, 4)))
    assert [sys.getrefcount(a) for a in arrays] == before


def test_take_control_matches_numpy_and_rejects_bad_scenes():
    """The agents' hand-over at reset (``kernels.take_control``) against the NumPy it replaced: the last A
    valid slots become the agents, target lane = lane, target speed = highway-env's nearest (half to even,
    exact midpoints included), the agents' status and the world's actions start over."""
    from drivediff.env.kernels import NOT_CONTROLLED, TOO_FEW_VEHICLES, TOOK_CONTROL, take_control
    from drivediff.sim import layout as L

    rng = np.random.default_rng(0)
    b_, n_, a_ = 6, 10, 3
    speeds = np.array([20.0, 25.0, 30.0])
    f = np.zeros((b_, L.NF, n_))
    f[:, L.SPEED] = rng.uniform(15.0, 35.0, (b_, n_))
    f[0, L.SPEED, -3:] = [22.5, 27.5, 25.0]  # midpoints: 22.5 -> 20 (index 0.5 -> 0), 27.5 -> 30 (1.5 -> 2)
    iv = rng.integers(0, 7, (b_, L.NI, n_))
    m = np.zeros((b_, L.NM, n_), dtype=np.bool_)
    m[:, L.VALID] = rng.random((b_, n_)) < 0.7
    m[0, L.VALID, -3:] = True
    idx = np.array([0, 2, 5])
    slots = np.zeros((b_, a_), dtype=np.int64)
    alive, term, trunc = np.zeros((b_, a_), bool), np.ones((b_, a_), bool), np.ones((b_, a_), bool)
    steps = np.full(b_, 7)
    acts = np.ones((b_, n_, 2))
    want_f, want_iv, want_m = f.copy(), iv.copy(), m.copy()
    code = take_control(f, iv, m, idx, slots, True, 3, True, speeds, alive, term, trunc, steps, acts)
    assert code == TOOK_CONTROL
    for b in idx:
        s = np.flatnonzero(want_m[b, L.VALID])[-a_:]
        np.testing.assert_array_equal(slots[b], s)
        want_m[b, L.CONTROLLED, s] = True
        want_iv[b, L.BEHAVIOR, s] = 3
        want_iv[b, L.TARGET_LANE, s] = want_iv[b, L.LANE, s]
        x = (want_f[b, L.SPEED, s] - speeds[0]) / (speeds[-1] - speeds[0])
        want_f[b, L.TARGET_SPEED, s] = speeds[np.clip(np.round(x * 2).astype(np.int64), 0, 2)]
    np.testing.assert_array_equal(f, want_f)
    np.testing.assert_array_equal(iv, want_iv)
    np.testing.assert_array_equal(m, want_m)
    assert f[0, L.TARGET_SPEED, -3:].tolist() == [20.0, 30.0, 25.0]
    assert alive[idx].all() and not term[idx].any() and not trunc[idx].any() and (steps[idx] == 0).all()
    assert not alive[[1, 3, 4]].any() and (steps[[1, 3, 4]] == 7).all()
    assert (acts[idx] == 0).all() and (acts[[1, 3, 4]] == 1).all()
    # without promotion and with continuous actions: the slots stay, no target speed is set
    slots[3] = [1, 4, 6]
    m[3, L.VALID, [1, 4, 6]] = m[3, L.CONTROLLED, [1, 4, 6]] = True
    before = f[3, L.TARGET_SPEED].copy()
    assert take_control(f, iv, m, np.array([3]), slots, False, 2, False, speeds, alive, term, trunc, steps,
                        acts) == TOOK_CONTROL
    assert slots[3].tolist() == [1, 4, 6] and (iv[3, L.BEHAVIOR, [1, 4, 6]] == 2).all()
    np.testing.assert_array_equal(iv[3, L.TARGET_LANE, [1, 4, 6]], iv[3, L.LANE, [1, 4, 6]])
    np.testing.assert_array_equal(f[3, L.TARGET_SPEED], before)
    # too few vehicles to promote in one of the worlds, and agent slots that are not controlled vehicles:
    # an error code and nothing written
    m[1, L.VALID] = False
    m[1, L.VALID, 0] = True
    state = [x.copy() for x in (f, iv, m, slots, alive, steps, acts)]
    assert take_control(f, iv, m, np.array([0, 1]), slots, True, 3, True, speeds, alive, term, trunc, steps,
                        acts) == TOO_FEW_VEHICLES
    m[4, L.CONTROLLED] = False
    assert take_control(f, iv, m, np.array([3, 4]), slots, False, 3, True, speeds, alive, term, trunc, steps,
                        acts) == NOT_CONTROLLED
    for got, want in zip((f, iv, m, slots, alive, steps, acts), state, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("scenario", ["intersection", "merge"])
def test_any_chunking_of_the_worlds_gives_the_same_rollout(scenario, monkeypatch):
    """``step_envs`` with the worlds in 7, 3 or 1 chunks (``chunk_count`` overridden): observations,
    rewards, status and the world state agree to the bit, across auto-resets and an action repeat."""
    import drivediff.env.core as core_module

    runs = []
    for chunks in (7, 3, 1):
        monkeypatch.setattr(core_module, "chunk_count", lambda num_worlds, c=chunks: c)
        v = VectorEnv(scenario, num_worlds=7, num_agents=3, action_type="discrete", action_repeat=3)
        v.reset(seed=5)
        rng = np.random.default_rng(1)
        out, resets = [], 0
        for _ in range(60):
            o, r, term, trunc, info = v.step(rng.integers(0, 5, (7, 3)))
            resets += int(info["_final_obs"].sum())
            out.append((o.copy(), r.copy(), term.copy(), trunc.copy(), info["alive"].copy()))
        runs.append((out, [a.copy() for a in v.world.state.packed], resets))
    assert runs[0][2] > 0  # worlds were reset along the way
    for out, state, _ in runs[1:]:
        for got, want in zip(out, runs[0][0], strict=True):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)
        for g, w in zip(state, runs[0][1], strict=True):
            np.testing.assert_array_equal(g, w)
