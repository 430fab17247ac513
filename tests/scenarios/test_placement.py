"""Reset placement: the compiled sampler against the plain-Python loop it replaced, draw for draw.

``reference_sample`` below is that loop (highway-env's ``create_random`` for sequential placement, our
random and even placements, routes drawn per vehicle). The compiled ``placement.place_generated`` must give
the same arrays and leave the generator in the same state, for every catalog scenario and for the
placement options the catalog does not use.
"""

import bisect
import math

import numpy as np
import pytest

from drivediff.errors import ScenarioError
from drivediff.scenarios import catalog_names, get_scenario, load_scenario
from drivediff.scenarios.compiled import BEHAVIOR_CODES, VEHICLE_FIELDS, _span_cdf
from drivediff.scenarios.schema import CCConfig
from drivediff.sim import World
from drivediff.sim import layout as L
from drivediff.sim.state import ROUTE_LEN
from drivediff.sim.world import _Streams

INT_FIELDS = ("lane", "behavior", "lc_force_dir")


def _uniform_or(rng, pair):
    lo, hi = pair
    return float(lo if hi <= lo else rng.uniform(lo, hi))


def _row(rng, idm, mobil, size, cc, speed, behavior, controlled, lc_period):
    v0 = _uniform_or(rng, idm.desired_speed) if idm.desired_speed is not None else max(speed, 1.0)
    delta = _uniform_or(rng, idm.delta)
    timer = float(rng.uniform(0.0, lc_period)) if mobil.enabled else -math.inf
    cc = cc or CCConfig()
    return dict(speed=speed, behavior=int(behavior), controlled=controlled, length=size.length, width=size.width,
                v0=v0, time_gap=idm.time_gap, s0=idm.s0, a_comf=idm.a, b_comf=idm.b, delta=delta,
                coolness=idm.coolness, noise=idm.noise, politeness=mobil.politeness, lc_gain=mobil.min_gain,
                lc_brake=mobil.max_braking, lc_timer=timer, lc_force_time=-1.0, lc_force_dir=0, target_speed=speed,
                cc_gap=cc.time_gap, cc_standstill=cc.standstill, cc_kp=cc.kp, cc_kd=cc.kd, cc_lag=cc.lag, d=0.0)


