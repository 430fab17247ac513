"""Kernels against plain-NumPy reference implementations and independent libraries (shapely)."""

import math

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point

from drivediff.sim import World
from drivediff.sim.geometry import box_polygon_corners, boxes_overlap
from drivediff.sim.kernels.idm import cah_accel, eidm_accel, idm_accel
from drivediff.sim.kernels.kinematics import bicycle_step
from drivediff.sim.kernels.sort import sort_pairs
from drivediff.sim.road import Arc, RoadBuilder, Straight


# ----------------------------------------------------------------------------------------------- IDM
def idm_ref(v, v0, T, s0, a, b, delta, gap, v_lead, center):
    """Treiber's IDM (bumper gap, s* clipped at s0) or highway-env 1.12's IDMVehicle (centre gap, no clip)."""
    acc = a * (1 - (max(v, 0) / v0) ** delta)
    if np.isfinite(gap):
        dyn = v * T + v * (v - v_lead) / (2 * np.sqrt(a * b))
        s_star = s0 + (dyn if center else max(0.0, dyn))
        acc -= a * (s_star / max(gap, 1e-2)) ** 2
    return acc


@pytest.mark.parametrize("center", [False, True])
def test_idm_matches_reference(center):
    rng = np.random.default_rng(0)
    for _ in range(2000):
        v, v0 = rng.uniform(0, 35), rng.uniform(5, 35)
        T, s0, a, b, delta = rng.uniform(0.5, 2), rng.uniform(1, 10), rng.uniform(0.5, 3), rng.uniform(1, 5), \
            rng.uniform(3.5, 4.5)
        gap = rng.choice([np.inf, rng.uniform(0.02, 150)])
        v_lead = rng.uniform(0, 35)
        ours = idm_accel(v, v0, T, s0, a, b, delta, gap, v_lead, center)
        assert ours == pytest.approx(idm_ref(v, v0, T, s0, a, b, delta, gap, v_lead, center), rel=1e-9, abs=1e-9)


def test_idm_edge_cases():
    # free road at the desired speed: zero acceleration; at rest: a
    assert idm_accel(30.0, 30.0, 1.5, 5, 3, 5, 4, math.inf, 0, False) == pytest.approx(0.0, abs=1e-12)
    assert idm_accel(0.0, 30.0, 1.5, 5, 3, 5, 4, math.inf, 0, False) == pytest.approx(3.0)
    # gap exactly 0 and negative: hard braking, finite
    for gap in (0.0, -1.0):
        acc = idm_accel(10.0, 30.0, 1.5, 5, 3, 5, 4, gap, 10.0, False)
        assert np.isfinite(acc) and acc < -1e4


def test_eidm_reduces_to_idm_and_softens_cut_ins():
    args = (20.0, 30.0, 1.5, 2.0, 1.5, 2.0, 4.0)
    # coolness 0 is plain IDM
    assert eidm_accel(*args, 8.0, 20.0, 0.0, 0.0, False) == idm_accel(*args, 8.0, 20.0, False)
    # a vehicle cutting in 8 m ahead at the same speed: IDM brakes hard (-23 m/s^2), the enhanced model
    # at most about its comfortable deceleration b = 2 (the tanh saturates at -b)
    a_idm = idm_accel(*args, 8.0, 20.0, False)
    a_eidm = eidm_accel(*args, 8.0, 20.0, 0.0, 0.99, False)
    assert a_idm < -20.0 and -2.5 < a_eidm < -1.0
    # a stopped leader: the CAH asks for the deceleration that stops within the gap, v^2 / (2 s)
    assert cah_accel(10.0, 0.0, 0.0, 20.0, 1.5) == pytest.approx(-2.5)
    assert eidm_accel(10.0, 30.0, 1.5, 2.0, 1.5, 2.0, 4.0, 20.0, 0.0, 0.0, 0.99, False) < -2.5
    # reference formula (Kesting et al. 2010, eqs. 4-5) on random inputs
    rng = np.random.default_rng(1)
    for _ in range(500):
        v, vl, al, gap = rng.uniform(0, 30), rng.uniform(0, 30), rng.uniform(-3, 1.5), rng.uniform(0.5, 60)
        a_i = idm_accel(v, 30, 1.5, 2, 1.5, 2, 4, gap, vl, False)
        alt = min(al, 1.5)
        if vl * (v - vl) < -2 * gap * alt:
            cah = v * v * alt / (vl * vl - 2 * gap * alt)
        else:
            cah = alt - max(v - vl, 0) ** 2 / (2 * gap)
        assert cah_accel(v, vl, al, gap, 1.5) == pytest.approx(cah, rel=1e-9, abs=1e-9)
        ref = a_i if a_i >= cah else 0.01 * a_i + 0.99 * (cah + 2 * math.tanh((a_i - cah) / 2))
        assert eidm_accel(v, 30, 1.5, 2, 1.5, 2, 4, gap, vl, al, 0.99, False) == pytest.approx(ref, rel=1e-9,
                                                                                                abs=1e-9)


