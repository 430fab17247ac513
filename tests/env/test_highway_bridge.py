"""The highway-env bridge: converted scenes (geometry, topology, vehicles, traffic statistics) and drivediff
observations/actions driving highway-env's controlled vehicles.

Scenes that involve several highway-env environments run in fresh processes: creating intersection-v0
changes highway-env's IDMVehicle class constants for the whole process.
"""

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

pytest.importorskip("highway_env")

import gymnasium as gym  # noqa: E402

from drivediff.env.highway_bridge import (  # noqa: E402
    COMPARE_IDS,
    HighwayEnvDriver,
    compare_in_subprocess,
    scenario_from_highway_env,
)
from drivediff.errors import ActionError, DrivediffError  # noqa: E402

CHECK_SCENES = textwrap.dedent("""
    import json, math, warnings
    import numpy as np, gymnasium as gym, highway_env
    from drivediff.env.highway_bridge import scenario_from_highway_env, lane_center_errors, mirror_xy
    out = {}
    for env_id in %r:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = gym.make(env_id)
            env.reset(seed=3)
        u = env.unwrapped
        net = u.road.network
        sc = scenario_from_highway_env(env, include_controlled=True)
        road, he = sc.road, list(sc.he_index)
        ours = {tuple(i): k for k, i in enumerate(he) if i is not None}
        errs = lane_center_errors(net, road, he)
        props, links = [], []
        for (f, tos) in net.graph.items():
            for t, lanes in tos.items():
                for i, lane in enumerate(lanes):
                    k = ours[(f, t, i)]
                    props.append([float(lane.width_at(0)) - road.lane_width[k],
                                  float(lane.speed_limit) - road.lane_speed[k], float(lane.length) - road.lane_len[k]
                                  if type(lane).__name__ != "SineLane" else 0.0])
                    # each next road is reached, directly or through one connector
                    reach = set()
                    for c in road.successors(k):
                        for d in ([c] if he[c] is not None else road.successors(c)):
                            reach.add(tuple(he[d][:2]))
                    links.append(sorted(reach))
        w_states = []
        from drivediff.sim import World
        world = World(sc)
        world.reset(seed=0)
        ctrl = list(u.controlled_vehicles)
        vehicles = ctrl + [v for v in u.road.vehicles if v not in ctrl]
        st = world.state
        pos = [[st.x[0, k] - v.position[0], st.y[0, k] + v.position[1], st.speed[0, k] - v.speed] for k, v in
               enumerate(vehicles)]
        idm = [[world.state.s0[0, k] - v.DISTANCE_WANTED, world.state.delta[0, k] - v.DELTA,
                world.state.a_comf[0, k] - v.COMFORT_ACC_MAX, world.state.b_comf[0, k] + v.COMFORT_ACC_MIN,
                world.state.v0[0, k] - v.target_speed] for k, v in enumerate(vehicles) if hasattr(v, "DELTA")]
        routed = [len(v.route or []) > 1 for v in vehicles]
        converted = [bool((st.route[0, k] >= 0).any()) for k in range(len(vehicles))]
        out[env_id] = dict(max_err=max(errs.values()), lanes=len(errs), props=np.abs(props).max(),
                           routes=[routed, converted],
                           links=links, expected=[sorted({(t, n) for n in net.graph.get(t, {})})
                                                   for f, tos in net.graph.items() for t, lanes in tos.items()
                                                   for _ in lanes],
                           n_vehicles=[int(st.valid[0].sum()), len(vehicles)], controlled=int(st.controlled[0].sum()),
                           n_ctrl=len(ctrl), pos=np.abs(pos).max(), idm=np.abs(idm).max() if idm else 0.0,
                           center_gap=bool(world.params.center_gap))
    print(json.dumps(out, default=float))
""")