def reference_sample(cs, rng):
    """The plain-Python placement, vehicle by vehicle (see the module docstring)."""
    c = cs.config
    lc_period = cs.params.lc_period
    rows, routes = [], []
    occupied = {}
    explicit = [v for v in c.vehicles if v.controlled] + [v for v in c.vehicles if not v.controlled]
    for v in explicit:
        lane = cs.road.lane_index(v.lane)
        row = _row(rng, v.idm, v.mobil, v.size, v.cc, v.speed, BEHAVIOR_CODES[v.behavior], v.controlled, lc_period)
        row.update(lane=lane, s=float(v.s), d=float(v.d))
        if v.lane_change_at is not None:
            row["lc_force_time"] = float(v.lane_change_at)
            row["lc_force_dir"] = 1 if v.lane_change_to == "left" else -1
        occupied.setdefault(lane, []).append((v.s, 0.5 * v.size.length))
        rows.append(row)
        routes.append([cs.road.lane_index(n) for n in v.route] if v.route else [])
    ctrl, traffic = c.controlled, c.traffic

    def spawn_lanes(names):
        areas = cs.built.spawn
        return [sl for v in areas.values() for sl in v] if names is None else [sl for n in names for sl in areas[n]]

    ctrl_lanes = spawn_lanes(ctrl.spawn) if ctrl.count else []
    tr_lanes = spawn_lanes(traffic.spawn) if traffic.count else []
    requests = []
    if traffic.placement == "sequential":
        per = np.full(max(ctrl.count, 1), traffic.count // max(ctrl.count, 1))
        per[: traffic.count % max(ctrl.count, 1)] += 1
        for q in range(max(ctrl.count, 1)):
            if q < ctrl.count:
                requests.append(True)
            requests += [False] * int(per[q])
    else:
        requests = [True] * ctrl.count + [False] * traffic.count
    front, even_index = -math.inf, 0
    for is_ctrl in requests:
        cfg, lanes = (ctrl, ctrl_lanes) if is_ctrl else (traffic, tr_lanes)
        speed = _uniform_or(rng, cfg.speed)
        row = _row(rng, cfg.idm, cfg.mobil, cfg.size, getattr(cfg, "cc", None), speed, BEHAVIOR_CODES[cfg.behavior],
                   is_ctrl, lc_period)
        if traffic.placement == "sequential":
            sl = lanes[int(rng.integers(len(lanes)))]
            offset = cfg.spacing * (12.0 + speed) * math.exp(-5.0 / 40.0 * len(lanes))
            s = sl.s_lo + ((3.0 * offset if front == -math.inf else front) + offset * rng.uniform(0.9, 1.1))
            assert s <= sl.s_hi
            front = s - sl.s_lo
        elif traffic.placement == "even" and not is_ctrl:
            pos = sum(x.s_hi - x.s_lo for x in lanes) * even_index / max(traffic.count, 1)
            even_index += 1
            sl, s = lanes[-1], lanes[-1].s_hi
            for cand in lanes:
                if pos < cand.s_hi - cand.s_lo:
                    sl, s = cand, cand.s_lo + pos
                    break
                pos -= cand.s_hi - cand.s_lo
        else:
            cdf = _span_cdf(lanes)
            need = row["s0"] + 0.5 * row["speed"] * row["time_gap"]
            for _ in range(400):
                sl = lanes[bisect.bisect_right(cdf, rng.random())]
                s = float(rng.uniform(sl.s_lo, sl.s_hi))
                if all(abs(s - s2) - h2 - 0.5 * row["length"] >= need for s2, h2 in occupied.get(sl.lane, ())):
                    break
            else:
                raise AssertionError("reference placement failed")
        occupied.setdefault(sl.lane, []).append((s, 0.5 * row["length"]))
        row.update(lane=sl.lane, s=s)
        opts = cs.built.routes_from(sl.lane)
        routes.append(opts[int(rng.integers(len(opts)))] if opts else [])
        rows.append(row)
    out = {}
    for k in VEHICLE_FIELDS:
        dtype = np.int64 if k in INT_FIELDS else np.bool_ if k == "controlled" else np.float64
        out[k] = np.array([r[k] for r in rows], dtype=dtype)
    route = np.full((len(rows), ROUTE_LEN), -1, dtype=np.int64)
    for i, r in enumerate(routes):
        route[i, :len(r)] = r[:ROUTE_LEN]
    out["route"] = route
    order = np.argsort(~out["controlled"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def assert_same_placement(cs, seeds):
    for seed in seeds:
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        got, want = cs.sample(a), reference_sample(cs, b)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].dtype == want[k].dtype, k
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{cs.source}: {k}, seed {seed}")
        assert a.random() == b.random() and a.integers(1 << 40) == b.integers(1 << 40)  # same generator state


@pytest.mark.parametrize("name", catalog_names())
def test_catalog_placement_matches_the_python_reference(name):
    assert_same_placement(get_scenario(name), range(12))


@pytest.mark.parametrize("overrides", [
    {"traffic": {"placement": "random", "count": 20}, "controlled": {"count": 3}},  # random, both kinds
    {"traffic": {"placement": "sequential", "count": 9}, "controlled": {"count": 4, "speed": [20, 30]}},
    {"traffic": {"placement": "even", "count": 7}, "controlled": {"count": 2}},
    {"traffic": {"count": 5, "idm": {"desired_speed": [25, 31], "delta": [4, 4]}, "mobil": {"enabled": False}}},
    {"controlled": {"count": 0}},
])
def test_placement_options_match_the_python_reference(overrides):
    assert_same_placement(get_scenario(load_scenario("highway", overrides=overrides)), range(8))


@pytest.mark.parametrize("name", ["merge", "intersection", "roundabout"])
def test_routes_and_spawn_areas_match_with_more_vehicles(name):
    """Roads with routes to choose and several spawn areas, with random placement of more vehicles."""
    sc = load_scenario(name)
    overrides = {"controlled": {"count": 3}, "traffic": {"count": sc.traffic.count + 2}}
    assert_same_placement(get_scenario(load_scenario(name, overrides=overrides)), range(8))


def test_placement_errors_name_the_problem():
    with pytest.raises(ScenarioError, match="sequential placement ran past the end of the road"):
        get_scenario(load_scenario("highway", overrides={"road": {"length": 400}}))
    dense = {"traffic": {"placement": "random", "count": 60}, "road": {"length": 300, "lanes": 1}}
    with pytest.raises(ScenarioError, match="could not place the traffic vehicles with safe gaps after 400"):
        get_scenario(load_scenario("highway", overrides=dense))
    dense_ctrl = {"traffic": {"placement": "random", "count": 0}, "controlled": {"count": 40},
                  "road": {"length": 300, "lanes": 1}}
    with pytest.raises(ScenarioError, match="could not place the controlled vehicles with safe gaps"):
        get_scenario(load_scenario("highway", overrides=dense_ctrl))
    with pytest.raises(ScenarioError, match=r"traffic.spawn: no spawn lanes to place 5 vehicles"):
        get_scenario(load_scenario("merge", overrides={"traffic": {"spawn": [], "count": 5}}))
    for length in (55, 60):  # the highway's spawn lanes run from 10 m to 50 m before the end: none left
        with pytest.raises(ScenarioError, match="the spawn lanes leave no room to place vehicles"):
            get_scenario(load_scenario("highway", overrides={"road": {"length": length}}))


def test_explicit_vehicle_errors_come_first():
    """A bad explicit vehicle is reported before problems of the generated blocks, in placement order."""
    bad = {"vehicles": [{"lane": "nowhere", "s": 10.0}], "traffic": {"spawn": ["nowhere"]}}
    with pytest.raises(ScenarioError, match=r"vehicles\[0\]: no lane named 'nowhere'"):
        get_scenario(load_scenario("highway", overrides=bad))


def test_world_streams_are_the_seed_sequence_children():
    """A world's placement, noise, arrival and packet-loss generators are ``SeedSequence(seed).spawn(4)``'s
    children, built on first use."""
    for seed in (0, 17, 2**40 + 3):
        st = _Streams(seed)
        kids = np.random.SeedSequence(seed).spawn(4)
        for gen, kid in zip((st.init, st.noise, st.spawn, st.loss), kids, strict=True):
            assert gen.random(4).tolist() == np.random.default_rng(kid).random(4).tolist()


def test_positions_equal_numpy_interp():
    """``Road.positions`` (one compiled call for many lanes) gives ``np.interp``'s numbers exactly, s clamped
    to the lane, d to the left of the heading."""
    road = get_scenario("roundabout").road
    rng = np.random.default_rng(3)
    lanes = rng.integers(0, road.num_lanes, 400)
    s = rng.uniform(-5.0, 1.05, 400) * road.lane_len[lanes]
    d = rng.normal(0.0, 1.0, 400)
    x, y, h = road.positions(lanes, s, d)
    a = road.arrays
    for i in range(400):
        ln = lanes[i]
        p = a.pts[a.lane_i[ln, L.L_PT]:a.lane_i[ln + 1, L.L_PT]]
        si = np.clip(s[i], 0.0, road.lane_len[ln])
        hx, hy, hh = (np.interp(si, p[:, L.P_S], p[:, k]) for k in (L.P_X, L.P_Y, L.P_H))
        assert (x[i], y[i], h[i]) == (hx - d[i] * np.sin(hh), hy + d[i] * np.cos(hh), hh)
    xs, ys, hs = road.position(2, s[:5], 0.0)  # one lane, the single-lane form
    assert (xs == road.positions(np.full(5, 2), s[:5])[0]).all() and np.shape(road.position(2, 7.0)[0]) == ()
    for bad in (-1, road.num_lanes):
        with pytest.raises(IndexError, match="lane indices must be in"):
            road.positions(np.array([0, bad]), np.zeros(2))


@pytest.mark.parametrize("name", ["cut-in", "merge"])  # an explicit vehicle off its lane centre; free slots
def test_reset_writes_the_sampled_vehicles(name):
    """World.reset (one ``write_world`` kernel call per world) puts every sampled field in its state row,
    positions from the lane coordinates with the lateral offsets, fresh values in the other slots, and
    leaves the worlds not reset alone."""
    sc = load_scenario(name)
    if sc.vehicles:
        sc = sc.model_copy(update={"vehicles": [v.model_copy(update={"d": 0.8 * (k == 1)})
                                                for k, v in enumerate(sc.vehicles)]})
    w = World(sc, num_worlds=3)
    w.reset(seed=[1, 2, 3])
    w.run(300)  # dirty the slots the reset must overwrite (merge: arrivals in the free slots)
    kept = {k: getattr(w.state, k)[1].copy() for k in ("x", "speed", "lane", "valid")}
    n0 = w.scenario.sample(_Streams(4).init)["lane"].size
    assert name == "cut-in" or w.state.valid[0, n0:].any()
    w.reset(seed=[4, 9], worlds=[0, 2])
    st = w.state
    fresh = World(sc, num_worlds=1)._fresh
    for b, seed in ((0, 4), (2, 9)):
        veh = w.scenario.sample(_Streams(seed).init)
        n = veh["lane"].size
        assert veh["d"][1] == 0.8 if name == "cut-in" else n < w.max_vehicles
        for k in VEHICLE_FIELDS:
            np.testing.assert_array_equal(getattr(st, k)[b, :n], veh[k], err_msg=k)
        np.testing.assert_array_equal(st.route[b, :n], veh["route"])
        x, y, h = w.road.positions(veh["lane"], veh["s"], veh["d"])
        np.testing.assert_array_equal(st.x[b, :n], x)
        np.testing.assert_array_equal(st.y[b, :n], y)
        np.testing.assert_array_equal(st.yaw[b, :n], h)
        np.testing.assert_array_equal(st.target_lane[b, :n], veh["lane"])
        np.testing.assert_array_equal(st.vid[b, :n], np.arange(n))
        assert st.next_vid[b] == n and st.step[b] == 0
        assert st.valid[b, :n].all() and not st.valid[b, n:].any()
        for got, want in zip(st.packed, fresh.packed, strict=True):  # the free slots as in an empty world
            if got.ndim == 3 and got.shape[-1] == w.max_vehicles:
                np.testing.assert_array_equal(got[b][..., n:], want[0][..., n:])
    for k, v in kept.items():
        np.testing.assert_array_equal(getattr(st, k)[1], v, err_msg=k)