# ----------------------------------------------------------------------------------------- kinematics
def bicycle_ref(x, y, yaw, v, a, steer, length, dt, v_min, v_max):
    """highway-env 1.12 Vehicle.step (shared/REFERENCES.md), with the speed clip."""
    beta = np.arctan(0.5 * np.tan(steer))
    x2 = x + v * np.cos(yaw + beta) * dt
    y2 = y + v * np.sin(yaw + beta) * dt
    yaw2 = yaw + v * np.sin(beta) / (length / 2) * dt
    return x2, y2, yaw2, float(np.clip(v + a * dt, v_min, v_max))


def test_bicycle_matches_reference():
    rng = np.random.default_rng(2)
    for _ in range(2000):
        args = (rng.uniform(-100, 100), rng.uniform(-100, 100), rng.uniform(-4, 4), rng.uniform(0, 40),
                rng.uniform(-9, 6), rng.uniform(-1.04, 1.04), rng.uniform(3, 12), rng.choice([0.05, 0.1, 1 / 15]),
                0.0, 40.0)
        np.testing.assert_allclose(bicycle_step(*args), bicycle_ref(*args), rtol=1e-12, atol=1e-9)


def test_bicycle_braking_never_reverses():
    assert bicycle_step(0, 0, 0, 0.5, -9.0, 0, 5, 0.1, 0.0, 40.0)[3] == 0.0
    assert bicycle_step(0, 0, 0, 39.9, 6.0, 0, 5, 0.1, 0.0, 40.0)[3] == 40.0


# ---------------------------------------------------------------------------------------- lanes, SDF
@pytest.fixture(scope="module")
def curvy_road():
    b = RoadBuilder()
    b.add_lane("a", Straight((0, 0), (50, 0)))
    b.add_lane("b", Arc((50, 30), 30, -math.pi / 2, 0.4))
    b.connect("a", "b")
    return b.build()


def test_lane_sampling_and_projection_match_shapely(curvy_road):
    road = curvy_road
    assert road.lane_len[1] == pytest.approx(30 * (0.4 + math.pi / 2), rel=1e-4)
    line = LineString(road.lane_points(1))
    rng = np.random.default_rng(3)
    for _ in range(300):
        s = rng.uniform(0, road.lane_len[1])
        d = rng.uniform(-1.9, 1.9)
        x, y, h = road.position(1, s, d)
        s2, d2 = road.project(1, float(x), float(y))
        # s is arc length of the curve; shapely measures along the 0.5 m chords (shorter by ds^2/(24 R^2))
        assert s2 == pytest.approx(line.project(Point(x, y)), abs=1e-3)
        assert abs(d2) == pytest.approx(line.distance(Point(x, y)), abs=1e-6)
        assert np.sign(d2) == np.sign(d)
        assert s2 == pytest.approx(s, abs=0.02) and d2 == pytest.approx(d, abs=0.02)


