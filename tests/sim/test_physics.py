"""Physical sanity of the behaviour models, against plain-NumPy reference integrations."""

import math

import numpy as np
import pytest

from drivediff.sim import Behavior, World

from .helpers import scenario

STRAIGHT = {"type": "highway", "lanes": 1, "length": 20000, "speed_limit": 40}
FIXED = {"delta": 4.0}


def idm_free_ref(v, v0, a, delta, dt, steps):
    out = []
    for _ in range(steps):
        v = min(max(v + a * (1 - (v / v0) ** delta) * dt, 0.0), 40.0)
        out.append(v)
    return np.array(out)


def test_free_road_vehicle_converges_to_desired_speed():
    sc = scenario(road=STRAIGHT, dt=0.1, vehicles=[{"lane": "lane0", "s": 100, "speed": 5.0,
                                                   "mobil": {"enabled": False},
                                                   "idm": {"desired_speed": 25, **FIXED}}])
    w = World(sc)
    w.reset(seed=0)
    rec = w.run(600, record=True)
    v = rec["speed"][0, :, 0]
    np.testing.assert_allclose(v, idm_free_ref(5.0, 25.0, 3.0, 4.0, 0.1, 600), rtol=1e-9, atol=1e-9)
    assert abs(v[-1] - 25.0) < 1e-3


def test_follower_settles_at_the_idm_equilibrium_gap():
    v_lead, v0, T, s0, delta = 15.0, 30.0, 1.5, 5.0, 4.0
    sc = scenario(road=STRAIGHT, dt=0.1, vehicles=[
        {"lane": "lane0", "s": 400, "speed": v_lead, "behavior": "constant_speed"},
        {"lane": "lane0", "s": 300, "speed": 20.0, "mobil": {"enabled": False},
         "idm": {"desired_speed": v0, "time_gap": T, "s0": s0, **FIXED}},
    ])
    w = World(sc)
    w.reset(seed=0)
    w.run(1500)
    st = w.state
    s_eq = (s0 + v_lead * T) / math.sqrt(1 - (v_lead / v0) ** delta)  # Treiber: s* = s0 + vT at dv = 0
    assert st.speed[0, 1] == pytest.approx(v_lead, abs=1e-3)
    assert st.gap[0, 1] == pytest.approx(s_eq, abs=0.01)
    assert st.leader[0, 1] == 0 and st.headway[0, 1] == pytest.approx(s_eq / v_lead, abs=1e-3)


def test_braking_vehicles_stop_and_never_reverse():
    sc = scenario(road=STRAIGHT, dt=0.1, duration=30,
                  profile={"type": "knots", "knots": [[0, 20], [2, 20], [6, 0], [60, 0]]},
                  vehicles=[{"lane": "lane0", "s": 200, "speed": 20, "behavior": "profile"},
                            {"lane": "lane0", "s": 160, "speed": 20, "mobil": {"enabled": False},
                             "idm": {"desired_speed": 25, **FIXED}}])
    w = World(sc)
    w.reset(seed=0)
    rec = w.run(300, record=True)
    v = rec["speed"][0]
    assert v.min() >= 0.0
    np.testing.assert_allclose(v[-1], [0.0, 0.0], atol=1e-6)
    # the leader follows its profile: -5 m/s^2 between t = 2 s and 6 s
    np.testing.assert_allclose(rec["accel"][0, 25:55, 0], -5.0, atol=1e-9)
    assert not rec["collided"].any()
    assert rec["gap"][0, -1, 1] == pytest.approx(5.0, abs=0.3)  # stopped about s0 behind
    x = rec["x"][0]
    assert np.all(np.diff(x, axis=0) >= -1e-12)  # never moves backwards


def test_collision_is_detected_and_crashed_vehicles_stop():
    sc = scenario(road={"type": "highway", "lanes": 2, "length": 2000}, dt=0.1, vehicles=[
        {"lane": "lane0", "s": 300, "speed": 0.0, "behavior": "constant_speed"},
        {"lane": "lane0", "s": 250, "speed": 20.0, "behavior": "controlled", "controlled": True},
    ])
    w = World(sc)
    w.reset(seed=0)
    assert w.state.behavior[0, 0] == Behavior.EXTERNAL  # controlled vehicles come first
    act = np.zeros((1, w.max_vehicles, 2))
    hit = None
    for k in range(80):
        w.step(act)  # no braking: drives into the stopped vehicle
        if w.state.collided[0].any() and hit is None:
            hit = k
            gap_before = w.state.x[0, 1] - w.state.x[0, 0]
    assert hit is not None and w.state.collided[0, :2].all()
    assert abs(gap_before) <= 5.0 + 20.0 * 0.1
    w.run(60)
    assert w.state.speed[0, 0] == pytest.approx(0.0, abs=1e-6)  # crashed: brakes to a stop


