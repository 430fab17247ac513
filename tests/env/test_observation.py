"""The observation kernel against a plain-NumPy reference implementation, on random and edge-case states."""

import math

import numpy as np
import pytest

from drivediff.env.config import make_config
from drivediff.env.core import EnvCore
from drivediff.env.observation import NEIGHBOR_FEATURES, NUM_EGO, NUM_NB
from drivediff.scenarios import compile_scenario
from drivediff.scenarios.loader import parse_scenario
from drivediff.sim import layout as L

# ------------------------------------------------------------------------------------- NumPy reference


def lane_pose(road, lane, s):
    """(x, y, heading) on a lane at arc length s, clamped to the lane (linear interpolation)."""
    p = road.arrays.pts[road._pt_slice(lane)]
    s = min(max(s, 0.0), road.lane_len[lane])
    return (np.interp(s, p[:, L.P_S], p[:, L.P_X]), np.interp(s, p[:, L.P_S], p[:, L.P_Y]),
            np.interp(s, p[:, L.P_S], p[:, L.P_H]))


def next_lane(road, route_row, lane, rp):
    succ = road.successors(lane)
    if not succ:
        return -1
    if 0 <= rp < len(route_row) and route_row[rp] in succ:
        return int(route_row[rp])
    return succ[0]


def remaining(road, route_row, lane, s, rp):
    rem, cur = road.lane_len[lane] - s, lane
    for _ in range(64):
        if rem >= 20000.0:
            return 20000.0
        nxt = next_lane(road, route_row, cur, rp)
        if nxt < 0:
            break
        rem += road.lane_len[nxt]
        cur = nxt
        rp = rp + 1 if rp >= 0 else rp
    return max(rem, 0.0)


def wrap(a):
    return (a + math.pi) % (2 * math.pi) - math.pi


def clip(v):
    return float(np.clip(v, -1, 1))


def _rot(yaw, dx, dy):
    c, sn = math.cos(yaw), math.sin(yaw)
    return c * dx + sn * dy, -sn * dx + c * dy


def reference_ego(road, st, b, i, rem0, cfg, steer_scale):
    ln, s = int(st.lane[b, i]), float(st.s[b, i])
    herr = wrap(float(st.yaw[b, i]) - lane_pose(road, ln, s)[2])
    rem = remaining(road, st.route[b, i], ln, s, int(st.route_pos[b, i]))
    gap, r = float(st.gap[b, i]), cfg.neighbor_range
    li = road.arrays.lane_i[ln]
    return [clip(st.speed[b, i] / cfg.speed_scale), clip(road.lane_speed[ln] / cfg.speed_scale),
            clip(st.d[b, i] / (0.5 * road.lane_width[ln])), math.sin(herr), math.cos(herr),
            clip(st.accel[b, i] / cfg.accel_scale), clip(st.steer[b, i] / steer_scale),
            clip(1 - rem / rem0) if rem0 > 0 else 0.0, clip(rem / cfg.goal_scale), clip(gap / r) if gap < r else 1.0,
            float(li[L.L_LC_LEFT] != 0), float(li[L.L_LC_RIGHT] != 0)]


def reference_neighbors(st, b, i, cfg):
    k_max, r, vs = cfg.num_neighbors, cfg.neighbor_range, cfg.speed_scale
    x, y, yaw, v = (float(getattr(st, k)[b, i]) for k in ("x", "y", "yaw", "speed"))
    others = np.array([j for j in range(st.max_vehicles) if j != i and st.valid[b, j]], dtype=int)
    d2 = (st.x[b, others] - x) ** 2 + (st.y[b, others] - y) ** 2
    order = np.lexsort((others, d2))  # nearest first, ties by slot
    rows = np.zeros((k_max, NUM_NB))
    for k, j in enumerate(others[order][d2[order] < r * r][:k_max]):
        px, py = _rot(yaw, st.x[b, j] - x, st.y[b, j] - y)
        vx, vy = _rot(yaw, st.speed[b, j] * math.cos(st.yaw[b, j]) - v * math.cos(yaw),
                      st.speed[b, j] * math.sin(st.yaw[b, j]) - v * math.sin(yaw))
        rows[k] = [1, clip(px / r), clip(py / r), clip(vx / vs), clip(vy / vs), math.cos(st.yaw[b, j] - yaw),
                   math.sin(st.yaw[b, j] - yaw), clip(st.length[b, j] / 10), clip(st.width[b, j] / 5)]
    return rows.ravel()