def test_signed_distance_grid_matches_shapely(curvy_road):
    road = curvy_road
    poly = road.polygon
    x0, y0, x1, y1 = poly.bounds
    rng = np.random.default_rng(4)
    xs, ys = rng.uniform(x0 - 4, x1 + 4, 5000), rng.uniform(y0 - 4, y1 + 4, 5000)
    exact = shapely.distance(shapely.points(xs, ys), poly.boundary)
    exact = np.where(shapely.contains_xy(poly, xs, ys), -exact, exact)
    ours = road.signed_distance(xs, ys)
    # bilinear interpolation of the exact distance on a 0.5 m grid: exact on straight edges, at most
    # res / sqrt(2) at the distance field's kinks (medial axis, corners)
    err = np.abs(ours - exact)
    assert np.max(err) < 0.5 / math.sqrt(2) and np.percentile(err, 95) < 0.01
    near = np.abs(exact) > 0.2
    np.testing.assert_array_equal(np.sign(ours[near]), np.sign(exact[near]))


def test_ring_drivable_area_is_an_annulus_without_a_seam():
    """A closed lane's drivable area is the exact annulus: no edge across the lane where it starts and ends
    (one ran across the seam and made every vehicle there look 1 m off the road)."""
    from drivediff.sim import World

    road = World("ring").road
    radius = road.lane_len[0] / (2 * math.pi)
    half = road.lane_width[0] / 2
    phi = np.linspace(-math.pi, math.pi, 721)
    for r in (radius - half - 1.0, radius - 1.0, radius + 1.0, radius + half + 1.0):  # off the medial axis
        xs, ys = r * np.cos(phi), r * np.sin(phi)
        expect = np.abs(r - radius) - half  # distance to the nearer circle, negative inside
        np.testing.assert_allclose(road.signed_distance(xs, ys), expect, atol=0.03)
    # on the centreline (the distance field's ridge, where the bilinear grid is least exact) well inside
    assert road.signed_distance(radius * np.cos(phi), radius * np.sin(phi)).max() < -half + 0.3
    assert len(road.polygon.interiors) == 1


