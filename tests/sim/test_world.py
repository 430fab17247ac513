"""The World API: determinism, independence of worlds, validation at the boundary."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from drivediff.errors import ActionError, DrivediffError
from drivediff.sim import Behavior, World
from drivediff.sim.state import ALL_VEHICLE_FIELDS


def _state_arrays(world):
    return {k: getattr(world.state, k).copy() for k in ALL_VEHICLE_FIELDS}


def _assert_same(a, b):
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("scenario", ["merge", "ring", "intersection"])
def test_same_seed_same_rollout_and_step_equals_run(scenario):
    """Random inputs (noise, arrivals) come from per-world streams, so stepping one call at a time and
    running many steps in one kernel call give bit-identical states."""
    a = World(scenario, num_worlds=2)
    b = World(scenario, num_worlds=2)
    a.reset(seed=5)
    b.reset(seed=5)
    for _ in range(150):
        a.step()
    b.run(150)
    _assert_same(_state_arrays(a), _state_arrays(b))
    c = World(scenario, num_worlds=2)
    c.reset(seed=6)
    c.run(150)
    assert not np.array_equal(c.state.x, a.state.x)


def test_a_world_depends_on_its_seed_only():
    """World b of a batch equals a single world reset with the same seed."""
    batch = World("roundabout", num_worlds=4)
    batch.reset(seed=[3, 9, 27, 81])
    batch.run(200)
    single = World("roundabout", num_worlds=1)
    single.reset(seed=[27])
    single.run(200)
    for k, v in _state_arrays(single).items():
        np.testing.assert_array_equal(getattr(batch.state, k)[2], v[0], err_msg=k)


_THREAD_SCRIPT = textwrap.dedent("""
    import hashlib, json, numpy as np, numba
    from drivediff.sim import World
    from drivediff.sim.state import ALL_VEHICLE_FIELDS
    out = {}
    for name in ("merge", "intersection", "ring"):
        w = World(name, num_worlds=6)
        w.reset(seed=1)
        w.run(300)
        h = hashlib.sha256()
        for k in ALL_VEHICLE_FIELDS:
            h.update(np.ascontiguousarray(getattr(w.state, k)).tobytes())
        out[name] = h.hexdigest()
    out["threads"] = numba.get_num_threads()
    print(json.dumps(out))