def reference_lane(road, st, b, i, cfg, lane, s0, rp):
    """Presence and M points of ``lane`` from arc length s0, walking successors (route entry rp)."""
    m, r = cfg.lane_points, cfg.neighbor_range
    block = np.zeros(1 + 2 * m)
    if lane < 0:
        return block
    block[0] = 1
    cur, off = lane, 0.0
    for k in range(m):
        sk = s0 + k * cfg.lane_spacing - off
        while sk > road.lane_len[cur]:
            nxt = next_lane(road, st.route[b, i], cur, rp)
            if nxt < 0:
                break
            sk -= road.lane_len[cur]
            off += road.lane_len[cur]
            cur = nxt
            rp = rp + 1 if rp >= 0 else rp
        px, py, _ = lane_pose(road, cur, sk)
        lx, ly = _rot(float(st.yaw[b, i]), px - st.x[b, i], py - st.y[b, i])
        block[1 + 2 * k], block[2 + 2 * k] = clip(lx / r), clip(ly / r)
    return block


def reference_obs(road, st, b, i, rem0, cfg, steer_scale):
    """One agent's observation from the state arrays, written independently of the kernel."""
    ln, s = int(st.lane[b, i]), float(st.s[b, i])
    li = road.arrays.lane_i[ln]
    left, right = int(li[L.L_LEFT]), int(li[L.L_RIGHT])
    scale = lambda nb: s * road.lane_len[nb] / road.lane_len[ln]  # noqa: E731
    lanes = [reference_lane(road, st, b, i, cfg, ln, s, int(st.route_pos[b, i])),
             reference_lane(road, st, b, i, cfg, left, scale(left) if left >= 0 else 0.0, -1),
             reference_lane(road, st, b, i, cfg, right, scale(right) if right >= 0 else 0.0, -1)]
    return np.concatenate([reference_ego(road, st, b, i, rem0, cfg, steer_scale),
                           reference_neighbors(st, b, i, cfg), *lanes])


def check_against_reference(core, atol=2e-5):
    st, cfg = core.world.state, core.config.observation
    steer_scale = max(abs(v) for v in core.config.steer_range)
    checked = 0
    for b in range(core.num_worlds):
        for a in range(core.num_agents):
            if not core.alive[b, a]:
                assert not core.obs[b, a].any()
                continue
            i = core.slots[b, a]
            ref = reference_obs(core.road, st, b, i, core._rem0[b, a], cfg, steer_scale)
            worst = core.layout.names[int(np.argmax(abs(core.obs[b, a] - ref)))]
            np.testing.assert_allclose(core.obs[b, a], ref, atol=atol, rtol=0, err_msg=f"world {b} agent {a}: {worst}")
            checked += 1
    return checked


def gentle_actions(rng, core):
    """Small random continuous actions (keeps most agents on the road for a while)."""
    u = rng.normal(0.0, 0.3, (core.num_worlds, core.num_agents, 2))
    u[..., 1] *= 0.05
    return u


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("scenario,agents", [("intersection", 4), ("highway", 2), ("roundabout", 3), ("merge", 2),
                                             ("ring", 2)])
def test_kernel_matches_numpy_reference(scenario, agents):
    core = EnvCore(make_config(scenario=scenario, num_agents=agents, offroad_terminal=False), num_worlds=3)
    core.reset(seed=11)
    rng = np.random.default_rng(0)
    checked = check_against_reference(core)
    for t in range(40):
        core.step(gentle_actions(rng, core))
        if t % 8 == 7:
            checked += check_against_reference(core)
    assert checked > 10