def test_offroad_is_detected():
    sc = scenario(road={"type": "highway", "lanes": 2, "length": 2000}, dt=0.1, vehicles=[
        {"lane": "lane0", "s": 300, "speed": 15.0, "behavior": "controlled", "controlled": True}])
    w = World(sc)
    w.reset(seed=0)
    act = np.zeros((1, w.max_vehicles, 2))
    act[0, 0, 1] = -0.2  # steer right, off the road edge at y = -2
    steps = 0
    while not w.state.offroad[0, 0] and steps < 100:
        w.step(act)
        steps += 1
    assert w.state.offroad[0, 0]
    corners_y = w.state.y[0, 0] - 0.5 * (5 * abs(math.sin(w.state.yaw[0, 0])) + 2 * math.cos(w.state.yaw[0, 0]))
    assert corners_y < -2.0  # a corner is beyond the edge (the road spans y in [-2, 6])


def test_mobil_overtakes_a_slow_vehicle():
    sc = scenario(road={"type": "highway", "lanes": 2, "length": 3000}, dt=0.1, vehicles=[
        {"lane": "lane0", "s": 300, "speed": 15.0, "behavior": "constant_speed"},
        {"lane": "lane0", "s": 250, "speed": 25.0, "idm": {"desired_speed": 28}},
    ])
    w = World(sc)
    w.reset(seed=0)
    rec = w.run(300, record=True)
    lanes = rec["lane"][0, :, 1]
    assert lanes[0] == 0 and 1 in lanes  # changed to the free lane
    assert rec["x"][0, -1, 1] > rec["x"][0, -1, 0] + 20  # and passed the slow vehicle
    assert not rec["collided"].any()


@pytest.mark.parametrize("politeness", [0.0, 1.0])
def test_mobil_politeness_weighs_the_new_followers_braking(politeness):
    """A driver 55 m behind a slower vehicle could gain ~2 m/s^2 in the free lane, but cutting in there makes
    the faster vehicle coming up behind brake at ~7 m/s^2 (allowed: max_braking 8). Selfish (politeness 0,
    highway-env's default) it cuts in at its first MOBIL decision; polite (1) it waits until that vehicle
    has passed (Kesting, Treiber & Helbing 2007: the followers' accelerations enter the incentive weighted
    by the politeness)."""
    sc = scenario(road={"type": "highway", "lanes": 2, "length": 3000}, dt=0.1, vehicles=[
        {"lane": "lane0", "s": 330, "speed": 15.0, "behavior": "constant_speed"},
        {"lane": "lane0", "s": 270, "speed": 20.0, "idm": {"desired_speed": 28},
         "mobil": {"politeness": politeness, "max_braking": 8.0}},
        {"lane": "lane1", "s": 225, "speed": 25.0, "idm": {"desired_speed": 25}, "mobil": {"enabled": False}},
    ])
    w = World(sc)
    w.reset(seed=0)
    rec = w.run(300, record=True)
    lane, x_driver, x_fast = rec["lane"][0, :, 1], rec["x"][0, :, 1], rec["x"][0, :, 2]
    k = int(np.argmax(lane == 1))
    assert lane[0] == 0 and lane[k] == 1  # it changes lanes either way
    if politeness == 0.0:
        assert k <= 10 and x_fast[k] < x_driver[k]  # within a MOBIL period, in front of the fast vehicle
        assert rec["accel"][0, :, 2].min() < -4.0  # which brakes hard
    else:
        assert x_fast[k] > x_driver[k]  # after the fast vehicle has gone by
        assert rec["accel"][0, :, 2].min() > -0.1  # which never brakes
    assert not rec["collided"].any()


@pytest.mark.parametrize("politeness", [0.0, 1.0])
def test_mobil_polite_driver_moves_over_for_a_faster_one(politeness):
    """A driver content with its speed gains nothing by changing lanes, but the faster vehicle braking behind
    it would: a polite driver moves over (the old follower's gain in the incentive) and the faster one goes
    by at its desired speed; a selfish one keeps its lane and holds it up."""
    sc = scenario(road={"type": "highway", "lanes": 2, "length": 3000}, dt=0.1, vehicles=[
        {"lane": "lane0", "s": 270, "speed": 20.0, "idm": {"desired_speed": 20}, "mobil": {"politeness": politeness}},
        {"lane": "lane0", "s": 210, "speed": 26.0, "idm": {"desired_speed": 30}, "mobil": {"enabled": False}},
    ])
    w = World(sc)
    w.reset(seed=0)
    rec = w.run(300, record=True)
    lane, v_fast = rec["lane"][0, :, 0], rec["speed"][0, :, 1]
    if politeness == 0.0:
        assert (lane == 0).all() and v_fast[-1] == pytest.approx(20.0, abs=0.1)
    else:
        assert lane[10] == 1 and v_fast[-1] == pytest.approx(30.0, abs=0.1)
    assert not rec["collided"].any()