""")


def test_bit_identical_with_one_and_two_threads():
    results = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", _THREAD_SCRIPT], env=env, capture_output=True, text=True,
                             check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert results[0]["threads"] == 1 and results[1]["threads"] == 2
    assert {k: v for k, v in results[0].items() if k != "threads"} == \
        {k: v for k, v in results[1].items() if k != "threads"}


def test_partial_reset_and_inactive_worlds():
    w = World("merge", num_worlds=3)
    w.reset(seed=0)
    with pytest.raises(DrivediffError, match="must not repeat"):  # two threads would write one world
        w.reset(seed=[1, 2, 3], worlds=[0, 2, 0])
    with pytest.raises(DrivediffError, match="must not repeat"):
        w.refresh(worlds=[1, 1])
    w.run(50)
    before = _state_arrays(w)
    w.reset(seed=[100], worlds=[1])
    assert w.state.step.tolist() == [50, 0, 50]
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(w.state, k)[[0, 2]], v[[0, 2]], err_msg=k)
    # an inactive world neither moves nor consumes randomness: holding world 1 for 20 steps is the same
    # as resetting it 20 steps later
    active = np.array([True, False, True])
    for _ in range(20):
        w.step(active=active)
    w.run(30)
    ref = World("merge", num_worlds=3)
    ref.reset(seed=0)
    ref.run(70)
    ref.reset(seed=[100], worlds=[1])
    ref.run(30)
    assert w.state.step.tolist() == [100, 30, 100]
    _assert_same(_state_arrays(w), _state_arrays(ref))


@pytest.mark.parametrize("scenario", ["ring", "intersection"])  # acceleration noise; arrivals
def test_numbers_drawn_ahead_keep_each_world_on_its_own_stream(scenario):
    """``step`` draws random numbers some steps ahead; mixed with ``run``, inactive worlds and a partial
    reset, every world still follows the rollout of its seed alone."""
    w = World(scenario, num_worlds=3)
    w.reset(seed=[1, 2, 3])
    seeds = [1, 2, 3]
    for t in range(150):
        if t == 90:
            w.reset(seed=[9], worlds=[1])
            seeds[1] = 9
        if t % 5 == 0:
            w.run(3)
        elif t % 5 == 1:
            w.step(active=np.array([True, False, True]))
        else:
            w.step()
    for b in range(3):
        single = World(scenario, num_worlds=1)
        single.reset(seed=[seeds[b]])
        single.run(int(w.state.step[b]))
        for k, v in _state_arrays(single).items():
            np.testing.assert_array_equal(getattr(w.state, k)[b], v[0], err_msg=f"world {b}: {k}")


def test_external_actions_drive_the_vehicle_and_bad_actions_are_rejected():
    w = World("highway", num_worlds=2)
    w.reset(seed=0)
    w.set_behavior(Behavior.EXTERNAL, slots=[0])
    v0 = w.state.speed[:, 0].copy()
    act = np.zeros((2, w.max_vehicles, 2))
    act[:, 0, 0] = [2.0, -3.0]
    for _ in range(10):
        w.step(act)
    dt = w.dt
    np.testing.assert_allclose(w.state.speed[:, 0], v0 + 10 * dt * np.array([2.0, -3.0]), atol=1e-9)
    with pytest.raises(ActionError, match="shape"):
        w.step(np.zeros((2, 3)))
    bad = act.copy()
    bad[1, 0, 1] = np.nan
    with pytest.raises(ActionError, match="world 1, vehicle slot 0 is not finite"):
        w.step(bad)
    # NaN in a slot that is not externally driven is ignored
    ok = act.copy()
    ok[0, 5, 0] = np.inf
    w.step(ok)
    with pytest.raises(DrivediffError, match="reset"):
        World("highway").step()
    with pytest.raises(DrivediffError, match="num_worlds"):
        World("highway", num_worlds=0)
    with pytest.raises(DrivediffError, match="seed"):
        w.reset(seed=-1)


def test_state_views_share_memory_with_the_packed_arrays():
    w = World("highway")
    w.reset(seed=0)
    w.state.speed[0, 0] = 12.5
    assert w.state.f[0, 3, 0] == 12.5  # layout.SPEED
    assert w.state.valid.dtype == bool and w.state.lane.dtype == np.int64


def test_no_reference_leaks_across_many_calls():
    """NRT-free kernels must never hand arrays back to NRT code; a mistake shows as the state arrays'
    Python reference counts dropping (extra Py_DECREFs)."""
    w = World("intersection", num_worlds=2)
    arrays = w.state.packed + tuple(w.scratch)
    before = [sys.getrefcount(a) for a in arrays]
    for k in range(30):
        w.reset(seed=k)
        w.step()
        w.run(3, record=True)
        w.refresh()
    assert [sys.getrefcount(a) for a in arrays] == before


@pytest.mark.parametrize("turn, exit_lane, offset", [("w_e", "out_e", 0.5), ("w_s", "out_s", 0.5),
                                                     ("w_n", "out_n", -0.5)])
def test_lane_tracking_follows_the_turn_an_external_vehicle_takes(turn, exit_lane, offset):
    """At a branch point the connectors start together and the tracked successor is a guess; whichever turn
    the policy then drives, the vehicle must end up tracked on that connector and its exit lane (the lanes
    other drivers look for it on), checked against shapely's distances to the centrelines. The vehicle
    reaches the branch point ``offset`` metres to the side of the lane centre, towards another turn, and
    turns late (as the planner's vehicles did in the safety suite). Driving straight on from a guessed left
    turn, it stayed tracked on the left-turn connector all the way onto the exit road before the fix."""
    from shapely.geometry import LineString, Point

    w = World("intersection", num_worlds=1, overrides={"traffic": {"count": 0}, "inflows": [],
                                                       "controlled": {"count": 1}})
    w.reset(seed=0)
    road = w.road
    names = list(road.lane_names)
    assert names[int(w.state.lane[0, 0])] == "in_w"
    w.set_behavior(Behavior.EXTERNAL, slots=[0])
    pts = {n: np.asarray(road.lane_points(names.index(n)))[:, :2] for n in ("in_w", "w_e", turn, exit_lane)}
    along = np.cumsum(np.r_[0.0, np.hypot(*np.diff(pts[turn], axis=0).T)])
    approach = pts["in_w"].copy()
    approach[-3:, 1] += offset
    path = np.concatenate([approach, pts["w_e"][:1] + [[2.0, offset]], pts[turn][along > 7.0], pts[exit_lane]])
    lines = {n: LineString(np.asarray(road.lane_points(i))[:, :2]) for i, n in enumerate(names)}
    wheelbase = float(w.state.length[0, 0])
    tracked = []
    for _ in range(160):  # pure pursuit along the path at 6 m/s
        x, y, yaw, v = (float(getattr(w.state, k)[0, 0]) for k in ("x", "y", "yaw", "speed"))
        k = int(np.argmin(np.hypot(path[:, 0] - x, path[:, 1] - y)))
        target = next(p for p in path[k:] if np.hypot(p[0] - x, p[1] - y) > 4.0)
        alpha = np.arctan2(target[1] - y, target[0] - x) - yaw
        steer = np.arctan2(2 * wheelbase * np.sin(alpha), 6.0)
        act = np.zeros((1, w.max_vehicles, 2))
        act[0, 0] = [2.0 * (6.0 - v), np.clip(steer, -0.6, 0.6)]
        w.step(act)
        if not w.state.valid[0, 0]:
            break
        p = Point(float(w.state.x[0, 0]), float(w.state.y[0, 0]))
        tracked.append((names[int(w.state.lane[0, 0])], {n: lines[n].distance(p) for n in names}))
    assert tracked and tracked[-1][0] == exit_lane  # through the junction and onto the exit it took
    on_connector = [t for t, _ in tracked if road.junction[names.index(t)]]
    assert on_connector and on_connector[-1] == turn
    for lane, dist in tracked:  # never tracked on a lane it is not beside while a nearer lane is there
        assert dist[lane] <= min(dist.values()) + 0.5 * float(road.lane_width[names.index(lane)]), (lane, dist)


@pytest.mark.parametrize("seed, pose, route", [
    (10, (0.5, 1.0, np.pi / 2), "e_w"),  # square across the east-west road, in the middle of the junction
    (39, (5.2, -3.1, 0.99), "e_s"),  # skewed on the south-east connector, a corner in the left turn's path
])
def test_drivers_stop_for_a_vehicle_standing_in_their_path_through_a_junction(seed, pose, route):
    """A policy-driven vehicle stands inside the intersection (tracked on a connector from the south): it is
    no driver's lane leader and not approaching a conflict point, and the IDM driver coming from the east
    must still stop for it instead of driving into it. The skewed pose is the one of a safety-suite
    collision (planner vehicle braked to a stop, IDM vehicle turning left drove into its corner); without
    the path check the driver hits it at 8 m/s."""
    w = World("intersection", num_worlds=1, overrides={"traffic": {"count": 1}, "inflows": [],
                                                       "controlled": {"count": 1}})
    w.reset(seed=seed)
    names = list(w.road.lane_names)
    assert names[int(w.state.lane[0, 0])] == "in_s" and names[int(w.state.lane[0, 1])] == "in_e"
    assert [names[r] for r in w.state.route[0, 1] if r >= 0][:1] == [route]
    w.set_behavior(Behavior.EXTERNAL, slots=[0])
    w.state.x[0, 0], w.state.y[0, 0], w.state.yaw[0, 0] = pose
    w.state.speed[0, 0] = 0.0
    stand = np.zeros((1, w.max_vehicles, 2))
    for _ in range(150):
        w.step(stand)
    assert names[int(w.state.lane[0, 0])] in ("s_n", "s_e", "s_w")  # tracked on a connector from the south
    assert not w.state.collided[0].any()
    assert w.state.speed[0, 1] < 0.1 and 8.0 < w.state.x[0, 1] < 15.0  # waiting at the east entry


@pytest.mark.parametrize("scenario", ["ring", "intersection"])  # acceleration noise; arrivals and yielding
def test_chunks_of_worlds_step_phase_by_phase_to_the_same_numbers(scenario):
    """``step_worlds`` runs each phase over a chunk of worlds before the next phase: any chunk size gives
    the states and the recorded steps of stepping world by world (chunks of one), inactive worlds stay put."""
    import numba

    from drivediff.sim.kernels.step import CHUNK_WORLDS, chunk_count, step_worlds
    from drivediff.sim.state import alloc_record, record_to_dict

    active = np.array([True, True, False, True, True])
    results = []
    for chunks in (5, 3, 2, 1):
        w = World(scenario, num_worlds=5)
        w.reset(seed=11)
        w.run(20)
        held = _state_arrays(w)
        noise, spawn, loss = w.step_inputs(40)
        rec = alloc_record(5, 40, w.max_vehicles)
        step_worlds(w.road.arrays, w.state.packed, w.scratch, w.params, w.inflow, w._zero_actions, noise, spawn,
                    loss, active, 40, rec, True, chunks)
        for k, v in held.items():  # world 2 was not stepped, nor recorded
            np.testing.assert_array_equal(getattr(w.state, k)[2], v[2], err_msg=k)
        for got, empty in zip(rec, alloc_record(5, 40, w.max_vehicles), strict=True):
            if got.ndim == 4:
                np.testing.assert_array_equal(got[2], empty[2])
        results.append((_state_arrays(w), record_to_dict(rec)))
    assert not np.array_equal(results[0][0]["x"][0], held["x"][0])  # the active worlds moved
    for state, log in results[1:]:
        _assert_same(results[0][0], state)
        for k in log:
            np.testing.assert_array_equal(np.delete(log[k], 2, axis=0), np.delete(results[0][1][k], 2, axis=0),
                                          err_msg=k)
    # the number of chunks of a parallel step: at most CHUNK_WORLDS worlds each, and with the chunks split
    # evenly between two threads every thread gets work and the two take the same number of worlds, give or
    # take one
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        threads = numba.get_num_threads()
        for b in range(1, 300):
            chunks = chunk_count(b)
            bounds = [(c * b // chunks, (c + 1) * b // chunks) for c in range(chunks)]
            assert max(hi - lo for lo, hi in bounds) <= CHUNK_WORLDS and min(hi - lo for lo, hi in bounds) >= 1
            loads = [sum(hi - lo for lo, hi in bounds[part[0]:part[-1] + 1]) if part.size else 0
                     for part in np.array_split(np.arange(chunks), threads)]
            assert sum(loads) == b and max(loads) - min(loads) <= 1, (b, chunks, loads)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