def test_small_range_and_many_neighbour_rows():
    """K larger than the vehicles in range: the extra rows are zeros, present rows are sorted by distance."""
    cfg = make_config(scenario="intersection", num_agents=4, observation={"num_neighbors": 20, "neighbor_range": 30.0})
    core = EnvCore(cfg, num_worlds=2)
    core.reset(seed=3)
    check_against_reference(core)
    nb = core.layout.split(core.obs)["neighbors"]  # (B, A, K, 9)
    presence = nb[..., 0]
    assert (presence[..., -1] == 0).all()
    d = np.hypot(nb[..., 1], nb[..., 2])
    for row_p, row_d in zip(presence.reshape(-1, 20), d.reshape(-1, 20), strict=True):
        n = int(row_p.sum())
        assert (row_p[:n] == 1).all() and (row_p[n:] == 0).all()
        assert np.all(np.diff(row_d[:n]) >= -1e-6)


def _tiny(vehicles, length=120.0, lanes=2):
    raw = {"name": "tiny", "road": {"type": "highway", "lanes": lanes, "length": length}, "vehicles": vehicles,
           "duration": 5.0}
    return compile_scenario(parse_scenario(raw, "tiny"))


def test_lone_vehicle_at_road_end_and_ties():
    """No neighbours -> zero rows; lane points past the road end repeat the end point; two vehicles at the
    same distance are listed by slot; a missing left/right lane is a zero block."""
    sc = _tiny([{"lane": "lane0", "s": 100.0, "speed": 10.0, "controlled": True},
                {"lane": "lane1", "s": 100.0, "speed": 10.0, "controlled": True},
                {"lane": "lane0", "s": 110.0, "speed": 10.0}, {"lane": "lane0", "s": 90.0, "speed": 10.0}])
    core = EnvCore(make_config(scenario=sc), num_worlds=1)
    core.reset(seed=0)
    check_against_reference(core, atol=1e-6)
    obs = core.layout.split(core.obs[0])
    # agent 0 (lane0, rightmost): vehicles 10 m ahead and behind tie; slot 2 (ahead) comes first
    assert obs["neighbors"][0, 1, 1] == pytest.approx(10.0 / 80.0, abs=1e-6)
    assert obs["neighbors"][0, 2, 1] == pytest.approx(-10.0 / 80.0, abs=1e-6)
    assert obs["lanes"][0, 2, 0] == 0 and not obs["lanes"][0, 2].any()  # no lane right of lane0
    assert obs["lanes"][0, 1, 0] == 1  # lane1 on its left
    xs = obs["lanes"][0, 0, 1::2] * 80.0  # current lane ahead: 0, 6, 12, 18, 20, 20 ... (the road ends at 120 m)
    np.testing.assert_allclose(xs, [0, 6, 12, 18, 20, 20, 20, 20], atol=1e-4)
    lone = _tiny([{"lane": "lane0", "s": 50.0, "speed": 5.0, "controlled": True}], lanes=1)
    core = EnvCore(make_config(scenario=lone), num_worlds=1)
    core.reset(seed=0)
    check_against_reference(core, atol=1e-6)
    assert not core.layout.split(core.obs[0, 0])["neighbors"].any()


def test_layout_names_scales_and_bounds():
    core = EnvCore(make_config(scenario="merge", num_agents=2, observation={"num_neighbors": 3, "lane_points": 4}),
                   num_worlds=2)
    core.reset(seed=0)
    lay = core.layout
    assert lay.dim == core.obs_dim == NUM_EGO + 3 * NUM_NB + 3 * (1 + 2 * 4) == core.obs.shape[-1]
    assert len(lay.names) == len(set(lay.names)) == lay.scale.shape[0]
    assert lay.names[lay.neighbors.start:lay.neighbors.start + NUM_NB] == tuple(
        f"neighbor0.{n}" for n in NEIGHBOR_FEATURES)
    assert core.obs.dtype == np.float32 and np.abs(core.obs).max() <= 1.0
    # scales recover units: ego speed
    np.testing.assert_allclose(core.obs[:, :, 0] * lay.scale[0], core.world.state.speed[:, :2], rtol=1e-6)
    # progress is 0 at reset and the remaining distance is the route's length from the ego
    assert np.all(core.obs[:, :, 7] == 0)