@pytest.fixture(scope="module")
def scenes():
    proc = subprocess.run([sys.executable, "-c", CHECK_SCENES % (COMPARE_IDS,)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env_id", COMPARE_IDS)
def test_converted_road_matches_highway_env(scenes, env_id):
    r = scenes[env_id]
    assert r["max_err"] < 0.02  # lane centres within 2 cm, both ways
    assert r["props"] < 1e-3  # widths, speed limits identical; (non-sine) lengths within 1 mm
    for reach, expected in zip(r["links"], r["expected"], strict=True):
        # every next road highway-env could take is a successor, except intersection-v0's U-turns and merge-v0's
        # blocked acceleration lane, which end the lane
        assert set(map(tuple, reach)) <= set(map(tuple, expected))
        if env_id in ("highway-v0", "roundabout-v0"):
            assert set(map(tuple, reach)) == set(map(tuple, expected))


@pytest.mark.parametrize("env_id", COMPARE_IDS)
def test_converted_vehicles_match_highway_env(scenes, env_id):
    r = scenes[env_id]
    assert r["n_vehicles"][0] == r["n_vehicles"][1] > 0
    assert r["controlled"] == r["n_ctrl"] >= 1
    assert r["pos"] < 0.01  # mirrored positions and speeds
    assert r["idm"] < 1e-9  # jam distance (centre to centre), delta, a, b, desired speed
    assert r["center_gap"]
    routed, converted = r["routes"]
    assert routed == converted  # every highway-env route (beyond the current road) became a drivediff route
    if env_id in ("roundabout-v0", "intersection-v0"):
        assert sum(routed) >= 3


@pytest.mark.parametrize("env_id", ["merge-v0", "roundabout-v0", "intersection-v0"])
def test_traffic_statistics_comparable(env_id):
    """Both simulators run the converted scene without controlled vehicles: mean speeds agree within 10%."""
    r = compare_in_subprocess(env_id, seeds=(0, 1), seconds=20.0)
    he, dd = r["highway_env"], r["drivediff"]
    assert he["vehicle_steps"] > 500 and dd["vehicle_steps"] > 500
    assert abs(dd["mean_speed"] - he["mean_speed"]) < 0.1 * he["mean_speed"]


@pytest.mark.slow
def test_highway_v0_traffic_statistics():
    """highway-v0 (50 vehicles, 30 s, 3 seeds): mean speed within 3%, lane changes per vehicle-minute within 35%."""
    r = compare_in_subprocess("highway-v0", seeds=(0, 1, 2), seconds=30.0)
    he, dd = r["highway_env"], r["drivediff"]
    assert abs(dd["mean_speed"] - he["mean_speed"]) < 0.03 * he["mean_speed"]
    assert he["lane_changes_per_min"] > 0.2
    assert abs(dd["lane_changes_per_min"] - he["lane_changes_per_min"]) < 0.35 * he["lane_changes_per_min"]


# ------------------------------------------------------------------------------------------------ driving


def _highway(vehicles=8, **config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make("highway-v0", config={"action": {"type": "ContinuousAction"}, "policy_frequency": 5,
                                              "vehicles_count": vehicles, "duration": 30, **config})


def lane_keeping(obs, layout, v_target=25.0):
    """A drivediff policy on drivediff observations: pure pursuit of the lane point 18 m ahead, P speed control."""
    blk = layout.split(obs)
    x, y = blk["lanes"][:, 0, 7] * 80.0, blk["lanes"][:, 0, 8] * 80.0
    alpha = np.arctan2(y, x)
    steer = np.arctan(5.0 * np.sin(alpha) / np.maximum(np.hypot(x, y), 1.0))
    accel = np.clip(v_target - blk["ego"][:, 0] * 40.0, -5, 5)
    return np.stack([accel / 5.0, steer / (np.pi / 4)], axis=1)


def test_driver_observations_equal_the_converted_scene():
    env = _highway()
    driver = HighwayEnvDriver(env)
    obs, _ = driver.reset(seed=4)
    from drivediff.env.config import make_config
    from drivediff.env.core import EnvCore

    core = EnvCore(make_config(scenario=scenario_from_highway_env(env)), num_worlds=1)
    core.reset(seed=0)
    assert obs.shape == (1, core.obs_dim)
    np.testing.assert_allclose(obs, core.obs[0], atol=1e-5)


def test_drivediff_policy_drives_highway_env_back_to_the_lane_centre():
    """Start 1.2 m off the lane centre; a lane-keeping policy on drivediff observations steers highway-env's
    vehicle back (a wrong steering sign or frame would drive it off the road)."""
    env = _highway(vehicles=3)
    driver = HighwayEnvDriver(env)
    driver.reset(seed=1)
    ego = env.unwrapped.controlled_vehicles[0]
    lane = ego.lane
    s, _ = lane.local_coordinates(ego.position)
    ego.position = lane.position(s, 1.2)
    obs = driver.observe()
    assert abs(obs[0, 2] * 2.0 - (-1.2)) < 1e-6  # drivediff d (left positive) = -highway-env lateral
    lateral = []
    for _ in range(25):
        obs, _, term, trunc, _ = driver.step(lane_keeping(obs, driver.core.layout))
        lateral.append(lane.local_coordinates(ego.position)[1])
        assert not term
    assert abs(lateral[-1]) < 0.15 and max(abs(v) for v in lateral) < 1.3
    assert abs(ego.speed - 25.0) < 1.0


class _ConstantPolicy:
    """A world-based policy (drivediff.agents protocol): fixed acceleration and steering for agents."""

    def __init__(self, accel, steer):
        self.accel, self.steer = accel, steer

    def reset(self, world):
        pass

    def act(self, world):
        out = np.zeros((world.num_worlds, world.max_vehicles, 2))
        out[:, : world.num_controlled] = [self.accel, self.steer]
        return out


def test_world_policy_actions_reach_highway_env_exactly():
    env = _highway(vehicles=3)
    driver = HighwayEnvDriver(env)
    driver.reset(seed=0)
    u = driver.act(_ConstantPolicy(1.5, 0.02))
    assert u.shape == (1, 2)
    he_action = driver.to_highway_action(u)
    got = env.unwrapped.action_type.get_action(he_action)
    assert got["acceleration"] == pytest.approx(1.5) and got["steering"] == pytest.approx(-0.02)  # mirrored frame
    v0 = env.unwrapped.controlled_vehicles[0].speed
    driver.step(u)
    assert env.unwrapped.controlled_vehicles[0].speed > v0
    with pytest.raises(ActionError, match=r"shape \(1, 2\)"):
        driver.step(np.zeros(2))
    with pytest.raises(ActionError, match="finite"):
        driver.step(np.array([[np.nan, 0.0]]))


def test_driver_rejects_discrete_highway_env_actions():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make("highway-v0")
    with pytest.raises(DrivediffError, match="ContinuousAction"):
        HighwayEnvDriver(env)


def test_converted_scene_runs_as_a_drivediff_environment():
    env = _highway(vehicles=6, controlled_vehicles=2)
    env.reset(seed=2)
    from drivediff.env import parallel_env

    penv = parallel_env(scenario=scenario_from_highway_env(env), action_type="discrete")
    obs, _ = penv.reset(seed=0)
    assert penv.possible_agents == ["agent_0", "agent_1"]
    st = penv.world.state
    ego = env.unwrapped.controlled_vehicles
    np.testing.assert_allclose(st.x[0, :2], [v.position[0] for v in ego], atol=1e-6)
    np.testing.assert_allclose(st.y[0, :2], [-v.position[1] for v in ego], atol=1e-6)
    for _ in range(20):
        obs, rew, term, trunc, info = penv.step(dict.fromkeys(penv.agents, 1))
    assert st.valid[0].sum() == 8
    with pytest.raises(DrivediffError, match="cannot change"):
        parallel_env(scenario=scenario_from_highway_env(env), num_agents=3)