# ------------------------------------------------------------------------------------------- sorting
def test_sort_pairs_matches_lexsort():
    rng = np.random.default_rng(5)
    for n in (0, 1, 2, 7, 40, 300, 2500):
        key = rng.integers(0, max(n // 3, 1), n).astype(float)  # many ties
        val = rng.permutation(n).astype(np.int64)
        order = np.lexsort((val, key))
        k2, v2 = key.copy(), val.copy()
        sort_pairs(k2, v2, 0, n)
        np.testing.assert_array_equal(k2, key[order])
        np.testing.assert_array_equal(v2, val[order])


# ------------------------------------------------------------------------- collisions, off-road, leaders
def test_collision_flags_match_brute_force():
    world = World("highway", num_worlds=1)
    world.reset(seed=0)
    st = world.state
    rng = np.random.default_rng(6)
    n = int(st.valid[0].sum())
    for _ in range(5):
        # pack the vehicles into a small area so that many pairs overlap
        st.x[0, :n] = rng.uniform(100, 160, n)
        st.y[0, :n] = rng.uniform(-2, 14, n)
        st.yaw[0, :n] = rng.uniform(-math.pi, math.pi, n)
        st.collided[0] = False
        world.refresh()
        boxes = np.column_stack([st.x[0, :n], st.y[0, :n], st.yaw[0, :n], st.length[0, :n], st.width[0, :n]])
        pair = boxes_overlap(boxes[:, None], boxes[None, :])
        np.fill_diagonal(pair, False)
        expected = pair.any(axis=1)
        assert 0 < expected.sum() < n
        np.testing.assert_array_equal(st.collided[0, :n], expected)


def test_offroad_flags_match_shapely():
    world = World("roundabout", num_worlds=1)
    world.reset(seed=0)
    st = world.state
    poly = world.road.polygon
    n = int(st.valid[0].sum())
    rng = np.random.default_rng(7)
    tol = world.params.offroad_tol
    checked = 0
    for _ in range(30):
        st.x[0, :n] = rng.uniform(-60, 60, n)
        st.y[0, :n] = rng.uniform(-60, 60, n)
        st.yaw[0, :n] = rng.uniform(-math.pi, math.pi, n)
        st.lane[0, :n] = -1  # unknown lanes: the grid decides
        world.refresh()
        corners = box_polygon_corners(np.column_stack([st.x[0, :n], st.y[0, :n], st.yaw[0, :n],
                                                       st.length[0, :n], st.width[0, :n]]))
        pts = shapely.points(corners.reshape(-1, 2))
        dist = shapely.distance(pts, poly.boundary)
        dist = np.where(shapely.contains_xy(poly, corners.reshape(-1, 2)[:, 0], corners.reshape(-1, 2)[:, 1]),
                        -dist, dist).reshape(n, 4).max(axis=1)
        clear = np.abs(dist - tol) > 0.15  # outside the grid's interpolation error band
        checked += clear.sum()
        np.testing.assert_array_equal(st.offroad[0, :n][clear], (dist > tol)[clear])
    assert checked > 0.8 * 30 * n


@pytest.mark.parametrize("scenario", ["highway", "ring"])
def test_leaders_match_brute_force(scenario):
    """At reset every vehicle is centred in its lane, so the leader is the nearest vehicle ahead on the
    same lane at any distance (as in highway-env), or across the lane end within the lookahead (the ring
    is its own successor)."""
    world = World(scenario, num_worlds=3)
    world.reset(seed=11)
    st = world.state
    ring = scenario == "ring"
    length = world.road.lane_len
    for b in range(3):
        v = np.nonzero(st.valid[b])[0]
        for i in v:
            same = [j for j in v if j != i and st.lane[b, j] == st.lane[b, i]]
            ahead = []
            for j in same:
                ds = st.s[b, j] - st.s[b, i]
                if ds > 0 or (ds == 0 and j > i):
                    ahead.append((ds, j))
            if ring and not ahead:  # across the lane end, within the lookahead
                for j in same:
                    ds = st.s[b, j] - st.s[b, i] + length[st.lane[b, i]]
                    if ds <= world.params.lookahead:
                        ahead.append((ds, j))
            if not ahead:
                assert st.leader[b, i] == -1 and st.gap[b, i] == np.inf
                continue
            ds, j = min(ahead)
            assert st.leader[b, i] == j
            assert st.gap[b, i] == pytest.approx(ds - 0.5 * (st.length[b, i] + st.length[b, j]), abs=1e-9)
            closing = st.speed[b, i] - st.speed[b, j]
            gap = st.gap[b, i]
            ttc = (gap / closing if closing > 1e-9 else np.inf) if gap > 0 else 0.0
            assert st.ttc[b, i] == pytest.approx(ttc)


def test_standing_list_matches_numpy():
    """The standing vehicles listed once per world for the junction path check: every valid vehicle at most
    STANDING_SPEED fast, in slot order, the same set the per-driver scan over all slots found."""
    from drivediff.sim.kernels.step import STANDING_SPEED, _list_standing
    from drivediff.sim.kernels.views import WorldView

    w = World("intersection", num_worlds=4)
    w.reset(seed=3)
    st = w.state
    rng = np.random.default_rng(0)
    st.speed[:] = np.where(rng.random(st.speed.shape) < 0.5, rng.uniform(0.0, 1.0, st.speed.shape), st.speed)
    st.speed[0, :3] = STANDING_SPEED  # the bound is inclusive
    st.speed[1] = STANDING_SPEED + 1.0  # a world with nothing standing
    out = np.full(w.max_vehicles, -1, dtype=np.int64)
    for b in range(4):
        view = WorldView(st.f[b], st.iv[b], st.m[b], st.route[b], st.wi[b], st.profile[b], st.v2v[b])
        k = _list_standing(view, out)
        np.testing.assert_array_equal(out[:k], np.flatnonzero(st.valid[b] & (st.speed[b] <= STANDING_SPEED)))
        assert (k == 0) == (b == 1)