def test_inflow_rate_and_exits():
    sc = scenario(road={"type": "highway", "lanes": 1, "length": 500}, dt=0.1, duration=600,
                  inflows=[{"lane": "lane0", "rate": 720, "speed": [20, 20], "idm": {"desired_speed": 20}}])
    w = World(sc, num_worlds=4)
    w.reset(seed=0)
    rec = w.run(6000, record=True)
    spawned = w.state.next_vid  # ids are assigned in order
    expected = 720 / 3600 * 600  # 120 per world
    assert np.all(np.abs(spawned - expected) < 4 * math.sqrt(expected))
    # vehicles leave at the end: never more than the road holds, and slots are reused
    assert rec["valid"].sum(axis=2).max() < 500 / 20 + 2
    assert not rec["collided"].any()


def test_minor_road_vehicle_yields_at_the_intersection():
    """Two vehicles would reach the crossing at the same time; the one on the minor road waits."""
    sc = scenario(road={"type": "intersection"}, dt=0.1, duration=20, vehicles=[
        {"lane": "in_w", "s": 70, "speed": 10.0, "route": ["w_e", "out_e"], "idm": {"desired_speed": 10}},
        {"lane": "in_s", "s": 70, "speed": 10.0, "route": ["s_n", "out_n"], "idm": {"desired_speed": 10}},
    ])
    w = World(sc)
    w.reset(seed=0)
    rec = w.run(200, record=True)
    names = w.road.lane_names
    assert not rec["collided"].any()
    in_junction = {k: np.nonzero([names[ln] in (f"{a}_{b}",) for ln in rec["lane"][0, :, k]])[0]
                   for k, (a, b) in enumerate([("w", "e"), ("s", "n")])}
    # the major-road vehicle crosses first, the minor-road one after it has left
    assert in_junction[0][0] < in_junction[1][0]
    assert rec["speed"][0, :, 1].min() < 3.0 and rec["speed"][0, :, 0].min() > 9.0


def test_inflows_never_reuse_the_controlled_vehicles_slots():
    w = World("intersection", num_worlds=2, overrides={"controlled": {"count": 2}})
    w.reset(seed=4)
    rec = w.run(1500, record=True)
    vid = rec["vid"][:, :, :2]
    # each controlled slot holds its original vehicle (ids 0, 1) until it leaves the road, then stays empty
    assert set(np.unique(vid[:, :, 0])) <= {0, -1} and set(np.unique(vid[:, :, 1])) <= {1, -1}
    assert (vid == -1).any()  # at least one agent reached the end of its route and left
    assert (rec["vid"][:, :, 2:] > 1).any()  # while inflows kept spawning into other slots


@pytest.mark.parametrize("road", [STRAIGHT, {"type": "ring", "length": 230.0}], ids=["straight", "ring"])
@pytest.mark.parametrize("speed", [0.3, 0.8, 1.2])
def test_lane_tracking_settles_at_crawling_speed(road, speed):
    """A vehicle crawling 0.3 m off its lane centre returns to it without the steering flipping between its
    limits. highway-env's controller (no speed floor) did that below ~1.3 m/s at dt = 0.1 s: the steering
    changed sign every step at +-60 deg and the box wagged (SimParams.steer_speed_floor)."""
    lane = "lane0" if road is STRAIGHT else "ring"
    sc = scenario(road=road, dt=0.1, vehicles=[{"lane": lane, "s": 50.0, "d": 0.3, "speed": speed,
                                                "behavior": "constant_speed"}])
    w = World(sc)
    w.reset(seed=0)
    first = w.run(800, record=True)["steer"][0, :, 0]
    d_before = w.state.d[0, 0]
    steer = np.concatenate([first, w.run(100, record=True)["steer"][0, :, 0]])
    jump = np.abs(np.diff(steer[300:])).max()
    assert jump < 0.05, f"the steering still jumps by {jump:.3f} rad in one step after 30 s"  # was 2.09
    assert np.abs(steer[20:]).max() < 0.5 * w.params.steer_max
    if road is STRAIGHT:
        assert abs(w.state.d[0, 0]) < 0.02  # back on the centreline
    else:  # on the curve highway-env's controller settles 7 cm outside the centreline (the slip angle)
        assert abs(w.state.d[0, 0]) < 0.1
    assert abs(w.state.d[0, 0] - d_before) < 0.005  # settled


def test_lane_keeping_policy_steering_matches_the_kernel_at_a_crawl():
    """agents.platoon.lane_keeping_steer (the numpy policies' steering) is the kernel's, speed floor included."""
    from drivediff.agents.platoon import lane_keeping_steer

    sc = scenario(road={"type": "ring", "length": 230.0}, dt=0.1, sim={"allow_reverse": True}, vehicles=[
        {"lane": "ring", "s": 10.0 * k, "d": 0.1 * (k % 3 - 1), "speed": 0.25 * k, "behavior": "constant_speed"}
        for k in range(12)])
    w = World(sc)
    w.reset(seed=0)
    w.state.speed[0, :4] = [-3.0, -1.0, -0.3, -0.0]  # reversing: the floor keeps the sign
    for _ in range(5):
        want = lane_keeping_steer(w)
        w.step()
        np.testing.assert_allclose(w.state.steer, want, atol=1e-12)
